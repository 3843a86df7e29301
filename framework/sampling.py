"""Drawing training pixels from a labelled scene: stratified, capped per class, seeded, block by block."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio

from .errors import ConfigError, LabelError
from .featurize import window_features
from .raster import DEFAULT_BLOCK, iter_windows
from .types import CROP, NONCROP, Features, LabelRaster, Scene


@dataclass
class TrainingSet:
    """Training pixels: features ``X`` (n, f), labels ``y`` (n,), pixel positions and spatial groups."""

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    groups: np.ndarray
    feature_names: list[str]
    available: dict[str, int]


def class_counts(labels: LabelRaster) -> dict[int, int]:
    return {NONCROP: int(labels.counts["noncrop"]), CROP: int(labels.counts["crop"])}


def sample_training_pixels(scene: Scene, labels: LabelRaster, features: Features, *,
                           max_per_class: int | None, seed: int, spatial_block: int = 128,
                           block: int = DEFAULT_BLOCK, balance: bool = False) -> TrainingSet:
    """Labelled pixels of ``scene``: all of them (``max_per_class=None``) or at most ``max_per_class`` per
    class, drawn uniformly without replacement with ``seed``. ``balance=True`` draws the same number of
    pixels of each class: the smaller class's count (or ``max_per_class`` if that is smaller). Memory is
    bounded by the sample, not the scene: chosen pixel indices are drawn up front per class, then collected
    in one pass over the blocks.

    ``groups`` numbers square spatial blocks of ``spatial_block`` pixels (for spatially blocked CV).
    """
    counts = class_counts(labels)
    empty = [name for cls, name in ((NONCROP, "non-crop"), (CROP, "crop")) if counts[cls] == 0]
    if empty:
        raise LabelError(f"{labels.path}: the training labels hold no {' and no '.join(empty)} pixels; a "
                         "classifier needs both classes (check the ground truth and the scene overlap)")
    if max_per_class is not None and int(max_per_class) < 1:
        raise ConfigError(f"train.max_per_class: a positive number of pixels or null (all), got {max_per_class!r}")
    cap = None if max_per_class is None else int(max_per_class)
    if balance:
        smallest = min(counts.values())
        cap = smallest if cap is None else min(cap, smallest)
    rng = np.random.default_rng(seed)
    chosen: dict[int, np.ndarray | None] = {}
    for cls in (NONCROP, CROP):
        n = counts[cls]
        if cap is None or n <= cap:
            chosen[cls] = None  # take all
        else:
            chosen[cls] = np.sort(rng.choice(n, size=cap, replace=False))
    seen = {NONCROP: 0, CROP: 0}
    names = features.names(scene.band_names)
    parts_x, parts_y, parts_r, parts_c = [], [], [], []
    grid = scene.grid
    with rasterio.open(labels.path) as lab_src, scene.reader() as reader:
        for w in iter_windows(grid.height, grid.width, block):
            lab = lab_src.read(1, window=w)
            take = np.zeros(lab.shape, dtype=bool)
            for cls in (NONCROP, CROP):
                is_cls = lab == cls
                k = int(np.count_nonzero(is_cls))
                if k == 0:
                    continue
                sel = chosen[cls]
                if sel is None:
                    take |= is_cls
                else:
                    lo, hi = np.searchsorted(sel, [seen[cls], seen[cls] + k])
                    if hi > lo:
                        flat = np.flatnonzero(is_cls)[sel[lo:hi] - seen[cls]]
                        take.ravel()[flat] = True
                seen[cls] += k
            if not take.any():
                continue
            feats, _ = window_features(reader, features, w, scene.band_names)
            rr, cc = np.nonzero(take)
            parts_x.append(feats[:, rr, cc].T.astype(np.float32))
            parts_y.append(lab[rr, cc])
            parts_r.append(rr + int(w.row_off))
            parts_c.append(cc + int(w.col_off))
    X = np.concatenate(parts_x)
    y = np.concatenate(parts_y).astype(np.uint8)
    rows = np.concatenate(parts_r).astype(np.int64)
    cols = np.concatenate(parts_c).astype(np.int64)
    ncols = -(-grid.width // spatial_block)
    groups = (rows // spatial_block) * ncols + cols // spatial_block
    return TrainingSet(X, y, rows, cols, groups, names, {"noncrop": counts[NONCROP], "crop": counts[CROP]})
