"""The good-practice area protocol on crop masks: sample design, labelled-sample estimation, simulation.

``cropseg sample-design MASK.tif`` draws a seeded stratified random sample of pixel centres (strata = the
map classes 0 non-crop / 1 crop; 255 nodata excluded), sized with Cochran's formula (Olofsson et al. 2014
eq. 13), as GeoJSON (EPSG:4326) and CSV with an empty ``reference`` field for a person to fill.
``cropseg estimate-area MASK.tif SAMPLE.geojson`` turns the labelled sample plus the mapped stratum areas
into the stratified estimates of :mod:`cropseg.area` (text, JSON, an MLflow run). Runs simulate the
protocol on their wall-to-wall labelled test scene (:func:`area_metrics`).

Memory is bounded by the sample, never the scene: the mask is read in windows, stratum sizes are counted
block by block, and a sample is drawn as ranks within each stratum that a second windowed pass turns
into pixel positions.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .area import (
    ALLOCATIONS,
    AreaEstimate,
    SampleError,
    allocate,
    cochran_sample_size,
    design_se,
    error_counts,
)
from .errors import ConfigError, CropsegError, CRSMismatchError, InputFileError, RasterFormatError
from .raster import atomic_path, check_known_crs, iter_windows, open_raster
from .types import IGNORE
from .vector import check_declared_crs

log = logging.getLogger("cropseg")

CLASSES = ["non-crop", "crop"]
DEFAULT_CROP_CODES = ("1", "crop")
DEFAULT_NONCROP_CODES = ("0", "noncrop", "non-crop")
BLOCK = 1024
#: allocations of the protocol simulated in runs (neyman needs anticipated accuracies: sample-design only)
RUN_ALLOCATIONS = tuple(a for a in ALLOCATIONS if a != "neyman")


@dataclass
class MaskInfo:
    """A 0/1/255 mask: its grid, pixels per stratum (non-crop, crop) and the area of one pixel."""

    path: Path
    crs: Any
    transform: Any
    width: int
    height: int
    counts: np.ndarray
    pixel_area_ha: float


def pixel_area_ha(crs: Any, transform: Any, path: Path | str = "mask") -> float:
    """Area of one pixel in hectares; the CRS must be projected (metres or another linear unit)."""
    from pyproj import CRS as PyCRS

    if crs is None:
        raise RasterFormatError(f"{path}: the mask has no CRS")
    check_known_crs(crs, path, "mask")
    pcrs = PyCRS.from_user_input(crs.to_wkt())
    if pcrs.is_geographic:
        raise RasterFormatError(
            f"{path}: the mask is in a geographic CRS ({crs}); areas in hectares need a projected CRS"
        )
    unit = float(pcrs.axis_info[0].unit_conversion_factor)
    return abs(transform.a * transform.e - transform.b * transform.d) * unit**2 / 1e4


def _strata_block(mask: np.ndarray, truth: np.ndarray | None, inside: np.ndarray | None = None) -> np.ndarray:
    out = mask if truth is None else np.where(truth == IGNORE, IGNORE, mask).astype(mask.dtype)
    return out if inside is None else np.where(inside, out, IGNORE).astype(mask.dtype)


class Within:
    """The extent a sample is restricted to (``--within``): a raster on the mask's grid whose labelled
    pixels (neither 255 nor nodata, e.g. a run's ``labels/test_labels.tif``) or a vector file whose
    polygons (any CRS PROJ knows; reprojected to the mask's) are inside. Read window by window."""

    def __init__(self, path: Path | str, src: Any):
        self.path = Path(path)
        self._raster: Any = None
        self._geoms: Any = None
        if not self.path.exists():
            raise InputFileError(f"--within {self.path}: file not found")
        if self.path.suffix.lower() in (".tif", ".tiff", ".vrt", ".img"):
            self._raster = open_raster(self.path, what="--within raster")
            if self._raster.shape != src.shape or self._raster.transform != src.transform:
                self._raster.close()
                raise RasterFormatError(
                    f"--within {self.path}: not on the grid of {src.name} ({self._raster.width}x"
                    f"{self._raster.height} vs {src.width}x{src.height} pixels, or another transform)"
                )
            return
        from .vector import read_vector, to_crs

        gdf = to_crs(read_vector(self.path), src.crs, what=f"--within {self.path}")
        polys = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
        if not len(polys):
            raise InputFileError(f"--within {self.path}: holds no polygons")
        self._geoms = polys.geometry.reset_index(drop=True)

    def block(self, window: Any, transform: Any) -> np.ndarray:
        """True where pixels of ``window`` lie inside the extent."""
        h, w = int(window.height), int(window.width)
        if self._raster is not None:
            v = self._raster.read(1, window=window)
            return (v != IGNORE) & (self._raster.read_masks(1, window=window) > 0)
        import shapely
        from rasterio.features import geometry_mask
        from rasterio.windows import bounds as wbounds
        from rasterio.windows import transform as wtransform

        hits = self._geoms.sindex.query(shapely.box(*wbounds(window, transform)))
        if not len(hits):
            return np.zeros((h, w), dtype=bool)
        return geometry_mask(
            list(self._geoms.iloc[hits]), out_shape=(h, w), transform=wtransform(window, transform), invert=True
        )

    def close(self) -> None:
        if self._raster is not None:
            self._raster.close()


def read_mask(
    path: Path | str, exclude: Path | str | None = None, block: int = BLOCK, within: Path | str | None = None
) -> MaskInfo:
    """Check that ``path`` is a single-band 0/1/255 raster and count its pixels per stratum, block by
    block; pixels that are 255 in ``exclude`` (a label raster on the same grid) or outside ``within``
    (:class:`Within`) are left out too."""
    p = Path(path)
    with open_raster(p, what="mask") as src:
        if src.count != 1 or not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise RasterFormatError(
                f"{p}: a crop mask is one integer band of 0 non-crop, 1 crop, 255 nodata; "
                f"found {src.count} band(s) of {src.dtypes[0]}"
            )
        if src.transform.is_identity:
            raise RasterFormatError(f"{p}: the mask has no georeferencing (identity transform)")
        area = pixel_area_ha(src.crs, src.transform, p)
        tsrc = open_raster(Path(exclude), what="label raster") if exclude is not None else None
        inside = Within(within, src) if within is not None else None
        try:
            if tsrc is not None and (tsrc.shape != src.shape or tsrc.transform != src.transform):
                raise RasterFormatError(f"{exclude}: not on the grid of {p}")
            counts = np.zeros(256, dtype=np.int64)
            for w in iter_windows(src.height, src.width, block):
                m = src.read(1, window=w)
                if m.size and (int(m.min()) < 0 or int(m.max()) > 255):
                    raise RasterFormatError(f"{p}: not a 0/1/255 crop mask (found values outside 0-255)")
                blk = _strata_block(
                    m,
                    tsrc.read(1, window=w) if tsrc else None,
                    inside.block(w, src.transform) if inside else None,
                )
                counts += np.bincount(blk.ravel().astype(np.int64), minlength=256)[:256]
        finally:
            if tsrc is not None:
                tsrc.close()
            if inside is not None:
                inside.close()
        other = [v for v in np.flatnonzero(counts) if v not in (0, 1, IGNORE)]
        if other:
            shown = ", ".join(str(int(v)) for v in other[:5])
            raise RasterFormatError(
                f"{p}: not a 0/1/255 crop mask (found value(s) {shown}{'...' if len(other) > 5 else ''})"
            )
        strata = counts[[0, 1]]
        if strata.sum() == 0:
            where = f" inside --within {within}" if within is not None else ""
            raise RasterFormatError(f"{p}: the mask holds no classified (0 or 1) pixels{where}")
        return MaskInfo(p, src.crs, src.transform, src.width, src.height, strata, area)


def draw_positions(
    mask: MaskInfo,
    n_per_stratum: Sequence[int] | np.ndarray,
    seed: int,
    exclude: Path | str | None = None,
    block: int = BLOCK,
    within: Path | str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stratified random sample without replacement: ``n_per_stratum[h]`` pixels of stratum ``h``, each
    pixel of a stratum equally likely. Ranks are drawn within each stratum up front; a windowed pass
    finds the pixels holding them. Returns (rows, cols, strata) sorted by row and column. ``mask`` must
    have been counted with the same ``exclude`` / ``within``."""
    return _draw(mask, n_per_stratum, seed, exclude, block, within)[:3]


def _draw(
    mask: MaskInfo,
    n_per_stratum: Sequence[int] | np.ndarray,
    seed: int,
    exclude: Path | str | None,
    block: int,
    within: Path | str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`draw_positions`, plus the values of the ``exclude`` raster at the drawn pixels."""
    rng = np.random.default_rng(seed)
    ranks = []
    for h, n_h in enumerate(n_per_stratum):
        if n_h > mask.counts[h]:
            raise ConfigError(f"stratum {CLASSES[h]!r}: {n_h} points asked, {int(mask.counts[h])} pixels")
        ranks.append(
            np.sort(rng.choice(int(mask.counts[h]), size=int(n_h), replace=False))
            if n_h
            else np.zeros(0, dtype=np.int64)
        )
    offsets = [0, 0]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    strata: list[np.ndarray] = []
    values: list[np.ndarray] = []
    with rasterio.open(mask.path) as src:
        tsrc = rasterio.open(exclude) if exclude is not None else None
        inside = Within(within, src) if within is not None else None
        try:
            for w in iter_windows(src.height, src.width, block):
                tblk = tsrc.read(1, window=w).ravel() if tsrc else None
                iblk = inside.block(w, src.transform).ravel() if inside else None
                blk = _strata_block(src.read(1, window=w).ravel(), tblk, iblk)
                for h in (0, 1):
                    flat = np.flatnonzero(blk == h)
                    lo, hi = np.searchsorted(ranks[h], [offsets[h], offsets[h] + len(flat)])
                    if hi > lo:
                        pos = flat[ranks[h][lo:hi] - offsets[h]]
                        rows.append(pos // int(w.width) + int(w.row_off))
                        cols.append(pos % int(w.width) + int(w.col_off))
                        strata.append(np.full(hi - lo, h, dtype=np.int64))
                        values.append(tblk[pos].astype(np.int64) if tblk is not None else np.full(hi - lo, -1))
                    offsets[h] += len(flat)
        finally:
            if tsrc is not None:
                tsrc.close()
            if inside is not None:
                inside.close()
    if not rows:
        return tuple(np.zeros(0, np.int64) for _ in range(4))  # type: ignore[return-value]
    r, c, s, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(strata), np.concatenate(values)
    order = np.lexsort((c, r))
    return r[order], c[order], s[order], v[order]


@dataclass
class SampleDesign:
    """A drawn sample and how it was sized."""

    mask: MaskInfo
    n: int
    n_per_stratum: np.ndarray
    allocation: str
    rows: np.ndarray
    cols: np.ndarray
    strata: np.ndarray
    seed: int
    target_se: float | None = None
    user_accuracies: tuple[float, float] | None = None
    minimum: int = 50
    within: Path | None = None

    @property
    def expected_se(self) -> float | None:
        """SE of the crop-area proportion this allocation is expected to reach under the anticipated user's
        accuracies (:func:`cropseg.area.design_se`); ``None`` when none were anticipated (``n`` given)."""
        if self.user_accuracies is None:
            return None
        return design_se(
            self.mask.counts, self.user_accuracies, self.n_per_stratum, population=float(self.mask.counts.sum())
        )

    def summary(self) -> dict[str, Any]:
        """The design as saved beside the sample (``<sample>_design.json``) and logged by estimate-area."""
        from . import __version__
        from .lineage import file_digest

        w = self.mask.counts / self.mask.counts.sum()
        return {
            "kind": "cropseg sample design",
            "method": "stratified random sampling, strata = map classes (Olofsson et al. 2014); sample size "
            "from eq. 13 for target_se unless sample_size was given",
            "cropseg_version": __version__,
            "mask": str(self.mask.path.resolve()),
            "mask_sha256": file_digest(self.mask.path),
            "mask_crs": self.mask.crs.to_string(),
            "within": str(self.within.resolve()) if self.within else None,
            "within_sha256": file_digest(self.within) if self.within else None,
            "mapped_pixels": {c: int(v) for c, v in zip(CLASSES, self.mask.counts)},
            "pixel_area_ha": self.mask.pixel_area_ha,
            "mapped_area_ha": {c: float(v * self.mask.pixel_area_ha) for c, v in zip(CLASSES, self.mask.counts)},
            "weights": {c: float(v) for c, v in zip(CLASSES, w)},
            "target_se": self.target_se,
            "anticipated_user_accuracy": (dict(zip(CLASSES, self.user_accuracies)) if self.user_accuracies else None),
            "expected_se": self.expected_se,
            "sample_size": self.n,
            "allocation": self.allocation,
            "minimum": self.minimum if self.allocation == "minimum" else None,
            "points_per_stratum": {c: int(v) for c, v in zip(CLASSES, self.n_per_stratum)},
            "seed": self.seed,
        }


DESIGN_KEYS = ("mask_sha256", "mapped_pixels", "allocation", "points_per_stratum", "seed", "sample_size")


def design_path(sample: Path | str) -> Path:
    """Where the design of a sample file is saved: ``<sample stem>_design.json`` beside it."""
    p = Path(sample)
    return p.with_name(f"{p.stem}_design.json")


def read_design(path: Path | str) -> dict[str, Any]:
    """A design JSON written by ``cropseg sample-design``, checked for the keys estimation relies on."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{p}: design file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{p}: cannot read the sample design: {str(exc).splitlines()[0]}") from None
    missing = [k for k in DESIGN_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise InputFileError(f"{p}: not a cropseg sample design (missing {', '.join(missing)})")
    return data


def design_sample(
    mask_path: Path | str,
    *,
    target_se: float = 0.01,
    user_accuracies: Sequence[float] = (0.9, 0.9),
    n: int | None = None,
    allocation: str = "minimum",
    minimum: int = 50,
    seed: int = 0,
    exclude: Path | str | None = None,
    block: int = BLOCK,
    within: Path | str | None = None,
) -> SampleDesign:
    """Size (Cochran's formula, unless ``n`` is given), allocate and draw a stratified random sample of
    ``mask_path``'s pixels (only those inside ``within`` when given, see :class:`Within`);
    ``user_accuracies`` are the anticipated user's accuracies of (non-crop, crop)."""
    ua = tuple(float(u) for u in user_accuracies)
    if len(ua) != 2:
        raise ConfigError(f"anticipated user's accuracies: two values (non-crop, crop), got {list(ua)}")
    if any(not 0 <= u <= 1 for u in ua):
        raise ConfigError(f"anticipated user's accuracies must lie in [0, 1], got {list(ua)}")
    mask = read_mask(mask_path, exclude, block, within)
    total = int(mask.counts.sum())
    sized = n is None
    if n is None:
        n = cochran_sample_size(mask.counts / total, ua, target_se, population=total)
    per = allocate(int(n), mask.counts, allocation, minimum, user_accuracies=ua)
    rows, cols, strata = draw_positions(mask, per, seed, exclude, block, within)
    return SampleDesign(
        mask,
        int(per.sum()),
        per,
        allocation,
        rows,
        cols,
        strata,
        seed,
        target_se if sized else None,
        (ua[0], ua[1]) if sized or allocation == "neyman" else None,
        minimum,
        Path(within) if within is not None else None,
    )


def write_sample(design: SampleDesign, geojson: Path, csv_path: Path | None) -> Path:
    """The sample as GeoJSON points (EPSG:4326; the mask's CRS and coordinates as properties), CSV, and
    its design as ``<stem>_design.json`` beside them (:func:`design_path`); returns the design's path."""
    import geopandas as gpd
    from rasterio.transform import xy
    from rasterio.warp import transform as warp

    m = design.mask
    xs, ys = xy(m.transform, design.rows, design.cols, offset="center")
    xs, ys = np.atleast_1d(np.asarray(xs, dtype=np.float64)), np.atleast_1d(np.asarray(ys, dtype=np.float64))
    lon, lat = warp(m.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    crs_txt = m.crs.to_string()
    props = {
        "id": np.arange(1, len(xs) + 1),
        "stratum": design.strata.astype(int),
        "stratum_name": [CLASSES[s] for s in design.strata],
        "pixel_row": design.rows.astype(int),
        "pixel_col": design.cols.astype(int),
        "x": xs,
        "y": ys,
        "mask_crs": [crs_txt] * len(xs),
        "reference": [None] * len(xs),
    }
    gdf = gpd.GeoDataFrame(props, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    gdf["reference"] = gdf["reference"].astype(object)
    dpath = design_path(geojson)
    written: list[Path] = []
    try:
        _write_sample_files(design, gdf, geojson, csv_path, xs, ys, lon, lat, crs_txt, written)
        with atomic_path(dpath) as tmp:
            tmp.write_text(json.dumps({**design.summary(), "sample": geojson.name}, indent=2) + "\n")
    except BaseException as exc:  # nothing partial: a sample without its CSV or design is not published
        for f in written:
            f.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, CropsegError):
            from .errors import OutputError

            raise OutputError.from_os_error("the sample", geojson, exc) from None
        raise
    return dpath


def _write_sample_files(
    design: SampleDesign,
    gdf: Any,
    geojson: Path,
    csv_path: Path | None,
    xs: np.ndarray,
    ys: np.ndarray,
    lon: Any,
    lat: Any,
    crs_txt: str,
    written: list[Path],
) -> None:
    with atomic_path(geojson) as tmp:
        gdf.to_file(tmp, driver="GeoJSON", layer=geojson.stem)
    written.append(geojson)
    if csv_path is not None:
        written.append(csv_path)
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(
                [
                    "id",
                    "stratum",
                    "stratum_name",
                    "pixel_row",
                    "pixel_col",
                    "x",
                    "y",
                    "mask_crs",
                    "lon",
                    "lat",
                    "reference",
                ]
            )
            for k in range(len(xs)):
                wr.writerow(
                    [
                        k + 1,
                        int(design.strata[k]),
                        CLASSES[design.strata[k]],
                        int(design.rows[k]),
                        int(design.cols[k]),
                        f"{xs[k]:.3f}",
                        f"{ys[k]:.3f}",
                        crs_txt,
                        f"{lon[k]:.8f}",
                        f"{lat[k]:.8f}",
                        "",
                    ]
                )


# -- estimation from a labelled sample ------------------------------------------------------------------
@dataclass
class LabelledSample:
    """The usable points of a sample: map class (stratum) and reference class, plus what was excluded."""

    map_class: np.ndarray
    reference: np.ndarray
    excluded: dict[str, int] = field(default_factory=dict)
    n_points: int = 0
    frame: Any = None
    other_codes: dict[str, int] = field(default_factory=dict)


def _code(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip().lower()
    return s or None


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def _read_points(path: Path) -> Any:
    import geopandas as gpd
    import pandas as pd

    if not path.exists():
        raise InputFileError(f"{path}: sample file not found")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            if not {"lon", "lat"} <= set(df.columns):
                raise InputFileError(f"{path}: a CSV sample needs lon and lat columns (EPSG:4326)")
            df = df.replace({"": None})
            return gpd.GeoDataFrame(
                df, geometry=gpd.points_from_xy(df["lon"].astype(float), df["lat"].astype(float)), crs="EPSG:4326"
            )
        check_declared_crs(path)  # GDAL reads a GeoJSON declaring a CRS PROJ does not know as EPSG:4326
        if path.suffix.lower() in (".geojson", ".json") and not _PLAIN_NAME.fullmatch(path.name):
            import io  # GDAL cuts file names at characters such as ';': the bytes, named literally

            return gpd.read_file(io.BytesIO(path.read_bytes()))
        return gpd.read_file(path)
    except (InputFileError, CRSMismatchError):
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputFileError(f"{path}: cannot read the sample: {str(exc).splitlines()[0]}") from None


def read_labelled_sample(
    sample: Path | str,
    mask: MaskInfo,
    reference_field: str = "reference",
    crop_values: Sequence[str] = DEFAULT_CROP_CODES,
    noncrop_values: Sequence[str] = DEFAULT_NONCROP_CODES,
) -> LabelledSample:
    """Locate the sample's points on the mask (reprojecting from the sample's declared CRS), read their
    map class, and map their reference values to crop / non-crop. Points outside the mask, on nodata,
    unlabelled or with other reference codes are excluded and counted; errors for unusable samples."""
    path = Path(sample)
    gdf = _read_points(path)
    if len(gdf) == 0:
        raise InputFileError(f"{path}: the sample holds no points")
    if reference_field not in gdf.columns:
        fields = ", ".join(c for c in gdf.columns if c != "geometry")
        raise InputFileError(f"{path}: no field {reference_field!r} (fields: {fields})")
    if gdf.crs is None:
        raise CRSMismatchError(f"{path}: the sample declares no CRS; give it one (GeoJSON is EPSG:4326)")
    if not all(t == "Point" for t in gdf.geometry.geom_type):
        raise InputFileError(f"{path}: every feature of a sample must be a point")
    pts = gdf.to_crs(mask.crs)
    from rasterio.transform import rowcol

    xs, ys = np.asarray(pts.geometry.x, dtype=np.float64), np.asarray(pts.geometry.y, dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)  # points the CRS transformation cannot map
    rows, cols = np.full(len(xs), -1, dtype=np.int64), np.full(len(xs), -1, dtype=np.int64)
    if finite.any():
        rr, cc = rowcol(mask.transform, xs[finite], ys[finite])
        rows[finite], cols[finite] = np.asarray(rr, dtype=np.int64), np.asarray(cc, dtype=np.int64)
    inside = (rows >= 0) & (rows < mask.height) & (cols >= 0) & (cols < mask.width)
    if not inside.any():
        raise CRSMismatchError(
            f"{path}: none of its {len(gdf)} points falls inside {mask.path} (sample CRS "
            f"{gdf.crs.to_string()}, mask CRS {mask.crs.to_string()}): wrong CRS or wrong mask?"
        )
    codes = [_code(v) for v in gdf[reference_field]]
    crop = {c.strip().lower() for c in crop_values}
    noncrop = {c.strip().lower() for c in noncrop_values}
    if crop & noncrop:
        raise ConfigError(f"reference codes {sorted(crop & noncrop)} are given as both crop and non-crop")
    labelled = [c for c in codes if c is not None]
    if not labelled:
        raise InputFileError(
            f"{path}: no {reference_field!r} values (all {len(gdf)} points are empty); label the points first"
        )
    if not any(c in crop or c in noncrop for c in labelled):
        found = ", ".join(f"{k!r}" for k, _ in Counter(labelled).most_common(5))
        raise InputFileError(
            f"{path}: {reference_field!r} values ({found}) are neither crop "
            f"({', '.join(sorted(crop))}) nor non-crop ({', '.join(sorted(noncrop))}) codes"
        )
    map_class = np.full(len(gdf), IGNORE, dtype=np.int64)
    with rasterio.open(mask.path) as src:
        idx = np.flatnonzero(inside)
        if len(idx):
            vals = np.fromiter(
                (v[0] for v in src.sample(zip(xs[idx], ys[idx]), indexes=1)), dtype=np.int64, count=len(idx)
            )
            map_class[idx] = vals
    if "stratum" in gdf.columns:
        stored = [_code(v) for v in gdf["stratum"]]
        clash = [
            k
            for k in np.flatnonzero(inside & (map_class != IGNORE))
            if stored[k] is not None and stored[k] != str(int(map_class[k]))
        ]
        if clash:
            raise SampleError(
                f"{path}: {len(clash)} point(s) have a 'stratum' that differs from {mask.path} at "
                f"their location (first: point {int(clash[0]) + 1}): the sample was drawn from "
                "another map, and the estimators need the strata of the map being assessed"
            )
    reference = np.full(len(gdf), -1, dtype=np.int64)
    excluded: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for k, c in enumerate(codes):
        if not inside[k]:
            excluded["outside the mask"] += 1
        elif map_class[k] == IGNORE:
            excluded["on nodata"] += 1
        elif c is None:
            excluded["unlabelled"] += 1
        elif c in crop:
            reference[k] = 1
        elif c in noncrop:
            reference[k] = 0
        else:
            excluded["other reference codes"] += 1
            others[c] += 1
    keep = reference >= 0
    return LabelledSample(
        map_class[keep],
        reference[keep],
        {k: int(v) for k, v in excluded.items()},
        len(gdf),
        gdf,
        {k: int(v) for k, v in others.most_common()},
    )


def estimate_area(
    mask_path: Path | str,
    sample: Path | str,
    *,
    reference_field: str = "reference",
    crop_values: Sequence[str] = DEFAULT_CROP_CODES,
    noncrop_values: Sequence[str] = DEFAULT_NONCROP_CODES,
    within: Path | str | None = None,
) -> AreaEstimate:
    """Error-adjusted crop / non-crop area, accuracies and the error matrix in area proportions from a
    labelled stratified sample of ``mask_path`` (the library function behind ``cropseg estimate-area``).
    A sample drawn ``within`` an extent is estimated over the same extent (its strata sizes)."""
    return _estimate(mask_path, sample, reference_field, crop_values, noncrop_values, within)[0]


def _estimate(
    mask_path: Path | str,
    sample: Path | str,
    reference_field: str,
    crop_values: Sequence[str],
    noncrop_values: Sequence[str],
    within: Path | str | None = None,
) -> tuple[AreaEstimate, LabelledSample]:
    mask = read_mask(mask_path, within=within)
    lab = read_labelled_sample(sample, mask, reference_field, crop_values, noncrop_values)
    counts = error_counts(lab.map_class, lab.reference, 2)
    return AreaEstimate(
        list(CLASSES), counts, mask.counts, mask.pixel_area_ha, excluded=lab.excluded, other_codes=lab.other_codes
    ), lab


# -- the protocol simulated on a wall-to-wall labelled scene ----------------------------------------------
def simulate_protocol(
    mask_path: Path | str,
    truth_path: Path | str,
    n: int,
    *,
    allocation: str = "minimum",
    minimum: int = 50,
    seed: int = 0,
    block: int = BLOCK,
) -> AreaEstimate:
    """Draw a stratified sample of ``n`` pixels of the mask (over pixels labelled in the truth raster),
    take reference labels from ``truth_path`` and estimate, as a person following the protocol would."""
    mask = read_mask(mask_path, truth_path, block)
    per = allocate(int(n), mask.counts, allocation, minimum)
    _, _, strata, ref = _draw(mask, per, seed, truth_path, block)
    return AreaEstimate(list(CLASSES), error_counts(strata, ref, 2), mask.counts, mask.pixel_area_ha)


def check_area_config(ecfg: Any) -> None:
    """Validate the ``evaluate`` config group's area keys before a run starts."""
    ecfg = ecfg or {}
    n = ecfg.get("area_sample_size")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 4):
        raise ConfigError(f"evaluate.area_sample_size: null or a whole number of at least 4 points, got {n!r}")
    alloc = ecfg.get("area_allocation", "minimum")
    if alloc not in RUN_ALLOCATIONS:
        raise ConfigError(
            f"evaluate.area_allocation: one of {', '.join(RUN_ALLOCATIONS)}, got {alloc!r}"
            + (
                " (neyman needs anticipated user's accuracies: cropseg sample-design offers it)"
                if alloc == "neyman"
                else ""
            )
        )


def area_metrics(
    mask_path: Path,
    truth_path: Path,
    sample_size: int | None,
    *,
    allocation: str = "minimum",
    seed: int = 0,
    report_dir: Path | None = None,
) -> dict[str, float]:
    """Metrics of a run: mapped and reference crop area over the pixels labelled in the truth raster and
    their difference; with ``sample_size``, the protocol simulated on the scene (error-adjusted crop
    area, its SE and 95 % CI, whether the CI holds the reference area). Reports go to ``report_dir``."""
    with rasterio.open(mask_path) as src:
        if src.crs is None or src.crs.is_geographic:
            log.warning("crop area metrics skipped: the test scene's CRS (%s) is not projected", src.crs)
            return {}
    mapped = read_mask(mask_path, exclude=truth_path)
    truth = read_mask(truth_path, exclude=mask_path)
    ref_ha = float(truth.counts[1] * truth.pixel_area_ha)
    map_ha = float(mapped.counts[1] * mapped.pixel_area_ha)
    out = {
        "area_mapped_crop_ha": map_ha,
        "area_reference_crop_ha": ref_ha,
        "area_difference_ha": map_ha - ref_ha,
        "area_difference_pct": 100 * (map_ha - ref_ha) / ref_ha if ref_ha else float("nan"),
    }
    if sample_size:
        est = simulate_protocol(mask_path, truth_path, int(sample_size), allocation=allocation, seed=seed)
        for note in est.warnings():
            log.warning("simulated area protocol: %s", note)
        a, s = float(est.area_ha()[1]), float(est.area_se_ha()[1])
        lo, hi = (float(v[1]) for v in est.area_ci_ha())
        out.update(
            area_adjusted_crop_ha=a,
            area_adjusted_crop_se_ha=s,
            area_adjusted_crop_ci_low_ha=lo,
            area_adjusted_crop_ci_high_ha=hi,
            area_sample_size=float(est.counts.sum()),
            area_ci_contains_reference=float(lo <= ref_ha <= hi),
            area_crop_user_accuracy=float(est.user_accuracy[1]),
            area_crop_user_accuracy_se=float(est.user_accuracy_se[1]),
            area_crop_producer_accuracy=float(est.producer_accuracy[1]),
            area_crop_producer_accuracy_se=float(est.producer_accuracy_se[1]),
            area_noncrop_user_accuracy=float(est.user_accuracy[0]),
            area_noncrop_user_accuracy_se=float(est.user_accuracy_se[0]),
            area_noncrop_producer_accuracy=float(est.producer_accuracy[0]),
            area_noncrop_producer_accuracy_se=float(est.producer_accuracy_se[0]),
            area_overall_accuracy=est.overall_accuracy,
            area_overall_accuracy_se=est.overall_accuracy_se,
        )
        if report_dir is not None:
            d = est.to_dict()
            d.update(
                simulated=True,
                reference_crop_area_ha=ref_ha,
                allocation=allocation,
                seed=seed,
                note="protocol simulated on the test scene: reference labels taken from its ground truth",
            )
            with atomic_path(report_dir / "area_estimate.json") as tmp:
                tmp.write_text(json.dumps(d, indent=2))
            with atomic_path(report_dir / "area_estimate.txt") as tmp:
                tmp.write_text(
                    f"protocol simulated on the test scene ({allocation} allocation, seed {seed}); "
                    f"reference crop area {ref_ha:,.2f} ha\n" + est.text() + "\n"
                )
    return out


# -- commands --------------------------------------------------------------------------------------------
def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what}: comma-separated numbers, got {text!r}") from None


def sample_design_command(argv: Sequence[str]) -> int:
    """``cropseg sample-design MASK.tif``: a stratified random sample of a crop mask for reference labelling."""
    parser = argparse.ArgumentParser(
        prog="cropseg sample-design",
        description="Draw a stratified random sample of a crop mask's pixels (strata: non-crop 0, crop 1; 255 "
        "excluded) for reference labelling, sized by Cochran's formula for a target standard error "
        "(Olofsson et al. 2014 eq. 13). Writes GeoJSON points (EPSG:4326) and CSV with an empty "
        "'reference' field: fill it with 1 (crop) or 0 (non-crop), then run cropseg estimate-area.",
    )
    parser.add_argument("mask", help="the predicted mask GeoTIFF (0 non-crop, 1 crop, 255 nodata)")
    parser.add_argument(
        "--target-se",
        type=float,
        default=0.01,
        help="target standard error of the crop-area proportion (default: %(default)s)",
    )
    parser.add_argument(
        "--user-accuracy",
        default="0.9,0.9",
        help="anticipated user's accuracies of non-crop,crop (default: %(default)s)",
    )
    parser.add_argument("--sample-size", type=int, help="total points (instead of the target standard error)")
    parser.add_argument(
        "--allocation",
        default="minimum",
        choices=ALLOCATIONS,
        help="points per stratum: proportional to area, equal, a minimum per stratum with the "
        "rest proportional, or neyman (proportional to W_i sqrt(U_i (1 - U_i)) from --user-accuracy: the "
        "allocation eq. 13 assumes, the one that reaches --target-se) (default: %(default)s)",
    )
    parser.add_argument(
        "--minimum",
        type=int,
        default=50,
        help="points per stratum at least, for --allocation minimum (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--within",
        help="sample only inside this extent: a raster on the mask's grid (its labelled pixels: neither 255 "
        "nor nodata, e.g. a run's labels/test_labels.tif) or a vector file of polygons (any CRS)",
    )
    parser.add_argument(
        "--output",
        help="the GeoJSON to write (default: <mask stem>_sample.geojson beside the mask); the CSV and the "
        "design (<stem>_design.json) go beside it",
    )
    args = parser.parse_args(list(argv))
    ua = _floats(args.user_accuracy, "--user-accuracy")
    if args.sample_size is not None and args.sample_size < 1:
        raise ConfigError(f"--sample-size: a positive number, got {args.sample_size}")
    if args.minimum < 2:
        raise ConfigError(f"--minimum: at least 2, got {args.minimum}")
    mask = Path(args.mask)
    out = Path(args.output) if args.output else mask.with_name(f"{mask.stem}_sample.geojson")
    if out.suffix.lower() not in (".geojson", ".json"):
        raise ConfigError(f"--output {out}: a .geojson file")
    if not out.parent.is_dir():
        raise InputFileError(f"--output {out}: folder {out.parent} does not exist")
    csv_path = out.with_suffix(".csv")
    check_output_files([out, csv_path, design_path(out)], "--output")
    design = design_sample(
        mask,
        target_se=args.target_se,
        user_accuracies=ua,
        n=args.sample_size,
        allocation=args.allocation,
        minimum=args.minimum,
        seed=args.seed,
        within=args.within,
    )
    dpath = write_sample(design, out, csv_path)
    s = design.summary()
    print(
        f"mask {mask}: {s['mapped_pixels']['crop']:,} crop and {s['mapped_pixels']['non-crop']:,} non-crop "
        f"pixels ({s['mapped_area_ha']['crop']:,.2f} / {s['mapped_area_ha']['non-crop']:,.2f} ha mapped)"
    )
    if args.sample_size is None:
        print(
            f"sample size {design.n} for a standard error of {args.target_se} of the crop-area proportion "
            f"(Cochran / Olofsson et al. 2014 eq. 13; anticipated user's accuracies non-crop {ua[0]}, crop "
            f"{ua[1] if len(ua) > 1 else '?'})"
        )
    print(
        f"allocation {args.allocation}: {s['points_per_stratum']['crop']} crop, "
        f"{s['points_per_stratum']['non-crop']} non-crop points (seed {args.seed})"
        + (f", inside {args.within}" if args.within else "")
    )
    if design.expected_se is not None:
        target = f" (target {args.target_se})" if args.sample_size is None else ""
        print(
            f"expected standard error of the crop-area proportion with this allocation: "
            f"{design.expected_se:.4f}{target}, if the user's accuracies are as anticipated"
        )
    print(
        f"wrote {out}, {csv_path} and the design {dpath.name}: fill 'reference' with 1 (crop) or 0 "
        f"(non-crop), then\n  cropseg estimate-area {mask} {out}"
    )
    return 0


def check_output_files(paths: Sequence[Path], option: str) -> None:
    """Before any work: each of ``paths`` can be created in its (existing) folder. One
    :class:`~cropseg.errors.OutputError` line for a read-only or full folder, a name too long..."""
    from .errors import OutputError

    for path in paths:
        if path.is_dir():
            raise OutputError(f"{option} {path}: is a folder")
        probe = path.with_name(f".{path.name}.cropseg-write-check")
        try:
            probe.write_bytes(b"")
        except OSError as exc:
            raise OutputError.from_os_error(f"{option} {path.name}", path.parent, exc) from None
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass


def estimate_area_command(argv: Sequence[str]) -> int:
    """``cropseg estimate-area MASK.tif SAMPLE``: error-adjusted area and accuracies from a labelled sample."""
    from .tracking import Tracker, check_reachable, log_area_estimate, resolve_uri

    parser = argparse.ArgumentParser(
        prog="cropseg estimate-area",
        description="Error-adjusted crop area with its standard error and 95% CI, user's / producer's / overall "
        "accuracy and the error matrix in area proportions, from a labelled stratified random "
        "sample of the mask (Olofsson et al. 2014). Recorded as an MLflow run.",
    )
    parser.add_argument("mask", help="the mask the sample was drawn from (0 non-crop, 1 crop, 255 nodata)")
    parser.add_argument(
        "sample",
        help="the labelled sample: GeoJSON (or any vector file with a CRS) or the CSV written by cropseg sample-design",
    )
    parser.add_argument(
        "--reference-field", default="reference", help="field holding the reference class (default: %(default)s)"
    )
    parser.add_argument(
        "--crop-values",
        default=",".join(DEFAULT_CROP_CODES),
        help="reference codes meaning crop (default: %(default)s)",
    )
    parser.add_argument(
        "--noncrop-values",
        default=",".join(DEFAULT_NONCROP_CODES),
        help="reference codes meaning non-crop (default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir", help="where to write area_estimate.json / .txt (default: outputs/area/<date>/<time>-<id>)"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="cropseg-area", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--run-name", help="name of the MLflow run")
    parser.add_argument(
        "--design",
        help="the sample's design JSON (default: <sample stem>_design.json beside the sample, when it exists): "
        "checked against the mask, logged with the run, its target SE compared with the SE achieved",
    )
    parser.add_argument(
        "--within",
        help="the extent the sample was drawn in (default: the design's): strata sizes are counted inside it",
    )
    args = parser.parse_args(list(argv))
    crop = [v.strip() for v in args.crop_values.split(",") if v.strip()]
    noncrop = [v.strip() for v in args.noncrop_values.split(",") if v.strip()]
    if not crop or not noncrop:
        raise ConfigError("--crop-values / --noncrop-values: at least one code each")
    out = (
        Path(args.output_dir)
        if args.output_dir
        else (Path("outputs") / "area" / f"{datetime.now():%Y-%m-%d/%H-%M-%S}-{uuid.uuid4().hex[:6]}")
    )
    # destinations before any work: the output folder takes files, the store answers
    from .preflight import check_output_dir

    check_output_dir(out, "--output-dir", create=False)
    check_reachable(resolve_uri(args.tracking_uri))
    dfile = Path(args.design) if args.design else design_path(args.sample)
    design = read_design(dfile) if args.design or dfile.is_file() else None
    within = args.within or (design or {}).get("within")
    if design is not None:
        _check_design(design, dfile, Path(args.mask))
    est, lab = _estimate(args.mask, args.sample, args.reference_field, crop, noncrop, within)
    for note in est.warnings():
        log.warning("%s", note)
    data = est.to_dict()
    achieved = float(est.area_proportion_se[1])
    data.update(
        mask=str(Path(args.mask).resolve()),
        sample=str(Path(args.sample).resolve()),
        within=str(Path(within).resolve()) if within else None,
        reference_field=args.reference_field,
        crop_values=crop,
        noncrop_values=noncrop,
        design=design,
        crop_area_proportion_se={
            "achieved": achieved,
            "target": (design or {}).get("target_se"),
            "expected": (design or {}).get("expected_se"),
        },
    )
    text = est.text() + "\n\n" + _se_line(achieved, design)
    files = {"area_estimate.json": json.dumps(data, indent=2), "area_estimate.txt": text + "\n"}
    if design is not None:
        files["sample_design.json"] = json.dumps(design, indent=2) + "\n"
    metrics = estimate_metrics(est)
    metrics["crop_area_proportion_se"] = achieved
    for key in ("target_se", "expected_se"):
        if isinstance((design or {}).get(key), (int, float)):
            metrics[f"design_{key}"] = float(design[key])  # type: ignore[index]
    params: dict[str, Any] = {
        "mask": args.mask,
        "sample": args.sample,
        "reference_field": args.reference_field,
        "crop_values": ",".join(crop),
        "noncrop_values": ",".join(noncrop),
        "within": within or "",
    }
    if design is not None:
        params.update(
            {f"design_{k}": design.get(k) for k in ("allocation", "seed", "target_se", "minimum", "sample_size")}
        )
    # the outputs first (all or none), then the run, which ends FINISHED only once they are in place; a run
    # that cannot be recorded takes its outputs back
    tracker = Tracker(args.tracking_uri, args.experiment)
    created = not out.exists()
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            with atomic_path(out / name) as tmp:
                tmp.write_text(body)
            written.append(out / name)
        run_id = log_area_estimate(
            tracker,
            args.run_name or f"area-{Path(args.mask).stem}",
            params=params,
            metrics=metrics,
            tables=_estimate_tables(est),
            files=written,
            sample=lab.frame,
            sample_source=str(Path(args.sample).resolve()),
        )
    except BaseException as exc:
        for f in written:
            f.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, CropsegError):
            from .errors import OutputError

            raise OutputError.from_os_error("the area estimate", out, exc) from None
        raise
    print(text)
    print(f"\nMLflow run {run_id} FINISHED (experiment {args.experiment!r}, {tracker.uri})")
    print(f"outputs: {out}")
    return 0


def _check_design(design: dict[str, Any], path: Path, mask: Path) -> None:
    """The design must describe ``mask``: same bytes (SHA-256), else the strata may differ."""
    from .lineage import file_digest

    if mask.is_file() and design.get("mask_sha256") != file_digest(mask):
        raise SampleError(
            f"{path}: the sample design was drawn from another mask ({design.get('mask')}, SHA-256 "
            f"{str(design.get('mask_sha256'))[:12]}...) than {mask}: the estimators need the strata it was drawn from"
        )


def _se_line(achieved: float, design: dict[str, Any] | None) -> str:
    line = f"standard error of the crop-area proportion: {achieved:.4f} achieved"
    if design and design.get("target_se") is not None:
        line += f", target {design['target_se']}"
    if design and design.get("expected_se") is not None:
        line += (
            f" ({float(design['expected_se']):.4f} expected with the design's {design.get('allocation')} allocation)"
        )
    return line


def estimate_metrics(est: AreaEstimate) -> dict[str, float]:
    m: dict[str, float] = {
        "overall_accuracy": est.overall_accuracy,
        "overall_accuracy_se": est.overall_accuracy_se,
        "sample_size": float(est.counts.sum()),
    }
    lo, hi = est.area_ci_ha()
    for k, c in enumerate(est.classes):
        key = c.replace("-", "")
        m.update(
            {
                f"{key}_user_accuracy": float(est.user_accuracy[k]),
                f"{key}_user_accuracy_se": float(est.user_accuracy_se[k]),
                f"{key}_producer_accuracy": float(est.producer_accuracy[k]),
                f"{key}_producer_accuracy_se": float(est.producer_accuracy_se[k]),
                f"{key}_area_ha": float(est.area_ha()[k]),
                f"{key}_area_se_ha": float(est.area_se_ha()[k]),
                f"{key}_area_ci_low_ha": float(lo[k]),
                f"{key}_area_ci_high_ha": float(hi[k]),
                f"{key}_mapped_area_ha": float(est.mapped_ha()[k]),
            }
        )
    m.update({f"excluded_{k.replace(' ', '_')}": float(v) for k, v in est.excluded.items()})
    return {k: v for k, v in m.items() if np.isfinite(v)}


def _estimate_tables(est: AreaEstimate) -> dict[str, dict[str, Any]]:
    p = est.proportions
    matrix: dict[str, Any] = {
        "map_class": list(est.classes),
        **{f"reference_{c}": [float(v) for v in p[:, j]] for j, c in enumerate(est.classes)},
        "sample_points": [int(v) for v in est.n_i],
    }
    acc: dict[str, list[Any]] = {"class": [], "measure": [], "estimate": [], "se": [], "ci95_low": [], "ci95_high": []}
    total = est.total_ha or 0.0
    rows = [("overall", "overall_accuracy", est.overall_accuracy, est.overall_accuracy_se, 1.0)]
    for k, c in enumerate(est.classes):
        rows += [
            (c, "user_accuracy", est.user_accuracy[k], est.user_accuracy_se[k], 1.0),
            (c, "producer_accuracy", est.producer_accuracy[k], est.producer_accuracy_se[k], 1.0),
            (c, "area_ha", est.area_ha()[k], est.area_se_ha()[k], total),
        ]
    for c, mname, e, s, top in rows:  # undefined quantities (NaN) stay NaN; intervals clipped to [0, top]
        lo, hi = est.ci(e, s, (0.0, top))
        acc["class"].append(c)
        acc["measure"].append(mname)
        acc["estimate"].append(float(e))
        acc["se"].append(float(s))
        acc["ci95_low"].append(float(lo))
        acc["ci95_high"].append(float(hi))
    return {"area/error_matrix_proportions.json": matrix, "area/estimates.json": acc}


__all__ = [
    "CLASSES",
    "MaskInfo",
    "SampleDesign",
    "area_metrics",
    "check_area_config",
    "design_sample",
    "draw_positions",
    "estimate_area",
    "estimate_metrics",
    "read_labelled_sample",
    "read_mask",
    "simulate_protocol",
    "write_sample",
]
