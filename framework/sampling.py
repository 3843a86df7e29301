"""Drawing training pixels from a labelled scene: stratified, capped, seeded, block by block."""

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

    def crop_fractions(self) -> dict[str, float]:
        """Crop share of the labelled pixels and of the sample (what the cap kept of the proportions)."""
        total = sum(self.available.values())
        return {
            "train_labelled_crop_fraction": self.available["crop"] / total if total else float("nan"),
            "train_sample_crop_fraction": float(np.mean(self.y == CROP)) if len(self.y) else float("nan"),
        }


def class_counts(labels: LabelRaster) -> dict[int, int]:
    return {NONCROP: int(labels.counts["noncrop"]), CROP: int(labels.counts["crop"])}


def allocate(
    counts: dict[int, int], *, max_pixels: int | None = None, max_per_class: int | None = None, balance: bool = False
) -> dict[int, int]:
    """How many pixels of each class to draw from ``counts`` (labelled pixels per class).

    By default one cap, ``max_pixels``, bounds the total and the sample keeps the labelled class proportions
    (stratified; largest-remainder rounding, every present class keeps at least one pixel). ``balance=True``
    draws the same number of each class: the smaller class's count, at most ``max_pixels // 2``.
    ``max_per_class`` (off by default) caps each class on top of that; set below a class's share it changes
    the class proportions, as any per-class cap does.
    """
    for opt, value in (("max_pixels", max_pixels), ("max_per_class", max_per_class)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"train.{opt}: a positive number of pixels or null (no cap), got {value!r}")
    if balance:
        each = min(counts.values())
        if max_pixels is not None:
            each = min(each, max(1, int(max_pixels) // len(counts)))
        take = {c: each for c in counts}
    elif max_pixels is not None and sum(counts.values()) > int(max_pixels):
        total = sum(counts.values())
        exact = {c: int(max_pixels) * n / total for c, n in counts.items()}
        take = {c: min(counts[c], max(1 if counts[c] else 0, int(v))) for c, v in exact.items()}
        short = int(max_pixels) - sum(take.values())
        for c in sorted(counts, key=lambda c: exact[c] - int(exact[c]), reverse=True):
            if short <= 0:
                break
            if take[c] < counts[c]:
                take[c] += 1
                short -= 1
    else:
        take = dict(counts)
    if max_per_class is not None:
        take = {c: min(n, int(max_per_class)) for c, n in take.items()}
    return take


def sample_training_pixels(
    scene: Scene,
    labels: LabelRaster,
    features: Features,
    *,
    seed: int,
    max_pixels: int | None = None,
    max_per_class: int | None = None,
    spatial_block: int = 128,
    block: int = DEFAULT_BLOCK,
    balance: bool = False,
) -> TrainingSet:
    """Labelled pixels of ``scene``, drawn uniformly without replacement within each class with ``seed``;
    how many of each class :func:`allocate` says (all of them when no cap applies; by default the labelled
    class proportions under one ``max_pixels`` cap on the total). Memory is bounded by the sample, not the
    scene: chosen pixel indices are drawn up front per class, then collected in one pass over the blocks.

    ``groups`` numbers square spatial blocks of ``spatial_block`` pixels (for spatially blocked CV).
    """
    counts = class_counts(labels)
    empty = [name for cls, name in ((NONCROP, "non-crop"), (CROP, "crop")) if counts[cls] == 0]
    if empty:
        raise LabelError(
            f"{labels.path}: the training labels hold no {' and no '.join(empty)} pixels; a "
            "classifier needs both classes (check the ground truth and the scene overlap)"
        )
    take_n = allocate(counts, max_pixels=max_pixels, max_per_class=max_per_class, balance=balance)
    rng = np.random.default_rng(seed)
    chosen: dict[int, np.ndarray | None] = {}
    for cls in (NONCROP, CROP):
        n = counts[cls]
        if take_n[cls] >= n:
            chosen[cls] = None  # take all
        else:
            chosen[cls] = np.sort(rng.choice(n, size=take_n[cls], replace=False))
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
