"""Labelers on tiny SYNTHETIC scenes whose geometry is known exactly.

The tiny scene (``cropseg.testing.write_tiny_scene``) is 64x64 pixels of 3 m in EPSG:32610 with nodata in
the last 8 columns; its ground truth is written in EPSG:4326 with every vertex on a pixel corner, so once
reprojected back to the scene CRS a pixel-centre rasterization is exact.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cropseg.errors import GroundTruthError, InputFileError
from cropseg.testing import TINY_COEFFICIENTS, write_tiny_scene
from cropseg.types import CROP, IGNORE, NONCROP, RasterGroundTruth, Scene, VectorGroundTruth
from cropseg_plugins.contours import ContoursLabeler
from cropseg_plugins.rasterize import RasterizeLabeler

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def make_scene(tiny, ground_truth=None, **kwargs) -> Scene:
    gt = ground_truth if ground_truth is not None else VectorGroundTruth(tiny.ground_truth)
    return Scene(name="t", path=tiny.image, gains=TINY_COEFFICIENTS, nodata=0, ground_truth=gt, **kwargs)


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def box_mask(tiny, box) -> np.ndarray:
    r0, r1, c0, c1 = box
    m = np.zeros((tiny.height, tiny.width), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def crop_truth(tiny, *, fill_hole: bool = False) -> np.ndarray:
    """Boolean crop mask of the tiny scene: the crop boxes minus the hole (unless ``fill_hole``)."""
    crop = np.zeros((tiny.height, tiny.width), dtype=bool)
    for box in tiny.crop_boxes:
        crop |= box_mask(tiny, box)
    if not fill_hole:
        crop &= ~box_mask(tiny, tiny.hole_box)
    return crop


def nodata_mask(tiny) -> np.ndarray:
    m = np.zeros((tiny.height, tiny.width), dtype=bool)
    m[:, tiny.nodata_cols_from :] = True
    return m


def expected_labels(tiny) -> np.ndarray:
    """The exact label raster of ``rasterize`` with ``uncovered="noncrop"``."""
    lab = np.where(crop_truth(tiny), CROP, NONCROP).astype(np.uint8)
    lab[nodata_mask(tiny)] = IGNORE
    return lab


def counts_of(arr: np.ndarray) -> dict[str, int]:
    return {
        "noncrop": int(np.sum(arr == NONCROP)),
        "crop": int(np.sum(arr == CROP)),
        "ignore": int(np.sum(arr == IGNORE)),
    }


def pixel_box(tiny, r0, r1, c0, c1) -> shapely.Polygon:
    """The polygon covering pixel rows r0..r1-1 and columns c0..c1-1, in the scene CRS."""
    x0, y0 = tiny.xy(r0, c0)
    x1, y1 = tiny.xy(r1, c1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_scene(tmp_path / "scene")


@pytest.fixture
def rasterized(tiny, tmp_path):
    out = tmp_path / "labels.tif"
    res = RasterizeLabeler().label(make_scene(tiny), out)
    return res, read_band(out)


# --------------------------------------------------------------------------------------------------
# rasterize: vector ground truth
# --------------------------------------------------------------------------------------------------


def test_rasterize_exact_counts(tiny, rasterized):
    res, arr = rasterized
    (a0, a1, a2, a3), (b0, b1, b2, b3) = tiny.crop_boxes
    h0, h1, h2, h3 = tiny.hole_box
    crop = (a1 - a0) * (a3 - a2) + (b1 - b0) * (b3 - b2) - (h1 - h0) * (h3 - h2)
    ignore = tiny.height * (tiny.width - tiny.nodata_cols_from)
    noncrop = tiny.width * tiny.height - crop - ignore
    assert (crop, noncrop, ignore) == (880, 2704, 512)  # the 64x64 tiny scene's geometry, spelt out
    assert dict(res.counts) == {"crop": crop, "noncrop": noncrop, "ignore": ignore}
    # the reported counts are those of the file written
    assert counts_of(arr) == dict(res.counts)


def test_rasterize_pixels_match_the_geometry_after_reprojection(tiny, rasterized):
    """Ground truth in EPSG:4326 burnt onto the EPSG:32610 grid lands on exactly the right pixels."""
    _, arr = rasterized
    np.testing.assert_array_equal(arr, expected_labels(tiny))
    # the corners of each crop box, and the pixels just outside them (a half-pixel shift would fail here)
    for r0, r1, c0, c1 in tiny.crop_boxes:
        assert arr[r0, c0] == CROP and arr[r1 - 1, c1 - 1] == CROP
        assert arr[r0 - 1, c0] == NONCROP and arr[r0, c0 - 1] == NONCROP
        assert arr[r1, c1 - 1] == NONCROP and arr[r1 - 1, c1] == NONCROP


def test_rasterize_hole_is_noncrop(tiny, rasterized):
    _, arr = rasterized
    r0, r1, c0, c1 = tiny.hole_box
    assert np.all(arr[r0:r1, c0:c1] == NONCROP)
    # the ring of the field around the hole is crop
    assert np.all(arr[r0 - 1, c0:c1] == CROP) and np.all(arr[r1, c0:c1] == CROP)
    assert np.all(arr[r0:r1, c0 - 1] == CROP) and np.all(arr[r0:r1, c1] == CROP)


def test_rasterize_nodata_columns_are_ignore(tiny, rasterized):
    _, arr = rasterized
    assert np.all(arr[:, tiny.nodata_cols_from :] == IGNORE)
    assert not np.any(arr[:, : tiny.nodata_cols_from] == IGNORE)


def test_rasterize_bare_list_of_features_same_as_feature_collection(tmp_path, tiny, rasterized):
    res_fc, arr_fc = rasterized
    listed = write_tiny_scene(tmp_path / "listed", ground_truth_list=True)
    assert listed.ground_truth.read_text().lstrip().startswith("[")
    res = RasterizeLabeler().label(make_scene(listed), tmp_path / "listed.tif")
    np.testing.assert_array_equal(read_band(res.path), arr_fc)
    assert dict(res.counts) == dict(res_fc.counts)


def test_rasterize_uncovered_ignore(tmp_path, tiny):
    gt = VectorGroundTruth(tiny.ground_truth, uncovered="ignore")
    res = RasterizeLabeler().label(make_scene(tiny, gt), tmp_path / "l.tif")
    arr = read_band(res.path)
    crop = crop_truth(tiny)
    surveyed_noncrop = box_mask(tiny, tiny.noncrop_box)  # the "U" polygon
    expected = np.full(arr.shape, IGNORE, dtype=np.uint8)
    expected[surveyed_noncrop] = NONCROP
    expected[crop] = CROP
    expected[nodata_mask(tiny)] = IGNORE
    np.testing.assert_array_equal(arr, expected)
    r0, r1, c0, c1 = tiny.noncrop_box
    assert res.counts["noncrop"] == (r1 - r0) * (c1 - c0) == 340
    assert res.counts["crop"] == 880
    # the hole is covered by no polygon: ignored too
    h0, h1, h2, h3 = tiny.hole_box
    assert np.all(arr[h0:h1, h2:h3] == IGNORE)


def test_rasterize_aoi_outside_is_ignore(tmp_path, tiny):
    aoi = pixel_box(tiny, 4, 40, 10, 50)
    res = RasterizeLabeler().label(make_scene(tiny, aoi=aoi), tmp_path / "l.tif")
    arr = read_band(res.path)
    inside = box_mask(tiny, (4, 40, 10, 50))
    expected = np.where(inside, expected_labels(tiny), IGNORE).astype(np.uint8)
    np.testing.assert_array_equal(arr, expected)
    assert res.counts["ignore"] == tiny.width * tiny.height - 36 * 40
    assert res.counts["crop"] == int(np.sum(crop_truth(tiny) & inside))


def test_rasterize_output_geotiff_is_on_the_scene_grid(tmp_path, tiny):
    scene = make_scene(tiny)
    out = tmp_path / "sub" / "labels.tif"  # missing parent folders are created
    res = RasterizeLabeler().label(scene, out)
    assert res.path == out and out.is_file()
    assert not list(out.parent.glob(".*partial"))
    with rasterio.open(out) as src:
        assert src.crs == CRS.from_epsg(32610)
        assert src.transform == from_origin(tiny.left, tiny.top, tiny.res, tiny.res)
        assert (src.height, src.width) == (tiny.height, tiny.width)
        assert src.count == 1 and src.dtypes[0] == "uint8"
        assert src.nodata == IGNORE
    assert res.grid == scene.grid
    assert res.grid.shape == (tiny.height, tiny.width)


@pytest.mark.parametrize("labeler_cls", [RasterizeLabeler, ContoursLabeler])
def test_block_size_does_not_change_the_labels(tmp_path, tiny, labeler_cls):
    small = labeler_cls(block_size=16).label(make_scene(tiny), tmp_path / "small.tif")
    odd = labeler_cls(block_size=13).label(make_scene(tiny), tmp_path / "odd.tif")
    big = labeler_cls(block_size=512).label(make_scene(tiny), tmp_path / "big.tif")
    a, b, c = read_band(small.path), read_band(odd.path), read_band(big.path)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, c)
    assert dict(small.counts) == dict(big.counts) == dict(odd.counts)


@pytest.mark.parametrize("all_touched", [False, True])
def test_rasterize_all_touched_on_pixel_aligned_polygons(tmp_path, tiny, all_touched):
    """Polygon edges sit exactly on pixel edges, so all_touched may only grow a box by its touching ring;
    pixel centres inside every box stay exactly as without it."""
    res = RasterizeLabeler(all_touched=all_touched).label(make_scene(tiny), tmp_path / "l.tif")
    arr = read_band(res.path)
    core = crop_truth(tiny)
    assert np.all(arr[core] == CROP)
    assert res.counts["ignore"] == 512


# --------------------------------------------------------------------------------------------------
# rasterize: ground truth errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_list", [False, True], ids=["feature_collection", "bare_list"])
def test_ground_truth_not_overlapping_the_scene(tmp_path, as_list):
    other = write_tiny_scene(tmp_path / "other", ground_truth_list=as_list)
    far = write_tiny_scene(tmp_path / "far", left=700000.0)
    scene = make_scene(far, VectorGroundTruth(other.ground_truth))
    out = tmp_path / "l.tif"
    with pytest.raises(GroundTruthError) as exc:
        RasterizeLabeler().label(scene, out)
    assert str(other.ground_truth) in str(exc.value)
    assert not out.exists()


def test_ground_truth_without_crop_polygons(tmp_path, tiny):
    gt = VectorGroundTruth(tiny.ground_truth, crop_values=("X", "Y"))
    with pytest.raises(GroundTruthError, match="no crop polygon"):
        RasterizeLabeler().label(make_scene(tiny, gt), tmp_path / "l.tif")


def test_ground_truth_missing_attribute_names_the_attributes(tmp_path, tiny):
    gt = VectorGroundTruth(tiny.ground_truth, attribute="CROPTYPE")
    with pytest.raises(GroundTruthError) as exc:
        RasterizeLabeler().label(make_scene(tiny, gt), tmp_path / "l.tif")
    msg = str(exc.value)
    assert "CROPTYPE" in msg
    assert "CLASS1" in msg and "SURVEYYEAR" in msg  # what the file does have


def test_ground_truth_missing_file(tmp_path, tiny):
    missing = tmp_path / "nowhere" / "gt.geojson"
    with pytest.raises(InputFileError) as exc:
        RasterizeLabeler().label(make_scene(tiny, VectorGroundTruth(missing)), tmp_path / "l.tif")
    assert str(missing) in str(exc.value)


def test_scene_without_ground_truth(tmp_path, tiny):
    scene = Scene(name="t", path=tiny.image, gains=TINY_COEFFICIENTS, nodata=0)
    with pytest.raises(GroundTruthError):
        RasterizeLabeler().label(scene, tmp_path / "l.tif")


@pytest.mark.parametrize(
    "fmt,suffix,crs",
    [("GPKG", ".gpkg", "EPSG:4326"), ("ESRI Shapefile", ".shp", "EPSG:4326"), ("GPKG", ".gpkg", "EPSG:32610")],
)
def test_gpkg_and_shapefile_ground_truth_give_the_same_labels(tmp_path, tiny, rasterized, fmt, suffix, crs):
    _, arr_geojson = rasterized
    gdf = gpd.read_file(tiny.ground_truth).to_crs(crs)
    path = tmp_path / "gt_other" / f"ground_truth{suffix}"
    path.parent.mkdir()
    gdf.to_file(path, driver=fmt)
    res = RasterizeLabeler().label(make_scene(tiny, VectorGroundTruth(path)), tmp_path / "l.tif")
    np.testing.assert_array_equal(read_band(res.path), arr_geojson)


# --------------------------------------------------------------------------------------------------
# rasterize: raster ground truth
# --------------------------------------------------------------------------------------------------


def write_class_raster(path: Path, arr: np.ndarray, crs, transform, nodata=0) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(arr, 1)
    return path


def class_array(tiny) -> np.ndarray:
    """Class raster on the tiny grid: 1 crop, 2 non-crop, 0 nodata (rows 0..3), 3 water (rows 60..63)."""
    arr = np.where(crop_truth(tiny), 1, 2).astype(np.uint8)
    arr[:4] = 0
    arr[60:] = 3
    return arr


def test_raster_ground_truth_on_the_same_grid_is_exact(tmp_path, tiny):
    arr = class_array(tiny)
    path = write_class_raster(
        tmp_path / "classes.tif", arr, "EPSG:32610", from_origin(tiny.left, tiny.top, tiny.res, tiny.res)
    )
    gt = RasterGroundTruth(path, crop_values=(1,), ignore_values=(3,))
    res = RasterizeLabeler().label(make_scene(tiny, gt), tmp_path / "l.tif")
    out = read_band(res.path)
    expected = expected_labels(tiny)
    expected[:4] = IGNORE  # the class raster's nodata
    expected[60:] = IGNORE  # an ignore value
    np.testing.assert_array_equal(out, expected)
    assert dict(res.counts) == counts_of(expected)


def test_raster_ground_truth_partial_coverage_outside_is_ignore(tmp_path, tiny):
    """A class raster (with nodata) covering only the top half: the rest of the scene is ignore."""
    arr = class_array(tiny)[:32]
    path = write_class_raster(
        tmp_path / "classes.tif", arr, "EPSG:32610", from_origin(tiny.left, tiny.top, tiny.res, tiny.res)
    )
    res = RasterizeLabeler().label(make_scene(tiny, RasterGroundTruth(path, crop_values=(1,))), tmp_path / "l.tif")
    out = read_band(res.path)
    assert np.all(out[32:] == IGNORE)
    expected = expected_labels(tiny)[:32]
    expected[:4] = IGNORE
    np.testing.assert_array_equal(out[:32], expected)


@pytest.mark.parametrize("dst_crs", ["EPSG:3310", "EPSG:4326"])
def test_raster_ground_truth_in_another_crs_mostly_agrees(tmp_path, tiny, rasterized, dst_crs):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _, vector_labels = rasterized
    src_arr = np.where(crop_truth(tiny), 1, 2).astype(np.uint8)
    src_transform = from_origin(tiny.left, tiny.top, tiny.res, tiny.res)
    # half the scene's pixel size, so nearest-neighbour there and back loses little
    w, s = tiny.xy(tiny.height, 0)
    e, n = tiny.xy(0, tiny.width)
    transform, width, height = calculate_default_transform(
        "EPSG:32610", dst_crs, tiny.width, tiny.height, w, s, e, n, dst_width=2 * tiny.width, dst_height=2 * tiny.height
    )
    dst = np.zeros((height, width), dtype=np.uint8)
    reproject(
        src_arr,
        dst,
        src_transform=src_transform,
        src_crs="EPSG:32610",
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.nearest,
        src_nodata=0,
        dst_nodata=0,
    )
    path = write_class_raster(tmp_path / "classes.tif", dst, dst_crs, transform)
    res = RasterizeLabeler().label(make_scene(tiny, RasterGroundTruth(path, crop_values=(1,))), tmp_path / "l.tif")
    out = read_band(res.path)
    valid = ~nodata_mask(tiny)
    assert np.all(out[~valid] == IGNORE)
    both = valid & (out != IGNORE)
    assert both.sum() > 0.97 * valid.sum()  # only the warped raster's ragged edge may be nodata
    agreement = np.mean(out[both] == vector_labels[both])
    assert agreement > 0.95
    assert abs(res.counts["crop"] - 880) < 0.05 * 880


def test_raster_ground_truth_without_crop_pixels(tmp_path, tiny):
    arr = np.full((tiny.height, tiny.width), 2, dtype=np.uint8)
    path = write_class_raster(
        tmp_path / "classes.tif", arr, "EPSG:32610", from_origin(tiny.left, tiny.top, tiny.res, tiny.res)
    )
    out = tmp_path / "l.tif"
    with pytest.raises(GroundTruthError):
        RasterizeLabeler().label(make_scene(tiny, RasterGroundTruth(path, crop_values=(1,))), out)
    assert not out.exists()


def test_raster_ground_truth_missing_file(tmp_path, tiny):
    missing = tmp_path / "classes.tif"
    with pytest.raises(InputFileError) as exc:
        RasterizeLabeler().label(make_scene(tiny, RasterGroundTruth(missing, crop_values=(1,))), tmp_path / "l.tif")
    assert str(missing) in str(exc.value)


# --------------------------------------------------------------------------------------------------
# contours
# --------------------------------------------------------------------------------------------------


def edge_ring(tiny, box) -> np.ndarray:
    """Pixels within one pixel of the box's boundary: the last row/column inside and the first outside.

    The contours labeler moves vertices to OpenCV's pixel-centre coordinates (``- 0.5``), so a box edge on
    a pixel edge lands exactly half way between two pixel centres; ``cv2.fillPoly``'s tie rule then decides
    whether that row/column is in or out. Any other pixel is unambiguous.
    """
    r0, r1, c0, c1 = box
    m = np.zeros((tiny.height, tiny.width), dtype=bool)
    m[max(r0 - 1, 0) : r1 + 1, max(c0 - 1, 0) : c1 + 1] = True
    m[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = False
    return m


def test_contours_fills_holes_and_agrees_with_rasterize_elsewhere(tmp_path, tiny, rasterized):
    _, arr_r = rasterized
    res = ContoursLabeler().label(make_scene(tiny), tmp_path / "c.tif")
    arr_c = read_band(res.path)
    # the hole is filled
    h0, h1, h2, h3 = tiny.hole_box
    assert np.all(arr_c[h0:h1, h2:h3] == CROP)
    # nodata columns stay ignore
    assert np.all(arr_c[:, tiny.nodata_cols_from :] == IGNORE)
    assert res.counts["ignore"] == 512
    # away from the crop boxes' edges and outside the hole, contours == rasterize exactly
    ambiguous = np.zeros_like(arr_c, dtype=bool)
    for box in tiny.crop_boxes:
        ambiguous |= edge_ring(tiny, box)
    hole = box_mask(tiny, tiny.hole_box)
    keep = ~ambiguous & ~hole
    np.testing.assert_array_equal(arr_c[keep], arr_r[keep])
    # crop count = the crop boxes including the hole, give or take one pixel row/column per edge
    filled = crop_truth(tiny, fill_hole=True)
    assert filled.sum() == 1008
    tol = sum(2 * ((r1 - r0) + (c1 - c0)) + 4 for r0, r1, c0, c1 in tiny.crop_boxes)
    assert abs(res.counts["crop"] - int(filled.sum())) <= tol
    # and the surveyed non-crop polygon is not drawn (contours draws crop polygons only)
    r0, r1, c0, c1 = tiny.noncrop_box
    assert np.all(arr_c[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] == NONCROP)


def test_contours_needs_vector_ground_truth(tmp_path, tiny):
    arr = np.where(crop_truth(tiny), 1, 2).astype(np.uint8)
    path = write_class_raster(
        tmp_path / "classes.tif", arr, "EPSG:32610", from_origin(tiny.left, tiny.top, tiny.res, tiny.res)
    )
    with pytest.raises(GroundTruthError):
        ContoursLabeler().label(make_scene(tiny, RasterGroundTruth(path, crop_values=(1,))), tmp_path / "c.tif")
