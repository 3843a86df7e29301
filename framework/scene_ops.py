"""Whole-scene operations run block by block: classify a scene into a mask GeoTIFF and run mask filters
over it. Both the training pipeline (:mod:`cropseg.pipeline`) and the deployable model
(:mod:`cropseg.inference`) use them, so they sit below both; blocks run on the current block executor
(:mod:`cropseg.parallel`), each task from :mod:`cropseg.blocks`."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import rasterio

from .blocks import FilterContext, PredictContext, filter_block, predict_block
from .parallel import current_executor
from .raster import DEFAULT_BLOCK, block_writer, iter_windows, n_windows
from .types import Classifier, Features, Grid, MaskFilter, PatchModel, Scene

log = logging.getLogger("cropseg")


class Progress:
    """Logs progress of a long step at most every few seconds, and its end."""

    def __init__(self, label: str, total: int, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self.start = self.last = time.perf_counter()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            log.info("%s: %d/%d blocks (%.0f%%)", self.label, self.done, self.total, 100 * self.done / self.total)

    def finish(self) -> float:
        secs = time.perf_counter() - self.start
        log.info("%s: done in %.1f s", self.label, secs)
        return secs


def predict_scene(
    scene: Scene, features: Features, classifier: Classifier | PatchModel, out_path: Path, block: int = DEFAULT_BLOCK
) -> tuple[int, float]:
    """Classify every valid pixel of ``scene`` block by block into a uint8 mask GeoTIFF on its grid
    (0 non-crop, 1 crop, 255 nodata). Returns (pixels classified, seconds spent in the classifier, summed
    over blocks). Blocks run on the current block executor (:func:`cropseg.parallel.current_executor`:
    the run's ``parallel`` config; serial outside a run) and are written in order."""
    grid = scene.grid
    n_px, secs = 0, 0.0
    task: Any = predict_block
    ctx: Any = PredictContext(scene, features, classifier)  # type: ignore[arg-type]
    if isinstance(classifier, PatchModel):
        from .patches import PatchPredictContext, predict_patch_block, tile_side

        task, ctx = predict_patch_block, PatchPredictContext(scene, features, classifier)
        # blocks of whole tiles: a tile that straddled two blocks would be read and predicted twice
        tile = tile_side(classifier)
        block = -(-int(block) // tile) * tile
    total = n_windows(grid.height, grid.width, block)
    prog = Progress(f"predict {scene.name}", total)
    with block_writer(out_path, grid) as dst:
        windows = list(iter_windows(grid.height, grid.width, block))
        for w, (mask, n, s) in zip(windows, current_executor().map(task, windows, ctx, total)):
            dst.write(mask, 1, window=w)
            n_px, secs = n_px + n, secs + s
            prog.step()
    prog.finish()
    return n_px, secs


def apply_filters(
    mask_path: Path, filters: list[tuple[str, MaskFilter]], out_path: Path, block: int = DEFAULT_BLOCK
) -> Path:
    """Run mask filters in order, block by block with each filter's halo (results equal whole-image
    filtering). Nodata stays nodata and is seen as non-crop by the filters. Blocks run on the current
    block executor, as in :func:`predict_scene`."""
    current = mask_path
    for i, (name, flt) in enumerate(filters):
        target = out_path if i == len(filters) - 1 else out_path.with_name(f"{out_path.stem}.{name}.tif")
        with rasterio.open(current) as src:
            grid = Grid(src.crs, src.transform, src.width, src.height)
        total = n_windows(grid.height, grid.width, block)
        prog = Progress(f"{name} {out_path.stem}", total)
        ctx = FilterContext(Path(current), name, flt)
        with block_writer(target, grid) as dst:
            windows = list(iter_windows(grid.height, grid.width, block))
            for w, core in zip(windows, current_executor().map(filter_block, windows, ctx, total)):
                dst.write(core, 1, window=w)
                prog.step()
        prog.finish()
        if current != mask_path:
            Path(current).unlink(missing_ok=True)
        current = target
    if not filters:
        shutil.copyfile(mask_path, out_path)
    return Path(out_path)
