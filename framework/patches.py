"""What every patch model (:class:`cropseg.types.PatchModel`) shares, owned by the framework:

* drawing training patches from the training scene only: candidate square patches on a regular grid,
  stratified so patches with crop and patches with non-crop both appear, capped, seeded; the labels are
  scanned strip by strip and only the chosen patches' pixels are kept, so memory is bounded by the cap;
* holding out whole spatial blocks of the training scene for validation / early stopping (training
  patches never touch a held-out block);
* the per-epoch callback that scores validation predictions (crop F1 / IoU, ignore pixels masked) and
  hands them to the run's logger;
* predicting fixed tiles (anchored at the scene's origin) grown by the model's halo and keeping their
  centres (the block task the block executor runs), so masks do not depend on the block size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from .errors import ConfigError, LabelError, PluginError
from .featurize import block_features
from .targets import Target, confusion, get_target
from .types import CROP, IGNORE, NONCROP, EpochCallback, Features, LabelRaster, PatchModel, PatchSet, Scene

log = logging.getLogger("cropseg")


#: the largest share of the training scene's blocks held out to reach ``min_val_pixels``
MAX_VAL_FRACTION = 0.5


@dataclass(frozen=True)
class PatchOptions:
    """The ``train.patches`` config section (see conf/config.yaml)."""

    #: training patches drawn at most (half with crop, half with non-crop where the scene allows)
    max_patches: int = 400
    #: spacing of candidate patches in pixels; null = half the patch size
    stride: int | None = None
    #: share of the training scene's spatial blocks (``train.spatial_block``) held out for validation
    val_fraction: float = 0.2
    #: a patch counts for a class when at least this share of its pixels is labelled that class
    min_class_fraction: float = 0.05
    #: fewer training patches holding a class than this is an error
    min_per_class: int = 4
    #: labelled pixels of each class the validation patches should hold: short of it, more blocks are held
    #: out (the share grows by half at a time, up to :data:`MAX_VAL_FRACTION`), then a warning
    min_val_pixels: int = 10000

    def __post_init__(self) -> None:
        if not isinstance(self.max_patches, int) or self.max_patches < 2:
            raise ConfigError(f"train.patches.max_patches: an integer >= 2, got {self.max_patches!r}")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
            raise ConfigError(f"train.patches.stride: a positive integer or null, got {self.stride!r}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(f"train.patches.val_fraction: in [0, 1), got {self.val_fraction!r}")
        if not 0.0 < float(self.min_class_fraction) <= 1.0:
            raise ConfigError(f"train.patches.min_class_fraction: in (0, 1], got {self.min_class_fraction!r}")
        if not isinstance(self.min_per_class, int) or self.min_per_class < 1:
            raise ConfigError(f"train.patches.min_per_class: a positive integer, got {self.min_per_class!r}")
        if not isinstance(self.min_val_pixels, int) or isinstance(self.min_val_pixels, bool) or self.min_val_pixels < 0:
            raise ConfigError(f"train.patches.min_val_pixels: a non-negative integer, got {self.min_val_pixels!r}")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> PatchOptions:
        opts = dict(node.items()) if node is not None else {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError(f"train.patches: unknown option {unknown[0]!r} (valid: {', '.join(sorted(known))})")
        return cls(**opts)


def check_patch_model(model: PatchModel, n_features: int) -> None:
    """Validate a patch model's sizes and let it check its own options (before any scene is loaded)."""
    for attr in ("patch_size", "halo"):
        val = getattr(model, attr, None)
        if not isinstance(val, int) or isinstance(val, bool) or val < (1 if attr == "patch_size" else 0):
            raise PluginError(
                f"patch model: {attr} must be a {'positive' if attr == 'patch_size' else 'non-negative'}"
                f" integer, got {val!r}"
            )
    model.prepare(n_features)


