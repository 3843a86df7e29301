"""A SYNTHETIC multi-date sample: the same farmland seen on 2..N dates of one growing season.

:func:`generate_stack` writes, for one scene (train or test), one PSScene-like acquisition per date
(``<scene_id>_3B_AnalyticMS.tif`` 4-band uint16 on one EPSG:32610 3 m grid, nodata 0; its Planet-schema
``_metadata.xml`` with the date's ``reflectanceCoefficient``; a udm2-style ``_udm2.tif``: 8 bands uint8,
band 1 clear, band 3 shadow, band 6 cloud) and one DWR-style survey GeoJSON for the place.

What no single date separates
-----------------------------
Every field follows a phenology curve (greenness of the canopy over the day of year, with a per-field
shift of its calendar and a per-field amplitude) and its pixels mix bare soil / dry residue with green
vegetation by that greenness:

=============  ======  ==============================================================================
cover          CLASS1  season
=============  ======  ==============================================================================
winter grain   G       green-up in March, peak mid-April, harvested mid-June: dry stubble afterwards
corn           F       sown in spring, peak early August
tomatoes       T       peak mid-July
rice           R       flooded in May, peak mid-August
alfalfa        P       green all season, cut every five weeks (greenness saw-tooth)
grassland      NV      green in late winter, peak late March, dry from May (non-crop)
fallow         I       bare soil with a weedy flush in April (non-crop)
shrub          NV      moderately green all year, as green as a crop in mid-growth (non-crop)
water          NW      open water (non-crop)
=============  ======  ==============================================================================

On a spring date grassland looks like grain and summer crops look like fallow; on a summer date
harvested grain looks like dry grass or fallow and shrub like alfalfa just after a cut; their curves
over the season differ. About 3 % of the fields changed since the survey (the survey's class is wrong),
like the single-date sample's. Clouds (bright, with a shadow offset from them) cover part of some
dates; the udm2 marks their cores, not their thin edges, as real masks do.

Fields are cells of an irregular road grid (cut positions drawn once per scene), so every pixel's class
is found by two binary searches: the raster is written window by window, memory stays bounded and the
result does not depend on the window size (every random pixel quantity is a hash of its row/column).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .synth import (
    BASE_REFLECTANCE_COEFFICIENTS,
    DRY_GRASS,
    EPSG,
    GREEN_VEG,
    PIXEL_SIZE,
    RICE_WATER,
    SOIL,
    SQ_METRES_PER_ACRE,
    STRAW,
    TILE_SIZE,
    WATER,
    _atomic_path,
    _channel_key,
    _gaussian_noise,
    _metadata_xml,
    _to_dn,
    _value_noise,
    _write_text,
)

#: bump when the generator changes so caches are not reused across versions
MULTIDATE_VERSION = 1
#: first and last day of year of the acquisitions (dates are spread evenly between them)
SEASON = (80, 260)
YEAR = 2017
ROAD_HALF_WIDTH = 2  # pixels either side of a field boundary

# class index -> (name, CLASS1, crop)
CLASSES: tuple[tuple[str, str, bool], ...] = (
    ("grain", "G", True),
    ("corn", "F", True),
    ("tomato", "T", True),
    ("rice", "R", True),
    ("alfalfa", "P", True),
    ("grassland", "NV", False),
    ("fallow", "I", False),
    ("shrub", "NV", False),
    ("water", "NW", False),
)
#: how often each class is drawn for a field
WEIGHTS = np.array([0.16, 0.11, 0.10, 0.06, 0.08, 0.15, 0.13, 0.17, 0.04])
GRAIN, CORN, TOMATO, RICE, ALFALFA, GRASS, FALLOW, SHRUB, WATER_C = range(len(CLASSES))
_CLOUD_SPECTRUM = np.array([0.42, 0.43, 0.44, 0.47], dtype=np.float32)[:, None, None]
_HAZE = np.array([1.0, 0.7, 0.45, 0.2], dtype=np.float32)[:, None, None]


def season_dates(n: int) -> list[date]:
    """``n`` acquisition dates spread evenly over :data:`SEASON` of :data:`YEAR`."""
    lo, hi = SEASON
    doys = [lo + round(i * (hi - lo) / (n - 1)) for i in range(n)] if n > 1 else [lo]
    return [date(YEAR, 1, 1) + timedelta(days=d - 1) for d in doys]


def greenness(cls: np.ndarray, doy: float, shift: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Canopy greenness in [0, 1] of fields of class ``cls`` on day of year ``doy`` (per-field calendar
    ``shift`` in days and amplitude factor ``amp``)."""
    d = doy - shift

    def bell(peak: float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((d - peak) / width) ** 2)

    g = np.zeros(cls.shape, dtype=np.float64)
    g = np.where(cls == GRAIN, np.where(d < 165, 0.08 + 0.80 * amp * bell(105, 28), 0.06), g)
    g = np.where(cls == CORN, 0.06 + 0.82 * amp * bell(215, 33), g)
    g = np.where(cls == TOMATO, 0.06 + 0.70 * amp * bell(195, 28), g)
    g = np.where(cls == RICE, 0.04 + 0.85 * amp * bell(225, 32), g)
    g = np.where(cls == ALFALFA, 0.30 + 0.45 * amp * ((d % 35) / 35.0), g)
    g = np.where(cls == GRASS, np.where(d < 150, 0.10 + 0.75 * amp * bell(85, 35), 0.07), g)
    g = np.where(cls == FALLOW, 0.05 + 0.40 * amp * bell(100, 22), g)
    g = np.where(cls == SHRUB, 0.42 * amp + 0.08 * np.sin(2 * math.pi * (d - 60) / 365.0), g)
    g = np.where(cls == WATER_C, 0.0, g)
    return np.clip(g, 0.0, 1.0)


