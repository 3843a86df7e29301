"""Tiny SYNTHETIC scenes with bands beyond PlanetScope's four, for tests/test_band_roles.py: a 6-band
Landsat-like surface-reflectance scene (blue, green, red, nir, swir1, swir2) and an NDVI-only stack (one
float band per date). Seeded, real CRS (EPSG:32610) and transform; the geometry and ground truth are
:func:`cropseg.testing.write_tiny_scene`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from cropseg.testing import TinyScene, write_tiny_scene

#: Landsat-like surface reflectance of crop and bare soil (blue, green, red, nir, swir1, swir2): green
#: crops are dark in SWIR (leaf water), soil bright
CROP_SR = (0.04, 0.08, 0.05, 0.40, 0.18, 0.08)
SOIL_SR = (0.10, 0.14, 0.18, 0.26, 0.34, 0.28)
#: Landsat Collection 2 Level-2 surface reflectance: reflectance = DN * 2.75e-5 - 0.2
L2_SCALE, L2_OFFSET = 2.75e-5, -0.2


def _truth(sc: TinyScene) -> np.ndarray:
    truth = np.zeros((sc.height, sc.width), bool)
    for r0, r1, c0, c1 in sc.crop_boxes:
        truth[r0:r1, c0:c1] = True
    r0, r1, c0, c1 = sc.hole_box
    truth[r0:r1, c0:c1] = False
    return truth


def _rewrite(sc: TinyScene, data: np.ndarray, dtype: str, nodata: float | None) -> None:
    with rasterio.open(sc.image) as src:
        prof = src.profile
    prof.update(count=data.shape[0], dtype=dtype, nodata=nodata)
    with rasterio.open(sc.image, "w", **prof) as dst:
        dst.write(data.astype(dtype))


def write_landsat_scene(directory: Path, *, name: str = "landsat", seed: int = 0, noise: float = 0.01) -> TinyScene:
    """A 6-band uint16 scene in Landsat C2 L2 DN (``L2_SCALE``, ``L2_OFFSET``), nodata 0 in the last 8 columns."""
    sc = write_tiny_scene(directory, name=name, seed=seed)
    rng = np.random.default_rng(seed + 100)
    truth = _truth(sc)
    refl = np.where(truth[None], np.asarray(CROP_SR)[:, None, None], np.asarray(SOIL_SR)[:, None, None])
    refl = refl + rng.normal(0, noise, size=refl.shape)
    dn = np.clip(np.round((refl - L2_OFFSET) / L2_SCALE), 1, 65535)
    dn[:, :, sc.nodata_cols_from :] = 0
    _rewrite(sc, dn, "uint16", 0)
    return sc


def write_ndvi_stack(
    directory: Path, n_dates: int, *, name: str = "ndvi", seed: int = 0, noise: float = 0.03
) -> TinyScene:
    """One float32 GeoTIFF of ``n_dates`` NDVI bands (one per date; nodata -9999 in the last 8 columns):
    crop greens up and is harvested within the season, soil stays near 0.15."""
    sc = write_tiny_scene(directory, name=name, seed=seed)
    rng = np.random.default_rng(seed + 200)
    truth = _truth(sc)
    season = np.sin(np.linspace(0.2, np.pi - 0.2, n_dates))
    crop = 0.2 + 0.6 * season
    soil = np.full(n_dates, 0.15)
    ndvi = np.where(truth[None], crop[:, None, None], soil[:, None, None])
    ndvi = ndvi + rng.normal(0, noise, size=ndvi.shape)
    ndvi[:, :, sc.nodata_cols_from :] = -9999
    _rewrite(sc, ndvi, "float32", -9999)
    return sc