def check_scene_size(model: PatchModel, scene: Scene, role: str = "training") -> None:
    grid = scene.grid
    p = int(model.patch_size)
    if p > grid.height or p > grid.width:
        raise ConfigError(
            f"classifier.patch_size={p}: larger than the {role} scene {scene.name!r} "
            f"({grid.width}x{grid.height} px); choose a patch size of at most "
            f"{min(grid.width, grid.height)}"
        )


def holdout_blocks(height: int, width: int, spatial_block: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean ``(block rows, block cols)`` map of the spatial blocks held out for validation: a seeded
    ``fraction`` of them (at least one when ``fraction > 0`` and there are two blocks or more), spread
    over the scene: the blocks, taken in serpentine order (left to right, then right to left on the next
    row), are cut into as many runs of equal length as blocks are held out, and one block of each run is
    drawn, so held-out blocks do not cluster in one part of the scene."""
    nr, nc = -(-height // spatial_block), -(-width // spatial_block)
    held = np.zeros((nr, nc), dtype=bool)
    total = nr * nc
    n = int(round(fraction * total))
    if fraction > 0 and total >= 2:
        n = max(1, min(n, total - 1))
        serpentine = np.arange(total).reshape(nr, nc)
        serpentine[1::2] = serpentine[1::2, ::-1]
        order = serpentine.ravel()
        bounds = np.linspace(0, total, n + 1).round().astype(np.int64)
        rng = np.random.default_rng(seed)
        picks = [order[int(rng.integers(bounds[i], bounds[i + 1]))] for i in range(n)]
        held.ravel()[picks] = True
    return held


def _starts(size: int, p: int, stride: int) -> np.ndarray:
    s = list(range(0, size - p + 1, stride))
    if s[-1] != size - p:
        s.append(size - p)
    return np.asarray(s, dtype=np.int64)


@dataclass
class _Candidates:
    rows: np.ndarray
    cols: np.ndarray
    crop: np.ndarray  # crop pixels per candidate
    noncrop: np.ndarray
    val: np.ndarray  # inside held-out blocks only


def _candidates(labels: LabelRaster, p: int, stride: int, held: np.ndarray, spatial_block: int) -> _Candidates:
    """Every candidate patch position with its crop / non-crop pixel counts, scanning the labels one
    strip of ``p`` rows at a time; patches touching both kinds of block are dropped."""
    grid = labels.grid
    cols = _starts(grid.width, p, stride)
    out_r, out_c, out_crop, out_non, out_val = [], [], [], [], []
    b0 = cols // spatial_block
    b1 = (cols + p - 1) // spatial_block
    with rasterio.open(labels.path) as src:
        for r in _starts(grid.height, p, stride):
            strip = src.read(1, window=Window(0, int(r), grid.width, p))
            csum = {}
            for cls in (CROP, NONCROP):
                per_col = np.count_nonzero(strip == cls, axis=0)
                c = np.concatenate([[0], np.cumsum(per_col)])
                csum[cls] = c[cols + p] - c[cols]
            r0, r1 = int(r) // spatial_block, (int(r) + p - 1) // spatial_block
            # a patch is "held out" if every block it touches is, "training" if none is; else dropped
            touched = [held[r0 : r1 + 1, a : b + 1] for a, b in zip(b0, b1)]
            all_held = np.array([t.all() for t in touched])
            any_held = np.array([t.any() for t in touched])
            keep = all_held | ~any_held
            out_r.append(np.full(int(keep.sum()), r, dtype=np.int64))
            out_c.append(cols[keep])
            out_crop.append(csum[CROP][keep])
            out_non.append(csum[NONCROP][keep])
            out_val.append(all_held[keep])
    return _Candidates(
        np.concatenate(out_r),
        np.concatenate(out_c),
        np.concatenate(out_crop),
        np.concatenate(out_non),
        np.concatenate(out_val),
    )


def _stratified(has_crop: np.ndarray, has_non: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``cap`` candidates: half from those with crop, the rest from those with only
    non-crop (either half fills up from the other when one runs short). Sorted, so reads run in order."""
    crop_idx = rng.permutation(np.flatnonzero(has_crop))
    non_idx = rng.permutation(np.flatnonzero(has_non & ~has_crop))
    n_crop = min(len(crop_idx), max(cap // 2, cap - len(non_idx)))
    n_non = min(len(non_idx), cap - n_crop)
    return np.sort(np.concatenate([crop_idx[:n_crop], non_idx[:n_non]]).astype(np.int64))


def _read_patches(
    scene: Scene, labels: LabelRaster, features: Features, rows: np.ndarray, cols: np.ndarray, p: int
) -> PatchSet:
    names = list(features.names(scene.band_names))
    X = np.empty((len(rows), len(names), p, p), dtype=np.float32)
    y = np.empty((len(rows), p, p), dtype=np.uint8)
    with rasterio.open(labels.path) as lab, scene.reader() as reader:
        for i, (r, c) in enumerate(zip(rows, cols)):
            w = Window(int(c), int(r), p, p)
            blk = reader.read(w)
            X[i] = block_features(features, blk, scene.band_names)
            lab_w = lab.read(1, window=w)
            y[i] = np.where(blk.valid, lab_w, IGNORE)
    return PatchSet(X, y, np.stack([rows, cols], axis=1) if len(rows) else np.zeros((0, 2), np.int64), names)


@dataclass
class PatchSample:
    """The training and validation patches of a run and how they were drawn."""

    train: PatchSet
    validation: PatchSet | None
    info: dict[str, float]
    #: what the run should warn about (too little validation); logged, and tagged by the pipeline
    warnings: list[str] = field(default_factory=list)


def draw_patches(
    scene: Scene,
    labels: LabelRaster,
    features: Features,
    patch_size: int,
    options: PatchOptions,
    *,
    seed: int,
    spatial_block: int = 128,
) -> PatchSample:
    """Draw training patches (and validation patches from held-out spatial blocks) from ``scene``.

    Candidates lie on a grid of ``options.stride`` pixels; a candidate "has" a class when at least
    ``min_class_fraction`` of its pixels are labelled that class. At most ``max_patches`` training
    patches are drawn, half from candidates with crop and half from those with non-crop (seeded with
    ``seed``); validation patches, at most ``max_patches * val_fraction``, come the same way from
    candidates lying wholly inside held-out blocks (spread over the scene, :func:`holdout_blocks`). When
    they hold fewer than ``min_val_pixels`` labelled pixels of a class, more blocks are held out (see
    :class:`PatchOptions`); still short, the sample carries a warning. Raises :class:`LabelError` when
    fewer than ``min_per_class`` training candidates hold a class.
    """
    p = int(patch_size)
    g = labels.grid
    if p > g.height or p > g.width:
        raise ConfigError(f"classifier.patch_size={p}: larger than the training scene ({g.width}x{g.height} px)")
    stride = int(options.stride or max(1, p // 2))
    block = max(int(spatial_block), p)
    need = options.min_class_fraction * p * p

    def attempt(fraction: float) -> tuple[Any, ...]:
        held = holdout_blocks(g.height, g.width, block, fraction, seed)
        cand = _candidates(labels, p, stride, held, block)
        has_crop, has_non = cand.crop >= need, cand.noncrop >= need
        train_mask = ~cand.val
        n_crop, n_non = int((has_crop & train_mask).sum()), int((has_non & train_mask).sum())
        rng = np.random.default_rng(seed)
        tr = np.flatnonzero(train_mask)
        pick = tr[_stratified(has_crop[tr], has_non[tr], options.max_patches, rng)]
        va = np.flatnonzero(cand.val & (has_crop | has_non))
        cap_v = max(2, int(round(options.max_patches * fraction)))
        vpick = va[_stratified(has_crop[va], has_non[va], cap_v, rng)] if len(va) else va
        val_px = min(int(cand.crop[vpick].sum()), int(cand.noncrop[vpick].sum()))
        return fraction, held, cand, n_crop, n_non, pick, vpick, val_px

    state = attempt(float(options.val_fraction))
    # short of min_val_pixels of a class in validation: hold out more blocks (the share grows by half at a
    # time, up to MAX_VAL_FRACTION) as long as the training part keeps enough patches of each class
    while state[0] > 0 and state[7] < options.min_val_pixels:
        grown = min(MAX_VAL_FRACTION, state[0] * 1.5)
        if grown <= state[0] or holdout_blocks(g.height, g.width, block, grown, seed).sum() <= state[1].sum():
            break
        nxt = attempt(grown)
        if min(nxt[3], nxt[4]) < options.min_per_class:
            break
        state = nxt
    fraction, held, cand, n_crop, n_non, pick, vpick, _ = state
    short = [f"{n} with {name}" for n, name in ((n_crop, "crop"), (n_non, "non-crop")) if n < options.min_per_class]
    if short:
        raise LabelError(
            f"{labels.path}: too few labelled training patches of {p}x{p} px ({', '.join(short)}; "
            f"need {options.min_per_class} of each, a patch counts when >= "
            f"{options.min_class_fraction:.0%} of it is that class): use a smaller "
            "classifier.patch_size, a larger training scene or check the ground truth"
        )
    train = _read_patches(scene, labels, features, cand.rows[pick], cand.cols[pick], p)
    validation = None
    warnings: list[str] = []
    if len(vpick):
        validation = _read_patches(scene, labels, features, cand.rows[vpick], cand.cols[vpick], p)
    elif options.val_fraction > 0:
        warnings.append(
            f"no validation patches: the training scene has no labelled {p}x{p} patch inside held-out blocks "
            f"of {block} px (the model trains without validation)"
        )
    val_counts = (
        (int(np.count_nonzero(validation.y == CROP)), int(np.count_nonzero(validation.y == NONCROP)))
        if validation is not None
        else (0, 0)
    )
    if validation is not None and min(val_counts) < options.min_val_pixels:
        warnings.append(
            f"validation patches hold {val_counts[0]} crop and {val_counts[1]} non-crop labelled pixels, "
            f"fewer than train.patches.min_val_pixels={options.min_val_pixels} of each with "
            f"{int(held.sum())} of {held.size} blocks held out: the kept epoch is noisy (label more of "
            "the training scene, or use a larger one)"
        )
    if fraction > options.val_fraction:
        log.info(
            "validation: %d of %d blocks held out (val_fraction %.2f grown to %.2f for "
            "train.patches.min_val_pixels=%d per class)",
            int(held.sum()),
            held.size,
            options.val_fraction,
            fraction,
            options.min_val_pixels,
        )
    for w in warnings:
        log.warning("%s", w)
    info = {
        "train_patches": float(len(train)),
        "val_patches": float(len(validation) if validation else 0),
        "train_patches_with_crop": float((train.y == CROP).reshape(len(train), -1).any(1).sum()),
        "patch_candidates_with_crop": float(n_crop),
        "patch_candidates_with_noncrop": float(n_non),
        "val_blocks": float(held.sum()),
        "val_fraction": float(fraction),
        "val_crop_pixels": float(val_counts[0]),
        "val_noncrop_pixels": float(val_counts[1]),
        "patch_size": float(p),
    }
    return PatchSample(train, validation, info, warnings)


# -- scoring and the per-epoch callback -------------------------------------------------------------------


def score_masks(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Crop precision / recall / F1 and IoU of a 0/1 prediction against labels (255 = ignore)."""
    keep = truth != IGNORE
    p, t = pred[keep] == CROP, truth[keep] == CROP
    tp = float(np.count_nonzero(p & t))
    fp = float(np.count_nonzero(p & ~t))
    fn = float(np.count_nonzero(~p & t))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    acc = float(np.mean(p == t)) if keep.any() else 0.0
    return {"crop_precision": prec, "crop_recall": rec, "crop_f1": f1, "iou": iou, "accuracy": acc}


def epoch_callback(
    validation: PatchSet | None,
    log_metrics: Callable[[Mapping[str, float], int], None],
    label: str = "fit",
    target: Target | None = None,
) -> EpochCallback:
    """The :class:`cropseg.types.EpochCallback` the pipeline hands to a patch model: scores the validation
    prediction, logs ``train_loss`` and ``val_crop_f1``/``val_iou``... at step ``epoch`` through
    ``log_metrics(metrics, step)`` and writes a progress line. It returns those metrics plus ``target``:
    the run's target metric (``evaluate.target``, default crop F1) on the validation patches, which the
    model maximises (kept epoch, early stopping, class-weight choice)."""
    tgt = target or get_target(None)

    def on_epoch(epoch: int, train_loss: float, val_pred: np.ndarray | None) -> dict[str, float]:
        metrics = {"train_loss": float(train_loss)}
        value = None
        if val_pred is not None and validation is not None:
            pred = np.asarray(val_pred)
            if pred.shape != validation.y.shape:
                raise PluginError(
                    f"patch model: validation prediction has shape {pred.shape}, expected {validation.y.shape}"
                )
            metrics.update({f"val_{k}": v for k, v in score_masks(pred, validation.y).items()})
            value = tgt.score(confusion(validation.y, pred))
        log_metrics(metrics, int(epoch))
        extra = (
            f", validation crop F1 {metrics['val_crop_f1']:.3f} IoU {metrics['val_iou']:.3f}"
            if "val_crop_f1" in metrics
            else ""
        )
        if value is not None and tgt.name not in ("crop_f1",):
            extra += f", {tgt.name} {value:.3f}"
        log.info("%s epoch %d: train loss %.4f%s", label, epoch, train_loss, extra)
        return metrics if value is None else {**metrics, "target": float(value)}

    return on_epoch


def _duration(secs: float) -> str:
    secs = max(0.0, float(secs))
    if secs < 60:
        return f"{secs:.0f} s"
    if secs < 3600:
        return f"{int(secs // 60)} min {int(secs % 60):02d} s"
    return f"{int(secs // 3600)} h {int(secs % 3600 // 60):02d} min"


class TrainingProgress:
    """Progress lines inside a patch model's epochs: batches done, rate and time left.

    The first line comes after the first batch of the first epoch (so within seconds of the start of
    training, not at the end of an epoch), later ones at most every ``every`` seconds: ``unet epoch 2/20:
    batch 12/25 (48%), 3.1 batches/s (50 patches/s), epoch ETA 4 s, at most 1 min 30 s left (20 epochs)``.
    Early stopping or the time budget may end training sooner than the last figure. ``clock`` is a
    monotonic clock in seconds (tests give a controllable one); ``unit`` names what a batch holds (patches;
    ``pixels`` for a per-pixel model)."""

    def __init__(
        self,
        label: str,
        epochs: int,
        batches: int,
        batch_size: int,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "patches",
    ):
        self.label, self.epochs, self.batches, self.batch_size = label, int(epochs), max(1, int(batches)), batch_size
        self.every, self.clock, self.unit = float(every), clock, unit
        self.epoch = 0
        self.t_epoch = self.last = self.clock()
        self.lines = 0
        #: seconds of each finished epoch (the estimate of the remaining ones)
        self.durations: list[float] = []

    def start_epoch(self, epoch: int) -> None:
        now = self.clock()
        if self.epoch:
            self.durations.append(now - self.t_epoch)
        self.epoch, self.t_epoch = int(epoch), now

    def batch(self, done: int) -> None:
        """``done`` batches of the current epoch have finished."""
        now = self.clock()
        if self.lines and now - self.last < self.every:
            return
        if done >= self.batches and self.lines:
            return  # the epoch's own line follows
        self.last, self.lines = now, self.lines + 1
        took = max(now - self.t_epoch, 1e-9)
        rate = done / took
        epoch_left = (self.batches - done) / rate
        per_epoch = float(np.mean(self.durations)) if self.durations else self.batches / rate
        total_left = epoch_left + per_epoch * (self.epochs - self.epoch)
        log.info(
            "%s epoch %d/%d: batch %d/%d (%.0f%%), %.2f batches/s (%.0f %s/s), epoch ETA %s, "
            "at most %s left (%d epochs)",
            self.label,
            self.epoch,
            self.epochs,
            done,
            self.batches,
            100.0 * done / self.batches,
            rate,
            rate * self.batch_size,
            self.unit,
            _duration(epoch_left),
            _duration(total_left),
            self.epochs,
        )


class ThreadChooser:
    """Chooses a training loop's CPU thread count from its own first batches (``threads: auto``).

    The first batch runs with every core and the second with one thread, untimed (warm-up: a thread count's
    first batch is slower); then rounds of ``per_round`` batches with one thread and ``per_round`` with every
    core (``cores``) alternate, so a change of load hits both alike.
    After a round in which one setting's median time per patch is :data:`CLEAR` times the other's, or after
    ``rounds`` rounds, the faster is kept for the rest of the loop; every core only when it is at least
    :data:`GAIN` times as fast as one thread (the same speed on more cores only takes them from other jobs).
    The probed batches are ordinary training steps: nothing is run twice. The loop calls
    :meth:`before_batch` and :meth:`after_batch` around each batch; ``set_threads`` sets the thread count
    (``torch.set_num_threads``), ``clock`` is a monotonic clock in seconds (tests give a controllable one).
    With one core there is nothing to choose: 1 from the start."""

    #: all cores must be this much faster than one thread to be kept
    GAIN = 1.1
    #: a round whose medians differ by this factor decides at once
    CLEAR = 1.5
    #: untimed batches first (one with every core, one with one thread)
    WARMUP = 2

    def __init__(
        self,
        set_threads: Callable[[int], None],
        cores: int,
        per_round: int = 2,
        rounds: int = 3,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.set_threads, self.cores, self.clock = set_threads, max(1, int(cores)), clock
        self.per_round, self.rounds = max(1, int(per_round)), max(1, int(rounds))
        #: seconds per patch of each timed batch, by thread count
        self.samples: dict[int, list[float]] = {1: [], self.cores: []}
        #: the kept thread count once decided, else None
        self.chosen: int | None = 1 if self.cores == 1 else None
        self._plan = [self.cores, 1] + [
            t for _ in range(self.rounds) for t in (1, self.cores) for _ in range(self.per_round)
        ]
        self._i, self._t0, self._current = 0, 0.0, 0
        self._use(self.chosen or self.cores)

    def _use(self, n: int) -> None:
        if n != self._current:
            self.set_threads(n)
            self._current = n

    @property
    def deciding(self) -> bool:
        return self.chosen is None

    def before_batch(self) -> None:
        if self.chosen is None:
            self._use(self._plan[self._i])
            self._t0 = self.clock()

    def after_batch(self, patches: int) -> None:
        """A batch of ``patches`` patches has been trained (0: it computed nothing; it does not count)."""
        if self.chosen is not None or patches <= 0:
            return
        secs = self.clock() - self._t0
        if self._i >= self.WARMUP:
            self.samples[self._plan[self._i]].append(secs / patches)
        self._i += 1
        end_of_round = self._i > self.WARMUP and (self._i - self.WARMUP) % (2 * self.per_round) == 0
        if end_of_round:
            one, all_ = (float(np.median(self.samples[k])) for k in (1, self.cores))
            if self._i >= len(self._plan) or max(one, all_) >= self.CLEAR * min(one, all_):
                self.chosen = self.cores if one >= self.GAIN * all_ else 1
                self._use(self.chosen)

    def summary(self) -> str:
        """``1 thread 12.1 ms/patch, 2 threads 7.0 ms/patch (medians of 4 batches each): 2``."""
        parts = [
            f"{k} thread{'s' if k > 1 else ''} {1000 * float(np.median(v)):.1f} ms/patch"
            for k, v in self.samples.items()
            if v
        ]
        n = min((len(v) for v in self.samples.values()), default=0)
        probed = f" (medians of {n} batches each)" if parts else " (one core: nothing to choose)"
        return f"{', '.join(parts)}{probed}: {self.chosen if self.chosen is not None else 'undecided'}"


# -- prediction -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchPredictContext:
    """What every patch-model prediction task needs (sent to each worker once)."""

    scene: Scene
    features: Features
    model: PatchModel


#: side of the prediction tiles when a patch model has no ``tile_size``
DEFAULT_TILE = 512


def tile_side(model: PatchModel) -> int:
    """The side of a patch model's prediction tiles: its ``tile_size``, else :data:`DEFAULT_TILE`."""
    return int(getattr(model, "tile_size", 0) or DEFAULT_TILE)


def predict_patch_block(ctx: PatchPredictContext, window: Window) -> tuple[np.ndarray, int, float]:
    """Predict one window with a patch model. The scene is cut into fixed tiles of the model's
    ``tile_size`` (default :data:`DEFAULT_TILE`) anchored at the scene's origin, whatever the block size;
    each tile is read grown by the model's ``halo`` (outside the scene: invalid, zero reflectance),
    predicted whole, and its centre kept; a block is assembled from the tiles it overlaps. So the mask
    does not depend on ``block_size`` at all (the same tiles are predicted either way), and a tile's
    borders see ``halo`` pixels of real context. Returns (uint8 mask with 255 nodata, pixels classified,
    seconds in the model)."""
    import time

    h = int(ctx.model.halo)
    tile = tile_side(ctx.model)
    grid = ctx.scene.grid
    r0, c0 = int(window.row_off), int(window.col_off)
    wh, ww = int(window.height), int(window.width)
    mask = np.full((wh, ww), IGNORE, dtype=np.uint8)
    n_px, secs = 0, 0.0
    with ctx.scene.reader() as reader:
        for tr in range((r0 // tile) * tile, r0 + wh, tile):
            for tc in range((c0 // tile) * tile, c0 + ww, tile):
                th, tw = min(tile, grid.height - tr), min(tile, grid.width - tc)
                # the part of this tile inside the window, in tile and in window coordinates
                ir0, ir1, ic0, ic1 = max(tr, r0), min(tr + th, r0 + wh), max(tc, c0), min(tc + tw, c0 + ww)
                blk = reader.read(Window(tc - h, tr - h, tw + 2 * h, th + 2 * h))
                core = (slice(h + ir0 - tr, h + ir1 - tr), slice(h + ic0 - tc, h + ic1 - tc))
                valid = blk.valid[core]
                if not valid.any():
                    continue
                feats = block_features(ctx.features, blk, ctx.scene.band_names)
                t = time.perf_counter()
                pred = np.asarray(ctx.model.predict_block(np.ascontiguousarray(feats, dtype=np.float32), blk.valid))
                secs += time.perf_counter() - t
                if pred.shape != blk.valid.shape:
                    raise PluginError(
                        f"patch model: predict_block returned shape {pred.shape} for a block of {blk.valid.shape}"
                    )
                out = mask[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0]
                out[valid] = pred[core][valid].astype(np.uint8)
                n_px += int(valid.sum())
    return mask, n_px, secs


def predict_uniform_rows(
    model: PatchModel, features: np.ndarray, tile: int | None = None, chunk: int = 256
) -> np.ndarray:
    """A patch model's answer for pixel rows ``(n, f)`` without neighbourhoods (the pyfunc model's
    pixel-row input, ``mlflow models serve``): each row is predicted as the centre of a uniform tile of
    that feature vector (side ``tile``, default ``2 * halo + 1`` and at least the patch size), i.e. a
    field of that spectrum. Scenes go through :func:`predict_patch_block` instead."""
    F = np.asarray(features, dtype=np.float32)
    n, f = F.shape
    side = int(tile or max(2 * int(model.halo) + 1, int(model.patch_size)))
    out = np.empty(n, dtype=np.uint8)
    for s in range(0, n, chunk):
        rows = F[s : s + chunk]
        for i, row in enumerate(rows):
            block = np.broadcast_to(row[:, None, None], (f, side, side)).copy()
            pred = np.asarray(model.predict_block(block, np.ones((side, side), dtype=bool)))
            out[s + i] = pred[side // 2, side // 2]
    return out
