"""Postprocessors: ``median_blur`` (a block-wise mask filter) and ``vectorize`` (mask -> GeoJSON polygons).

Masks are tiny seeded uint8 GeoTIFFs (0 non-crop, 1 crop, 255 nodata) on a 3 m EPSG:32610 grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from cropseg.errors import ConfigError
from cropseg.scene_ops import apply_filters
from cropseg.types import IGNORE, MaskFilter, Vectorizer
from cropseg_plugins.median_blur import MedianBlur
from cropseg_plugins.vectorize import Vectorize

LEFT, TOP, RES = 630000.0, 4240000.0, 3.0
PIXEL_HA = RES * RES / 1e4


def write_mask(path: Path, mask: np.ndarray, *, crs="EPSG:32610", transform=None) -> Path:
    transform = transform or from_origin(LEFT, TOP, RES, RES)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=mask.shape[1],
        height=mask.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=IGNORE,
    ) as dst:
        dst.write(mask.astype(np.uint8), 1)
    return path


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def random_mask(seed: int = 0, shape=(300, 257)) -> np.ndarray:
    """A seeded 0/1 mask with blobs and salt-and-pepper noise, plus nodata (a block and scattered pixels)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 10 + 1, shape[1] // 10 + 1)) < 0.5
    mask = np.kron(coarse, np.ones((10, 10), dtype=bool))[: shape[0], : shape[1]].astype(np.uint8)
    flip = rng.random(shape) < 0.15
    mask[flip] ^= 1
    mask[20:60, 200:240] = IGNORE
    mask[rng.random(shape) < 0.01] = IGNORE
    return mask


# --------------------------------------------------------------------------------------------------
# median_blur
# --------------------------------------------------------------------------------------------------


def whole_image_median(mask: np.ndarray, kernel: int) -> np.ndarray:
    """What the docs promise: nodata seen as non-crop by the filter, and nodata again afterwards."""
    nodata = mask == IGNORE
    out = cv2.medianBlur(np.where(nodata, 0, mask).astype(np.uint8), kernel)
    out[nodata] = IGNORE
    return out


def test_median_blur_implements_the_mask_filter_interface():
    f = MedianBlur(kernel=5)
    assert isinstance(f, MaskFilter)
    assert f.halo == 2


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("block", [64, 100])
def test_median_blur_blockwise_equals_whole_image(tmp_path, kernel, block):
    mask = random_mask(seed=kernel * 100 + block)
    src = write_mask(tmp_path / "mask.tif", mask)
    out = apply_filters(src, [("median_blur", MedianBlur(kernel=kernel))], tmp_path / "out.tif", block)
    got = read_band(out)
    expected = whole_image_median(mask, kernel)
    assert got.shape == (300, 257)
    np.testing.assert_array_equal(got, expected)
    # the filter did something (the noise is gone in places), and nodata stayed nodata
    assert np.any(got != mask)
    np.testing.assert_array_equal(got == IGNORE, mask == IGNORE)
    assert set(np.unique(got)) <= {0, 1, IGNORE}


def test_median_blur_output_keeps_the_grid(tmp_path):
    mask = random_mask(seed=3)
    src = write_mask(tmp_path / "mask.tif", mask)
    out = apply_filters(src, [("median_blur", MedianBlur(kernel=5))], tmp_path / "out.tif", 64)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
        assert b.nodata == IGNORE and b.dtypes[0] == "uint8"


def test_two_filters_chain_blockwise_equals_whole_image(tmp_path):
    mask = random_mask(seed=7)
    src = write_mask(tmp_path / "mask.tif", mask)
    filters = [("median_blur", MedianBlur(kernel=3)), ("median_blur2", MedianBlur(kernel=7))]
    out = apply_filters(src, filters, tmp_path / "out.tif", 64)
    expected = whole_image_median(whole_image_median(mask, 3), 7)
    np.testing.assert_array_equal(read_band(out), expected)
    # the intermediate file is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "out.tif"]


