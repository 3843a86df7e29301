"""The synthetic PlanetScope scene generator: format, determinism, footprint, metadata, ground truth."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from shapely.geometry import Polygon, shape

from cropseg_plugins.sample import synth
from cropseg_plugins.sample.synth import generate_scene

SIZE = 300
LEFT, TOP = 630000.0, 4240000.0
ACQUIRED = datetime(2015, 8, 29, 18, 30, 12, tzinfo=timezone.utc)
SCENE_ID = "20150829_183012_0c43"
CROP = set(synth.CROP_CLASSES)
NS = {
    "ps": "http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level",
    "eop": "http://earth.esa.int/eop",
    "gml": "http://www.opengis.net/gml",
}


def _generate(directory: Path, seed: int = 3, block_size: int = 512) -> synth.SyntheticScene:
    return generate_scene(
        directory,
        scene_id=SCENE_ID,
        seed=seed,
        width=SIZE,
        height=SIZE,
        left=LEFT,
        top=TOP,
        acquired=ACQUIRED,
        block_size=block_size,
    )


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> synth.SyntheticScene:
    return _generate(tmp_path_factory.mktemp("synth") / "scene")


@pytest.fixture(scope="module")
def dn(scene: synth.SyntheticScene) -> np.ndarray:
    return _read(scene.analytic)


def _coefficients(xml_path: Path) -> list[float]:
    root = ET.parse(xml_path).getroot()
    bands = root.findall(".//ps:bandSpecificMetadata", NS)
    return [float(b.findtext("ps:reflectanceCoefficient", namespaces=NS)) for b in bands]


def _crop_labels(scene: synth.SyntheticScene, transform) -> np.ndarray:
    """Burn the ground truth on the raster grid: crop 1 over non-crop 0 (uncovered land is non-crop)."""
    features = json.loads(scene.ground_truth.read_text())["features"]
    to_utm = Transformer.from_crs(4326, 32610, always_xy=True)
    shapes = []
    for f in sorted(features, key=lambda f: f["properties"]["CLASS1"] in CROP):
        geom = shape(f["geometry"])
        utm = shapely.transform(geom, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
        shapes.append((utm, 1 if f["properties"]["CLASS1"] in CROP else 0))
    return rasterize(shapes, out_shape=(SIZE, SIZE), transform=transform, fill=0, dtype="uint8")


def test_files_and_no_leftovers(scene: synth.SyntheticScene) -> None:
    d = scene.analytic.parent
    assert scene.scene_id == SCENE_ID
    assert scene.analytic == d / f"{SCENE_ID}_3B_AnalyticMS.tif"
    assert scene.metadata_xml == d / f"{SCENE_ID}_3B_AnalyticMS_metadata.xml"
    assert scene.ground_truth == d / f"{SCENE_ID}_ground_truth.geojson"
    assert sorted(p.name for p in d.iterdir()) == sorted(
        p.name for p in (scene.analytic, scene.metadata_xml, scene.ground_truth)
    )


def test_raster_format(scene: synth.SyntheticScene) -> None:
    with rasterio.open(scene.analytic) as src:
        assert (src.count, src.width, src.height) == (4, SIZE, SIZE)
        assert src.dtypes == ("uint16",) * 4
        assert src.crs.to_epsg() == 32610
        assert tuple(src.transform)[:6] == (3.0, 0.0, LEFT, 0.0, -3.0, TOP)
        assert src.nodata == 0
        assert src.descriptions == ("blue", "green", "red", "nir")
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.compression.name.lower() == "deflate"


def test_deterministic(tmp_path: Path, scene: synth.SyntheticScene, dn: np.ndarray) -> None:
    again = _generate(tmp_path / "again")
    assert np.array_equal(_read(again.analytic), dn)
    assert again.ground_truth.read_bytes() == scene.ground_truth.read_bytes()
    assert again.metadata_xml.read_bytes() == scene.metadata_xml.read_bytes()


@pytest.mark.parametrize("block_size", [256, 96])
def test_block_size_does_not_change_pixels(tmp_path: Path, dn: np.ndarray, block_size: int) -> None:
    other = _generate(tmp_path / "blocks", block_size=block_size)
    assert np.array_equal(_read(other.analytic), dn)


def test_other_seed_other_layout(tmp_path: Path, scene: synth.SyntheticScene, dn: np.ndarray) -> None:
    other = _generate(tmp_path / "seed", seed=4)
    assert not np.array_equal(_read(other.analytic), dn)
    assert other.ground_truth.read_bytes() != scene.ground_truth.read_bytes()


def test_footprint_tilted_with_nodata_outside(scene: synth.SyntheticScene, dn: np.ndarray) -> None:
    valid = dn[0] > 0
    # nodata is all bands or none
    assert np.array_equal(valid, np.all(dn > 0, axis=0))
    assert 0.6 <= valid.mean() < 0.95
    for r, c in [(0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)]:
        assert np.all(dn[:, r, c] == 0)
    # a tilted strip: the first valid column drifts steadily down the rows
    rows = np.flatnonzero(valid.any(axis=1))
    first_col = np.argmax(valid[rows], axis=1)
    assert abs(int(first_col[len(first_col) // 3]) - int(first_col[2 * len(first_col) // 3])) > 5
    # the footprint in the XML is the valid area
    root = ET.parse(scene.metadata_xml).getroot()
    coords = root.findtext(".//gml:target//gml:coordinates", namespaces=NS)
    lonlat = np.array([[float(v) for v in xy.split(",")] for xy in coords.split()])
    assert np.all((-122 < lonlat[:, 0]) & (lonlat[:, 0] < -121) & (38 < lonlat[:, 1]) & (lonlat[:, 1] < 39))
    x, y = Transformer.from_crs(4326, 32610, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    with rasterio.open(scene.analytic) as src:
        inside = rasterize(
            [Polygon(np.column_stack([x, y]))], out_shape=(SIZE, SIZE), transform=src.transform, dtype="uint8"
        ).astype(bool)
    assert (inside == valid).mean() > 0.995


def test_metadata_xml(scene: synth.SyntheticScene) -> None:
    text = scene.metadata_xml.read_text()
    assert re.search(r"<!--[^>]*SYNTHETIC", text)
    root = ET.parse(scene.metadata_xml).getroot()
    assert root.findtext(".//eop:identifier", namespaces=NS) == f"{SCENE_ID}_3B_AnalyticMS"
    assert root.findtext(".//ps:acquisitionDateTime", namespaces=NS) == "2015-08-29T18:30:12+00:00"
    assert root.findtext(".//eop:fileName", namespaces=NS) == scene.analytic.name
    assert root.findtext(".//ps:epsgCode", namespaces=NS) == "32610"
    assert root.findtext(".//ps:numRows", namespaces=NS) == str(SIZE)
    assert root.findtext(".//ps:numColumns", namespaces=NS) == str(SIZE)
    assert root.findtext(".//ps:numBands", namespaces=NS) == "4"
    bands = root.findall(".//ps:bandSpecificMetadata", NS)
    assert [b.findtext("ps:bandNumber", namespaces=NS) for b in bands] == ["1", "2", "3", "4"]
    assert all(b.findtext("ps:radiometricScaleFactor", namespaces=NS) == "0.01" for b in bands)
    for band in bands:  # coefficients round-trip exactly
        raw = band.findtext("ps:reflectanceCoefficient", namespaces=NS)
        assert repr(float(raw)) == raw
    coefs = _coefficients(scene.metadata_xml)
    assert np.allclose(coefs, synth.BASE_REFLECTANCE_COEFFICIENTS, rtol=0.05)


def test_reflectance_from_coefficients(scene: synth.SyntheticScene, dn: np.ndarray) -> None:
    coefs = np.asarray(_coefficients(scene.metadata_xml))[:, None, None]
    refl = dn * coefs
    valid = dn[0] > 0
    with rasterio.open(scene.analytic) as src:
        crop = _crop_labels(scene, src.transform).astype(bool)
    assert 0.2 < crop[valid].mean() < 0.7
    blue, red, nir = refl[0], refl[2], refl[3]
    assert np.median(nir[valid & crop]) > 0.25
    assert 0.02 < np.median(blue[valid]) < 0.2
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    assert np.median(ndvi[valid & crop]) > np.median(ndvi[valid & ~crop]) + 0.1


def test_ground_truth_geojson(scene: synth.SyntheticScene) -> None:
    fc = json.loads(scene.ground_truth.read_text())
    assert fc["type"] == "FeatureCollection"
    assert fc["synthetic"] is True and "synthetic" in fc["description"].lower()
    assert "crs" not in fc
    classes = set()
    crop_hole = False
    for f in fc["features"]:
        props = f["properties"]
        assert props["SURVEYAREA"] == "SACRAMENTO" and props["SURVEYYEAR"] == "2015" and props["SYNTHETIC"] is True
        assert isinstance(props["ACRES"], float) and props["ACRES"] > 0
        sub = props["SUBCLASS1"]
        assert props["LABEL"] == (props["CLASS1"] if sub == "**" else props["CLASS1"] + sub)
        classes.add(props["CLASS1"])
        geom = f["geometry"]
        assert geom["type"] in ("Polygon", "MultiPolygon")
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polys:
            for ring in rings:
                xy = np.asarray(ring)
                assert np.array_equal(xy[0], xy[-1])
                assert np.all((-122 < xy[:, 0]) & (xy[:, 0] < -121) & (38 < xy[:, 1]) & (xy[:, 1] < 39))
            assert Polygon(rings[0]).exterior.is_ccw  # RFC 7946 winding
            if len(rings) > 1 and props["CLASS1"] in CROP:
                crop_hole = True
        assert shape(geom).is_valid
    assert classes <= CROP | {"I", "NV", "U", "NW"}
    assert len(classes & CROP) >= 3
    assert {"U", "NW"} <= classes
    assert crop_hole


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    render = synth._render_block

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("disk on fire")
        return render(*args, **kwargs)

    monkeypatch.setattr(synth, "_render_block", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _generate(tmp_path / "fail", block_size=96)
    assert list((tmp_path / "fail").iterdir()) == []


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_scene(tmp_path, scene_id=SCENE_ID, seed=1, width=8, height=8, acquired=ACQUIRED)
    with pytest.raises(ValueError):
        generate_scene(tmp_path, scene_id="a/b", seed=1, width=64, height=64, acquired=ACQUIRED)
