"""Shared machinery for labelers: write a label raster block by block on a scene's grid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.windows import Window

from .raster import DEFAULT_BLOCK, block_writer, iter_windows
from .types import CROP, IGNORE, NONCROP, LabelRaster, Scene

#: ``burn(window, window_transform, shape) -> uint8 (h, w)`` of 0 / 1 / 255 before the valid mask is applied.
BurnFn = Callable[[Window, Affine, tuple[int, int]], np.ndarray]


def write_label_raster(scene: Scene, out_path: Path, burn: BurnFn, block: int = DEFAULT_BLOCK) -> LabelRaster:
    """Write ``out_path`` by calling ``burn`` per block; pixels outside the scene's valid data (footprint,
    AOI, unusable data) become ignore (255). Returns the raster with its class counts."""
    grid = scene.grid
    counts = np.zeros(3, dtype=np.int64)  # non-crop, crop, ignore
    with scene.reader() as reader, block_writer(out_path, grid) as dst:
        for w in iter_windows(grid.height, grid.width, block):
            valid = reader.read(w).valid
            lab = burn(w, grid.window_transform(w), valid.shape).astype(np.uint8, copy=False)
            lab = np.where(valid, lab, IGNORE).astype(np.uint8)
            dst.write(lab, 1, window=w)
            counts += [np.count_nonzero(lab == NONCROP), np.count_nonzero(lab == CROP), np.count_nonzero(lab == IGNORE)]
    return LabelRaster(
        Path(out_path), grid, {"noncrop": int(counts[0]), "crop": int(counts[1]), "ignore": int(counts[2])}
    )
