"""How sure a test score is: spatial block bootstrap intervals of a run's test target and of the paired
difference between runs tested on the same scene.

Neighbouring pixels of a classified map are not independent (errors come in fields, shadows, edges), so
resampling pixels would make intervals far too narrow. The test scene is cut into square blocks
(``block`` pixels per side, the same grid for every run); a 2x2 confusion matrix is counted per block,
streaming the rasters window by window (memory stays bounded). A bootstrap replicate draws as many blocks
as there are, with replacement, and sums their confusion matrices; the target (:mod:`cropseg.targets`) of
that sum is one replicate of the score. The 95 % interval is the 2.5 and 97.5 percentiles of the replicates
(percentile bootstrap). Runs on the same test data are resampled with the *same* draws, so the interval of
their difference is paired: a map's hard blocks are hard for every model.

Several runs that differ only by their seed are averaged per replicate, so the interval of a seed group
is that of its mean score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputFileError
from .targets import Target

#: default side in pixels of the resampled blocks (the default ``train.spatial_block``)
DEFAULT_BLOCK = 128
#: default number of bootstrap replicates
DEFAULT_REPLICATES = 1000
IGNORE = 255


def block_confusions(truth_path: Path | str, pred_path: Path | str, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Per-block 2x2 confusion matrices (shape ``(n_blocks, 2, 2)``, rows truth non-crop / crop, columns
    prediction) of a 0/1/255 prediction raster against a 0/1/255 label raster on the same grid; blocks are
    the row-major ``block`` x ``block`` squares anchored at the raster's origin. Pixels that are 255 (or any
    value other than 0/1) in either raster are left out; blocks without a labelled pixel are kept (zeros)
    so the blocks of two runs on the same grid line up."""
    import rasterio

    from .raster import iter_windows

    if int(block) < 1:
        raise ValueError(f"block: at least 1 pixel, got {block}")
    try:
        with rasterio.open(truth_path) as t, rasterio.open(pred_path) as p:
            if (t.width, t.height) != (p.width, p.height) or t.transform != p.transform:
                raise InputFileError(f"{pred_path}: not on the grid of {truth_path}")
            out = []
            for w in iter_windows(t.height, t.width, int(block)):
                truth = t.read(1, window=w)
                pred = p.read(1, window=w)
                m = (truth <= 1) & (pred <= 1)
                idx = truth[m].astype(np.int64) * 2 + pred[m].astype(np.int64)
                out.append(np.bincount(idx, minlength=4)[:4])
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"cannot read {exc}") from None
    return np.asarray(out, dtype=np.float64).reshape(-1, 2, 2)


def resample_weights(n_blocks: int, replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> np.ndarray:
    """How often each block is drawn in each replicate: an integer matrix ``(replicates, n_blocks)`` whose
    rows sum to ``n_blocks`` (blocks drawn uniformly with replacement; seeded)."""
    if n_blocks < 1:
        raise ValueError("no blocks to resample")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_blocks, size=(int(replicates), n_blocks))
    w = np.zeros((int(replicates), n_blocks), dtype=np.float64)
    np.add.at(w, (np.repeat(np.arange(int(replicates)), n_blocks), draws.ravel()), 1.0)
    return w


def replicate_scores(block_cms: np.ndarray, target: Target, weights: np.ndarray) -> np.ndarray:
    """The target of each replicate: ``weights @ block_cms`` summed confusion matrices, scored."""
    cms = np.asarray(weights) @ np.asarray(block_cms, dtype=np.float64).reshape(-1, 4)
    return np.array([target.score(cm.reshape(2, 2)) for cm in cms])


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def percentile_interval(estimate: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(np.asarray(replicates, dtype=np.float64), [tail, 100 - tail])
    return Interval(float(estimate), float(lo), float(hi))


def block_bootstrap(
    block_cms: np.ndarray,
    target: Target,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """The target of the whole map (the sum of the blocks) with its spatial block bootstrap interval."""
    cms = np.asarray(block_cms, dtype=np.float64)
    w = resample_weights(len(cms), replicates, seed)
    return percentile_interval(target.score(cms.sum(axis=0)), replicate_scores(cms, target, w), level)


@dataclass(frozen=True)
class Comparison:
    """Intervals of several entries (each one run, or the runs of a seed group) on the same test blocks,
    and of each entry's paired difference to the ``top`` entry."""

    intervals: list[Interval]
    differences: list[Interval]
    top: int

    def distinguishable(self, i: int) -> bool:
        """Whether entry ``i`` differs from the top entry (its difference interval excludes 0); the top
        entry itself is never distinguishable from itself."""
        d = self.differences[i]
        return i != self.top and not d.contains(0.0)


def compare_entries(
    entries: Sequence[Sequence[np.ndarray]],
    target: Target,
    top: int = 0,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """Paired block bootstrap of several entries on the same test blocks. Each entry is a list of runs'
    per-block confusion matrices (one run, or the seeds of one configuration: their scores are averaged
    per replicate); every array must have the same number of blocks. Returns each entry's interval of its
    (mean) target and the interval of its difference to entry ``top`` (entry minus top), all from the same
    block draws."""
    if not entries or any(len(e) == 0 for e in entries):
        raise ValueError("every entry needs at least one run")
    n_blocks = {len(cms) for e in entries for cms in e}
    if len(n_blocks) != 1:
        raise ValueError(f"the runs were not scored on the same blocks ({sorted(n_blocks)} blocks)")
    w = resample_weights(n_blocks.pop(), replicates, seed)
    points = [float(np.mean([target.score(np.asarray(c).sum(axis=0)) for c in e])) for e in entries]
    reps = [np.mean([replicate_scores(c, target, w) for c in e], axis=0) for e in entries]
    intervals = [percentile_interval(points[i], reps[i], level) for i in range(len(entries))]
    differences = [
        percentile_interval(points[i] - points[top], reps[i] - reps[top], level) for i in range(len(entries))
    ]
    return Comparison(intervals, differences, top)
