"""Postprocessor ``vectorize``: crop mask -> polygons -> GeoJSON (EPSG:4326) with ``area_ha``.

Polygons are traced block by block with :func:`rasterio.features.shapes` in integer pixel coordinates,
so polygons cut by block seams merge exactly; then they are placed with the mask's transform, filtered by
area, simplified, and written in EPSG:4326 (RFC 7946) with each polygon's area in hectares.

``min_area_ha`` (default 0.1 ha, a small field; 0 keeps every blob) drops specks such as single
misclassified pixels; ``simplify`` (metres, 0 = off) smooths the pixel staircase with Douglas-Peucker.
The result reports the kept polygons and their area and how many were dropped with how much area.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.schema import Range
from cropseg.types import CROP, VectorResult


class Vectorize:
    def __init__(
        self,
        min_area_ha: float = 0.1,
        simplify: float = 0.0,
        connectivity: int = 4,
        block_size: Annotated[int, Range(1, None)] = 1024,
    ):
        if connectivity not in (4, 8):
            raise ConfigError(f"postprocessor.vectorize.connectivity: must be 4 or 8, got {connectivity!r}")
        if min_area_ha < 0 or simplify < 0:
            raise ConfigError("postprocessor.vectorize: min_area_ha and simplify must be >= 0")
        self.min_area_ha = float(min_area_ha)
        self.simplify = float(simplify)
        self.connectivity = connectivity
        self.block_size = block_size

    def vectorize(self, mask_path: Path, out_path: Path) -> VectorResult:
        import geopandas as gpd
        import rasterio
        import shapely
        from affine import Affine
        from rasterio.features import shapes

        from cropseg.raster import atomic_path, iter_windows

        inner, seam = [], []
        with rasterio.open(mask_path) as src:
            crs, transform = src.crs, src.transform
            for w in iter_windows(src.height, src.width, self.block_size):
                block = src.read(1, window=w)
                crop = block == CROP
                if not crop.any():
                    continue
                c0, r0 = int(w.col_off), int(w.row_off)
                c1, r1 = c0 + int(w.width), r0 + int(w.height)
                for geom, _ in shapes(
                    crop.astype(np.uint8),
                    mask=crop,
                    connectivity=self.connectivity,
                    transform=Affine.translation(c0, r0),
                ):
                    poly = shapely.geometry.shape(geom)
                    minx, miny, maxx, maxy = poly.bounds
                    touches = (
                        (minx == c0 and c0 > 0)
                        or (miny == r0 and r0 > 0)
                        or (maxx == c1 and c1 < src.width)
                        or (maxy == r1 and r1 < src.height)
                    )
                    (seam if touches else inner).append(poly)
        if self.connectivity == 8:
            # pixels meeting only at a corner belong together: GDAL draws such a region as one polygon whose
            # ring touches itself, which a union splits; regroup every polygon's corner-touching parts so the
            # result does not depend on where block seams fall
            inner = _corner_groups(shapely.get_parts(shapely.union_all(inner + seam)))
        elif seam:
            merged = shapely.get_parts(shapely.union_all(seam))
            inner.extend(p for p in merged if p.geom_type == "Polygon")
        a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
        placed = [shapely.affinity.affine_transform(p, [a, b, d, e, c, f]) for p in inner]
        gdf = gpd.GeoDataFrame(geometry=placed, crs=crs)
        metric = gdf if (crs is None or not crs.is_geographic) else gdf.to_crs(gdf.estimate_utm_crs())
        if self.simplify > 0 and len(gdf):
            metric = metric.set_geometry(metric.geometry.simplify(self.simplify, preserve_topology=True))
        metric["area_ha"] = metric.geometry.area / 1e4
        small = metric["area_ha"] < self.min_area_ha
        n_dropped, area_dropped = int(small.sum()), float(metric.loc[small, "area_ha"].sum())
        metric = metric[~small]
        metric = metric.sort_values("area_ha", ascending=False, kind="stable").reset_index(drop=True)
        metric.insert(0, "id", np.arange(1, len(metric) + 1))
        metric["area_ha"] = metric["area_ha"].round(4)
        out = metric.to_crs("EPSG:4326")
        with atomic_path(Path(out_path)) as tmp:
            out.to_file(tmp, driver="GeoJSON", layer=Path(out_path).stem, RFC7946="YES")
        return VectorResult(Path(out_path), len(out), float(metric["area_ha"].sum()), n_dropped, area_dropped)


def _corner_groups(parts):
    """Group polygons that touch (even at a single point) into one (multi)polygon each."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    parts = [p for p in parts if p.geom_type == "Polygon"]
    if not parts:
        return []
    left, right = shapely.STRtree(parts).query(parts, predicate="intersects")
    n, labels = connected_components(coo_matrix((np.ones(len(left)), (left, right)), shape=(len(parts),) * 2))
    groups: list[list] = [[] for _ in range(n)]
    for part, label in zip(parts, labels):
        groups[label].append(part)
    return [g[0] if len(g) == 1 else shapely.MultiPolygon(g) for g in groups]


@hookimpl
def cropseg_register_postprocessors(register):
    register("vectorize", Vectorize)
