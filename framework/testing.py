"""Helpers for testing cropseg and its plugins: tiny, seeded, SYNTHETIC scenes with a real CRS.

``write_tiny_scene`` writes a small 4-band PSScene-like GeoTIFF (EPSG:32610, 3 m), a Planet-schema
metadata XML and DWR-style ground truth whose geometry is known exactly, so tests can assert exact pixel
counts. Everything it writes is synthetic and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TINY_COEFFICIENTS = (2.2272e-05, 2.3287e-05, 2.6178e-05, 3.8579e-05)
CROP_REFLECTANCE = (0.05, 0.08, 0.05, 0.40)
SOIL_REFLECTANCE = (0.12, 0.15, 0.19, 0.25)

METADATA_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<!-- SYNTHETIC test metadata written by cropseg.testing; not a Planet product -->
<ps:EarthObservation xmlns:ps="http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level"
    xmlns:eop="http://earth.esa.int/eop" xmlns:opt="http://earth.esa.int/opt" xmlns:gml="http://www.opengis.net/gml"
    version="1.2.1">
  <gml:metaDataProperty><ps:EarthObservationMetaData>
    <eop:identifier>{scene_id}_3B_AnalyticMS</eop:identifier>
  </ps:EarthObservationMetaData></gml:metaDataProperty>
  <gml:using><eop:EarthObservationEquipment><eop:acquisitionParameters><ps:Acquisition>
    <ps:acquisitionDateTime>{acquired}</ps:acquisitionDateTime>
  </ps:Acquisition></eop:acquisitionParameters></eop:EarthObservationEquipment></gml:using>
  <gml:resultOf><ps:EarthObservationResult>
    <eop:product><ps:ProductInformation>
      <ps:spatialReferenceSystem><ps:epsgCode>{epsg}</ps:epsgCode></ps:spatialReferenceSystem>
      <ps:numBands>4</ps:numBands>
    </ps:ProductInformation></eop:product>
{bands}
  </ps:EarthObservationResult></gml:resultOf>
</ps:EarthObservation>
"""
BAND_TEMPLATE = """    <ps:bandSpecificMetadata>
      <ps:bandNumber>{n}</ps:bandNumber>
      <ps:radiometricScaleFactor>0.01</ps:radiometricScaleFactor>
      <ps:reflectanceCoefficient>{coef!r}</ps:reflectanceCoefficient>
    </ps:bandSpecificMetadata>"""


def write_planet_metadata(
    path: Path,
    scene_id: str,
    coefficients=TINY_COEFFICIENTS,
    epsg: int = 32610,
    acquired: str = "2017-06-01T18:04:25+00:00",
) -> Path:
    bands = "\n".join(BAND_TEMPLATE.format(n=i + 1, coef=float(c)) for i, c in enumerate(coefficients))
    path.write_text(METADATA_TEMPLATE.format(scene_id=scene_id, acquired=acquired, epsg=epsg, bands=bands))
    return path


@dataclass(frozen=True)
class TinyScene:
    """Paths and exact geometry of a tiny synthetic scene (pixel boxes are ``(row0, row1, col0, col1)``)."""

    image: Path
    metadata: Path
    ground_truth: Path
    width: int
    height: int
    left: float
    top: float
    res: float
    crop_boxes: tuple[tuple[int, int, int, int], ...]
    hole_box: tuple[int, int, int, int]
    noncrop_box: tuple[int, int, int, int]
    nodata_cols_from: int

    def xy(self, row: float, col: float) -> tuple[float, float]:
        return self.left + col * self.res, self.top - row * self.res


