"""Deterministic synthetic PlanetScope PSScene-like scenes with DWR-style land-use survey ground truth.

:func:`generate_scene` writes, for one ``scene_id``, the three files a PlanetScope ``analytic`` order
provides plus a ground-truth survey:

* ``<scene_id>_3B_AnalyticMS.tif``: 4 bands uint16 (blue, green, red, near-IR), EPSG:32610, 3 m pixels,
  nodata 0 outside a tilted quadrilateral footprint, tiled 256x256 and DEFLATE-compressed.
* ``<scene_id>_3B_AnalyticMS_metadata.xml``: Planet's metadata schema, with the per-band
  ``reflectanceCoefficient`` used to turn reflectance into DN (``DN * coefficient = TOA reflectance``).
* ``<scene_id>_ground_truth.geojson``: a FeatureCollection (EPSG:4326) of survey polygons with DWR
  ``CLASS1`` codes: crops ``G R F P T D C V``, non-crop ``I NV U NW``.

The landscape is farmland near Sacramento in late summer: a road grid with irregular fields (orchards,
vineyards, rice, corn, tomatoes, pasture, senesced grain, fallow), farmsteads, towns, grassland with oaks,
reservoirs and a meandering river lined with riparian trees. The survey is deliberately imperfect, like
a real one: about 10% of fields changed between survey and image, and a stretch of the riparian trees is
mapped as an orchard.

How it stays deterministic and memory-bounded
---------------------------------------------
The layout is generated once as vector geometry in UTM (memory proportional to the number of objects),
each object carrying spectral parameters in a table. The raster is then written window by window: each
window rasterizes the objects that intersect it into object ids and evaluates the spectral model.
Every random quantity a pixel sees is a function of its absolute row/column (hashed value noise, hashed
white noise, sinusoidal row patterns in scene coordinates), so the output does not depend on the window
size and has no seams.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import shapely
from shapely import ops as shapely_ops
from shapely.geometry import LineString, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from cropseg.errors import ConfigError

__all__ = ["Difficulty", "SyntheticScene", "generate_scene", "CROP_CLASSES", "BASE_REFLECTANCE_COEFFICIENTS"]

log = logging.getLogger(__name__)

PIXEL_SIZE: float = 3.0
EPSG: int = 32610
BAND_NAMES: tuple[str, str, str, str] = ("blue", "green", "red", "nir")
#: Per-band TOA reflectance coefficients of a real 2016 PSScene (varied slightly per seed).
BASE_REFLECTANCE_COEFFICIENTS: tuple[float, float, float, float] = (2.2272e-05, 2.3287e-05, 2.6178e-05, 3.8579e-05)
#: DWR CLASS1 codes that are crops.
CROP_CLASSES: tuple[str, ...] = ("G", "R", "F", "P", "T", "D", "C", "V")
TILE_SIZE: int = 256
SQ_METRES_PER_ACRE: float = 4046.8564224

_TWO_PI = 2.0 * math.pi

# --------------------------------------------------------------------------------------------------
# Spectral endmembers: TOA reflectance (blue, green, red, NIR), before haze and sensor noise.
# --------------------------------------------------------------------------------------------------

_Spectrum = tuple[float, float, float, float]
GREEN_VEG: _Spectrum = (0.040, 0.075, 0.038, 0.460)
STRAW: _Spectrum = (0.105, 0.135, 0.170, 0.270)
SOIL: _Spectrum = (0.120, 0.150, 0.190, 0.250)
DRY_GRASS: _Spectrum = (0.100, 0.120, 0.150, 0.230)
TREE: _Spectrum = (0.035, 0.058, 0.040, 0.330)
OAK: _Spectrum = (0.035, 0.052, 0.045, 0.250)
CITRUS_TREE: _Spectrum = (0.030, 0.052, 0.034, 0.290)
VINE: _Spectrum = (0.045, 0.072, 0.052, 0.310)
LAWN: _Spectrum = (0.045, 0.080, 0.050, 0.400)
WATER: _Spectrum = (0.070, 0.060, 0.035, 0.020)
TURBID_WATER: _Spectrum = (0.095, 0.105, 0.085, 0.045)
RICE_WATER: _Spectrum = (0.075, 0.075, 0.060, 0.060)
ASPHALT: _Spectrum = (0.130, 0.130, 0.140, 0.160)
GRAVEL: _Spectrum = (0.160, 0.180, 0.210, 0.240)
CONCRETE: _Spectrum = (0.190, 0.200, 0.210, 0.230)
ROOF_DARK: _Spectrum = (0.090, 0.090, 0.095, 0.110)
ROOF_GREY: _Spectrum = (0.170, 0.170, 0.175, 0.190)
ROOF_TILE: _Spectrum = (0.100, 0.110, 0.160, 0.200)
ROOF_WHITE: _Spectrum = (0.300, 0.310, 0.310, 0.320)

#: Additive haze per band relative to blue (Rayleigh-like fall-off with wavelength).
_HAZE_BAND_FACTORS = np.array([1.0, 0.7, 0.45, 0.2], dtype=np.float32)

# Quantiles of the tree-canopy noise field (see _tree_noise) at exceedance 0, 0.05, ..., 1: the threshold
# that gives a wanted tree fraction. Measured once on a 2000x2000 sample.
_TREE_NOISE_QUANTILES = np.array(
    [
        1.022,
        0.494,
        0.394,
        0.323,
        0.266,
        0.215,
        0.169,
        0.125,
        0.084,
        0.044,
        0.004,
        -0.035,
        -0.076,
        -0.117,
        -0.16,
        -0.207,
        -0.258,
        -0.316,
        -0.386,
        -0.487,
        -1.024,
    ]
)


class Kind:
    """Actual land cover of a layout object (what the image shows, not what the survey says)."""

    MARGIN = 0  # weedy field margins, verges: the background
    GREEN_CROP = 1
    RICE = 2
    PASTURE = 3
    TRUCK = 4
    ORCHARD = 5
    CITRUS = 6
    VINEYARD = 7
    GRAIN = 8
    BARE = 9
    GRASSLAND = 10
    RIPARIAN = 11
    WATER = 12
    ASPHALT = 13
    GRAVEL = 14
    ROOF = 15
    YARD = 16
    PARK = 17
    PARKING = 18
    FARMYARD = 19
    # the hard preset only (see Difficulty): non-crop cover that looks like crop pixel by pixel
    GREEN_GRASS = 20  # irrigated-looking green grass: a crop's spectrum, clumpy texture, no rows
    SHRUB = 21  # dense shrubs: an orchard's spectrum, crowns scattered rather than in rows


#: Kinds that are a crop on the ground.
CROP_KINDS: frozenset[int] = frozenset(
    {Kind.GREEN_CROP, Kind.RICE, Kind.PASTURE, Kind.TRUCK, Kind.ORCHARD, Kind.CITRUS, Kind.VINEYARD, Kind.GRAIN}
)

# Survey (CLASS1) of a farmland field -> (probability, subclasses and their weights).
_FIELD_CLASSES: dict[str, tuple[float, dict[str, float]]] = {
    "D": (0.16, {"6": 0.4, "12": 0.3, "13": 0.2, "5": 0.05, "3": 0.05}),
    "F": (0.16, {"6": 0.6, "12": 0.2, "1": 0.1, "10": 0.1}),
    "V": (0.10, {"**": 1.0}),
    "G": (0.10, {"**": 0.6, "1": 0.2, "2": 0.2}),
    "R": (0.06, {"1": 1.0}),
    "P": (0.08, {"1": 0.6, "3": 0.4}),
    "T": (0.08, {"15": 0.8, "4": 0.2}),
    "C": (0.03, {"8": 0.6, "10": 0.4}),
    "I": (0.10, {"1": 0.7, "2": 0.3}),
    "fallow": (0.05, {}),  # idle land the survey missed: uncovered, non-crop
    "NV": (0.08, {"1": 1.0}),  # grass field, surveyed as native vegetation half of the time
}
_CLASS_KIND: dict[str, int] = {
    "D": Kind.ORCHARD,
    "F": Kind.GREEN_CROP,
    "V": Kind.VINEYARD,
    "G": Kind.GRAIN,
    "R": Kind.RICE,
    "P": Kind.PASTURE,
    "T": Kind.TRUCK,
    "C": Kind.CITRUS,
    "I": Kind.BARE,
    "fallow": Kind.BARE,
    "NV": Kind.GRASSLAND,
}
_P_CROP_NOW_BARE = 0.065  # surveyed crop, bare/fallow in the image
_CROP_FIELD_CLASSES = [c for c in _FIELD_CLASSES if c in CROP_CLASSES]
_P_NONCROP_NOW_CROP = 0.25  # surveyed idle / grass or unsurveyed, green crop in the image


@dataclass(frozen=True)
class SyntheticScene:
    """The files of one synthetic scene."""

    scene_id: str
    analytic: Path  # <dir>/<scene_id>_3B_AnalyticMS.tif
    metadata_xml: Path  # <dir>/<scene_id>_3B_AnalyticMS_metadata.xml
    ground_truth: Path  # <dir>/<scene_id>_ground_truth.geojson


@dataclass(frozen=True)
class Difficulty:
    """What makes a scene of the hard preset (``source.preset=hard``) hard; ``None`` = the default scene.

    * ``crop_share``: the labelled crop share of the scene (fields change cover and survey class together,
      at random, until the surveyed crop area reaches this share of the surveyed area): a train scene and a
      test scene with different shares, as two real scenes have.
    * ``mimic_fraction``: this share of the non-crop fields (idle, fallow, grass) become green grass or
      dense shrubs with a crop's or an orchard's spectrum, surveyed as native vegetation (non-crop): they
      differ from crop only in texture (clumpy, no rows) and context, not in a pixel's own bands.
    * ``label_noise``: this share of the surveyed fields carry the wrong side of the crop / non-crop line in
      the survey (crop surveyed as idle, non-crop as a field crop), on top of the default's stale survey.
    * ``band_gain``: per-band factors (blue, green, red, NIR) on the scene's reflectance: a brightness /
      season offset between the scenes (later in the season: brighter visible bands, less NIR).
    """

    crop_share: float
    mimic_fraction: float = 0.6
    label_noise: float = 0.05
    band_gain: tuple[float, float, float, float] | None = None


# --------------------------------------------------------------------------------------------------
# Hashing and noise: pure functions of absolute pixel coordinates.
# --------------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_K_ROW = np.uint64(0xD6E8FEB86659FD93)
_K_COL = np.uint64(0xA0761D6478BD642F)
_S27, _S30, _S31, _S40 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(40)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def _mix64_int(z: int) -> int:
    """SplitMix64 finaliser on a Python int (used to derive per-channel keys)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _channel_key(seed: int, channel: int) -> int:
    return _mix64_int(_mix64_int(seed & _MASK64) ^ (channel * 0x632BE59BD9B4E019 & _MASK64))


