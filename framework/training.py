"""The epoch loop of trained networks (patch models such as ``tempcnn``), free of any deep-learning library.

A model hands :func:`train_epochs` three functions: one epoch of training (returns the mean training
loss; reports batches to a :class:`cropseg.patches.TrainingProgress`), its prediction of the validation
patches, and a snapshot of its weights. The loop keeps the epoch with the best validation target (the
run's ``evaluate.target`` returned by the :class:`cropseg.types.EpochCallback`; without validation the
lowest training loss), stops after ``patience`` epochs without a better one, and starts no epoch that
would end past ``deadline`` (estimated from the previous epoch; at least one runs). :func:`fit_candidates`
trains once per class-weight candidate (``class_weight=auto``: without, then balanced), each with an equal
share of what is left of the time budget and its epochs numbered on, and :func:`fit_summary` turns the runs
into the :class:`cropseg.types.FitResult` fields the U-Net also reports (kept epoch, why it stopped, the
class weight chosen, seconds per epoch, the last-epoch warning and tag). Every clock is injectable, so
tests drive patience and budgets without waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .patches import TrainingProgress
from .types import EpochCallback

log = logging.getLogger("cropseg")


@dataclass
class TrainedRun:
    """One training run (one class-weight candidate)."""

    class_weight: str | None
    #: the kept (best) epoch's weights, as the model's ``snapshot`` returned them
    state: Any
    best_score: float
    best_epoch: int
    epochs_run: int
    #: why it stopped: epochs | patience | time
    stopped: str
    epoch_seconds: list[float]
    #: training samples (patches, pixels...) per second of training
    samples_per_second: float


def class_weight_candidates(class_weight: str | None, has_validation: bool, label: str) -> list[str | None]:
    """The class weights to train with: ``auto`` -> without, then ``balanced`` (kept: the better on validation;
    without validation patches, none only, with a warning); otherwise the one given."""
    if class_weight != "auto":
        return [class_weight]
    if not has_validation:
        log.warning("%s: class_weight=auto needs validation patches; training without class weights", label)
        return [None]
    return [None, "balanced"]


def train_epochs(
    *,
    label: str,
    epochs: int,
    patience: int | None,
    deadline: float | None,
    clock: Callable[[], float],
    progress: TrainingProgress,
    n_samples: int,
    run_epoch: Callable[[TrainingProgress], float],
    validate: Callable[[], np.ndarray | None],
    snapshot: Callable[[], Any],
    on_epoch: EpochCallback | None,
    step0: int = 0,
    class_weight: str | None = None,
) -> TrainedRun:
    """Epochs until ``epochs``, ``patience`` epochs without a better validation target, or ``deadline``
    (a ``clock`` time); the best epoch's ``snapshot()`` kept. ``on_epoch`` gets step ``step0 + epoch``."""
    best_score, best_epoch, best_state = -np.inf, 0, None
    waited, stopped = 0, "epochs"
    epoch_seconds: list[float] = []
    for epoch in range(1, int(epochs) + 1):
        if deadline is not None and epoch_seconds and clock() + epoch_seconds[-1] > deadline:
            log.info("%s: time budget reached after epoch %d (classifier.max_minutes)", label, epoch - 1)
            stopped = "time"
            break
        t_epoch = clock()
        progress.start_epoch(epoch)
        train_loss = float(run_epoch(progress))
        val_pred = validate()
        metrics = dict(on_epoch(step0 + epoch, train_loss, val_pred)) if on_epoch is not None else {}
        score = float(metrics.get("target", metrics.get("val_crop_f1", -train_loss)))
        epoch_seconds.append(clock() - t_epoch)
        if score > best_score or best_state is None:
            best_score, best_epoch, waited = score, epoch, 0
            best_state = snapshot()
        else:
            waited += 1
            if patience is not None and waited >= patience:
                log.info("%s: early stop after epoch %d (best epoch %d)", label, epoch, best_epoch)
                stopped = "patience"
                break
    secs = sum(epoch_seconds)
    return TrainedRun(
        class_weight=class_weight,
        state=best_state,
        best_score=float(best_score),
        best_epoch=best_epoch,
        epochs_run=len(epoch_seconds),
        stopped=stopped,
        epoch_seconds=epoch_seconds,
        samples_per_second=n_samples * len(epoch_seconds) / max(secs, 1e-9),
    )


def fit_candidates(
    candidates: list[str | None],
    *,
    name: str,
    max_minutes: float | None,
    clock: Callable[[], float],
    train_one: Callable[[str | None, float | None, int, str], TrainedRun],
) -> tuple[list[TrainedRun], TrainedRun]:
    """Train once per class-weight candidate (``train_one(class_weight, deadline, step0, label)``), each
    with an equal share of what is left of ``max_minutes``; returns the runs and the one with the best
    validation target (the first on a tie: no class weights)."""
    start = clock()
    deadline = None if max_minutes is None else start + 60.0 * float(max_minutes)
    runs: list[TrainedRun] = []
    step0 = 0
    for i, cw in enumerate(candidates):
        dl = None if deadline is None else clock() + (deadline - clock()) / (len(candidates) - i)
        label = f"{name} class_weight={cw or 'none'}" if len(candidates) > 1 else name
        runs.append(train_one(cw, dl, step0, label))
        step0 += runs[-1].epochs_run
    return runs, max(runs, key=lambda r: r.best_score)


def fit_summary(
    name: str,
    runs: list[TrainedRun],
    chosen: TrainedRun,
    *,
    class_weight_option: str | None,
    has_validation: bool,
    samples: str = "patches",
) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """``(params, metrics, tags)`` of a fit: the kept epoch, epochs run, why it stopped, the class weight
    chosen by ``auto``; epochs over all candidates, seconds per epoch, training ``samples`` per second, the
    best validation target (per candidate too); the tag ``warning.last_epoch`` (also logged) when the kept
    epoch is the last one run and training was cut by ``epochs`` or the time budget, not by patience."""
    seconds = [s for r in runs for s in r.epoch_seconds]
    params: dict[str, Any] = {
        "best_epoch": chosen.best_epoch,
        "epochs_run": chosen.epochs_run,
        "stopped": chosen.stopped,
    }
    if class_weight_option == "auto":
        params["class_weight"] = chosen.class_weight or "none"
    metrics: dict[str, float] = {
        "fit_epochs": float(sum(r.epochs_run for r in runs)),
        "best_epoch": float(chosen.best_epoch),
        "train_seconds_per_epoch": float(np.mean(seconds)) if seconds else 0.0,
        f"train_{samples}_per_second": float(np.median([r.samples_per_second for r in runs])),
    }
    if has_validation:
        metrics["val_best_target"] = float(chosen.best_score)
        for r in runs if len(runs) > 1 else ():
            metrics[f"val_best_target_class_weight_{r.class_weight or 'none'}"] = float(r.best_score)
    tags: dict[str, str] = {}
    if chosen.best_epoch == chosen.epochs_run and chosen.stopped != "patience" and chosen.epochs_run > 1:
        why = "the time budget (classifier.max_minutes)" if chosen.stopped == "time" else "classifier.epochs"
        msg = (
            f"{name}: the kept epoch is the last one run ({chosen.best_epoch}, stopped by {why}); validation "
            "was still improving: more epochs or time may give a better model"
        )
        log.warning(msg)
        tags["warning.last_epoch"] = msg
    return params, metrics, tags