def test_median_blur_kernel_one_is_identity(tmp_path):
    mask = random_mask(seed=1)
    src = write_mask(tmp_path / "mask.tif", mask)
    out = apply_filters(src, [("median_blur", MedianBlur(kernel=1))], tmp_path / "out.tif", 64)
    np.testing.assert_array_equal(read_band(out), mask)


def test_no_filters_copies_the_mask(tmp_path):
    mask = random_mask(seed=2)
    src = write_mask(tmp_path / "mask.tif", mask)
    out = apply_filters(src, [], tmp_path / "out.tif", 64)
    np.testing.assert_array_equal(read_band(out), mask)


@pytest.mark.parametrize("kernel", [0, 2, 4, -3, 5.0, "5"])
def test_median_blur_kernel_validation(kernel):
    with pytest.raises(ConfigError, match="kernel"):
        MedianBlur(kernel=kernel)


# --------------------------------------------------------------------------------------------------
# vectorize
# --------------------------------------------------------------------------------------------------


def polygons_in_utm(path: Path) -> gpd.GeoDataFrame:
    gdf = gpd.read_file(path)
    assert gdf.crs is not None and gdf.crs.to_epsg() == 4326
    return gdf.to_crs("EPSG:32610")


def pixel_bounds(r0, r1, c0, c1) -> tuple[float, float, float, float]:
    return (LEFT + c0 * RES, TOP - r1 * RES, LEFT + c1 * RES, TOP - r0 * RES)


def test_vectorize_implements_the_vectorizer_interface():
    assert isinstance(Vectorize(), Vectorizer)


@pytest.mark.parametrize("block", [16, 23, 1024])
def test_vectorize_field_across_block_seams_is_one_polygon(tmp_path, block):
    mask = np.zeros((100, 90), dtype=np.uint8)
    mask[10:70, 5:80] = 1  # a 60 x 75 pixel field crossing several seams for block 16/23
    src = write_mask(tmp_path / "mask.tif", mask)
    res = Vectorize(min_area_ha=0, block_size=block).vectorize(src, tmp_path / "fields.geojson")
    assert res.n_polygons == 1
    assert res.area_ha == pytest.approx(60 * 75 * PIXEL_HA, abs=1e-9)
    gdf = polygons_in_utm(res.path)
    assert len(gdf) == 1
    poly = gdf.geometry.iloc[0]
    assert poly.geom_type == "Polygon"
    np.testing.assert_allclose(poly.bounds, pixel_bounds(10, 70, 5, 80), atol=0.05)
    assert poly.area == pytest.approx(60 * 75 * RES * RES, rel=1e-3)  # after the EPSG:4326 round trip
    assert gdf["area_ha"].iloc[0] == pytest.approx(4.05, abs=1e-9)  # 4500 px x 9 m²