def write_tiny_scene(
    directory: Path,
    *,
    name: str = "tiny",
    width: int = 64,
    height: int = 64,
    seed: int = 0,
    left: float = 630000.0,
    top: float = 4240000.0,
    res: float = 3.0,
    noise: float = 0.01,
    epsg: int = 32610,
    bands: int = 4,
    ground_truth_list: bool = False,
) -> TinyScene:
    """Write ``<name>.tif`` (bands x uint16 DN, nodata 0 in columns >= ``width - 8``), ``<name>_metadata.xml``
    and ``<name>_ground_truth.geojson`` (EPSG:4326). Crop pixels look like green vegetation, the rest like
    soil. Ground truth: two crop fields (``CLASS1`` "F" with a hole, "V"), one urban polygon ("U")."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = height, width
    crop_boxes = ((h // 8, h // 2, w // 8, (5 * w) // 8), ((9 * h) // 16, (15 * h) // 16, (11 * w) // 16, w - 10))
    hole = (h // 4, (3 * h) // 8, w // 4, w // 2)
    noncrop = ((5 * h) // 8, (15 * h) // 16, w // 16, w // 3)
    nodata_from = w - 8
    truth = np.zeros((h, w), dtype=bool)
    for r0, r1, c0, c1 in crop_boxes:
        truth[r0:r1, c0:c1] = True
    truth[hole[0] : hole[1], hole[2] : hole[3]] = False
    refl = np.where(
        truth[None], np.asarray(CROP_REFLECTANCE)[:, None, None], np.asarray(SOIL_REFLECTANCE)[:, None, None]
    )
    refl = refl + rng.normal(0, noise, size=refl.shape)
    coefs = np.asarray(TINY_COEFFICIENTS)[:, None, None]
    dn = np.clip(np.round(refl / coefs), 1, 65535).astype(np.uint16)
    dn[:, :, nodata_from:] = 0
    if bands != 4:
        dn = np.concatenate([dn, dn[:1]], axis=0)[:bands]
    image = directory / f"{name}.tif"
    transform = from_origin(left, top, res, res)
    with rasterio.open(
        image,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=bands,
        dtype="uint16",
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=0,
    ) as dst:
        dst.write(dn)
    meta = write_planet_metadata(directory / f"{name}_metadata.xml", f"20170601_180425_{name[:4]}", epsg=epsg)

    to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)

    def ring(r0, r1, c0, c1):
        pts = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
        return [list(to_ll.transform(left + c * res, top - r * res)) for c, r in pts]

    def feature(fid, cls, rings):
        return {
            "type": "Feature",
            "id": str(fid),
            "properties": {"CLASS1": cls, "SURVEYYEAR": "2015", "SYNTHETIC": True},
            "geometry": {"type": "Polygon", "coordinates": rings},
        }

    feats = [
        feature(1, "F", [ring(*crop_boxes[0]), ring(*hole)[::-1]]),
        feature(2, "V", [ring(*crop_boxes[1])]),
        feature(3, "U", [ring(*noncrop)]),
    ]
    gt = directory / f"{name}_ground_truth.geojson"
    payload = feats if ground_truth_list else {"type": "FeatureCollection", "synthetic": True, "features": feats}
    gt.write_text(json.dumps(payload))
    return TinyScene(image, meta, gt, w, h, left, top, res, crop_boxes, hole, noncrop, nodata_from)


def local_overrides(train: TinyScene, test: TinyScene, classifier: str | None = None) -> list[str]:
    """Hydra overrides running the ``local`` source on two tiny scenes: 16-pixel spatial CV blocks (a 64x64
    scene holds 16), and a quick KNN grid, or ``classifier=<classifier>`` with its defaults when given."""
    return [
        "source=local",
        f"source.train_image={train.image}",
        f"source.test_image={test.image}",
        f"source.train_metadata={train.metadata}",
        f"source.test_metadata={test.metadata}",
        f"source.train_ground_truth={train.ground_truth}",
        f"source.test_ground_truth={test.ground_truth}",
        "train.spatial_block=16",
        # last, so callers can drop it with [:-1] and choose their own
        *(["classifier.k_grid=[3,5]"] if classifier is None else [f"classifier={classifier}"]),
    ]
