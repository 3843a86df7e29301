"""The seed study's input files for tests: the real ones in ``../shared/data/sacramento-dwr-2015`` when they are
there, else SYNTHETIC equivalents generated here with the same names, formats and quirks, so the tests that
read them run (never skip) on a clone with no sibling folders.

The real files are two Planet metadata XMLs (``<role>_scene_cropped_metadata.xml``), two AOIs (bare GeoJSON
Polygon geometries, ``aoi-<role>.geojson``) and the DWR 2015 land-use survey clipped to each AOI
(``ground-truth-<role>.geojson``: a bare list of features, which GDAL does not read). The equivalents follow
Planet's metadata schema (same namespaces and element paths as a real PSScene 3B AnalyticMS product) and the
DWR attribute layout (crop ``CLASS1`` codes, ``SUBCLASS1``, ``ACRES``, ...), near Sacramento in EPSG:4326; every
synthetic file says SYNTHETIC. ``SeedFiles.expected`` holds what a test may assert about whichever set it got.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROLES = ("train", "test")
FILES = tuple(f"{r}_scene_cropped_metadata.xml" for r in ROLES) + tuple(
    f"{kind}-{r}.geojson" for kind in ("aoi", "ground-truth") for r in ROLES
)

#: what the real seed-study files hold (checked by tests/test_inputs.py when they are present)
REAL_EXPECTED: dict[str, dict[str, Any]] = {
    "train": {
        "scene_id": "20160831_180231_0e0e",
        "acquired": "2016-08-31T18:02:31+00:00",
        "features": 221,
        "gains": (2.2272053411087134e-05, 2.3286941101653296e-05, 2.617770294902722e-05, 3.857934042956696e-05),
    },
    "test": {
        "scene_id": "20160831_180257_0e26",
        "acquired": "2016-08-31T18:02:57+00:00",
        "features": 340,
        "gains": None,
    },  # only checked to be in range and to differ from the train scene's
}


@dataclass(frozen=True)
class SeedFiles:
    """A folder holding the seed study's six files; ``real`` says whether they are the real ones."""

    directory: Path
    real: bool
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.directory / name


def seed_files(candidates: tuple[Path, ...], generated: Path) -> SeedFiles:
    """The real files in the first of ``candidates`` holding all six, else synthetic equivalents written to
    ``generated``."""
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES):
            return SeedFiles(folder, True, REAL_EXPECTED)
    return write_seed_equivalents(generated)


# -- synthetic equivalents --------------------------------------------------------------------------------------

SYNTHETIC_SCENES = {
    # role: scene id, acquisition time, reflectance coefficients (blue, green, red, NIR), AOI (W, S, E, N)
    "train": (
        "20160831_180231_5e1f",
        "2016-08-31T18:02:31+00:00",
        (2.2301e-05, 2.3250e-05, 2.6203e-05, 3.8611e-05),
        (-121.5846, 38.2917, -121.5249, 38.3273),
    ),
    "test": (
        "20160831_180257_5e2a",
        "2016-08-31T18:02:57+00:00",
        (2.2412e-05, 2.3367e-05, 2.6291e-05, 3.8702e-05),
        (-121.5620, 38.2950, -121.5150, 38.3250),
    ),
}

