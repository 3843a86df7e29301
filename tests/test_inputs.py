"""Inputs: Planet metadata XML, vector ground truth and AOIs (synthetic and the real seed-study files), and
the ``local`` source.

Tests marked ``shared`` read the seed study's files through the ``seed_data`` fixture: the real ones in
``../shared/data/sacramento-dwr-2015`` (beside the repository, never copied into it) when present, else SYNTHETIC
equivalents generated in the same formats (tests/seed_files.py), so they run on any clone.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from cropseg.errors import ConfigError, InputFileError, RasterFormatError
from cropseg.planet_metadata import parse_metadata
from cropseg.testing import TINY_COEFFICIENTS, write_planet_metadata, write_tiny_scene
from cropseg.types import DWR_CROP_CLASSES, RasterGroundTruth, Scene, SceneSet, VectorGroundTruth
from cropseg.vector import read_aoi, read_vector
from cropseg_plugins.local import LocalSource
from cropseg_plugins.rasterize import RasterizeLabeler

TO_LL = Transformer.from_crs("EPSG:32610", "EPSG:4326", always_xy=True)
TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32610", always_xy=True)


# --------------------------------------------------------------------------------------------------
# Planet metadata XML
# --------------------------------------------------------------------------------------------------


def test_parse_synthetic_metadata(tmp_path):
    coefs = (1.5e-05, 2.25e-05, 3.125e-05, 4.0625e-05)
    path = write_planet_metadata(
        tmp_path / "m.xml", "20170601_180425_abcd", coefficients=coefs, epsg=32611, acquired="2017-06-01T18:04:25+00:00"
    )
    meta = parse_metadata(path)
    assert meta.path == path
    assert meta.identifier == "20170601_180425_abcd_3B_AnalyticMS"
    assert meta.scene_id == "20170601_180425_abcd"
    assert meta.acquired == datetime(2017, 6, 1, 18, 4, 25, tzinfo=timezone.utc)
    assert meta.reflectance_coefficients == {1: coefs[0], 2: coefs[1], 3: coefs[2], 4: coefs[3]}
    assert meta.gains() == coefs
    assert meta.gains(2) == coefs[:2]
    assert meta.epsg == 32611
    assert meta.num_bands == 4


def test_metadata_gains_for_a_missing_band(tmp_path):
    meta = parse_metadata(write_planet_metadata(tmp_path / "m.xml", "x", coefficients=TINY_COEFFICIENTS[:3]))
    assert meta.gains(3) == TINY_COEFFICIENTS[:3]
    with pytest.raises(InputFileError, match=r"\[4\]"):
        meta.gains(4)


def test_metadata_of_the_tiny_scene(tmp_path):
    tiny = write_tiny_scene(tmp_path, name="train")
    meta = parse_metadata(tiny.metadata)
    assert meta.gains() == TINY_COEFFICIENTS
    assert meta.scene_id == "20170601_180425_trai"


@pytest.mark.shared
@pytest.mark.parametrize("role", ["train", "test"])
def test_parse_seed_metadata(seed_data, role):
    expected = seed_data.expected[role]
    meta = parse_metadata(seed_data.path(f"{role}_scene_cropped_metadata.xml"))
    assert meta.scene_id == expected["scene_id"]
    assert meta.acquired == datetime.fromisoformat(expected["acquired"])
    assert meta.acquired.tzinfo is not None and meta.acquired.isoformat() == expected["acquired"]
    assert meta.epsg == 32610
    assert meta.num_bands == 4
    gains = meta.gains()
    assert len(gains) == 4 and all(1e-5 < g < 1e-4 for g in gains)
    if expected["gains"] is not None:
        assert gains == expected["gains"]
    other = parse_metadata(seed_data.path(f"{'test' if role == 'train' else 'train'}_scene_cropped_metadata.xml"))
    assert gains != other.gains() and meta.scene_id != other.scene_id


@pytest.mark.parametrize(
    "content",
    [
        '<?xml version="1.0"?><root><a>1</a></root>',
        '<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document/></kml>',
        "this is not xml at all <",
        "",
    ],
    ids=["other_xml", "kml", "not_xml", "empty"],
)
def test_non_planet_xml_is_an_input_file_error(tmp_path, content):
    path = tmp_path / "other.xml"
    path.write_text(content)
    with pytest.raises(InputFileError) as exc:
        parse_metadata(path)
    assert str(path) in str(exc.value)


def test_metadata_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        parse_metadata(tmp_path / "missing.xml")


def test_metadata_with_a_bad_coefficient(tmp_path):
    path = write_planet_metadata(tmp_path / "m.xml", "x")
    path.write_text(path.read_text().replace(repr(float(TINY_COEFFICIENTS[1])), "abc"))
    with pytest.raises(InputFileError, match="abc"):
        parse_metadata(path)


# --------------------------------------------------------------------------------------------------
# vector files: the DWR ground truth and AOIs of the seed study (real, or synthetic equivalents)
# --------------------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("role", ["train", "test"])
def test_read_seed_ground_truth(seed_data, role):
    count = seed_data.expected[role]["features"]
    path = seed_data.path(f"ground-truth-{role}.geojson")
    assert path.read_text().lstrip().startswith("[")  # a bare list of features, which GDAL does not read
    gdf = read_vector(path)
    assert len(gdf) == count
    assert gdf.crs is not None and gdf.crs.to_epsg() == 4326
    assert set(gdf["CLASS1"]) <= set("GRFPTDCV")
    assert set(gdf.geometry.geom_type) <= {"Polygon", "MultiPolygon"}
    # every polygon lies inside the role's AOI (the files are clipped to it)
    aoi = read_aoi(seed_data.path(f"aoi-{role}.geojson"), "EPSG:4326")
    assert gdf.intersects(aoi).all()


@pytest.mark.shared
@pytest.mark.parametrize("role", ["train", "test"])
def test_read_seed_aoi_in_utm(seed_data, role):
    path = seed_data.path(f"aoi-{role}.geojson")
    raw = json.loads(path.read_text())
    assert raw["type"] == "Polygon"  # a bare geometry
    aoi = read_aoi(path, "EPSG:32610")
    assert aoi.geom_type == "Polygon" and aoi.is_valid
    corners = np.asarray(raw["coordinates"][0])
    xs, ys = TO_UTM.transform(corners[:, 0], corners[:, 1])
    np.testing.assert_allclose(aoi.bounds, (min(xs), min(ys), max(xs), max(ys)), atol=1e-6)
    assert 500000 < aoi.bounds[0] < 700000 and 4.2e6 < aoi.bounds[1] < 4.3e6  # UTM 10N metres
    # a few km a side: 10..60 km²
    assert 1e7 < aoi.area < 6e7


def blank_scene_over(aoi: shapely.Geometry, path: Path, res: float = 30.0) -> Path:
    """A blank 4-band uint16 GeoTIFF (all DN 1000, no nodata) on a ``res`` grid covering ``aoi`` (EPSG:32610)."""
    west, south, east, north = aoi.bounds
    west, north = np.floor(west / res) * res, np.ceil(north / res) * res
    width = int(np.ceil((east - west) / res))
    height = int(np.ceil((north - south) / res))
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=4,
        dtype="uint16",
        crs="EPSG:32610",
        transform=from_origin(west, north, res, res),
    ) as dst:
        dst.write(np.full((4, height, width), 1000, dtype=np.uint16))
    return path


@pytest.mark.shared
@pytest.mark.parametrize("role", ["train", "test"])
def test_rasterize_seed_ground_truth_matches_polygon_area(seed_data, tmp_path, role):
    aoi = read_aoi(seed_data.path(f"aoi-{role}.geojson"), "EPSG:32610")
    image = blank_scene_over(aoi, tmp_path / "blank.tif")
    gt_path = seed_data.path(f"ground-truth-{role}.geojson")
    scene = Scene(name=role, path=image, gains=(1e-4,) * 4, nodata=None, ground_truth=VectorGroundTruth(gt_path))
    res = RasterizeLabeler().label(scene, tmp_path / "labels.tif")
    grid = scene.grid
    assert res.counts["ignore"] == 0  # no nodata value and no AOI: every pixel is valid
    assert res.counts["crop"] + res.counts["noncrop"] == grid.width * grid.height
    # reference: the crop polygons (read independently of cropseg) clipped to the raster, in m²
    feats = json.loads(gt_path.read_text())
    gdf = gpd.GeoDataFrame.from_features(feats, crs="EPSG:4326").to_crs("EPSG:32610")
    crop = gdf[gdf["CLASS1"].isin(DWR_CROP_CLASSES)]
    reference = shapely.make_valid(crop.geometry.union_all()).intersection(shapely.box(*grid.bounds)).area
    crop_area = res.counts["crop"] * grid.pixel_area
    assert grid.pixel_area == 900.0
    assert reference > 1e6  # hundreds of hectares of fields
    assert crop_area == pytest.approx(reference, rel=0.03)


# --------------------------------------------------------------------------------------------------
# local source
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path):
    d = tmp_path / "scenes"
    return write_tiny_scene(d, name="train", seed=1), write_tiny_scene(d, name="test", seed=2)


def aoi_file(path: Path, tiny, r0, r1, c0, c1) -> Path:
    """A GeoJSON AOI (bare geometry, EPSG:4326) covering pixel rows r0..r1-1 and columns c0..c1-1."""
    pts = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
    ring = [list(TO_LL.transform(*tiny.xy(r, c))) for c, r in pts]
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return path


def test_local_two_files_with_scale(tmp_path, pair):
    train, test = pair
    src = LocalSource(
        train_image=str(train.image), test_image=str(test.image), ground_truth=str(train.ground_truth), scale=2e-4
    )
    ss = src.load(tmp_path / "cache")
    assert isinstance(ss, SceneSet) and ss.synthetic is False
    assert (ss.train.path, ss.test.path) == (train.image, test.image)
    for scene in (ss.train, ss.test):
        assert scene.window is None and scene.aoi is None
        assert scene.gains == (2e-4,) * 4
        assert scene.nodata == 0
        assert scene.grid.shape == (64, 64)
        assert scene.grid.transform == from_origin(train.left, train.top, 3.0, 3.0)
        assert scene.metadata["reflectance"] == "scale=0.0002"
        assert isinstance(scene.ground_truth, VectorGroundTruth)
        assert scene.ground_truth.path == train.ground_truth
    assert ss.metadata == {"train_scene_id": "train", "test_scene_id": "test"}


def test_local_metadata_xml_gains_are_used(tmp_path, pair):
    train, test = pair
    coefs = (1e-05, 2e-05, 3e-05, 4e-05)
    xml = write_planet_metadata(tmp_path / "custom_metadata.xml", "20160831_180231_0e0e", coefficients=coefs)
    src = LocalSource(
        train_image=str(train.image),
        test_image=str(test.image),
        train_metadata=str(xml),
        ground_truth=str(train.ground_truth),
    )
    ss = src.load(tmp_path / "cache")
    assert ss.train.gains == coefs
    assert ss.train.metadata["scene_id"] == "20160831_180231_0e0e"
    assert ss.train.metadata["reflectance"] == "toa_xml"
    assert ss.train.metadata["acquired"] == "2017-06-01T18:04:25+00:00"
    assert ss.test.gains == (1e-4,) * 4  # no test metadata: the scale
    # reflectance is DN x the XML's coefficient, per band
    with rasterio.open(train.image) as f:
        dn = f.read(window=Window(0, 0, 4, 4)).astype(np.float32)
    with ss.train.reader() as reader:
        blk = reader.read(Window(0, 0, 4, 4))
    np.testing.assert_allclose(blk.reflectance, dn * np.asarray(coefs, dtype=np.float32)[:, None, None], rtol=1e-6)


def test_local_band_order_selects_the_matching_coefficients(tmp_path, pair):
    train, test = pair
    coefs = (1e-05, 2e-05, 3e-05, 4e-05)
    xml = write_planet_metadata(tmp_path / "m.xml", "x", coefficients=coefs)
    ss = LocalSource(
        train_image=str(train.image),
        test_image=str(test.image),
        train_metadata=str(xml),
        test_metadata=str(xml),
        bands=(4, 3, 2, 1),
        ground_truth=str(train.ground_truth),
    ).load(tmp_path)
    assert ss.train.bands == (4, 3, 2, 1)
    assert ss.train.gains == (4e-05, 3e-05, 2e-05, 1e-05)


def test_local_one_image_two_aois(tmp_path, pair):
    tiny, _ = pair
    train_aoi = aoi_file(tmp_path / "aoi_train.geojson", tiny, 0, 32, 0, 64)
    test_aoi = aoi_file(tmp_path / "aoi_test.geojson", tiny, 32, 64, 0, 64)
    ss = LocalSource(
        image=str(tiny.image), train_aoi=str(train_aoi), test_aoi=str(test_aoi), ground_truth=str(tiny.ground_truth)
    ).load(tmp_path / "cache")
    assert ss.train.path == ss.test.path == tiny.image
    assert ss.train.window == Window(0, 0, 64, 32)
    assert ss.test.window == Window(0, 32, 64, 32)
    assert ss.train.grid.shape == ss.test.grid.shape == (32, 64)
    assert ss.train.grid.transform == from_origin(tiny.left, tiny.top, 3.0, 3.0)
    assert ss.test.grid.transform == from_origin(tiny.left, tiny.top - 32 * 3.0, 3.0, 3.0)
    assert ss.train.grid.crs == CRS.from_epsg(32610)
    # the AOIs are on the scenes, in the scene CRS
    np.testing.assert_allclose(ss.train.aoi.bounds, (tiny.left, tiny.top - 96, tiny.left + 192, tiny.top), atol=1e-3)
    # labelling the train window gives the top half of the tiny scene's labels
    res = RasterizeLabeler().label(ss.train, tmp_path / "train_labels.tif")
    (r0, r1, c0, c1), (h0, h1, h2, h3) = tiny.crop_boxes[0], tiny.hole_box
    assert r1 <= 32
    assert res.counts == {
        "crop": (r1 - r0) * (c1 - c0) - (h1 - h0) * (h3 - h2),
        "ignore": 32 * 8,
        "noncrop": 32 * 64 - 640 - 256,
    }
    with rasterio.open(res.path) as f:
        assert (f.height, f.width) == (32, 64)
        assert f.transform == ss.train.grid.transform


def test_local_aoi_partly_outside_the_image_is_clipped(tmp_path, pair):
    tiny, _ = pair
    train_aoi = aoi_file(tmp_path / "aoi_train.geojson", tiny, -20, 16, 40, 100)
    test_aoi = aoi_file(tmp_path / "aoi_test.geojson", tiny, 32, 64, 0, 64)
    ss = LocalSource(
        image=str(tiny.image), train_aoi=str(train_aoi), test_aoi=str(test_aoi), ground_truth=str(tiny.ground_truth)
    ).load(tmp_path / "cache")
    assert ss.train.window == Window(40, 0, 24, 16)


def test_local_aoi_outside_the_image(tmp_path, pair):
    tiny, _ = pair
    far = aoi_file(tmp_path / "far.geojson", tiny, 1000, 1100, 1000, 1100)
    test_aoi = aoi_file(tmp_path / "aoi_test.geojson", tiny, 32, 64, 0, 64)
    with pytest.raises(InputFileError) as exc:
        LocalSource(
            image=str(tiny.image), train_aoi=str(far), test_aoi=str(test_aoi), ground_truth=str(tiny.ground_truth)
        ).load(tmp_path / "cache")
    assert str(far) in str(exc.value)


def test_local_three_band_image_is_a_raster_format_error(tmp_path, pair):
    train, _ = pair
    three = write_tiny_scene(tmp_path / "three", name="three", bands=3)
    with rasterio.open(three.image) as f:
        assert f.count == 3
    with pytest.raises(RasterFormatError) as exc:
        LocalSource(
            train_image=str(train.image), test_image=str(three.image), ground_truth=str(train.ground_truth)
        ).load(tmp_path / "cache")
    assert str(three.image) in str(exc.value)
    assert "3" in str(exc.value)


@pytest.mark.parametrize("option", ["test_image", "ground_truth", "train_metadata", "test_aoi"])
def test_local_missing_file_names_the_file(tmp_path, pair, option):
    train, test = pair
    missing = tmp_path / "nowhere" / f"{option}.dat"
    opts = {"train_image": str(train.image), "test_image": str(test.image), "ground_truth": str(train.ground_truth)}
    if option == "test_aoi":
        opts["train_aoi"] = str(aoi_file(tmp_path / "aoi.geojson", train, 0, 32, 0, 64))
    opts[option] = str(missing)
    with pytest.raises(InputFileError) as exc:
        LocalSource(**opts).load(tmp_path / "cache")
    assert str(missing) in str(exc.value)
    assert option in str(exc.value)


def test_local_raster_ground_truth(tmp_path, pair):
    train, test = pair
    gt = tmp_path / "classes.tif"
    with rasterio.open(
        gt,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="uint8",
        crs="EPSG:32610",
        transform=from_origin(train.left, train.top, 3.0, 3.0),
        nodata=0,
    ) as dst:
        dst.write(np.full((1, 64, 64), 2, dtype=np.uint8))
    ss = LocalSource(
        train_image=str(train.image),
        test_image=str(test.image),
        ground_truth=str(gt),
        crop_values=[1, "5"],
        ignore_values=[3],
    ).load(tmp_path / "cache")
    assert ss.train.ground_truth == RasterGroundTruth(gt, (1, 5), (3,))
    with pytest.raises(ConfigError, match="crop_values"):
        LocalSource(train_image=str(train.image), test_image=str(test.image), ground_truth=str(gt)).load(tmp_path)


def test_local_role_ground_truth_overrides_the_shared_one(tmp_path, pair):
    train, test = pair
    ss = LocalSource(
        train_image=str(train.image),
        test_image=str(test.image),
        ground_truth=str(train.ground_truth),
        test_ground_truth=str(test.ground_truth),
        uncovered="ignore",
        attribute="CLASS1",
        crop_values=["F"],
    ).load(tmp_path)
    assert ss.train.ground_truth == VectorGroundTruth(train.ground_truth, "CLASS1", ("F",), None, "ignore")
    assert ss.test.ground_truth.path == test.ground_truth


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"uncovered": "maybe"}, "uncovered"),
        ({"bands": (1, 2, 3)}, "bands"),
        ({"scale": 0}, "scale"),
    ],
)
def test_local_bad_options(opts, match):
    with pytest.raises(ConfigError, match=match):
        LocalSource(**opts)


def test_local_inconsistent_image_options(tmp_path, pair):
    train, test = pair
    aoi = str(aoi_file(tmp_path / "aoi.geojson", train, 0, 32, 0, 64))
    gt = str(train.ground_truth)
    with pytest.raises(ConfigError, match="not both"):
        LocalSource(image=str(train.image), train_image=str(train.image), ground_truth=gt).load(tmp_path)
    with pytest.raises(ConfigError, match="test_aoi"):
        LocalSource(image=str(train.image), train_aoi=aoi, ground_truth=gt).load(tmp_path)
    with pytest.raises(ConfigError, match="test_image"):
        LocalSource(train_image=str(train.image), ground_truth=gt).load(tmp_path)
    with pytest.raises(ConfigError, match="ground_truth"):
        LocalSource(train_image=str(train.image), test_image=str(test.image)).load(tmp_path)


def test_generated_seed_equivalents_read_like_the_real_files(tmp_path):
    """The SYNTHETIC stand-ins for the seed-study files (used when the real ones are absent) parse through the
    same readers, whichever set the ``seed_data`` fixture picked on this machine."""
    from seed_files import write_seed_equivalents

    seed = write_seed_equivalents(tmp_path)
    assert not seed.real
    for role in ("train", "test"):
        meta = parse_metadata(seed.path(f"{role}_scene_cropped_metadata.xml"))
        assert meta.scene_id == seed.expected[role]["scene_id"] and meta.gains() == seed.expected[role]["gains"]
        assert "SYNTHETIC" in seed.path(f"{role}_scene_cropped_metadata.xml").read_text()
        gdf = read_vector(seed.path(f"ground-truth-{role}.geojson"))
        assert len(gdf) == seed.expected[role]["features"] > 50
        assert gdf["SYNTHETIC"].all() and {"Polygon", "MultiPolygon"} <= set(gdf.geometry.geom_type)
        assert gdf.geometry.apply(lambda g: len(getattr(g, "interiors", ()))).max() == 1  # farmstead holes
        assert gdf.within(read_aoi(seed.path(f"aoi-{role}.geojson"), "EPSG:4326")).all()
