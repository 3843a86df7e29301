"""The target metric: the one score (``evaluate.target``) that drives every choice the framework makes.

Hyperparameter tuning, the decision threshold, a patch model's kept epoch, ``cropseg compare``'s default
ranking and ``cropseg search`` all maximise the same target, so what a run optimises is what the user reads.
Every target is computed from the 2x2 confusion matrix (rows truth non-crop / crop, columns prediction), and
has the scikit-learn scorer name that cross-validation uses on 0/1 labels and the MLflow metric name of its
test-scene value.

This module imports nothing heavy: it sits at the bottom of the layers, beside :mod:`cropseg.types`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


def _safe(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def _f1(tp: float, fp: float, fn: float) -> float:
    return _safe(2 * tp, 2 * tp + fp + fn)


def _crop_f1(cm: np.ndarray) -> float:
    return _f1(cm[1, 1], cm[0, 1], cm[1, 0])


def _crop_iou(cm: np.ndarray) -> float:
    return _safe(cm[1, 1], cm[1, 1] + cm[0, 1] + cm[1, 0])


def _crop_precision(cm: np.ndarray) -> float:
    return _safe(cm[1, 1], cm[1, 1] + cm[0, 1])


def _crop_recall(cm: np.ndarray) -> float:
    return _safe(cm[1, 1], cm[1, 1] + cm[1, 0])


def _per_class_f1(cm: np.ndarray) -> tuple[float, float]:
    return _f1(cm[0, 0], cm[1, 0], cm[0, 1]), _f1(cm[1, 1], cm[0, 1], cm[1, 0])


def _macro_f1(cm: np.ndarray) -> float:
    f0, f1 = _per_class_f1(cm)
    return (f0 + f1) / 2


def _weighted_f1(cm: np.ndarray) -> float:
    f0, f1 = _per_class_f1(cm)
    n0, n1 = cm[0].sum(), cm[1].sum()
    return _safe(f0 * n0 + f1 * n1, n0 + n1)


def _balanced_accuracy(cm: np.ndarray) -> float:
    return (_safe(cm[0, 0], cm[0].sum()) + _safe(cm[1, 1], cm[1].sum())) / 2


def _accuracy(cm: np.ndarray) -> float:
    return _safe(cm[0, 0] + cm[1, 1], cm.sum())


@dataclass(frozen=True)
class Target:
    """One target metric (higher is better)."""

    #: the value of ``evaluate.target``
    name: str
    #: what it means, for help texts and reports
    description: str
    #: scikit-learn scorer name used by cross-validation on 0/1 labels (crop = 1)
    scorer: str
    #: the run's MLflow metric holding its value on the test scene (after postprocessing)
    test_metric: str
    #: its value from a 2x2 confusion matrix (rows truth, columns prediction; 0 non-crop, 1 crop)
    from_confusion: Callable[[np.ndarray], float]

    def score(self, cm: np.ndarray) -> float:
        return float(self.from_confusion(np.asarray(cm, dtype=np.float64).reshape(2, 2)))

    def score_labels(self, y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """The target of 0/1 predictions against 0/1 truth (pixels of any other value are left out)."""
        return self.score(confusion(y_true, y_pred, sample_weight))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """2x2 confusion matrix of 0/1 labels (entries other than 0/1 in either are left out)."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    m = ((t == 0) | (t == 1)) & ((p == 0) | (p == 1))
    idx = t[m].astype(np.int64) * 2 + p[m].astype(np.int64)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()[m]
    return np.bincount(idx, weights=w, minlength=4)[:4].reshape(2, 2)


def at_crop_share(cm: np.ndarray, share: float) -> np.ndarray:
    """``cm`` with its class rows rescaled so that crop is ``share`` of the pixels: the same per-class
    rates (recall of each class, the false-positive rate) on a scene whose crop share is ``share``.

    The target of the result is what a classifier with ``cm``'s rates would score on a scene that differs
    only in its crop share (prior or label shift); a CV confusion matrix at the test scene's crop share
    separates that part of a CV-vs-test gap from the rest (the scenes' pixels themselves differ)."""
    m = np.asarray(cm, dtype=np.float64).reshape(2, 2)
    rows = m.sum(axis=1, keepdims=True)
    rates = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    return rates * np.array([[1.0 - float(share)], [float(share)]])


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("crop_f1", "F1 score of the crop class", "f1", "test_crop_f1", _crop_f1),
        Target("crop_iou", "intersection over union of the crop class", "jaccard", "test_iou", _crop_iou),
        Target("crop_precision", "precision of the crop class", "precision", "test_crop_precision", _crop_precision),
        Target("crop_recall", "recall of the crop class", "recall", "test_crop_recall", _crop_recall),
        Target(
            "weighted_f1",
            "support-weighted mean F1 of both classes",
            "f1_weighted",
            "test_weighted_avg_f1",
            _weighted_f1,
        ),
        Target("macro_f1", "unweighted mean F1 of both classes", "f1_macro", "test_macro_avg_f1", _macro_f1),
        Target(
            "balanced_accuracy",
            "mean recall of both classes",
            "balanced_accuracy",
            "test_balanced_accuracy",
            _balanced_accuracy,
        ),
        Target("accuracy", "share of pixels classified correctly", "accuracy", "test_accuracy", _accuracy),
    )
}

#: the default of ``evaluate.target``
DEFAULT_TARGET = "crop_f1"


def get_target(name: str | None, where: str = "evaluate.target") -> Target:
    """The :class:`Target` called ``name`` (``None``: the default); an unknown name is a :class:`ConfigError`."""
    key = DEFAULT_TARGET if name is None else str(name)
    try:
        return TARGETS[key]
    except KeyError:
        raise ConfigError(f"{where}={key}: unknown target metric; choose one of {', '.join(TARGETS)}") from None


def target_from_config(cfg: object) -> Target:
    """The run's target from a composed config (``evaluate.target``; absent: the default)."""
    ev = getattr(cfg, "evaluate", None) if not isinstance(cfg, dict) else cfg.get("evaluate")
    name = None
    if ev is not None:
        name = ev.get("target") if hasattr(ev, "get") else getattr(ev, "target", None)
    return get_target(name)
