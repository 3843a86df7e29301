"""Labeler ``rasterize``: burn ground truth into the scene grid with rasterio.

Vector ground truth is reprojected to the scene CRS and burnt with :func:`rasterio.features.rasterize`
(holes are respected; surveyed non-crop polygons burn 0, crop polygons 1, uncovered land is non-crop or
ignore as configured). Raster ground truth (e.g. a Cropland Data Layer clip) is warped onto the scene grid
with nearest-neighbour resampling and its values mapped to crop / non-crop / ignore.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np

from cropseg import hookimpl
from cropseg.errors import CRSMismatchError, GroundTruthError
from cropseg.labels import write_label_raster
from cropseg.raster import open_raster
from cropseg.schema import Range
from cropseg.types import CROP, IGNORE, NONCROP, LabelRaster, RasterGroundTruth, Scene, VectorGroundTruth


class RasterizeLabeler:
    def __init__(self, all_touched: bool = False, block_size: Annotated[int, Range(1, None)] = 512):
        self.all_touched = all_touched
        self.block_size = block_size

    def label(self, scene: Scene, out_path: Path) -> LabelRaster:
        gt = scene.ground_truth
        if isinstance(gt, VectorGroundTruth):
            return self._vector(scene, gt, out_path)
        if isinstance(gt, RasterGroundTruth):
            return self._raster(scene, gt, out_path)
        raise GroundTruthError(f"scene {scene.name}: no ground truth to label")

    def _vector(self, scene: Scene, gt: VectorGroundTruth, out_path: Path) -> LabelRaster:
        import shapely
        from rasterio.features import rasterize
        from rasterio.transform import array_bounds

        from cropseg.vector import ground_truth_for_grid  # geopandas: imported when labelling, not at start-up

        gdf = ground_truth_for_grid(gt, scene.grid)
        # non-crop survey polygons first, crop polygons burnt over them
        gdf = gdf.sort_values("crop", kind="stable").reset_index(drop=True)
        tree = shapely.STRtree(gdf.geometry.values)
        fill = NONCROP if gt.uncovered == "noncrop" else IGNORE

        def burn(window, transform, shape):
            idx = np.sort(tree.query(shapely.box(*array_bounds(*shape, transform))))
            if idx.size == 0:
                return np.full(shape, fill, dtype=np.uint8)
            shapes = [(g, CROP if c else NONCROP) for g, c in zip(gdf.geometry.values[idx], gdf["crop"].values[idx])]
            return rasterize(
                shapes, out_shape=shape, transform=transform, fill=fill, dtype="uint8", all_touched=self.all_touched
            )

        result = write_label_raster(scene, out_path, burn, self.block_size)
        return replace(result, notes={"repaired_geometries": float(gdf.attrs.get("repaired_geometries", 0))})

    def _raster(self, scene: Scene, gt: RasterGroundTruth, out_path: Path) -> LabelRaster:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        grid = scene.grid
        src = open_raster(gt.path, what="ground-truth raster")
        with src:
            if src.crs is None:
                raise CRSMismatchError(f"{gt.path}: the ground-truth raster has no CRS")
            nodata = src.nodatavals[gt.band - 1]
            try:
                vrt = WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling.nearest,
                    nodata=nodata if nodata is not None else 0,
                )
            except Exception as exc:  # noqa: BLE001 - GDAL raises CPLE_* for impossible transforms
                raise CRSMismatchError(
                    f"{gt.path}: cannot warp {src.crs} onto the scene CRS {grid.crs}: {exc}"
                ) from None
            crop = np.asarray(gt.crop_values)
            ignore = np.asarray(list(gt.ignore_values) + ([nodata] if nodata is not None else []))
            seen_crop = False

            with vrt:

                def burn(window, transform, shape):
                    nonlocal seen_crop
                    vals = vrt.read(gt.band, window=window)
                    out = np.where(np.isin(vals, crop), CROP, NONCROP).astype(np.uint8)
                    if ignore.size:
                        out[np.isin(vals, ignore)] = IGNORE
                    seen_crop |= bool((out == CROP).any())
                    return out

                result = write_label_raster(scene, out_path, burn, self.block_size)
        if result.counts["crop"] == 0:
            Path(out_path).unlink(missing_ok=True)
            if not seen_crop:
                raise GroundTruthError(
                    f"{gt.path}: no pixel with a crop value {list(gt.crop_values)} overlaps the scene"
                )
            raise GroundTruthError(f"{gt.path}: crop pixels fall only outside the scene's valid data")
        return result


@hookimpl
def cropseg_register_labelers(register):
    register("rasterize", RasterizeLabeler)
