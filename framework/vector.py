"""Reading vector inputs (ground truth, AOIs) robustly, reprojected to a scene's CRS."""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS as PyCRS
from pyproj.exceptions import CRSError

from .errors import CRSMismatchError, GroundTruthError, InputFileError
from .types import Grid, VectorGroundTruth

GEOMETRY_TYPES = {
    "Polygon",
    "MultiPolygon",
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "GeometryCollection",
}
WGS84 = "EPSG:4326"
log = logging.getLogger(__name__)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_json(path: Path) -> Any | None:
    """Parse a .json/.geojson file ourselves when GDAL would not accept it (bare lists / geometries)."""
    if path.suffix.lower() not in {".json", ".geojson"}:
        return None
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        pass
    elif head.startswith(b"{") and b'"FeatureCollection"' not in head and b'"Feature"' not in head:
        pass
    else:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: not valid JSON: {exc}") from None


def read_vector(
    path: Path | str, *, layer: str | None = None, bbox: tuple | None = None, bbox_crs: Any = None
) -> gpd.GeoDataFrame:
    """Read any GDAL vector (GeoJSON FeatureCollection, GPKG, Shapefile...), a bare JSON list of GeoJSON
    features or a bare GeoJSON geometry. GeoJSON without a CRS is EPSG:4326 (RFC 7946).

    ``bbox`` (in ``bbox_crs``) limits what is read from large files.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: vector file not found")
    data = _read_json(p)
    if data is not None:
        try:
            if isinstance(data, list):
                gdf = gpd.GeoDataFrame.from_features(data, crs=WGS84)
            elif isinstance(data, dict) and data.get("type") in GEOMETRY_TYPES:
                gdf = gpd.GeoDataFrame(geometry=[shapely.geometry.shape(data)], crs=WGS84)
            else:
                raise InputFileError(f"{p}: not GeoJSON (expected features or a geometry)")
        except (KeyError, TypeError, AttributeError, ValueError, shapely.errors.GEOSException) as exc:
            raise InputFileError(f"{p}: malformed GeoJSON features: {_first(exc)}") from None
    else:
        kwargs: dict[str, Any] = {"layer": layer} if layer else {}
        try:
            if bbox is not None and bbox_crs is not None:
                import pyogrio

                file_crs = pyogrio.read_info(p, **kwargs).get("crs")
                if file_crs:
                    from rasterio.warp import transform_bounds

                    kwargs["bbox"] = transform_bounds(bbox_crs, file_crs, *bbox, densify_pts=21)
            with warnings.catch_warnings():
                # NaN coordinates: shapely warns while decoding them; the check below names the feature instead
                warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
                gdf = gpd.read_file(p, **kwargs)
        except InputFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - GDAL/pyogrio raise many types for unreadable files
            raise InputFileError(f"{p}: cannot read vector file: {_first(exc)}") from None
        if gdf.crs is None:
            if p.suffix.lower() in {".json", ".geojson"}:
                gdf = gdf.set_crs(WGS84)
            else:
                raise CRSMismatchError(f"{p}: the vector file has no CRS")
    check_declared_crs(p)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(gdf):
        coords, index = shapely.get_coordinates(gdf.geometry.values, return_index=True)
        bad = np.unique(index[~np.isfinite(coords).all(axis=1)])
        if bad.size:
            raise InputFileError(
                f"{p}: {bad.size} feature(s) have NaN or infinite coordinates (first: feature #{int(bad[0])})"
            )
    return gdf


_CRS_MEMBER = re.compile(rb'"crs"\s*:\s*\{.*?"name"\s*:\s*"([^"]+)"', re.DOTALL)


def check_declared_crs(path: Path) -> None:
    """A GeoJSON file's (legacy) ``crs`` member must name a CRS PROJ knows: GDAL falls back to EPSG:4326
    for an unknown one, which would read the coordinates in the wrong place without a word."""
    if path.suffix.lower() not in {".json", ".geojson"}:
        return
    with path.open("rb") as fh:
        head = fh.read(65536)
    m = _CRS_MEMBER.search(head.split(b'"features"', 1)[0])
    if m is None:
        return
    name = m.group(1).decode("utf-8", "replace")
    try:
        PyCRS.from_user_input(name)
    except CRSError:
        raise CRSMismatchError(f"{path}: declares an unknown CRS {name!r}") from None


def to_crs(gdf: gpd.GeoDataFrame, crs: Any, *, what: Path | str) -> gpd.GeoDataFrame:
    """Reproject, turning PROJ failures (unknown CRS, no transformation) into :class:`CRSMismatchError`."""
    try:
        target = PyCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        out = gdf.to_crs(target)
    except (CRSError, ValueError, TypeError) as exc:
        raise CRSMismatchError(f"{what}: cannot transform from {gdf.crs} to the scene CRS {crs}: {exc}") from None
    bad = ~np.isfinite(out.geometry.bounds.to_numpy()).all(axis=1)
    if len(out) and bad.all():
        raise CRSMismatchError(f"{what}: coordinates cannot be transformed to the scene CRS {crs} (all infinite)")
    return out[~bad]


def read_aoi(path: Path | str, crs: Any) -> shapely.Geometry:
    """The union of an AOI file's polygons, in ``crs``."""
    gdf = to_crs(read_vector(path), crs, what=path)
    polys = gdf.geometry[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polys.empty:
        raise InputFileError(f"{path}: the AOI holds no polygon")
    return shapely.make_valid(polys.union_all())


def ground_truth_for_grid(gt: VectorGroundTruth, grid: Grid) -> gpd.GeoDataFrame:
    """Ground-truth polygons overlapping ``grid``, in its CRS, with a boolean ``crop`` column.

    Raises :class:`GroundTruthError` saying what is wrong when nothing usable overlaps the scene: an
    empty file, points or lines where polygons are needed, coordinates that look projected in a file
    declared lon/lat, no feature within the scene (and how far away the nearest is), a missing attribute
    or no crop value. Invalid (e.g. self-intersecting) polygons are repaired with ``make_valid``; their
    number is logged and kept in ``gdf.attrs["repaired_geometries"]``.
    """
    gdf = read_vector(gt.path, layer=gt.layer, bbox=grid.bounds, bbox_crs=grid.crs)
    if gdf.empty:
        raise _explain(gt, grid)
    if gt.attribute not in gdf.columns:
        cols = ", ".join(c for c in gdf.columns if c != "geometry") or "none"
        raise GroundTruthError(f"{gt.path}: no attribute {gt.attribute!r} (attributes: {cols})")
    gdf = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    values = {str(v) for v in gt.crop_values}
    crop = gdf[gt.attribute].astype(str).str.strip().isin(values)
    if not crop.any():
        raise _explain(gt, grid)
    gdf = to_crs(gdf.assign(crop=crop.to_numpy()), grid.crs, what=gt.path)
    invalid = ~gdf.geometry.is_valid.to_numpy()
    repaired = int(invalid.sum())
    if repaired:
        log.debug("%s: %d invalid (e.g. self-intersecting) polygon(s) repaired with make_valid", gt.path, repaired)
    gdf = gdf.set_geometry(shapely.make_valid(gdf.geometry.values))
    west, south, east, north = grid.bounds
    gdf = gdf[gdf.intersects(shapely.box(west, south, east, north))]
    if gdf.empty or not gdf["crop"].any():
        raise _explain(gt, grid)
    out = gdf[["crop", "geometry"]].reset_index(drop=True)
    out.attrs["repaired_geometries"] = repaired
    return out


def _explain(gt: VectorGroundTruth, grid: Grid) -> GroundTruthError:
    """Why no crop polygon of ``gt`` lies in ``grid``: read the whole file (this is the error path) and
    name the actual problem."""
    path = gt.path
    full = read_vector(path, layer=gt.layer)
    if full.empty:
        return GroundTruthError(f"{path}: no features (the file holds no geometry)")
    types = sorted(set(full.geometry.geom_type))
    if not any(t in ("Polygon", "MultiPolygon") for t in types):
        return GroundTruthError(f"{path}: holds only {', '.join(types)} geometries; crop ground truth needs polygons")
    minx, miny, maxx, maxy = full.total_bounds
    if (
        full.crs is not None
        and full.crs.is_geographic
        and (max(abs(minx), abs(maxx)) > 180 or max(abs(miny), abs(maxy)) > 90)
    ):
        return GroundTruthError(
            f"{path}: coordinates look projected (x {minx:.0f}..{maxx:.0f}, y {miny:.0f}..{maxy:.0f}) "
            f"but the file declares lon/lat ({full.crs.to_string()}); declare its CRS"
        )
    polys = full[full.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    try:
        local = polys.to_crs(grid.crs)
    except Exception:  # noqa: BLE001 - reported by to_crs with its own message
        local = to_crs(polys, grid.crs, what=path)
    scene_box = shapely.box(*grid.bounds)
    inside = local[local.intersects(scene_box)] if len(local) else local
    if inside.empty:
        dist = _distance_km(local, scene_box, grid)
        hint = " (wrong CRS or UTM zone?)" if dist > 50 else ""
        return GroundTruthError(f"{path}: no polygon overlaps the scene; the nearest is {dist:.1f} km away{hint}")
    if gt.attribute not in inside.columns:
        cols = ", ".join(c for c in inside.columns if c != "geometry") or "none"
        return GroundTruthError(f"{path}: no attribute {gt.attribute!r} (attributes: {cols})")
    seen = sorted({str(v).strip() for v in inside[gt.attribute].dropna()})[:12]
    return GroundTruthError(
        f"{path}: no crop polygons ({gt.attribute} in {sorted(str(v) for v in gt.crop_values)}) "
        f"among the {len(inside)} polygon(s) overlapping the scene (found: {', '.join(seen) or 'none'})"
    )


def _distance_km(gdf: gpd.GeoDataFrame, scene_box: shapely.Geometry, grid: Grid) -> float:
    """Distance from the scene's footprint to the nearest geometry, in km (geodesic frame for lon/lat)."""
    finite = gdf[np.isfinite(gdf.geometry.bounds.to_numpy()).all(axis=1)]
    if finite.empty:
        return float("inf")
    if grid.crs.is_geographic or not grid.crs.is_projected:
        frame = gpd.GeoSeries([scene_box], crs=grid.crs).estimate_utm_crs()
        geoms = finite.to_crs(frame).geometry
        box = gpd.GeoSeries([scene_box], crs=grid.crs).to_crs(frame).iloc[0]
        return float(geoms.distance(box).min()) / 1000.0
    factor = grid.crs.linear_units_factor[1] if grid.crs.linear_units_factor else 1.0
    return float(finite.geometry.distance(scene_box).min()) * factor / 1000.0
