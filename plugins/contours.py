"""Labeler ``contours``: the seed study's OpenCV approach, kept as a reference to compare against.

Crop polygons are reprojected to the scene CRS, their exterior rings converted to pixel coordinates and
filled with :func:`cv2.fillPoly`. Like the seed notebook, holes are *not* cut out and only crop polygons
are drawn (everything else in the valid footprint is non-crop), and OpenCV fills the pixels its outline
touches, so fields grow by up to one pixel along their right and bottom edges. Compare it with
``rasterize`` to see what these choices cost.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np

from cropseg import hookimpl
from cropseg.errors import GroundTruthError
from cropseg.labels import write_label_raster
from cropseg.schema import Range
from cropseg.types import CROP, NONCROP, LabelRaster, Scene, VectorGroundTruth

SHIFT = 4  # fractional bits for sub-pixel vertex positions in cv2.fillPoly


class ContoursLabeler:
    #: polygons only: OpenCV fills their outlines
    ground_truth_kinds = ("vector",)

    def __init__(self, block_size: Annotated[int, Range(1, None)] = 512):
        self.block_size = block_size

    def label(self, scene: Scene, out_path: Path) -> LabelRaster:
        import cv2
        import shapely

        gt = scene.ground_truth
        if not isinstance(gt, VectorGroundTruth):
            raise GroundTruthError(f"scene {scene.name}: the contours labeler needs vector ground truth")
        from rasterio.transform import array_bounds

        from cropseg.vector import ground_truth_for_grid  # geopandas: imported when labelling, not at start-up

        gdf = ground_truth_for_grid(gt, scene.grid)
        polys = shapely.get_parts(gdf.geometry.values[gdf["crop"].to_numpy()])
        polys = polys[shapely.get_type_id(polys) == 3]  # polygons only
        exteriors = [np.asarray(p.exterior.coords) for p in polys]
        tree = shapely.STRtree(polys)
        inv = ~scene.grid.transform

        def burn(window, transform, shape):
            out = np.full(shape, NONCROP, dtype=np.uint8)
            idx = tree.query(shapely.box(*array_bounds(*shape, transform)))
            if idx.size:
                for i in np.sort(idx):
                    xy = exteriors[i]
                    cols, rows = inv @ (xy[:, 0], xy[:, 1])
                    # pixel centres sit at integer coordinates for OpenCV
                    px = np.stack([cols - window.col_off - 0.5, rows - window.row_off - 0.5], axis=1)
                    # one polygon per call: overlapping polygons must not cancel out (even-odd filling)
                    cv2.fillPoly(out, [np.round(px * (1 << SHIFT)).astype(np.int32)], CROP, cv2.LINE_8, SHIFT)
            return out

        result = write_label_raster(scene, out_path, burn, self.block_size)
        return replace(result, notes={"repaired_geometries": float(gdf.attrs.get("repaired_geometries", 0))})


@hookimpl
def cropseg_register_labelers(register):
    register("contours", ContoursLabeler)