METADATA_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- SYNTHETIC: written by cropseg's tests in place of the seed study's metadata; not a Planet product -->
<ps:EarthObservation
    xsi:schemaLocation="http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level.xsd"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:xlink="http://www.w3.org/1999/xlink"
    xmlns:opt="http://earth.esa.int/opt"
    xmlns:gml="http://www.opengis.net/gml"
    xmlns:eop="http://earth.esa.int/eop"
    version="1.2.1"
    planet_standard_product_version="1.0"
    xmlns:ps="http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level">
    <gml:metaDataProperty>
        <ps:EarthObservationMetaData>
            <eop:identifier>{scene_id}_3B_AnalyticMS</eop:identifier>
            <eop:acquisitionType>NOMINAL</eop:acquisitionType>
            <eop:productType>L3B</eop:productType>
            <eop:status>ARCHIVED</eop:status>
            <eop:processing>
                <eop:ProcessingInformation>
                    <eop:processorName>SYNTHETIC</eop:processorName>
                    <eop:nativeProductFormat>GeoTIFF</eop:nativeProductFormat>
                </eop:ProcessingInformation>
            </eop:processing>
            <ps:versionIsd>1.0</ps:versionIsd>
            <ps:pixelFormat>16U</ps:pixelFormat>
        </ps:EarthObservationMetaData>
    </gml:metaDataProperty>
    <gml:validTime>
        <gml:TimePeriod>
            <gml:beginPosition>{acquired}</gml:beginPosition>
            <gml:endPosition>{acquired}</gml:endPosition>
        </gml:TimePeriod>
    </gml:validTime>
    <gml:using>
        <eop:EarthObservationEquipment>
            <eop:platform>
                <eop:Platform>
                    <eop:shortName>PlanetScope</eop:shortName>
                    <eop:serialIdentifier>{satellite}</eop:serialIdentifier>
                    <eop:orbitType>LEO-SSO</eop:orbitType>
                </eop:Platform>
            </eop:platform>
            <eop:instrument><eop:Instrument><eop:shortName>PS2</eop:shortName></eop:Instrument></eop:instrument>
            <eop:sensor>
                <ps:Sensor>
                    <eop:sensorType>OPTICAL</eop:sensorType>
                    <eop:resolution uom="m">3.0000</eop:resolution>
                    <ps:scanType>FRAME</ps:scanType>
                </ps:Sensor>
            </eop:sensor>
            <eop:acquisitionParameters>
                <ps:Acquisition>
                    <eop:orbitDirection>DESCENDING</eop:orbitDirection>
                    <eop:incidenceAngle uom="deg">9.0e-01</eop:incidenceAngle>
                    <opt:illuminationAzimuthAngle uom="deg">1.29e+02</opt:illuminationAzimuthAngle>
                    <opt:illuminationElevationAngle uom="deg">4.91e+01</opt:illuminationElevationAngle>
                    <ps:azimuthAngle uom="deg">1.43e+01</ps:azimuthAngle>
                    <ps:spaceCraftViewAngle uom="deg">8.0e-01</ps:spaceCraftViewAngle>
                    <ps:acquisitionDateTime>{acquired}</ps:acquisitionDateTime>
                </ps:Acquisition>
            </eop:acquisitionParameters>
        </eop:EarthObservationEquipment>
    </gml:using>
    <gml:target>
        <ps:Footprint>
            <gml:multiExtentOf>
              <gml:MultiSurface srsName="EPSG:4326">
                 <gml:surfaceMembers>
                    <gml:Polygon srsName="EPSG:4326"><gml:outerBoundaryIs><gml:LinearRing><gml:coordinates>{ring}</gml:coordinates></gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>
                 </gml:surfaceMembers>
              </gml:MultiSurface>
            </gml:multiExtentOf>
        </ps:Footprint>
    </gml:target>
    <gml:resultOf>
        <ps:EarthObservationResult>
            <eop:product>
                <ps:ProductInformation>
                    <eop:fileName>{scene_id}_3B_AnalyticMS.tif</eop:fileName>
                    <ps:productFormat>GeoTIFF</ps:productFormat>
                    <ps:spatialReferenceSystem>
                        <ps:epsgCode>32610</ps:epsgCode>
                        <ps:geodeticDatum>WGS_1984</ps:geodeticDatum>
                        <ps:projection>WGS 84 / UTM zone 10N</ps:projection>
                        <ps:projectionZone>10</ps:projectionZone>
                    </ps:spatialReferenceSystem>
                    <ps:resamplingKernel>CC</ps:resamplingKernel>
                    <ps:numBands>4</ps:numBands>
                    <ps:rowGsd>3.0</ps:rowGsd>
                    <ps:columnGsd>3.0</ps:columnGsd>
                    <ps:radiometricCorrectionApplied>true</ps:radiometricCorrectionApplied>
                    <ps:atmosphericCorrectionApplied>false</ps:atmosphericCorrectionApplied>
                </ps:ProductInformation>
            </eop:product>
            <opt:cloudCoverPercentage uom="percentage">0.0</opt:cloudCoverPercentage>
{bands}
        </ps:EarthObservationResult>
    </gml:resultOf>