def _hash2(key: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """64-bit hash of (key, row, col), broadcasting ``rows`` against ``cols``."""
    r = rows.astype(np.uint64) * _K_ROW
    c = cols.astype(np.uint64) * _K_COL
    return _mix64(_mix64(r ^ np.uint64(key)) ^ c)


def _value_noise(rows: np.ndarray, cols: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the pixels ``rows x cols`` (1-D absolute indices, ascending).

    Lattice values are hashed from absolute lattice coordinates and interpolated with a smoothstep, so a
    pixel's value does not depend on which window it is computed in.
    """
    fy = (rows + 0.5) / cell
    fx = (cols + 0.5) / cell
    iy = np.floor(fy).astype(np.int64)
    ix = np.floor(fx).astype(np.int64)
    ty = (fy - iy).astype(np.float32)
    tx = (fx - ix).astype(np.float32)
    sy = ty * ty * (3 - 2 * ty)
    sx = tx * tx * (3 - 2 * tx)
    iy0, ix0 = int(iy[0]), int(ix[0])
    ly = np.arange(iy0, int(iy[-1]) + 2, dtype=np.int64)
    lx = np.arange(ix0, int(ix[-1]) + 2, dtype=np.int64)
    lattice = (_hash2(key, ly[:, None], lx[None, :]) >> _S40).astype(np.float32) * np.float32(2.0 / (1 << 24)) - 1
    jx = ix - ix0
    jy = iy - iy0
    along = lattice[:, jx] * (1 - sx) + lattice[:, jx + 1] * sx
    return along[jy] * (1 - sy)[:, None] + along[jy + 1] * sy[:, None]


def _gaussian_noise(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    """Approximately standard-normal white noise (Irwin-Hall of four 16-bit uniforms from one hash)."""
    z = _hash2(key, rows[:, None], cols[None, :])
    mask = np.uint64(0xFFFF)
    total = (z & mask).astype(np.float32)
    for shift in (16, 32, 48):
        total += ((z >> np.uint64(shift)) & mask).astype(np.float32)
    return (total * np.float32(1.0 / 65536.0) - 2.0) * np.float32(math.sqrt(3.0))


def _tree_threshold(fraction: np.ndarray) -> np.ndarray:
    """Threshold on the tree-noise field that leaves about ``fraction`` of pixels above it."""
    return np.interp(np.asarray(fraction, dtype=float) * 20.0, np.arange(21), _TREE_NOISE_QUANTILES)


# --------------------------------------------------------------------------------------------------
# Object parameter table
# --------------------------------------------------------------------------------------------------

_SCALAR_COLUMNS: tuple[str, ...] = (
    "fv",
    "tex_amp",
    "w_a",
    "w_b",
    "w_c",
    "grad_x",
    "grad_y",
    "shade",
    "row_cos",
    "row_sin",
    "k1",
    "a1",
    "ph1",
    "k2",
    "a2",
    "ph2",
    "tree_gain",
    "tree_thr",
    "bright_amp",
)
_SPECTRAL_COLUMNS: tuple[str, ...] = ("veg", "bg", "tree")


def _spec(s: _Spectrum | np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(s, dtype=float), (n, 4)).copy()


def _jitter(spec: np.ndarray, rng: np.random.Generator, bright_sd: float = 0.05, band_sd: float = 0.025) -> np.ndarray:
    """Per-object variation of an ``(n, 4)`` spectrum: overall brightness and a little per band."""
    n = spec.shape[0]
    return spec * (1 + rng.normal(0, bright_sd, (n, 1))) * (1 + rng.normal(0, band_sd, (n, 4)))


def _mix(a: _Spectrum | np.ndarray, b: _Spectrum | np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear mix ``(1 - t) * a + t * b`` of two spectra for each of ``len(t)`` objects."""
    t = np.asarray(t, dtype=float)[:, None]
    return (1 - t) * np.asarray(a, dtype=float)[None, :] + t * np.asarray(b, dtype=float)[None, :]


def _recipe(
    kind: int, n: int, rng: np.random.Generator, row_angles: tuple[float, float], subclass: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Spectral-model parameters for ``n`` objects of one land-cover ``kind``.

    The per-pixel model (see :func:`_render_block`) is: canopy fraction
    ``c = clip((fv + tex_amp * texture + gradient) * row_modulation, 0, 1)``, surface
    ``c * veg + (1 - c) * bg * (1 - shade * c)``, then tree crowns (``tree`` spectrum) where the tree noise
    exceeds ``tree_thr`` (sharpness ``tree_gain``), and a brightness texture ``bright_amp``.
    ``row_angles`` are the two directions (radians, scene coordinates) rows may run across.
    """
    u = rng.uniform
    w = rng.normal(0, 1, (n, 3))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    g_dir = u(0, _TWO_PI, n)
    g_mag = u(0, 4e-4, n)
    p: dict[str, Any] = {
        "kind": np.full(n, kind, dtype=np.int16),
        "fv": np.zeros(n),
        "tex_amp": np.full(n, 0.08),
        "w_a": w[:, 0],
        "w_b": w[:, 1],
        "w_c": w[:, 2],
        "grad_x": g_mag * np.cos(g_dir),
        "grad_y": g_mag * np.sin(g_dir),
        "shade": np.zeros(n),
        "row_cos": np.ones(n),
        "row_sin": np.zeros(n),
        "k1": np.zeros(n),
        "a1": np.zeros(n),
        "ph1": u(0, _TWO_PI, n),
        "k2": np.zeros(n),
        "a2": np.zeros(n),
        "ph2": u(0, _TWO_PI, n),
        "tree_gain": np.zeros(n),
        "tree_thr": np.ones(n),
        "bright_amp": np.full(n, 0.04),
        "veg": _jitter(_spec(GREEN_VEG, n), rng),
        "bg": _jitter(_spec(SOIL, n), rng),
        "tree": _jitter(_spec(TREE, n), rng),
    }

    def rows(
        period1: np.ndarray, amp1: np.ndarray, period2: np.ndarray | None = None, amp2: np.ndarray | None = None
    ) -> None:
        # Pixel (3 m box) averaging attenuates a row pattern of period P by sinc(3 / P).
        ang = np.where(rng.random(n) < 0.5, row_angles[0], row_angles[1])
        p["row_cos"], p["row_sin"] = np.cos(ang), np.sin(ang)
        p["k1"], p["a1"] = _TWO_PI / period1, amp1 * np.sinc(PIXEL_SIZE / period1)
        if period2 is not None and amp2 is not None:
            p["k2"], p["a2"] = _TWO_PI / period2, amp2 * np.sinc(PIXEL_SIZE / period2)

    def trees(fraction: np.ndarray, spectrum: _Spectrum = TREE) -> None:
        p["tree_gain"] = np.full(n, 4.0)
        p["tree_thr"] = _tree_threshold(fraction)
        p["tree"] = _jitter(_spec(spectrum, n), rng, 0.06, 0.03)

    soil = _jitter(_spec(SOIL, n) * u(0.72, 1.15, n)[:, None], rng, 0.02, 0.03)
    sub = subclass if subclass is not None else np.full(n, "", dtype=object)
    if kind == Kind.MARGIN:
        p["fv"] = u(0.08, 0.2, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.4, 0.8, n)), rng)
        p["bg"] = _jitter(_mix(DRY_GRASS, SOIL, u(0.2, 0.7, n)), rng)
        p["tex_amp"][:] = 0.12
        p["bright_amp"][:] = 0.08
    elif kind == Kind.GREEN_CROP:
        sunflower = (sub == "12") | (rng.random(n) < 0.05)
        sen = np.where(sunflower, u(0.3, 0.65, n), u(0.0, 0.12, n))
        p["fv"] = np.where(rng.random(n) < 0.15, u(0.45, 0.75, n), u(0.75, 0.97, n))
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, sen), rng, 0.06, 0.03)
        p["bg"] = soil
        p["tex_amp"] = u(0.05, 0.15, n)
        p["shade"][:] = 0.2
    elif kind == Kind.RICE:
        p["fv"] = u(0.8, 0.96, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.0, 0.15, n)), rng)
        p["bg"] = _jitter(_spec(RICE_WATER, n), rng)
        p["tex_amp"] = u(0.03, 0.08, n)
    elif kind == Kind.PASTURE:
        p["fv"] = u(0.45, 0.85, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.05, 0.4, n)), rng)
        p["bg"] = _jitter(_spec(DRY_GRASS, n), rng)
        p["tex_amp"] = u(0.1, 0.2, n)
        cut = rng.random(n) < 0.25  # hay windrows after a cut
        rows(u(6.0, 9.0, n), np.where(cut, 0.35, 0.0))
    elif kind == Kind.TRUCK:
        p["fv"] = u(0.35, 0.75, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.1, 0.55, n)), rng)
        p["bg"] = soil
        p["tex_amp"] = u(0.08, 0.14, n)
        rows(u(1.5, 2.1, n), np.full(n, 0.8))
    elif kind == Kind.ORCHARD:
        young = rng.random(n) < 0.15
        p["fv"] = np.where(young, u(0.15, 0.3, n), u(0.5, 0.8, n))
        p["veg"] = _jitter(_spec(TREE, n), rng)
        p["bg"] = _jitter(_mix(SOIL, DRY_GRASS, u(0.0, 1.0, n)) * u(0.75, 1.05, n)[:, None], rng)
        p["shade"] = u(0.3, 0.55, n)
        rows(u(5.5, 8.0, n), np.full(n, 0.7), u(4.5, 7.0, n), np.full(n, 0.5))
    elif kind == Kind.CITRUS:
        p["fv"] = u(0.72, 0.9, n)
        p["veg"] = _jitter(_spec(CITRUS_TREE, n), rng)
        p["bg"] = soil * 0.85
        p["shade"][:] = 0.5
        rows(u(5.5, 7.0, n), np.full(n, 0.35), u(4.0, 6.0, n), np.full(n, 0.25))
    elif kind == Kind.VINEYARD:
        p["fv"] = u(0.3, 0.55, n)
        p["veg"] = _jitter(_spec(VINE, n), rng)
        p["bg"] = _jitter(_mix(SOIL, DRY_GRASS, u(0.0, 1.0, n)), rng)
        p["shade"] = u(0.2, 0.4, n)
        rows(u(2.7, 3.6, n), np.full(n, 0.9))
    elif kind == Kind.GRAIN:
        regrowth = np.where(rng.random(n) < 0.2, u(0.2, 0.5, n), u(0.0, 0.08, n))
        p["fv"] = u(0.55, 0.95, n)
        p["veg"] = _jitter(_mix(STRAW, GREEN_VEG, regrowth), rng, 0.06, 0.03)
        p["bg"] = soil
        p["tex_amp"] = u(0.08, 0.16, n)
        rows(u(5.0, 12.0, n), u(0.1, 0.3, n))  # harvest swaths
    elif kind == Kind.BARE:
        p["fv"] = u(0.0, 0.1, n)
        p["veg"] = _jitter(_mix(STRAW, GREEN_VEG, u(0.0, 0.3, n)), rng)
        p["bg"] = _jitter(_spec(SOIL, n) * u(0.65, 1.25, n)[:, None], rng, 0.02, 0.03)
        p["tex_amp"][:] = 0.05
        p["bright_amp"] = u(0.05, 0.12, n)
    elif kind == Kind.GRASSLAND:
        p["fv"] = u(0.0, 0.12, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.3, 0.7, n)), rng)
        p["bg"] = _jitter(_spec(DRY_GRASS, n) * u(0.85, 1.15, n)[:, None], rng)
        p["bright_amp"][:] = 0.06
        trees(u(0.02, 0.15, n), OAK)
    elif kind == Kind.RIPARIAN:
        p["fv"] = u(0.2, 0.4, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, np.full(n, 0.3)), rng)
        p["bg"] = _jitter(_spec(DRY_GRASS, n), rng)
        trees(u(0.55, 0.75, n), TREE)
    elif kind == Kind.WATER:
        p["fv"] = u(0.05, 0.3, n)  # turbidity
        p["veg"] = _jitter(_spec(TURBID_WATER, n), rng)
        p["bg"] = _jitter(_spec(WATER, n), rng)
        p["tex_amp"][:] = 0.12
        p["bright_amp"][:] = 0.02
    elif kind == Kind.ASPHALT:
        p["bg"] = _jitter(_spec(ASPHALT, n) * u(0.85, 1.15, n)[:, None], rng, 0.02, 0.02)
        p["tex_amp"][:] = 0.0
        p["bright_amp"][:] = 0.04
    elif kind == Kind.GRAVEL:
        p["bg"] = _jitter(_spec(GRAVEL, n) * u(0.9, 1.1, n)[:, None], rng, 0.02, 0.02)
        p["fv"] = u(0.0, 0.05, n)
        p["veg"] = _jitter(_spec(DRY_GRASS, n), rng)
        p["tex_amp"][:] = 0.03
        p["bright_amp"][:] = 0.06
    elif kind == Kind.ROOF:
        which = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
        roofs = np.array([ROOF_DARK, ROOF_GREY, ROOF_TILE, ROOF_WHITE])[which]
        p["bg"] = _jitter(roofs * u(0.85, 1.2, n)[:, None], rng, 0.03, 0.02)
        p["tex_amp"][:] = 0.0
        p["bright_amp"][:] = 0.02
    elif kind == Kind.YARD:
        p["fv"] = u(0.3, 0.5, n)
        p["veg"] = _jitter(_spec(LAWN, n), rng)
        p["bg"] = _jitter(_mix(CONCRETE, SOIL, u(0.2, 0.8, n)), rng)
        p["tex_amp"][:] = 0.45
        p["w_a"], p["w_b"], p["w_c"] = np.full(n, 0.3), np.full(n, 0.1), np.full(n, 0.95)
        trees(u(0.12, 0.25, n), TREE)
    elif kind == Kind.PARK:
        p["fv"] = u(0.75, 0.9, n)
        p["veg"] = _jitter(_spec(LAWN, n), rng)
        p["bg"] = _jitter(_spec(DRY_GRASS, n), rng)
        trees(u(0.1, 0.25, n), TREE)
    elif kind == Kind.PARKING:
        p["bg"] = _jitter(_spec(ASPHALT, n) * u(0.95, 1.25, n)[:, None], rng, 0.02, 0.02)
        p["tex_amp"][:] = 0.0
        p["bright_amp"][:] = 0.06
    elif kind == Kind.FARMYARD:
        p["fv"] = u(0.05, 0.15, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.2, 0.6, n)), rng)
        p["bg"] = _jitter(_mix(GRAVEL, SOIL, u(0.0, 1.0, n)), rng)
        p["bright_amp"][:] = 0.08
        trees(u(0.2, 0.35, n), TREE)
    elif kind == Kind.GREEN_GRASS:  # a green crop's spectrum; clumpy at 6-20 m, no rows, uneven cover
        p["fv"] = u(0.55, 0.9, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.0, 0.35, n)), rng, 0.06, 0.03)
        p["bg"] = _jitter(_spec(DRY_GRASS, n), rng)
        p["tex_amp"] = u(0.3, 0.45, n)
        p["w_a"], p["w_b"], p["w_c"] = np.full(n, 0.55), np.full(n, 0.2), np.full(n, 0.81)
        p["bright_amp"][:] = 0.1
    elif kind == Kind.SHRUB:  # an orchard's canopy spectrum as scattered crowns instead of rows
        p["fv"] = u(0.1, 0.3, n)
        p["veg"] = _jitter(_mix(GREEN_VEG, STRAW, u(0.2, 0.5, n)), rng)
        p["bg"] = _jitter(_mix(SOIL, DRY_GRASS, u(0.0, 1.0, n)) * u(0.75, 1.05, n)[:, None], rng)
        p["shade"] = u(0.3, 0.55, n)
        trees(u(0.35, 0.6, n), TREE)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown kind {kind}")
    return p


class _ObjectTable:
    """Accumulates layout objects (geometry in draw order + spectral parameters), vectorised per kind."""

    def __init__(self, rng: np.random.Generator, row_angles: tuple[float, float]):
        self.rng = rng
        self.row_angles = row_angles
        self.geoms: list[np.ndarray] = []
        self.params: list[dict[str, np.ndarray]] = []

    def add(
        self,
        kind: int,
        geoms: np.ndarray | list[BaseGeometry],
        subclass: np.ndarray | None = None,
        **overrides: np.ndarray,
    ) -> None:
        """Append objects of one kind, drawn over every object added before them."""
        arr = np.asarray(geoms, dtype=object)
        if arr.size == 0:
            return
        keep = ~(shapely.is_empty(arr) | shapely.is_missing(arr))
        p = _recipe(kind, arr.size, self.rng, self.row_angles, subclass)
        for key, value in overrides.items():
            p[key] = np.broadcast_to(value, p[key].shape).copy()
        self.geoms.append(arr[keep])
        self.params.append({key: value[keep] for key, value in p.items()})

    def build(
        self, background: dict[str, np.ndarray], left: float, top: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Geometries and the table (row 0 is the background, row ``i + 1`` is ``geoms[i]``).

        ``cen_x`` / ``cen_y`` are object centroids in scene metres (x right of ``left``, y below ``top``).
        """
        geoms = np.concatenate(self.geoms) if self.geoms else np.empty(0, dtype=object)
        rows = [background, *self.params]
        table: dict[str, np.ndarray] = {"kind": np.concatenate([r["kind"] for r in rows]).astype(np.int16)}
        cx, cy = shapely.get_coordinates(shapely.centroid(geoms)).T if geoms.size else (np.empty(0), np.empty(0))
        table["cen_x"] = np.concatenate([[0.0], cx - left]).astype(np.float32)
        table["cen_y"] = np.concatenate([[0.0], top - cy]).astype(np.float32)
        for col in _SCALAR_COLUMNS:
            dtype = np.float64 if col in ("row_cos", "row_sin", "k1", "ph1", "k2", "ph2") else np.float32
            table[col] = np.concatenate([r[col] for r in rows]).astype(dtype)
        for col in _SPECTRAL_COLUMNS:
            stacked = np.concatenate([r[col] for r in rows]).astype(np.float32)
            for b in range(4):
                table[f"{col}{b}"] = np.ascontiguousarray(stacked[:, b])
        return geoms, table


# --------------------------------------------------------------------------------------------------
# Layout: vector geometry of the whole scene
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SurveyPolygon:
    geometry: BaseGeometry  # UTM
    class1: str
    subclass1: str


@dataclass
class _Layout:
    width: int
    height: int
    left: float
    top: float
    geoms: np.ndarray  # shapely geometries in UTM, in draw order
    tree: shapely.STRtree
    table: dict[str, np.ndarray]  # per-object parameters, row 0 = background
    footprint: np.ndarray  # (4, 2) corners in scene metres (x right, y down), clockwise as seen on screen
    coefficients: tuple[float, float, float, float]
    haze_level: float
    haze_gx: float
    haze_gy: float
    keys: dict[str, int]
    survey: list[_SurveyPolygon]
    #: per-band reflectance factors of the hard preset (None: the default scene)
    band_gain: tuple[float, float, float, float] | None = None

    @property
    def transform(self) -> Any:
        from affine import Affine

        return Affine(PIXEL_SIZE, 0.0, self.left, 0.0, -PIXEL_SIZE, self.top)

    def footprint_utm(self) -> np.ndarray:
        return np.column_stack([self.left + self.footprint[:, 0], self.top - self.footprint[:, 1]])


class _Frame:
    """The farmland grid's frame: (u, v) metres, rotated by ``angle`` about ``origin`` (UTM)."""

    def __init__(self, origin: tuple[float, float], angle: float):
        self.ox, self.oy = origin
        self.c, self.s = math.cos(angle), math.sin(angle)

    def to_utm(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.ox + u * self.c - v * self.s, self.oy + u * self.s + v * self.c

    def from_utm(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = np.asarray(x) - self.ox, np.asarray(y) - self.oy
        return dx * self.c + dy * self.s, -dx * self.s + dy * self.c

    def quads(self, corners: np.ndarray) -> np.ndarray:
        """Polygons from ``(n, k, 2)`` frame corner coordinates."""
        x, y = self.to_utm(corners[..., 0], corners[..., 1])
        return shapely.polygons(np.stack([x, y], axis=-1))

    def rects(self, u0: Any, u1: Any, v0: Any, v1: Any) -> np.ndarray:
        u0, u1, v0, v1 = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (u0, u1, v0, v1))
        corners = np.stack(
            [np.stack([u0, v0], -1), np.stack([u1, v0], -1), np.stack([u1, v1], -1), np.stack([u0, v1], -1)], axis=1
        )
        return self.quads(corners)

    def line(self, u: np.ndarray, v: np.ndarray) -> LineString:
        x, y = self.to_utm(np.asarray(u, float), np.asarray(v, float))
        return LineString(np.column_stack([x, y]))


def _partition(length: float, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Cut positions ``0 = c0 < c1 < ... = length`` with pieces of about ``lo``..``hi``."""
    sizes: list[float] = []
    total = 0.0
    while length - total > hi:
        s = float(rng.uniform(lo, hi))
        sizes.append(s)
        total += s
    rest = length - total
    if rest >= lo or not sizes:
        sizes.append(rest)
    else:
        arr = np.asarray(sizes)
        sizes = list(arr + rest * arr / arr.sum())
    return np.concatenate([[0.0], np.cumsum(sizes)])


def _blob(
    cx: float, cy: float, radius: float, rng: np.random.Generator, rough: float = 0.25, aspect: float = 1.0, n: int = 72
) -> Polygon:
    """An irregular star-shaped polygon (lake, grassland patch)."""
    th = np.linspace(0, _TWO_PI, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 7):
        r += rng.uniform(0, rough / (k - 1)) * np.cos(k * th + rng.uniform(0, _TWO_PI))
    r = radius * np.clip(r, 0.35, None)
    rot = rng.uniform(0, math.pi)
    x, y = r * np.cos(th) * aspect, r * np.sin(th) / aspect
    return Polygon(
        np.column_stack([cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)])
    )


def _largest_part(geom: BaseGeometry) -> BaseGeometry:
    parts = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon"]
    if not parts:
        return Polygon()
    return max(parts, key=lambda g: g.area)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Only the polygons of a geometry (intersections can produce lines and points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon"]
    return shapely.multipolygons(parts) if len(parts) > 1 else (parts[0] if parts else Polygon())


def _footprint(width_m: float, height_m: float, rng: np.random.Generator) -> np.ndarray:
    """A tilted, slightly irregular quadrilateral inside the raster, in scene metres (x right, y down)."""
    margin = 0.01
    wp, hp = width_m * (1 - 2 * margin), height_m * (1 - 2 * margin)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    theta = math.radians(rng.uniform(8.0, 12.0))
    while True:
        c, s = math.cos(theta), math.sin(theta)
        det = c * c - s * s
        a = (c * wp - s * hp) / det
        b = (c * hp - s * wp) / det
        if (a > 0 and b > 0 and a * b >= 0.66 * width_m * height_m) or theta < 1e-3:
            break
        theta *= 0.9  # an elongated raster cannot hold a strongly tilted strip that fills most of it
    half = np.array([[-a, -b], [a, -b], [a, b], [-a, b]]) / 2
    inward = 1.0 - rng.uniform(0.0, 0.02, (4, 1))
    half *= inward
    ang = sign * theta
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    corners = half @ rot.T + np.array([width_m / 2, height_m / 2])
    return corners


@dataclass
class _Fields:
    """Farmland fields: geometry (UTM), survey class and subclass, actual cover kind."""

    geoms: np.ndarray
    survey_class: np.ndarray
    subclass: np.ndarray
    kind: np.ndarray
    surveyed: np.ndarray
    survey_geoms: np.ndarray


class _LayoutBuilder:
    """Builds a :class:`_Layout`, one landscape element at a time, from independent seeded streams."""

    EXTENSION = 60.0  # metres of layout beyond the raster edges, so fields run off the edges naturally

    def __init__(
        self, seed: int, width: int, height: int, left: float, top: float, difficulty: Difficulty | None = None
    ):
        self.seed = seed
        self.difficulty = difficulty
        self.width, self.height, self.left, self.top = width, height, left, top
        streams = np.random.SeedSequence(seed & _MASK64).spawn(6)
        self.rng_geo, self.rng_fields, self.rng_farm, self.rng_urban, self.rng_spec, self.rng_misc = (
            np.random.default_rng(s) for s in streams
        )
        self.w_m, self.h_m = width * PIXEL_SIZE, height * PIXEL_SIZE
        self.right, self.bottom = left + self.w_m, top - self.h_m
        self.area_km2 = self.w_m * self.h_m / 1e6
        self.scene_box = box(left, self.bottom, self.right, top)
        e = self.EXTENSION
        self.ext_box = box(left - e, self.bottom - e, self.right + e, top + e)
        self.footprint = _footprint(self.w_m, self.h_m, self.rng_geo)
        self.footprint_poly = Polygon(np.column_stack([left + self.footprint[:, 0], top - self.footprint[:, 1]]))
        self.phi = math.radians(self.rng_geo.uniform(-4.0, 4.0))
        self.frame = _Frame((left + self.w_m / 2, top - self.h_m / 2), self.phi)
        # Row directions in scene metres (x right, y down): normals to the frame's u and v axes.
        self.row_angles = (-self.phi, -self.phi - math.pi / 2)
        self.table = _ObjectTable(self.rng_spec, self.row_angles)
        self.survey: list[_SurveyPolygon] = []

    def rand_point(self, lo: float, hi: float) -> tuple[float, float]:
        u = self.rng_geo.uniform
        return self.left + u(lo, hi) * self.w_m, self.top - u(lo, hi) * self.h_m

    # --- landscape elements ---------------------------------------------------------------------------

    def river(self) -> None:
        """A meandering river across the scene, lined with riparian trees."""
        rng = self.rng_geo
        diag = math.hypot(self.w_m, self.h_m)
        alpha = rng.uniform(0, math.pi)
        px, py = self.rand_point(0.3, 0.7)
        s = np.arange(-diag / 2 - 200, diag / 2 + 200, 8.0)
        lateral = np.zeros_like(s)
        for _ in range(3):
            wavelength = rng.uniform(350, 1300)
            lateral += rng.uniform(20, 110) * np.sin(_TWO_PI * s / wavelength + rng.uniform(0, _TWO_PI))
        dx, dy = math.cos(alpha), math.sin(alpha)
        self.river_line = LineString(np.column_stack([px + s * dx - lateral * dy, py + s * dy + lateral * dx]))
        small = min(1.0, max(0.6, min(self.w_m, self.h_m) / 3000))  # narrower in small scenes
        self.river_w = rng.uniform(25, 55) * small
        self.riparian_w = rng.uniform(18, 40) * small
        self.river_poly = self.river_line.buffer(self.river_w / 2, quad_segs=4)
        outer = self.river_line.buffer(self.river_w / 2 + self.riparian_w, quad_segs=4)
        self.riparian = outer.difference(self.river_poly)
        self.corridor = self.river_line.buffer(self.river_w / 2 + self.riparian_w + 6, quad_segs=4)
        shapely.prepare(self.corridor)

    def urban_patches(self) -> None:
        """Towns: frame-aligned rectangles or L-shapes away from the river."""
        rng, frame = self.rng_geo, self.frame
        n = max(1, round(self.area_km2 / 30))
        side = math.sqrt(rng.uniform(0.06, 0.1) * self.w_m * self.h_m / n)
        patches: list[BaseGeometry] = []
        for _ in range(n):
            first: BaseGeometry | None = None
            chosen: BaseGeometry | None = None
            for _try in range(40):
                cu, cv = frame.from_utm(*self.rand_point(0.12, 0.88))
                a, b = side * rng.uniform(0.75, 1.25), side * rng.uniform(0.75, 1.25)
                patch = frame.rects(cu - a / 2, cu + a / 2, cv - b / 2, cv + b / 2)[0]
                if rng.random() < 0.5:  # an L-shaped extension along one side
                    ea, eb = a * rng.uniform(0.3, 0.6), b * rng.uniform(0.3, 0.6)
                    su, sv = rng.choice([-1.0, 1.0], 2)
                    ua, ub = sorted((cu + su * a / 2, cu + su * (a / 2 + ea)))
                    va, vb = sorted((cv + sv * b / 2, cv + sv * (b / 2 - eb)))
                    patch = patch.union(frame.rects(ua, ub, va, vb)[0])
                if first is None:
                    first = patch
                if not (patch.intersects(self.corridor) or any(patch.buffer(100).intersects(p) for p in patches)):
                    chosen = patch
                    break
            best = chosen if chosen is not None else first
            assert best is not None
            patch = best.difference(self.corridor)
            for other in patches:
                patch = patch.difference(other.buffer(30))
            patch = _largest_part(patch)
            if not patch.is_empty:
                patches.append(patch)
        self.urban = patches
        self.urban_union = shapely.union_all(patches)

    def water_bodies(self) -> None:
        """Reservoirs and ponds away from the river and the towns."""
        rng = self.rng_geo
        lakes: list[BaseGeometry] = []
        for _ in range(max(1, round(self.area_km2 / 40))):
            radius = min(400.0, rng.uniform(0.03, 0.06) * math.sqrt(self.w_m * self.h_m))
            lake: BaseGeometry | None = None
            for _try in range(40):
                cand = _blob(*self.rand_point(0.1, 0.9), radius, rng, rough=0.3, aspect=rng.uniform(1.0, 1.6))
                if not (cand.buffer(40).intersects(self.corridor) or cand.buffer(60).intersects(self.urban_union)):
                    lake = cand
                    break
            if lake is None:
                lake = _largest_part(cand.difference(self.corridor.buffer(20)).difference(self.urban_union.buffer(20)))
            if not lake.is_empty:
                lakes.append(lake)
        self.lakes = lakes
        self.water_union = shapely.union_all(lakes)

    def grassland(self) -> None:
        """Patches of dry native grassland with scattered oaks."""
        rng = self.rng_geo
        patches: list[BaseGeometry] = []
        n = max(1, round(self.area_km2 / 30))
        radius = math.sqrt(rng.uniform(0.08, 0.14) * self.w_m * self.h_m / n / math.pi)
        for _ in range(n):
            g = _blob(*self.rand_point(0.05, 0.95), radius, rng, rough=0.45, aspect=rng.uniform(1.0, 1.8))
            g = g.difference(self.corridor).difference(self.urban_union.buffer(15))
            g = _polygonal(g.difference(self.water_union.buffer(15)))
            if not g.is_empty:
                patches.append(g)
        self.grass = patches
        self.exclusion = shapely.union_all(
            [self.corridor, self.urban_union.buffer(8), self.water_union.buffer(12), *(g.buffer(6) for g in patches)]
        )
        shapely.prepare(self.exclusion)

    def road_grid(self) -> None:
        """Section-line roads of the farmland grid (frame coordinates)."""
        rng, e = self.rng_fields, self.EXTENSION
        eu, ev = self.frame.from_utm(
            np.array([self.left - e, self.right + e, self.right + e, self.left - e]),
            np.array([self.bottom - e, self.bottom - e, self.top + e, self.top + e]),
        )
        self.u_range, self.v_range = (float(eu.min()), float(eu.max())), (float(ev.min()), float(ev.max()))

        def positions(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
            pos = [lo - rng.uniform(0, 700)]
            while pos[-1] < hi:
                pos.append(pos[-1] + rng.uniform(450, 950))
            return np.asarray(pos), rng.uniform(7, 11, len(pos))

        self.road_u, self.road_u_width = positions(*self.u_range)  # roads running along v, at these u
        self.road_v, self.road_v_width = positions(*self.v_range)

    def _field_cells(self) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
        """Blocks between roads cut into strips, strips into fields: ``(n, 5)`` u0 u1 v0 v1 block, and lanes."""
        rng = self.rng_fields
        cells: list[tuple[float, float, float, float, int]] = []
        lanes: list[tuple[float, float, float, float]] = []
        ru, rv, wu, wv = self.road_u, self.road_v, self.road_u_width, self.road_v_width
        block_id = 0
        for i in range(len(ru) - 1):
            bu0 = ru[i] + wu[i] / 2 + rng.uniform(1, 4)
            bu1 = ru[i + 1] - wu[i + 1] / 2 - rng.uniform(1, 4)
            for j in range(len(rv) - 1):
                bv0 = rv[j] + wv[j] / 2 + rng.uniform(1, 4)
                bv1 = rv[j + 1] - wv[j + 1] / 2 - rng.uniform(1, 4)
                along_u = rng.random() < 0.5
                a0, a1, b0, b1 = (bu0, bu1, bv0, bv1) if along_u else (bv0, bv1, bu0, bu1)
                cuts = a0 + _partition(a1 - a0, rng, 60, 250)
                for k in range(len(cuts) - 1):
                    if k > 0 and rng.random() < 0.25:  # a gravel farm lane between two strips
                        half = rng.uniform(2.0, 2.75)
                        lane = (cuts[k] - half, cuts[k] + half, b0, b1)
                        lanes.append(lane if along_u else (b0, b1, lane[0], lane[1]))
                    sub = b0 + _partition(b1 - b0, rng, 60, 250)
                    for m in range(len(sub) - 1):
                        if along_u:
                            cells.append((cuts[k], cuts[k + 1], sub[m], sub[m + 1], block_id))
                        else:
                            cells.append((sub[m], sub[m + 1], cuts[k], cuts[k + 1], block_id))
                block_id += 1
        return np.asarray(cells, dtype=float).reshape(-1, 5), lanes

    def fields(self) -> None:
        """Jittered field quadrilaterals (some split in two), clipped by towns, water, grass and river."""
        rng = self.rng_fields
        cells, self.lanes = self._field_cells()
        n = len(cells)
        inset = rng.uniform(2.5, 6.0, n)
        u0, u1, v0, v1 = cells[:, 0] + inset, cells[:, 1] - inset, cells[:, 2] + inset, cells[:, 3] - inset
        corners = np.stack(
            [np.stack([u0, v0], -1), np.stack([u1, v0], -1), np.stack([u1, v1], -1), np.stack([u0, v1], -1)], axis=1
        )
        corners += rng.uniform(-0.8, 0.8, corners.shape) * inset[:, None, None]
        split = (rng.random(n) < 0.12) & (u1 - u0 > 120) & (v1 - v0 > 120)
        quads: list[np.ndarray] = []
        blocks: list[int] = []
        for idx in range(n):
            c = corners[idx]
            if not split[idx]:
                quads.append(c)
                blocks.append(int(cells[idx, 4]))
                continue
            # Cut across the longer side, from edge e1 to the opposite edge e2, leaving a 4 m gap.
            if (u1[idx] - u0[idx]) > (v1[idx] - v0[idx]):
                e1, e2 = (c[0], c[1]), (c[3], c[2])
            else:
                e1, e2 = (c[0], c[3]), (c[1], c[2])
            t1 = rng.uniform(0.3, 0.7)
            t2 = float(np.clip(t1 + rng.uniform(-0.15, 0.15), 0.2, 0.8))
            gap = 2.0 / max(float(np.linalg.norm(e1[1] - e1[0])), 1.0)
            p1a, p1b = e1[0] + (t1 - gap) * (e1[1] - e1[0]), e1[0] + (t1 + gap) * (e1[1] - e1[0])
            p2a, p2b = e2[0] + (t2 - gap) * (e2[1] - e2[0]), e2[0] + (t2 + gap) * (e2[1] - e2[0])
            quads += [np.array([e1[0], p1a, p2a, e2[0]]), np.array([p1b, e1[1], e2[1], p2b])]
            blocks += [int(cells[idx, 4])] * 2
        geoms = shapely.make_valid(self.frame.quads(np.asarray(quads)))
        geoms = np.array([_largest_part(g) for g in geoms], dtype=object)
        block_of = np.asarray(blocks)
        area0 = shapely.area(geoms)
        keep = shapely.intersects(geoms, self.ext_box) & (area0 > 0)
        hit = keep & shapely.intersects(geoms, self.exclusion)
        if hit.any():
            geoms[hit] = np.array(
                [_largest_part(g) for g in shapely.difference(geoms[hit], self.exclusion)], dtype=object
            )
        area1 = shapely.area(geoms)
        keep &= (area1 >= 0.4 * area0) & (area1 >= 3000.0)
        self.field_geoms, self.field_block = geoms[keep], block_of[keep]

    def field_classes(self) -> None:
        """Survey class per field (neighbouring fields of a block often share one), actual cover, changes."""
        rng = self.rng_fields
        geoms, n = self.field_geoms, len(self.field_geoms)
        names = list(_FIELD_CLASSES)
        probs = np.array([_FIELD_CLASSES[k][0] for k in names])
        probs /= probs.sum()
        n_blocks = int(self.field_block.max()) + 1 if n else 0
        block_class = rng.choice(len(names), size=n_blocks, p=probs)
        own_class = rng.choice(len(names), size=n, p=probs)
        cls = np.where(rng.random(n) < 0.45, block_class[self.field_block], own_class)
        survey_class = np.array([names[i] for i in cls], dtype=object)
        subclass = np.empty(n, dtype=object)
        for i in range(n):
            subs = _FIELD_CLASSES[survey_class[i]][1]
            weights = np.array(list(subs.values()))
            subclass[i] = str(rng.choice(list(subs), p=weights / weights.sum())) if subs else "**"
        kind = np.array([_CLASS_KIND[c] for c in survey_class], dtype=np.int16)
        crop = np.isin(survey_class, CROP_CLASSES)
        kind[~crop & (survey_class != "NV") & (rng.random(n) < 0.2)] = Kind.GRASSLAND  # weedy fallow
        # Survey-to-image changes.
        r = rng.random(n)
        now_bare = crop & (r < _P_CROP_NOW_BARE)
        now_crop = ~crop & (r < _P_NONCROP_NOW_CROP)
        kind[now_bare] = Kind.BARE
        kind[now_crop] = np.where(rng.random(int(now_crop.sum())) < 0.7, Kind.GREEN_CROP, Kind.PASTURE)
        surveyed = crop | (survey_class == "I") | ((survey_class == "NV") & (rng.random(n) < 0.5))
        self.f = _Fields(
            geoms=geoms,
            survey_class=survey_class,
            subclass=subclass,
            kind=kind,
            surveyed=surveyed,
            survey_geoms=geoms.copy(),
        )
        if self.difficulty is not None:
            self._harden_fields(self.difficulty)

    def _harden_fields(self, d: Difficulty) -> None:
        """The hard preset's fields (see :class:`Difficulty`), from a stream of their own."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & _MASK64, 0x4A2D]))
        f, n = self.f, len(self.f.geoms)
        self.noisy = np.zeros(n, dtype=bool)
        if n == 0:
            return
        mimic = ~np.isin(f.survey_class, CROP_CLASSES) & (rng.random(n) < d.mimic_fraction)
        f.kind[mimic] = np.where(rng.random(int(mimic.sum())) < 0.5, Kind.GREEN_GRASS, Kind.SHRUB)
        f.survey_class[mimic], f.subclass[mimic], f.surveyed[mimic] = "NV", "1", True
        # label noise: the survey says the other side of the crop line (the cover stays)
        noisy = f.surveyed & (rng.random(n) < d.label_noise)
        crop = np.isin(f.survey_class, CROP_CLASSES)
        f.survey_class[noisy & crop], f.subclass[noisy & crop] = "I", "1"
        f.survey_class[noisy & ~crop], f.subclass[noisy & ~crop] = "F", "6"
        self.noisy = noisy

    def _calibrate_share(self, d: Difficulty, survey: list[_SurveyPolygon], field_at: dict[int, int]) -> None:
        """Flip fields (cover and survey class together, in a random order) until the surveyed crop area
        is ``d.crop_share`` of the footprint (land the survey leaves out is labelled non-crop, as the
        labelers read a DWR survey); ``field_at`` maps a field to its entry of ``survey``."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & _MASK64, 0x5C3E]))
        f = self.f
        inside = shapely.intersection(np.array([sp.geometry for sp in survey], dtype=object), self.footprint_poly)
        area = shapely.area(inside)
        crop = np.array([sp.class1 in CROP_CLASSES for sp in survey])
        total, have = float(self.footprint_poly.intersection(self.scene_box).area), float(area[crop].sum())
        want = d.crop_share * total
        for i in rng.permutation(len(f.geoms)):
            j = field_at.get(int(i))
            if j is None or self.noisy[i] or area[j] <= 0:
                continue
            if abs(have - want) < 0.003 * total:
                break
            if have > want and crop[j]:
                f.kind[i] = Kind.GREEN_GRASS if rng.random() < 0.5 else Kind.SHRUB
                f.survey_class[i], f.subclass[i] = "NV", "1"
                have -= area[j]
            elif have < want and not crop[j] and have + 0.5 * area[j] <= want:
                cls = str(rng.choice(_CROP_FIELD_CLASSES))
                f.survey_class[i], f.subclass[i] = cls, str(next(iter(_FIELD_CLASSES[cls][1])))
                f.kind[i] = _CLASS_KIND[cls]
                have += area[j]
            else:
                continue
            crop[j] = not crop[j]
            survey[j] = _SurveyPolygon(survey[j].geometry, str(f.survey_class[i]), str(f.subclass[i]))

    def _farmstead(self, i: int) -> bool:
        """Put a farmyard with buildings inside field ``i`` (a hole in its survey polygon), if it fits."""
        rng, frame, f = self.rng_farm, self.frame, self.f.geoms[i]
        fu, fv = frame.from_utm(*np.asarray(f.exterior.coords).T)
        for _try in range(6):
            size = rng.uniform(35, 55)
            lo_u, hi_u = fu.min() + size / 2 + 12, fu.max() - size / 2 - 12
            lo_v, hi_v = fv.min() + size / 2 + 12, fv.max() - size / 2 - 12
            if lo_u >= hi_u or lo_v >= hi_v:
                return False
            cu, cv = rng.uniform(lo_u, hi_u), rng.uniform(lo_v, hi_v)
            yard = frame.rects(cu - size / 2, cu + size / 2, cv - size / 2, cv + size / 2)[0]
            if f.contains(yard.buffer(5)):
                break
        else:
            return False
        self.farm_yards.append(yard)
        self.f.survey_geoms[i] = f.difference(yard)
        for _ in range(int(rng.integers(2, 5))):
            bw, bh = rng.uniform(8, 20), rng.uniform(8, 15)
            bu = rng.uniform(cu - size / 2 + bw / 2 + 2, cu + size / 2 - bw / 2 - 2)
            bv = rng.uniform(cv - size / 2 + bh / 2 + 2, cv + size / 2 - bh / 2 - 2)
            self.farm_buildings.append(frame.rects(bu - bw / 2, bu + bw / 2, bv - bh / 2, bv + bh / 2)[0])
        return True

    def farmsteads(self) -> None:
        """Farmsteads in about 5% of crop fields, and at least one inside the footprint when one fits."""
        self.farm_yards: list[BaseGeometry] = []
        self.farm_buildings: list[BaseGeometry] = []
        crop = np.flatnonzero(np.isin(self.f.survey_class, CROP_CLASSES) & self.f.surveyed)
        areas = shapely.area(self.f.geoms[crop])
        chosen = crop[(self.rng_farm.random(crop.size) < 0.05) & (areas > 12000)]
        placed_inside = False
        for i in chosen:
            if self._farmstead(int(i)) and self.footprint_poly.contains(self.farm_yards[-1]):
                placed_inside = True
        if not placed_inside:
            inside = crop[shapely.within(self.f.geoms[crop], self.footprint_poly) & ~np.isin(crop, chosen)]
            for i in inside[np.argsort(-shapely.area(self.f.geoms[inside]), kind="stable")][:20]:
                if self._farmstead(int(i)):
                    break

    def urban_interiors(self) -> None:
        """Street grid, houses, commercial blocks with parking, parks."""
        rng, frame = self.rng_urban, self.frame
        self.streets: list[BaseGeometry] = []
        parks: list[BaseGeometry] = []
        parking: list[BaseGeometry] = []
        buildings: list[np.ndarray] = []
        for patch in self.urban:
            pu, pv = frame.from_utm(*np.asarray(patch.envelope.exterior.coords).T)
            pu_lo, pu_hi, pv_lo, pv_hi = pu.min() - 60, pu.max() + 60, pv.min() - 60, pv.max() + 60
            du, dv = rng.uniform(70, 95), rng.uniform(150, 250)
            sw = rng.uniform(9, 12)
            us = np.arange(pu_lo + rng.uniform(0, du), pu_hi, du)
            vs = np.arange(pv_lo + rng.uniform(0, dv), pv_hi, dv)
            lines = [frame.line(np.array([u, u]), np.array([pv_lo, pv_hi])) for u in us]
            lines += [frame.line(np.array([pu_lo, pu_hi]), np.array([v, v])) for v in vs]
            self.streets.append(
                shapely.union_all([ln.buffer(sw / 2, cap_style="flat") for ln in lines]).intersection(patch)
            )
            for a in range(len(us) - 1):
                for b in range(len(vs) - 1):
                    bu0, bu1 = us[a] + sw / 2, us[a + 1] - sw / 2
                    bv0, bv1 = vs[b] + sw / 2, vs[b + 1] - sw / 2
                    use = rng.random()
                    if use < 0.1:
                        parks.append(frame.rects(bu0 + 2, bu1 - 2, bv0 + 2, bv1 - 2)[0])
                    elif use < 0.25:  # commercial: big flat roofs in a parking lot
                        parking.append(frame.rects(bu0 + 3, bu1 - 3, bv0 + 3, bv1 - 3)[0])
                        edges = bv0 + 6 + _partition(bv1 - bv0 - 12, rng, 40, 90)
                        for e in range(min(int(rng.integers(1, 4)), len(edges) - 1)):
                            depth = (bu1 - bu0) * rng.uniform(0.4, 0.75)
                            start = bu0 + 5 if rng.random() < 0.5 else bu1 - 5 - depth
                            buildings.append(frame.rects(start, start + depth, edges[e] + 3, edges[e + 1] - 3))
                    else:  # residential: a row of houses along each long side of the block
                        lots = bv0 + _partition(bv1 - bv0, rng, 15, 22)
                        lo, hi, n_lots = lots[:-1], lots[1:], len(lots) - 1
                        for side in (0, 1):
                            setback = rng.uniform(4, 8, n_lots)
                            depth = rng.uniform(10, 15, n_lots)
                            gap = rng.uniform(1.5, 3.5, n_lots)
                            if side == 0:
                                ua, ub = bu0 + setback, bu0 + setback + depth
                            else:
                                ua, ub = bu1 - setback - depth, bu1 - setback
                            buildings.append(frame.rects(ua, ub, lo + gap, hi - gap))
        houses = np.concatenate(buildings) if buildings else np.empty(0, dtype=object)
        if houses.size:
            cx, cy = shapely.get_coordinates(shapely.centroid(houses)).T
            houses = houses[shapely.contains_xy(self.urban_union, cx, cy) & shapely.intersects(houses, self.ext_box)]
        self.buildings = houses
        self.parks = [g for g in (p.intersection(self.urban_union) for p in parks) if not g.is_empty]
        self.parking = [g for g in (p.intersection(self.urban_union) for p in parking) if not g.is_empty]

    def roads(self) -> None:
        """Asphalt section roads (over everything but water) and gravel farm lanes."""
        frame, (u_lo, u_hi), (v_lo, v_hi) = self.frame, self.u_range, self.v_range
        polys = [
            frame.line(np.array([p, p]), np.array([v_lo, v_hi])).buffer(w / 2, cap_style="flat")
            for p, w in zip(self.road_u, self.road_u_width)
        ]
        polys += [
            frame.line(np.array([u_lo, u_hi]), np.array([p, p])).buffer(w / 2, cap_style="flat")
            for p, w in zip(self.road_v, self.road_v_width)
        ]
        self.road_geom = shapely.union_all(polys).intersection(self.ext_box).difference(self.water_union)
        if self.lanes:
            lanes = frame.rects(*np.asarray(self.lanes, dtype=float).T)
            self.lane_geom = shapely.union_all(lanes).difference(self.exclusion).intersection(self.ext_box)
        else:
            self.lane_geom = Polygon()

    def build_survey(self) -> None:
        """What the survey says: fields (stale where they changed), towns, water, part of the grassland,
        and a stretch of riparian trees wrongly mapped as an orchard."""
        rng, f = self.rng_misc, self.f
        survey = self.survey
        field_at = {}
        for i in np.flatnonzero(f.surveyed):
            field_at[int(i)] = len(survey)
            survey.append(_SurveyPolygon(f.survey_geoms[i], str(f.survey_class[i]), str(f.subclass[i])))
        survey += [_SurveyPolygon(p, "U", "**") for p in self.urban]
        survey += [_SurveyPolygon(lake, "NW", "**") for lake in self.lakes]
        survey.append(_SurveyPolygon(self.river_poly.intersection(self.ext_box), "NW", "**"))
        for g in self.grass:
            if rng.random() < 0.75:  # the part of the patch on one side of a line through its centroid
                c, ang, far = g.centroid, rng.uniform(0, _TWO_PI), 1e5
                half_plane = Polygon(
                    [
                        (c.x + far * math.cos(ang + d), c.y + far * math.sin(ang + d))
                        for d in (0.0, math.pi / 2, math.pi)
                    ]
                )
                part = _polygonal(g.intersection(half_plane))
                if not part.is_empty:
                    survey.append(_SurveyPolygon(part, "NV", "1"))
        parts = [
            g for g in shapely.get_parts(self.river_line.intersection(self.scene_box)) if g.geom_type == "LineString"
        ]
        if parts:
            main = max(parts, key=lambda g: g.length)
            s0 = rng.uniform(0.15, 0.5) * main.length
            stretch = shapely_ops.substring(main, s0, s0 + min(800.0, 0.35 * main.length))
            reach = stretch.buffer(self.river_w / 2 + self.riparian_w + 2, cap_style="flat")
            wrong = _polygonal(self.riparian.intersection(reach))
            if not wrong.is_empty:
                survey.append(_SurveyPolygon(wrong, "D", "6"))
        if self.difficulty is not None:
            self._calibrate_share(self.difficulty, survey, field_at)

    def objects(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """All objects in draw order (later ones drawn over earlier ones) and their parameter table."""
        t, f, ext = self.table, self.f, self.ext_box
        t.add(Kind.GRASSLAND, self.grass)
        for kind in sorted({int(k) for k in f.kind}):
            sel = f.kind == kind
            t.add(kind, f.geoms[sel], subclass=f.subclass[sel])
        t.add(Kind.FARMYARD, self.farm_yards)
        t.add(Kind.ROOF, self.farm_buildings)
        t.add(Kind.YARD, self.urban)
        t.add(Kind.PARK, self.parks)
        t.add(Kind.PARKING, self.parking)
        t.add(Kind.ROOF, self.buildings)
        t.add(Kind.ASPHALT, self.streets)
        t.add(Kind.WATER, self.lakes)
        t.add(Kind.RIPARIAN, [self.riparian.intersection(ext)])
        t.add(Kind.WATER, [self.river_poly.intersection(ext)], fv=np.array([self.rng_misc.uniform(0.2, 0.45)]))
        t.add(Kind.GRAVEL, [self.lane_geom])
        t.add(Kind.ASPHALT, [self.road_geom])
        return t.build(_recipe(Kind.MARGIN, 1, self.rng_spec, self.row_angles), self.left, self.top)

    def build(self) -> _Layout:
        self.river()
        self.urban_patches()
        self.water_bodies()
        self.grassland()
        self.road_grid()
        self.fields()
        self.field_classes()
        self.farmsteads()
        self.urban_interiors()
        self.roads()
        self.build_survey()
        geoms, params = self.objects()
        rng = self.rng_misc
        coefficients = tuple(float(c * (1 + rng.uniform(-0.03, 0.03))) for c in BASE_REFLECTANCE_COEFFICIENTS)
        channels = ("tex_a", "tex_b", "tex_c", "tree_a", "tree_b", "haze", "noise0", "noise1", "noise2", "noise3")
        survey = [sp for sp in self.survey if not sp.geometry.is_empty]
        log.debug(
            "layout: %d objects, %d fields, %d buildings, %d survey polygons",
            len(geoms),
            len(self.f.geoms),
            len(self.buildings),
            len(survey),
        )
        return _Layout(
            width=self.width,
            height=self.height,
            left=self.left,
            top=self.top,
            geoms=geoms,
            tree=shapely.STRtree(geoms),
            table=params,
            footprint=self.footprint,
            coefficients=coefficients,  # type: ignore[arg-type]
            haze_level=float(rng.uniform(0.004, 0.012)),
            haze_gx=float(rng.uniform(-1, 1)),
            haze_gy=float(rng.uniform(-1, 1)),
            keys={name: _channel_key(self.seed, i) for i, name in enumerate(channels)},
            survey=survey,
            band_gain=None if self.difficulty is None else self.difficulty.band_gain,
        )


def _build_layout(
    seed: int, width: int, height: int, left: float, top: float, difficulty: Difficulty | None = None
) -> _Layout:
    """Generate the whole scene as vector geometry (UTM) plus per-object spectral parameters."""
    return _LayoutBuilder(seed, width, height, left, top, difficulty).build()


# --------------------------------------------------------------------------------------------------
# Rendering one window
# --------------------------------------------------------------------------------------------------


def _object_ids(layout: _Layout, row0: int, col0: int, h: int, w: int) -> np.ndarray:
    """Rasterize the layout objects over a window: object ids (0 = background), later objects on top."""
    from affine import Affine
    from rasterio.features import rasterize

    west = layout.left + col0 * PIXEL_SIZE
    north = layout.top - row0 * PIXEL_SIZE
    window_box = box(west, north - h * PIXEL_SIZE, west + w * PIXEL_SIZE, north)
    idx = np.sort(layout.tree.query(window_box))
    if idx.size == 0:
        return np.zeros((h, w), dtype=np.int32)
    shapes = [(layout.geoms[i], int(i) + 1) for i in idx]
    transform = Affine(PIXEL_SIZE, 0.0, west, 0.0, -PIXEL_SIZE, north)
    return rasterize(shapes, out_shape=(h, w), transform=transform, fill=0, dtype="int32")


def _footprint_mask(layout: _Layout, xm: np.ndarray, ym: np.ndarray) -> np.ndarray:
    """Pixel centres (scene metres) inside the convex footprint quadrilateral."""
    corners = layout.footprint
    inside = np.ones((ym.size, xm.size), dtype=bool)
    for k in range(4):
        (x0, y0), (x1, y1) = corners[k], corners[(k + 1) % 4]
        inside &= ((xm[None, :] - x0) * (y1 - y0) - (ym[:, None] - y0) * (x1 - x0)) <= 0
    return inside


def _tree_noise(rows: np.ndarray, cols: np.ndarray, keys: dict[str, int], tex_b: np.ndarray) -> np.ndarray:
    """Clumpy tree-crown field: crowns ~10 m across, denser groves at ~150 m scale."""
    return (
        0.55 * _value_noise(rows, cols, 4.0, keys["tree_a"])
        + 0.30 * _value_noise(rows, cols, 2.0, keys["tree_b"])
        + 0.30 * tex_b
    )


def _render_block(layout: _Layout, row0: int, col0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TOA reflectance ``(4, h, w)`` float32, object ids ``(h, w)`` and the valid mask of one window."""
    t = layout.table
    rows = np.arange(row0, row0 + h, dtype=np.int64)
    cols = np.arange(col0, col0 + w, dtype=np.int64)
    xm = (cols + 0.5) * PIXEL_SIZE  # scene metres, x right
    ym = (rows + 0.5) * PIXEL_SIZE  # scene metres, y down
    ids = _object_ids(layout, row0, col0, h, w)

    def g(name: str) -> np.ndarray:
        return t[name][ids]

    keys = layout.keys
    n_a = _value_noise(rows, cols, 20.0, keys["tex_a"])
    n_b = _value_noise(rows, cols, 50.0, keys["tex_b"])
    n_c = _value_noise(rows, cols, 6.0, keys["tex_c"])
    texture = g("w_a") * n_a + g("w_b") * n_b + g("w_c") * n_c
    xs, ys = xm.astype(np.float32)[None, :], ym.astype(np.float32)[:, None]
    # A gentle linear trend across each object (irrigation, soil), about its centroid, capped for big ones.
    trend = np.clip(g("grad_x") * (xs - g("cen_x")) + g("grad_y") * (ys - g("cen_y")), -0.1, 0.1)
    fv = g("fv") + g("tex_amp") * texture + trend

    rc, rs = g("row_cos"), g("row_sin")
    u = xm[None, :] * rc + ym[:, None] * rs
    v = ym[:, None] * rc - xm[None, :] * rs
    modulation = (
        1
        + g("a1") * np.cos(u * g("k1") + g("ph1")).astype(np.float32)
        + g("a2") * np.cos(v * g("k2") + g("ph2")).astype(np.float32)
    )
    del u, v, rc, rs
    canopy = np.clip(fv * modulation, 0, 1)
    shade = 1 - g("shade") * canopy
    trees = np.clip(g("tree_gain") * (_tree_noise(rows, cols, keys, n_b) - g("tree_thr")), 0, 1)
    bright = 1 + g("bright_amp") * (0.6 * n_a + 0.4 * n_c)

    haze = layout.haze_level * (
        1
        + 0.5
        * (
            layout.haze_gx * (xs / (layout.width * PIXEL_SIZE) - 0.5)
            + layout.haze_gy * (ys / (layout.height * PIXEL_SIZE) - 0.5)
        )
        + 0.2 * _value_noise(rows, cols, 300.0, keys["haze"])
    )
    out = np.empty((4, h, w), dtype=np.float32)
    for b in range(4):
        surface = canopy * g(f"veg{b}") + (1 - canopy) * g(f"bg{b}") * shade
        surface = (surface + trees * (g(f"tree{b}") - surface)) * bright + _HAZE_BAND_FACTORS[b] * haze
        noise = _gaussian_noise(rows, cols, keys[f"noise{b}"])
        out[b] = surface + (0.002 + 0.015 * surface) * noise
        if layout.band_gain is not None:  # the hard preset's brightness / season offset
            out[b] *= np.float32(layout.band_gain[b])
    valid = _footprint_mask(layout, xm, ym)
    return out, ids, valid


def _to_dn(reflectance: np.ndarray, valid: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    coef = np.asarray(coefficients, dtype=np.float64)[:, None, None]
    dn = np.clip(np.rint(reflectance / coef), 1, 65535).astype(np.uint16)
    dn[:, ~valid] = 0
    return dn


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


@contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path next to ``final``, renamed over it only when the block completes."""
    # Not mkstemp: the writers create the file themselves, with the usual permissions.
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(6)}.part")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_text(final: Path, text: str) -> None:
    with _atomic_path(final) as tmp:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)


def _write_raster(layout: _Layout, final: Path, block_size: int) -> None:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": layout.width,
        "height": layout.height,
        "count": 4,
        "dtype": "uint16",
        "crs": CRS.from_epsg(EPSG),
        "transform": layout.transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": TILE_SIZE,
        "blockysize": TILE_SIZE,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    with _atomic_path(final) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for b, name in enumerate(BAND_NAMES, start=1):
                dst.set_band_description(b, name)
            dst.update_tags(SYNTHETIC="true", GENERATOR="cropseg synthetic PSScene (not a Planet product)")
            for row0 in range(0, layout.height, block_size):
                for col0 in range(0, layout.width, block_size):
                    h = min(block_size, layout.height - row0)
                    w = min(block_size, layout.width - col0)
                    refl, _, valid = _render_block(layout, row0, col0, h, w)
                    dst.write(_to_dn(refl, valid, layout.coefficients), window=Window(col0, row0, w, h))


def _lonlat_transformer() -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(EPSG, 4326, always_xy=True)


def _geometry_lonlat(geom: BaseGeometry, transformer: Any) -> dict[str, Any]:
    """GeoJSON geometry (RFC 7946 winding, coordinates rounded to 1e-7 degrees) of a UTM polygon."""

    def project(xy: np.ndarray) -> np.ndarray:
        lon, lat = transformer.transform(xy[:, 0], xy[:, 1])
        return np.round(np.column_stack([lon, lat]), 7)

    g = shapely.transform(geom, project)
    parts = [orient(p, sign=1.0) for p in shapely.get_parts(g) if p.geom_type == "Polygon"]
    if len(parts) == 1:
        return dict(mapping(parts[0]))
    return dict(mapping(shapely.multipolygons(parts)))


def _ground_truth_json(layout: _Layout) -> str:
    transformer = _lonlat_transformer()
    w_m, h_m = layout.width * PIXEL_SIZE, layout.height * PIXEL_SIZE
    scene_box = box(layout.left, layout.top - h_m, layout.left + w_m, layout.top)
    features = []
    for sp in layout.survey:
        geom = _polygonal(sp.geometry.intersection(scene_box))
        if geom.is_empty or geom.area < 100.0:
            continue
        label = sp.class1 if sp.subclass1 == "**" else f"{sp.class1}{sp.subclass1}"
        features.append(
            {
                "type": "Feature",
                "id": str(len(features) + 1),
                "properties": {
                    "CLASS1": sp.class1,
                    "SUBCLASS1": sp.subclass1,
                    "LABEL": label,
                    "ACRES": round(geom.area / SQ_METRES_PER_ACRE, 3),
                    "SURVEYAREA": "SACRAMENTO",
                    "SURVEYYEAR": "2015",
                    "SYNTHETIC": True,
                },
                "geometry": _geometry_lonlat(geom, transformer),
            }
        )
    collection = {
        "type": "FeatureCollection",
        "synthetic": True,
        "description": (
            "SYNTHETIC DWR-style land-use survey generated by cropseg for a synthetic PlanetScope "
            "scene; not real survey data. CLASS1 crops: G R F P T D C V; non-crop: I NV U NW."
        ),
        "features": features,
    }
    return json.dumps(collection, separators=(",", ":")) + "\n"


def _sun_angles(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Approximate solar azimuth and elevation (degrees) at ``when`` (UTC)."""
    day = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    decl = math.radians(23.44) * math.sin(_TWO_PI * (284 + day) / 365)
    hour_angle = math.radians(15 * (hours + lon / 15 - 12))
    phi = math.radians(lat)
    elev = math.asin(math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle))
    az = math.atan2(math.sin(hour_angle), math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    return (math.degrees(az) + 180.0) % 360.0, math.degrees(elev)


_BAND_XML = """<ps:bandSpecificMetadata>
    <ps:bandNumber>{band}</ps:bandNumber>
    <!-- Multiply by radiometricScaleFactor to convert DNs to TOA Radiance (watts per steradian per square metre -->
    <ps:radiometricScaleFactor>0.01</ps:radiometricScaleFactor>
    <!-- Multiply by reflectanceCoefficient to convert DNs to TOA Reflectance -->
    <ps:reflectanceCoefficient>{coef}</ps:reflectanceCoefficient>
</ps:bandSpecificMetadata>
"""

_METADATA_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- SYNTHETIC scene generated by cropseg (seed {seed}); not a Planet product. Structure follows Planet's
     PSScene analytic metadata; values are made up. -->
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
            <eop:identifier>{identifier}</eop:identifier>
            <eop:acquisitionType>NOMINAL</eop:acquisitionType>
            <eop:productType>L3B</eop:productType>
            <eop:status>ARCHIVED</eop:status>
            <eop:downlinkedTo>
                <eop:DownlinkInformation>
                    <eop:acquisitionStation codeSpace="urn:eop:PS:stationLocation">Planet Ground Station Network</eop:acquisitionStation>
                    <eop:acquisitionDate>{acquired}</eop:acquisitionDate>
                </eop:DownlinkInformation>
            </eop:downlinkedTo>
            <eop:archivedIn>
                <eop:ArchivingInformation>
                    <eop:archivingCenter codeSpace="urn:eop:PS:stationLocation">Planet Archive Center</eop:archivingCenter>
                    <eop:archivingDate>{acquired}</eop:archivingDate>
                    <eop:archivingIdentifier codeSpace="urn:eop:PS:dmsCatalogueId">{archive_id}</eop:archivingIdentifier>
                </eop:ArchivingInformation>
            </eop:archivedIn>
            <eop:processing>
                <eop:ProcessingInformation>
                    <eop:processorName>cropseg synthetic scene generator</eop:processorName>
                    <eop:processorVersion>1.0</eop:processorVersion>
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
                    <eop:serialIdentifier>{serial}</eop:serialIdentifier>
                    <eop:orbitType>LEO-SSO</eop:orbitType>
                </eop:Platform>
            </eop:platform>
            <eop:instrument>
                <eop:Instrument>
                    <eop:shortName>PS2</eop:shortName>
                </eop:Instrument>
            </eop:instrument>
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
                    <eop:incidenceAngle uom="deg">{incidence:.6e}</eop:incidenceAngle>
                    <opt:illuminationAzimuthAngle uom="deg">{sun_az:.6e}</opt:illuminationAzimuthAngle>
                    <opt:illuminationElevationAngle uom="deg">{sun_el:.6e}</opt:illuminationElevationAngle>
                    <ps:azimuthAngle uom="deg">{azimuth:.6e}</ps:azimuthAngle>
                    <ps:spaceCraftViewAngle uom="deg">{view:.6e}</ps:spaceCraftViewAngle>
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
                    <gml:Polygon srsName="EPSG:4326"><gml:outerBoundaryIs><gml:LinearRing><gml:coordinates>{footprint}</gml:coordinates></gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>
                 </gml:surfaceMembers>
              </gml:MultiSurface>
            </gml:multiExtentOf>
            <gml:centerOf>
                <gml:Point srsName="EPSG:4326">
                <gml:pos>{center_lon:.10f} {center_lat:.10f}</gml:pos>
                </gml:Point>
            </gml:centerOf>
            <ps:geographicLocation>
                <ps:topLeft>
                    <ps:latitude>{north:.10f}</ps:latitude>
                    <ps:longitude>{west:.10f}</ps:longitude>
                </ps:topLeft>
                <ps:topRight>
                    <ps:latitude>{north:.10f}</ps:latitude>
                    <ps:longitude>{east:.10f}</ps:longitude>
                </ps:topRight>
                <ps:bottomRight>
                    <ps:latitude>{south:.10f}</ps:latitude>
                    <ps:longitude>{east:.10f}</ps:longitude>
                </ps:bottomRight>
                <ps:bottomLeft>
                    <ps:latitude>{south:.10f}</ps:latitude>
                    <ps:longitude>{west:.10f}</ps:longitude>
                </ps:bottomLeft>
            </ps:geographicLocation>
        </ps:Footprint>
    </gml:target>

    <gml:resultOf>
        <ps:EarthObservationResult>
            <eop:product>
                <ps:ProductInformation>
                    <eop:fileName>{file_name}</eop:fileName>
                    <ps:productFormat>GeoTIFF</ps:productFormat>
                    <ps:spatialReferenceSystem>
                        <ps:epsgCode>{epsg}</ps:epsgCode>
                        <ps:geodeticDatum>WGS_1984</ps:geodeticDatum>
                        <ps:projection>WGS 84 / UTM zone 10N</ps:projection>
                        <ps:projectionZone>10</ps:projectionZone>
                    </ps:spatialReferenceSystem>
                    <ps:resamplingKernel>CC</ps:resamplingKernel>
                    <ps:numRows>{rows}</ps:numRows>
                    <ps:numColumns>{columns}</ps:numColumns>
                    <ps:numBands>4</ps:numBands>
                    <ps:rowGsd>3.0</ps:rowGsd>
                    <ps:columnGsd>3.0</ps:columnGsd>
                    <ps:radiometricCorrectionApplied>true</ps:radiometricCorrectionApplied>
                    <ps:geoCorrectionLevel>Precision Geocorrection</ps:geoCorrectionLevel>
                    <ps:elevationCorrectionApplied>FineDEM</ps:elevationCorrectionApplied>
                    <ps:atmosphericCorrectionApplied>false</ps:atmosphericCorrectionApplied>
                </ps:ProductInformation>
            </eop:product>

            <eop:mask>
                <eop:MaskInformation>
                <eop:type>UNUSABLE DATA</eop:type>
                <eop:format>RASTER</eop:format>
                <eop:referenceSystemIdentifier codeSpace="EPSG">{epsg}</eop:referenceSystemIdentifier>
                <eop:fileName>NA</eop:fileName>
                </eop:MaskInformation>
            </eop:mask>

            <opt:cloudCoverPercentage uom="percentage">0.0</opt:cloudCoverPercentage>
            <opt:cloudCoverPercentageQuotationMode>AUTOMATIC</opt:cloudCoverPercentageQuotationMode>
            <ps:unusableDataPercentage uom="percentage">0.0</ps:unusableDataPercentage>

{bands}
        </ps:EarthObservationResult>
    </gml:resultOf>
</ps:EarthObservation>
"""


def _metadata_xml(layout: _Layout, scene_id: str, seed: int, acquired: datetime, file_name: str) -> str:
    transformer = _lonlat_transformer()
    corners = layout.footprint_utm()
    ring = np.vstack([corners, corners[:1]])
    lon, lat = transformer.transform(ring[:, 0], ring[:, 1])
    footprint = " ".join(f"{x!r},{y!r}" for x, y in zip(np.round(lon, 12).tolist(), np.round(lat, 12).tolist()))
    centre = Polygon(corners).centroid
    c_lon, c_lat = transformer.transform(centre.x, centre.y)
    when = acquired.replace(tzinfo=timezone.utc) if acquired.tzinfo is None else acquired.astimezone(timezone.utc)
    sun_az, sun_el = _sun_angles(when, c_lon, c_lat)
    rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK64, 0x5E7A]))
    parts = scene_id.split("_")
    serial = parts[2] if len(parts) >= 3 and parts[2] else "0s00"
    bands = "\n".join(_BAND_XML.format(band=b + 1, coef=repr(float(c))) for b, c in enumerate(layout.coefficients))
    return _METADATA_XML.format(
        seed=seed,
        identifier=escape(f"{scene_id}_3B_AnalyticMS"),
        acquired=when.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        archive_id=int(rng.integers(100000, 999999)),
        serial=escape(serial),
        incidence=float(rng.uniform(0.2, 5.0)),
        sun_az=sun_az,
        sun_el=sun_el,
        azimuth=float(rng.uniform(0, 360)),
        view=float(rng.uniform(0.2, 4.5)),
        footprint=footprint,
        center_lon=c_lon,
        center_lat=c_lat,
        north=max(lat),
        south=min(lat),
        west=min(lon),
        east=max(lon),
        file_name=escape(file_name),
        epsg=EPSG,
        rows=layout.height,
        columns=layout.width,
        bands=bands,
    )


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def generate_scene(
    directory: Path,
    *,
    scene_id: str,
    seed: int,
    width: int = 1000,
    height: int = 1000,
    left: float = 630000.0,
    top: float = 4240000.0,
    acquired: datetime,
    block_size: int = 512,
    difficulty: Difficulty | None = None,
) -> SyntheticScene:
    """Write a synthetic PSScene (GeoTIFF + metadata XML) and its survey ground truth into ``directory``.

    ``(left, top)`` is the raster's top-left corner in EPSG:32610 metres; pixels are 3 m. The same
    arguments always give the same raster values and the same GeoJSON (``block_size`` only changes how
    many rows and columns are computed at once, never the result); another ``seed`` gives another
    landscape. Each file is written under a temporary name and renamed into place when complete.
    ``difficulty`` makes a scene of the hard preset (:class:`Difficulty`); ``None``, the default scene.
    """
    if width < 32 or height < 32:
        raise ConfigError(f"synthetic scene: width and height must be at least 32 pixels, got {width}x{height}")
    if block_size < 16:
        raise ConfigError(f"synthetic scene: block_size must be at least 16, got {block_size}")
    if not scene_id or "/" in scene_id or "\\" in scene_id:
        raise ConfigError(f"synthetic scene: bad scene_id {scene_id!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScene(
        scene_id=scene_id,
        analytic=directory / f"{scene_id}_3B_AnalyticMS.tif",
        metadata_xml=directory / f"{scene_id}_3B_AnalyticMS_metadata.xml",
        ground_truth=directory / f"{scene_id}_ground_truth.geojson",
    )
    start = time.perf_counter()
    layout = _build_layout(seed, width, height, float(left), float(top), difficulty)
    log.debug("layout built in %.2f s", time.perf_counter() - start)
    _write_raster(layout, scene.analytic, block_size)
    _write_text(scene.metadata_xml, _metadata_xml(layout, scene_id, seed, acquired, scene.analytic.name))
    _write_text(scene.ground_truth, _ground_truth_json(layout))
    log.info(
        "synthetic scene %s (%dx%d, seed %d) written to %s in %.1f s",
        scene_id,
        width,
        height,
        seed,
        directory,
        time.perf_counter() - start,
    )
    return scene