@dataclass(frozen=True)
class StackFiles:
    """The files of one date of a synthetic stack."""

    date: date
    scene_id: str
    analytic: Path
    metadata_xml: Path
    udm2: Path


@dataclass
class _Fields:
    width: int
    height: int
    left: float
    top: float
    row_cuts: np.ndarray  # field boundaries (pixel rows), starting with 0
    col_cuts: np.ndarray
    cls: np.ndarray  # per cell (row-major): actual class
    survey_cls: np.ndarray  # what the survey says
    shift: np.ndarray
    amp: np.ndarray
    soil: np.ndarray
    seed: int

    @property
    def transform(self) -> Any:
        from affine import Affine

        return Affine(PIXEL_SIZE, 0.0, self.left, 0.0, -PIXEL_SIZE, self.top)


def _cuts(length: int, rng: np.random.Generator) -> np.ndarray:
    cuts = [0]
    while cuts[-1] < length:
        cuts.append(cuts[-1] + int(rng.integers(45, 150)))
    return np.asarray(cuts[:-1], dtype=np.int64)


def build_fields(seed: int, width: int, height: int, left: float, top: float) -> _Fields:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E41]))
    rows, cols = _cuts(height, rng), _cuts(width, rng)
    n = len(rows) * len(cols)
    cls = rng.choice(len(CLASSES), size=n, p=WEIGHTS / WEIGHTS.sum())
    survey = cls.copy()
    changed = rng.random(n) < 0.03
    crop = np.array([c[2] for c in CLASSES])
    # a changed field: the survey names a class of the other kind (crop <-> non-crop)
    other = np.where(crop[cls], rng.choice([GRASS, FALLOW, SHRUB], size=n), rng.choice([GRAIN, CORN, TOMATO], size=n))
    survey[changed & (cls != WATER_C)] = other[changed & (cls != WATER_C)]
    return _Fields(
        width,
        height,
        left,
        top,
        rows,
        cols,
        cls,
        survey,
        shift=rng.normal(0.0, 12.0, n),
        amp=rng.uniform(0.7, 1.15, n),
        soil=rng.uniform(0.8, 1.2, n),
        seed=seed,
    )