</ps:EarthObservation>
"""

BAND_XML = """<ps:bandSpecificMetadata>
    <ps:bandNumber>{n}</ps:bandNumber>
    <!-- Multiply by radiometricScaleFactor to convert DNs to TOA Radiance (watts per steradian per square metre -->
    <ps:radiometricScaleFactor>0.01</ps:radiometricScaleFactor>
    <!-- Multiply by reflectanceCoefficient to convert DNs to TOA Reflectance -->
    <ps:reflectanceCoefficient>{coef!r}</ps:reflectanceCoefficient>
</ps:bandSpecificMetadata>"""

CROP_CODES = "GRFPTDCV"


def _survey(role: str, bounds: tuple[float, float, float, float], seed: int) -> list[dict[str, Any]]:
    """DWR-style survey polygons inside ``bounds``: a grid of crop fields (``CLASS1`` crop codes only, like the
    real files; some fields with a farmstead hole, some in two parts), as a bare list of GeoJSON features.
    Gaps between and around them are non-crop land."""
    rng = np.random.default_rng(seed)
    west, south, east, north = bounds
    cols, rows = 12, 10
    dx, dy = (east - west) / cols, (north - south) / rows
    feats: list[dict[str, Any]] = []
    for i in range(rows):
        for j in range(cols):
            if rng.random() < 0.3:
                continue  # not a crop field: absent from the crop survey
            x0, y0 = west + (j + 0.08) * dx, south + (i + 0.08) * dy
            x1, y1 = west + (j + 0.92) * dx, south + (i + 0.92) * dy
            shell = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            code = str(rng.choice(list(CROP_CODES)))
            kind = rng.random()
            if kind < 0.15:  # a farmstead left out of the field
                hx0, hy0, hx1, hy1 = x0 + 0.1 * dx, y0 + 0.1 * dy, x0 + 0.3 * dx, y0 + 0.3 * dy
                geom = {
                    "type": "Polygon",
                    "coordinates": [shell, [[hx0, hy0], [hx0, hy1], [hx1, hy1], [hx1, hy0], [hx0, hy0]]],
                }
            elif kind < 0.25:  # one field in two parts across a canal
                xm = (x0 + x1) / 2
                geom = {
                    "type": "MultiPolygon",
                    "coordinates": [
                        [[[x0, y0], [xm - 0.02 * dx, y0], [xm - 0.02 * dx, y1], [x0, y1], [x0, y0]]],
                        [[[xm + 0.02 * dx, y0], [x1, y0], [x1, y1], [xm + 0.02 * dx, y1], [xm + 0.02 * dx, y0]]],
                    ],
                }
            else:
                geom = {"type": "Polygon", "coordinates": [shell]}
            fid = 1000 * (ROLES.index(role) + 1) + len(feats)
            feats.append(
                {
                    "type": "Feature",
                    "id": str(fid),
                    "properties": {
                        "CLASS1": code,
                        "SUBCLASS1": str(int(rng.integers(1, 9))),
                        "ACRES": round(float(0.84 * dx * 87000 * 0.84 * dy * 111000 / 4046.86), 3),
                        "MULTIUSE": "S",
                        "SURVEYAREA": "SACRAMENTO",
                        "SURVEYYEAR": "2015",
                        "SYNTHETIC": True,
                    },
                    "geometry": geom,
                }
            )
    return feats


def write_seed_equivalents(directory: Path) -> SeedFiles:
    """Write the six SYNTHETIC equivalents of the seed-study files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict[str, Any]] = {}
    for k, role in enumerate(ROLES):
        scene_id, acquired, coefs, (west, south, east, north) = SYNTHETIC_SCENES[role]
        # the scene footprint: a little larger than the AOI, as with the real cropped scenes
        ring = " ".join(
            f"{x},{y}"
            for x, y in [
                (west - 0.1, south - 0.05),
                (east + 0.1, south - 0.05),
                (east + 0.1, north + 0.05),
                (west - 0.1, north + 0.05),
                (west - 0.1, south - 0.05),
            ]
        )
        bands = "\n".join(BAND_XML.format(n=i + 1, coef=float(c)) for i, c in enumerate(coefs))
        (directory / f"{role}_scene_cropped_metadata.xml").write_text(
            METADATA_XML.format(scene_id=scene_id, acquired=acquired, satellite=scene_id[-4:], ring=ring, bands=bands)
        )
        aoi = {
            "type": "Polygon",
            "coordinates": [[[west, south], [west, north], [east, north], [east, south], [west, south]]],
        }
        (directory / f"aoi-{role}.geojson").write_text(json.dumps(aoi))
        feats = _survey(role, (west, south, east, north), seed=20 + k)
        (directory / f"ground-truth-{role}.geojson").write_text(json.dumps(feats))
        expected[role] = {"scene_id": scene_id, "acquired": acquired, "features": len(feats), "gains": coefs}
    return SeedFiles(directory, False, expected)