@pytest.mark.parametrize("block", [8, 16, 1024])
def test_vectorize_irregular_field_with_hole_across_seams(tmp_path, block):
    """An L-shaped field with a hole straddling seams: one polygon, the hole kept, exact area."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[4:40, 4:20] = 1
    mask[28:40, 4:50] = 1
    mask[30:36, 10:40] = 0  # the hole: inside the field, crossing the seams at columns 16, 24, 32
    src = write_mask(tmp_path / "mask.tif", mask)
    res = Vectorize(min_area_ha=0, block_size=block).vectorize(src, tmp_path / "fields.geojson")
    n_crop = int(mask.sum())
    assert res.n_polygons == 1
    assert res.area_ha == pytest.approx(n_crop * PIXEL_HA, abs=1e-9)
    poly = polygons_in_utm(res.path).geometry.iloc[0]
    assert poly.geom_type == "Polygon"
    assert len(poly.interiors) == 1
    hole = shapely.Polygon(poly.interiors[0])
    assert hole.area == pytest.approx(6 * 30 * RES * RES, rel=1e-3)  # ~1 cm coordinate precision
    np.testing.assert_allclose(hole.bounds, pixel_bounds(30, 36, 10, 40), atol=0.05)


def test_vectorize_output_is_rfc7946_geojson_inside_the_raster(tmp_path):
    rng = np.random.default_rng(5)
    mask = (rng.random((80, 70)) < 0.3).astype(np.uint8)
    mask[:, 60:] = IGNORE
    src = write_mask(tmp_path / "mask.tif", mask)
    res = Vectorize(min_area_ha=0, block_size=32).vectorize(src, tmp_path / "out" / "fields.geojson")
    data = json.loads(res.path.read_text())
    assert data["type"] == "FeatureCollection"
    assert len(data["features"]) == res.n_polygons > 1
    lon, lat = np.asarray(data["features"][0]["geometry"]["coordinates"][0][0])
    assert -124 < lon < -120 and 36 < lat < 40  # longitude/latitude order (RFC 7946), not UTM metres
    gdf = polygons_in_utm(res.path)
    west, south, east, north = LEFT, TOP - 80 * RES, LEFT + 70 * RES, TOP
    minx, miny, maxx, maxy = gdf.total_bounds
    tol = 0.05  # GeoJSON keeps 7 decimals of a degree (about 1 cm)
    assert minx >= west - tol and maxx <= east + tol and miny >= south - tol and maxy <= north + tol
    # nodata columns hold no polygon
    assert maxx <= LEFT + 60 * RES + tol
    # every crop pixel is counted once: polygons exactly tile the crop pixels
    assert res.area_ha == pytest.approx(int(np.sum(mask == 1)) * PIXEL_HA, abs=1e-6)
    assert gdf.geometry.area.sum() == pytest.approx(int(np.sum(mask == 1)) * RES * RES, rel=1e-3)
    # ids 1..n, sorted by decreasing area
    assert list(gdf["id"]) == list(range(1, len(gdf) + 1))
    assert list(gdf["area_ha"]) == sorted(gdf["area_ha"], reverse=True)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_vectorize_random_mask_does_not_depend_on_block_size(tmp_path, connectivity):
    rng = np.random.default_rng(11)
    mask = (rng.random((90, 75)) < 0.45).astype(np.uint8)
    src = write_mask(tmp_path / "mask.tif", mask)
    whole = Vectorize(min_area_ha=0, connectivity=connectivity, block_size=1024).vectorize(
        src, tmp_path / "whole.geojson"
    )
    blocks = Vectorize(min_area_ha=0, connectivity=connectivity, block_size=16).vectorize(
        src, tmp_path / "blocks.geojson"
    )
    assert blocks.n_polygons == whole.n_polygons
    assert blocks.area_ha == pytest.approx(whole.area_ha, abs=1e-6)


def test_vectorize_connectivity8_diagonal_chain_across_a_seam_is_one_polygon(tmp_path):
    """Pixels touching only at corners form one shape with connectivity 8, whole image or block-wise."""
    mask = np.zeros((40, 40), dtype=np.uint8)
    for i in range(10, 24):  # a diagonal chain crossing the block seam at row/column 16
        mask[i, i] = 1
    src = write_mask(tmp_path / "mask.tif", mask)
    whole = Vectorize(min_area_ha=0, connectivity=8, block_size=1024).vectorize(src, tmp_path / "whole.geojson")
    assert whole.n_polygons == 1
    blocks = Vectorize(min_area_ha=0, connectivity=8, block_size=16).vectorize(src, tmp_path / "blocks.geojson")
    assert blocks.n_polygons == 1
    assert blocks.area_ha == pytest.approx(14 * PIXEL_HA, abs=1e-9)


def test_vectorize_connectivity4_keeps_corner_touching_fields_apart(tmp_path):
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[6:16, 6:16] = 1
    mask[16:26, 16:26] = 1  # touches the first only at a corner, on the seam of block 16
    src = write_mask(tmp_path / "mask.tif", mask)
    for block in (16, 1024):
        res = Vectorize(min_area_ha=0, connectivity=4, block_size=block).vectorize(src, tmp_path / f"f{block}.geojson")
        assert res.n_polygons == 2
        assert res.area_ha == pytest.approx(200 * PIXEL_HA, abs=1e-9)


def test_vectorize_min_area_drops_small_polygons(tmp_path):
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[5:45, 5:35] = 1  # 1200 px = 1.08 ha
    mask[50:53, 50:53] = 1  # 9 px = 0.0081 ha
    mask[50:60, 5:15] = 1  # 100 px = 0.09 ha
    src = write_mask(tmp_path / "mask.tif", mask)
    everything = Vectorize(min_area_ha=0, block_size=16).vectorize(src, tmp_path / "all.geojson")
    assert everything.n_polygons == 3 and everything.n_dropped == 0
    assert everything.area_ha == pytest.approx(1309 * PIXEL_HA, abs=1e-9)
    default = Vectorize(block_size=16).vectorize(src, tmp_path / "default.geojson")  # 0.1 ha: a small field
    assert (default.n_polygons, default.n_dropped) == (1, 2)
    assert default.area_ha + default.area_dropped_ha == pytest.approx(everything.area_ha, abs=1e-9)
    big = Vectorize(min_area_ha=0.01, block_size=16).vectorize(src, tmp_path / "big.geojson")
    assert big.n_polygons == 2
    assert big.area_ha == pytest.approx(1300 * PIXEL_HA, abs=1e-9)
    biggest = Vectorize(min_area_ha=0.5, block_size=16).vectorize(src, tmp_path / "biggest.geojson")
    assert biggest.n_polygons == 1
    assert biggest.area_ha == pytest.approx(1.08, abs=1e-9)
    assert list(polygons_in_utm(biggest.path)["area_ha"]) == [pytest.approx(1.08, abs=1e-9)]


def test_vectorize_empty_mask(tmp_path):
    mask = np.zeros((50, 40), dtype=np.uint8)
    mask[:, 30:] = IGNORE
    src = write_mask(tmp_path / "mask.tif", mask)
    res = Vectorize(min_area_ha=0, block_size=16).vectorize(src, tmp_path / "none.geojson")
    assert res.n_polygons == 0
    assert res.area_ha == 0.0
    data = json.loads(res.path.read_text())
    assert data["type"] == "FeatureCollection" and data["features"] == []


def test_vectorize_geographic_mask_areas_in_metres(tmp_path):
    """A mask in EPSG:4326: areas are computed in metres (a UTM CRS), not in square degrees."""
    w, n = -121.60, 38.30
    d = 3.5e-5  # degrees per pixel (about 3 m x 3.9 m at 38.3 N)
    transform = from_origin(w, n, d, d)
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[20:70, 10:90] = 1
    src = write_mask(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=transform)
    res = Vectorize(min_area_ha=0, block_size=32).vectorize(src, tmp_path / "f.geojson")
    assert res.n_polygons == 1
    field = shapely.box(w + 10 * d, n - 70 * d, w + 90 * d, n - 20 * d)
    expected_m2 = gpd.GeoSeries([field], crs="EPSG:4326").to_crs("EPSG:32610").area.iloc[0]
    assert 4000 * 9 < expected_m2 < 4000 * 16  # 4000 pixels of about 3 m x 3.9 m
    assert res.area_ha == pytest.approx(expected_m2 / 1e4, rel=1e-3)


@pytest.mark.parametrize("opts", [{"connectivity": 6}, {"min_area_ha": -1}, {"simplify": -0.5}])
def test_vectorize_option_validation(opts):
    with pytest.raises(ConfigError):
        Vectorize(**opts)
