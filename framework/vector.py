"""Reading vector inputs (ground truth, AOIs) robustly, reprojected to a scene's CRS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS as PyCRS
from pyproj.exceptions import CRSError

from .errors import CRSMismatchError, GroundTruthError, InputFileError
from .types import Grid, VectorGroundTruth

GEOMETRY_TYPES = {"Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString",
                  "GeometryCollection"}
WGS84 = "EPSG:4326"


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


def read_vector(path: Path | str, *, layer: str | None = None, bbox: tuple | None = None,
                bbox_crs: Any = None) -> gpd.GeoDataFrame:
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
            raise InputFileError(f"{p}: malformed GeoJSON features: {exc}") from None
    else:
        kwargs: dict[str, Any] = {"layer": layer} if layer else {}
        try:
            if bbox is not None and bbox_crs is not None:
                import pyogrio

                file_crs = pyogrio.read_info(p, **kwargs).get("crs")
                if file_crs:
                    from rasterio.warp import transform_bounds

                    kwargs["bbox"] = transform_bounds(bbox_crs, file_crs, *bbox, densify_pts=21)
            gdf = gpd.read_file(p, **kwargs)
        except InputFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - GDAL/pyogrio raise many types for unreadable files
            raise InputFileError(f"{p}: cannot read vector file: {str(exc).splitlines()[0]}") from None
        if gdf.crs is None:
            if p.suffix.lower() in {".json", ".geojson"}:
                gdf = gdf.set_crs(WGS84)
            else:
                raise CRSMismatchError(f"{p}: the vector file has no CRS")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    return gdf


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

    Raises :class:`GroundTruthError` when the attribute is missing, no polygon is crop, or nothing
    overlaps the scene.
    """
    gdf = read_vector(gt.path, layer=gt.layer, bbox=grid.bounds, bbox_crs=grid.crs)
    if gt.attribute not in gdf.columns:
        cols = ", ".join(c for c in gdf.columns if c != "geometry") or "none"
        raise GroundTruthError(f"{gt.path}: no attribute {gt.attribute!r} (attributes: {cols})")
    gdf = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    values = {str(v) for v in gt.crop_values}
    crop = gdf[gt.attribute].astype(str).str.strip().isin(values)
    if not crop.any():
        raise GroundTruthError(
            f"{gt.path}: no crop polygons ({gt.attribute} in {sorted(values)}) in the scene's area"
        )
    gdf = to_crs(gdf.assign(crop=crop.to_numpy()), grid.crs, what=gt.path)
    gdf = gdf.set_geometry(shapely.make_valid(gdf.geometry.values))
    west, south, east, north = grid.bounds
    gdf = gdf[gdf.intersects(shapely.box(west, south, east, north))]
    if gdf.empty or not gdf["crop"].any():
        raise GroundTruthError(f"{gt.path}: no crop polygon overlaps the scene {grid.bounds} ({grid.crs})")
    return gdf[["crop", "geometry"]].reset_index(drop=True)