def _clouds(f: _Fields, t: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Cloud opacity in [0, 1] and shadow (0..1) of date ``t`` on the block, or None on a clear date."""
    key = _channel_key(f.seed, 9000 + t)
    if key % 5 not in (1, 3):  # about two dates in five carry clouds
        return None
    level = 0.55 + 0.25 * ((key >> 8) % 100) / 100.0  # higher = fewer clouds

    def opacity(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        n = 0.65 * _value_noise(r, c, 90.0, key) + 0.35 * _value_noise(r, c, 23.0, key ^ 0x55)
        return np.clip((n - level + 0.25) / 0.25, 0.0, 1.0)

    op = opacity(rows, cols)
    shadow = opacity(rows - 25, cols - 18)
    return op.astype(np.float32), shadow.astype(np.float32)


def render_block(f: _Fields, t: int, doy: float, row0: int, col0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """TOA reflectance ``(4, h, w)`` of date ``t`` (day of year ``doy``) and the udm2 ``(8, h, w)``."""
    rows = np.arange(row0, row0 + h)
    cols = np.arange(col0, col0 + w)
    ri = np.searchsorted(f.row_cuts, rows, side="right") - 1
    ci = np.searchsorted(f.col_cuts, cols, side="right") - 1
    cell = ri[:, None] * len(f.col_cuts) + ci[None, :]
    dr = np.minimum(rows - f.row_cuts[ri], np.append(f.row_cuts[1:], f.height)[ri] - 1 - rows)
    dc = np.minimum(cols - f.col_cuts[ci], np.append(f.col_cuts[1:], f.width)[ci] - 1 - cols)
    road = (dr[:, None] < ROAD_HALF_WIDTH) | (dc[None, :] < ROAD_HALF_WIDTH)
    cls = f.cls[cell]
    g_cell = greenness(f.cls, doy, f.shift, f.amp)
    texture = _value_noise(rows, cols, 14.0, _channel_key(f.seed, 100 + t))
    g = np.clip(g_cell[cell] + 0.05 * texture, 0.0, 1.0).astype(np.float32)
    soil = np.asarray(SOIL, np.float32)[:, None, None] * f.soil[cell].astype(np.float32)
    dry = np.asarray(DRY_GRASS, np.float32)[:, None, None] * f.soil[cell].astype(np.float32)
    straw = np.asarray(STRAW, np.float32)[:, None, None]
    d = doy - f.shift[cell]
    background = np.where((cls == GRASS) | (cls == SHRUB), dry, soil)
    background = np.where((cls == GRAIN) & (d >= 165), 0.5 * (dry + straw), background)
    veg = np.asarray(GREEN_VEG, np.float32)[:, None, None]
    refl = background * (1 - g) + veg * g
    flooded = ((cls == RICE) & (d > 120) & (d < 155))[None]
    refl = np.where(flooded, 0.6 * np.asarray(RICE_WATER, np.float32)[:, None, None] + 0.4 * refl, refl)
    refl = np.where((cls == WATER_C)[None], np.asarray(WATER, np.float32)[:, None, None], refl)
    refl = np.where(road[None], np.float32(0.9) * soil + np.float32(0.02), refl)
    haze = 0.004 + 0.012 * ((_channel_key(f.seed, 7000 + t) >> 12) % 100) / 100.0
    refl = refl + np.float32(haze) * _HAZE
    for b in range(4):
        refl[b] += np.float32(0.006) * _gaussian_noise(rows, cols, _channel_key(f.seed, 40 * (t + 1) + b))
    udm = np.zeros((8, h, w), dtype=np.uint8)
    clouds = _clouds(f, t, rows, cols)
    clear = np.ones((h, w), dtype=bool)
    if clouds is not None:
        op, shadow = clouds
        refl = refl * (1 - 0.55 * shadow[None] * (1 - op[None]))
        refl = refl * (1 - op[None]) + _CLOUD_SPECTRUM * op[None]
        cloud_core, shadow_core = op > 0.5, (shadow > 0.5) & (op <= 0.5)
        udm[5] = cloud_core
        udm[2] = shadow_core
        clear = ~(cloud_core | shadow_core)
    udm[0] = clear
    udm[6] = 90  # confidence, as Planet's band 7
    return np.clip(refl, 0.001, 1.0).astype(np.float32), udm


def _write_date(f: _Fields, t: int, when: date, files: StackFiles, coefficients: tuple[float, ...]) -> None:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    doy = when.timetuple().tm_yday
    common = {
        "driver": "GTiff",
        "width": f.width,
        "height": f.height,
        "crs": CRS.from_epsg(EPSG),
        "transform": f.transform,
        "tiled": True,
        "blockxsize": TILE_SIZE,
        "blockysize": TILE_SIZE,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    with _atomic_path(files.analytic) as tmp, _atomic_path(files.udm2) as tmp_udm:
        with (
            rasterio.open(tmp, "w", count=4, dtype="uint16", nodata=0, predictor=2, **common) as dst,
            rasterio.open(tmp_udm, "w", count=8, dtype="uint8", **common) as udst,
        ):
            dst.update_tags(SYNTHETIC="true", GENERATOR="cropseg synthetic multi-date PSScene (not a Planet product)")
            udst.update_tags(
                SYNTHETIC="true", BANDS="clear,snow,shadow,light_haze,heavy_haze,cloud,confidence,unusable"
            )
            block = 512
            for row0 in range(0, f.height, block):
                for col0 in range(0, f.width, block):
                    h, w = min(block, f.height - row0), min(block, f.width - col0)
                    refl, udm = render_block(f, t, doy, row0, col0, h, w)
                    win = Window(col0, row0, w, h)
                    dst.write(_to_dn(refl, np.ones((h, w), bool), coefficients), window=win)
                    udst.write(udm, window=win)


class _Frame:
    """What :func:`cropseg_plugins.sample.synth._metadata_xml` needs of a layout."""

    def __init__(self, f: _Fields, coefficients: tuple[float, ...]):
        self.width, self.height, self.coefficients = f.width, f.height, coefficients
        self._f = f

    def footprint_utm(self) -> np.ndarray:
        f = self._f
        w, h = f.width * PIXEL_SIZE, f.height * PIXEL_SIZE
        return np.array([[f.left, f.top], [f.left + w, f.top], [f.left + w, f.top - h], [f.left, f.top - h]])


def _ground_truth_json(f: _Fields) -> str:
    from pyproj import Transformer
    from shapely.geometry import Polygon, mapping

    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True).transform
    row_ends = np.append(f.row_cuts[1:], f.height)
    col_ends = np.append(f.col_cuts[1:], f.width)
    features = []
    for i, (r0, r1) in enumerate(zip(f.row_cuts, row_ends)):
        for j, (c0, c1) in enumerate(zip(f.col_cuts, col_ends)):
            k = i * len(f.col_cuts) + j
            name, class1, _ = CLASSES[int(f.survey_cls[k])]
            x0, x1 = f.left + (c0 + ROAD_HALF_WIDTH) * PIXEL_SIZE, f.left + (c1 - ROAD_HALF_WIDTH) * PIXEL_SIZE
            y0, y1 = f.top - (r1 - ROAD_HALF_WIDTH) * PIXEL_SIZE, f.top - (r0 + ROAD_HALF_WIDTH) * PIXEL_SIZE
            if x1 <= x0 or y1 <= y0:
                continue
            xs, ys = to_ll([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
            geom = Polygon(list(zip(xs, ys)))
            acres = (x1 - x0) * (y1 - y0) / SQ_METRES_PER_ACRE
            features.append(
                {
                    "type": "Feature",
                    "id": str(len(features) + 1),
                    "properties": {
                        "CLASS1": class1,
                        "COVER": name,
                        "ACRES": round(acres, 3),
                        "SURVEYYEAR": str(YEAR),
                        "SYNTHETIC": True,
                    },
                    "geometry": mapping(geom),
                }
            )
    return (
        json.dumps(
            {
                "type": "FeatureCollection",
                "synthetic": True,
                "description": (
                    "SYNTHETIC DWR-style survey of a synthetic multi-date scene generated by cropseg; not real "
                    "survey data. CLASS1 crops: G R F P T; non-crop: I NV NW."
                ),
                "features": features,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def generate_stack(
    directory: Path, *, role: str, seed: int, n_dates: int, width: int, height: int, left: float, top: float
) -> tuple[list[StackFiles], Path]:
    """Write (or reuse, when complete) the ``n_dates`` acquisitions of one synthetic scene and its survey
    GeoJSON into ``directory``; the same arguments always give the same files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    f = build_fields(seed, width, height, float(left), float(top))
    out = []
    for t, when in enumerate(season_dates(n_dates)):
        scene_id = f"{when:%Y%m%d}_1804{t:02d}_{seed % 65536:04x}"
        files = StackFiles(
            when,
            scene_id,
            directory / f"{scene_id}_3B_AnalyticMS.tif",
            directory / f"{scene_id}_3B_AnalyticMS_metadata.xml",
            directory / f"{scene_id}_3B_udm2.tif",
        )
        coefficients = tuple(float(c) * (1.0 + 0.015 * ((t * 7) % 5 - 2)) for c in BASE_REFLECTANCE_COEFFICIENTS)
        if not (files.analytic.is_file() and files.udm2.is_file()):
            _write_date(f, t, when, files, coefficients)
        if not files.metadata_xml.is_file():
            acquired = datetime(when.year, when.month, when.day, 18, 4, t, tzinfo=timezone.utc)
            xml = _metadata_xml(_Frame(f, coefficients), scene_id, seed, acquired, files.analytic.name)  # type: ignore[arg-type]
            _write_text(files.metadata_xml, xml)
        out.append(files)
    gt = directory / f"{role}_{seed % 65536:04x}_ground_truth.geojson"
    if not gt.is_file():
        _write_text(gt, _ground_truth_json(f))
    return out, gt
