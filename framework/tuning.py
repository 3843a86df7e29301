"""Hyperparameter tuning and cross-validation for pixel classifiers, without leakage.

Every classifier tunes through :func:`tune` (or the :class:`SklearnClassifier` base built on it), so all
of them are validated the same way and report the same metrics:

* ``cv="spatial"`` (the default): folds are whole spatial blocks of the training scene. The pipeline
  passes ``groups`` = the id of the ``train.spatial_block``-pixel square each training pixel lies in, and
  :class:`sklearn.model_selection.GroupKFold` keeps every block in one fold, so neighbouring (nearly
  identical) pixels never sit on both sides of a split.
* ``cv="random"``: stratified, shuffled, seeded pixel folds (:class:`~sklearn.model_selection.StratifiedKFold`),
  the seed study's choice. Neighbouring pixels leak between folds, so its scores are optimistic.
* ``cv="none"``: no cross-validation at all; the grid must hold a single candidate.

**What is maximised.** ``scoring`` names a target metric of :mod:`cropseg.targets` (the classifiers'
configs default to ``${evaluate.target}``, crop F1) or the scikit-learn scorer name of one (``f1_weighted``
is the weighted-F1 target). Every candidate's out-of-fold crop probabilities (KNN: the vote fraction) are
kept, so each fold's 2x2 confusion matrix gives every target at once.

**Decision threshold.** ``threshold="auto"`` picks, per candidate, the probability cut that maximises the
target on the pooled out-of-fold probabilities (a pixel is crop when its probability is above it); a
number fixes it (0.5 is the usual argmax). The candidate with the best mean fold target at its threshold
wins; the fitted classifier applies that threshold wherever it predicts.

**Imbalance.** A grid may hold ``balance`` (:data:`BALANCE_MODES`): ``proportional`` (the sample as drawn),
``sample`` (the majority class undersampled, seeded, to the minority's count, inside every training fold
and at the refit) and ``weights`` (class weights, where the classifier takes them). The CV chooses among
them like any hyperparameter (``train.balance=auto``).

**Grid edges.** A numeric hyperparameter whose chosen value is the smallest or largest of its grid gets
the grid extended outward (:func:`extend_values`: :data:`EXTEND_STEPS` values per round, at most
:data:`EXTEND_ROUNDS` rounds, within the hyperparameter's limits), the other hyperparameters held at their
chosen values; ``null`` counts as the top end of a grid (``max_depth: [8, 16, null]``). Only a value still
on an edge after the last round warns (log and the ``warning.grid_edge`` tag).

The chosen candidate is also scored with the CV that did not tune, so every run reports both. Metrics:
``cv_score``/``cv_score_std`` (the target in the tuning CV), ``cv_<kind>_<target>``/``..._std`` for every
target of :data:`cropseg.targets.TARGETS` and both CVs, today's ``cv_<kind>_f1_weighted``, per-fold
``cv_<kind>_<crop metric>_fold<i>`` of the tuning CV, ``cv_<kind>_tpr`` / ``cv_<kind>_fpr`` (crop
pixels called crop, non-crop pixels called crop, over all folds' held-out pixels: what the run's shift
diagnostics need to put the CV at the test scene's crop share), ``cv_<scoring>_<candidate>`` per candidate,
and ``threshold``. Only the training pixels a classifier is given are ever used; the test scene never reaches
``fit``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from .errors import ConfigError
from .schema import factory_options
from .targets import TARGETS, Target, confusion
from .types import FitResult

# re-exported for the classifiers' ``**tuning: Unpack[TuningOptions]`` (typing has it from Python 3.11)
if sys.version_info >= (3, 11):
    from typing import Unpack as Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack as Unpack

log = logging.getLogger(__name__)

CV_KINDS = ("spatial", "random", "none")
CLASS_WEIGHTS = (None, "balanced")
#: the ways a tuning CV can balance the classes (a ``balance`` entry of a grid)
BALANCE_MODES = ("proportional", "sample", "weights")
#: values added beyond a grid's edge per extension round, and the most rounds per hyperparameter
EXTEND_STEPS = 3
EXTEND_ROUNDS = 3
#: distinct probability cuts a threshold search considers at most (quantiles of the probabilities beyond)
MAX_THRESHOLDS = 1024
#: crop metrics logged per fold of the tuning CV
FOLD_METRICS = ("crop_precision", "crop_recall", "crop_f1", "crop_iou")


def resolve_target(scoring: str, where: str = "classifier") -> Target:
    """The :class:`~cropseg.targets.Target` that ``scoring`` names: a target name (``crop_f1``) or the
    scikit-learn scorer name of one (``f1_weighted``); anything else is a :class:`ConfigError`."""
    if scoring in TARGETS:
        return TARGETS[scoring]
    for t in TARGETS.values():
        if t.scorer == scoring:
            return t
    raise ConfigError(
        f"{where}.scoring: {scoring!r} is not a target metric (one of {', '.join(TARGETS)}) "
        f"nor the scikit-learn scorer of one ({', '.join(t.scorer for t in TARGETS.values())})"
    )


def check_threshold(value: Any, where: str) -> str | float:
    """``"auto"`` or a number in [0, 1)."""
    if value == "auto":
        return "auto"
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= float(value) < 1:
        return float(value)
    raise ConfigError(f"{where}.threshold: auto or a crop-probability cut in [0, 1), got {value!r}")


@dataclass(frozen=True)
class CVSpec:
    """How a classifier cross-validates: which CV tunes (``cv``), ``folds``, ``scoring`` (a target),
    ``seed`` and the decision ``threshold`` (``"auto"`` or a number).

    ``where`` (e.g. ``classifier.random_forest``) prefixes error messages. ``report_both`` scores the chosen
    candidate with the CV that did not tune as well (on by default).
    """

    cv: str = "spatial"
    folds: int = 3
    scoring: str = "crop_f1"
    seed: int = 0
    where: str = "classifier"
    report_both: bool = True
    threshold: str | float = "auto"
    #: rounds of grid extension beyond a chosen edge (0: the grid as given, a chosen edge only warns)
    extend_rounds: int = EXTEND_ROUNDS

    def __post_init__(self) -> None:
        if self.cv not in CV_KINDS:
            raise ConfigError(f"{self.where}.cv: one of {', '.join(CV_KINDS)}, got {self.cv!r}")
        if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
            raise ConfigError(f"{self.where}.cv_folds: an integer of at least 2, got {self.folds!r}")
        resolve_target(self.scoring, self.where)
        if not isinstance(self.extend_rounds, int) or isinstance(self.extend_rounds, bool) or self.extend_rounds < 0:
            raise ConfigError(f"{self.where}.grid_extend_rounds: 0 or more, got {self.extend_rounds!r}")
        object.__setattr__(self, "threshold", check_threshold(self.threshold, self.where))

    @property
    def target(self) -> Target:
        return resolve_target(self.scoring, self.where)


def check_untuned(spec: CVSpec, n_candidates: int, grid: str = "grid") -> None:
    """``cv=none`` fits one candidate: a ``grid`` of several is a :class:`ConfigError` (checked when a
    classifier is built, before any scene is read, and again by :func:`tune`)."""
    if spec.cv == "none" and n_candidates > 1:
        raise ConfigError(
            f"{spec.where}.cv=none: the {grid} holds {n_candidates} candidates; tuning needs cv=spatial or "
            f"cv=random (or one candidate, e.g. {spec.where.split('.')[0]}.{grid}=[...] with one value)"
        )


def splitter(kind: str, spec: CVSpec, y: np.ndarray, groups: np.ndarray | None) -> Any:
    """The scikit-learn splitter for ``kind`` ("spatial" or "random"); raises :class:`ConfigError` when
    spatial folds are impossible (no groups, fewer spatial blocks than folds) or a class is too small."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if kind == "spatial":
        if groups is None:
            raise ConfigError(f"{spec.where}.cv=spatial: no spatial groups were given to fit()")
        n_groups = len(np.unique(groups))
        if n_groups < spec.folds:
            raise ConfigError(
                f"{spec.where}.cv=spatial: the training pixels lie in {n_groups} spatial block(s), "
                f"fewer than cv_folds={spec.folds} (lower train.spatial_block or use cv=random)"
            )
        return GroupKFold(n_splits=spec.folds)
    if kind == "random":
        smallest = int(np.bincount(np.asarray(y, dtype=np.int64)).min()) if len(y) else 0
        if smallest < spec.folds:
            raise ConfigError(
                f"{spec.where}.cv=random: a class has {smallest} training pixel(s), fewer than cv_folds={spec.folds}"
            )
        return StratifiedKFold(n_splits=spec.folds, shuffle=True, random_state=spec.seed)
    raise ConfigError(f"{spec.where}.cv: no splitter for {kind!r}")


def expand_grid(
    grid: Mapping[str, Sequence[Any]] | None, where: str, allowed: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The candidates of ``grid`` (``{name: [values...]}``) in a stable order, validated: unknown names
    (when ``allowed`` is given) and empty lists raise :class:`ConfigError`. An empty grid is one candidate."""
    from sklearn.model_selection import ParameterGrid

    grid = dict(grid or {})
    for name, values in grid.items():
        if allowed is not None and name not in allowed:
            raise ConfigError(
                f"{where}.grid: {name!r} is not a hyperparameter of this classifier (tunable: {', '.join(allowed)})"
            )
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ConfigError(f"{where}.grid.{name}: a list of candidate values, got {values!r}")
        if len(values) == 0:
            raise ConfigError(f"{where}.grid.{name}: no candidate values")
    if not grid:
        return [{}]
    # in the grid's own key order (ParameterGrid sorts the keys)
    return [{k: c[k] for k in grid} for c in ParameterGrid({k: list(v) for k, v in grid.items()})]


def candidate_key(params: Mapping[str, Any]) -> str:
    """A metric-name-safe label of a candidate: ``{"k": 5}`` -> ``k5``, ``{"C": 0.1}`` -> ``C0.1``."""
    parts = []
    for name, value in params.items():
        if isinstance(value, list | tuple):
            value = "-".join(str(v) for v in value)
        parts.append(f"{name}{value}")
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", "_".join(parts))


# -- probabilities, thresholds, confusion matrices ----------------------------------------------------


def crop_probability(estimator: Any, X: np.ndarray) -> np.ndarray:
    """The crop (class 1) probability of every row: ``predict_proba``'s column of class 1, or the 0/1
    prediction for an estimator without probabilities."""
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
        classes = list(estimator.classes_)
        return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))
    return (np.asarray(estimator.predict(X)) == 1).astype(np.float64)


def apply_threshold(p_crop: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 labels: crop where the crop probability is above ``threshold`` (ties to non-crop, as an argmax
    over (non-crop, crop) gives at 0.5)."""
    return (np.asarray(p_crop) > threshold).astype(np.uint8)


def threshold_candidates(p: np.ndarray) -> np.ndarray:
    """Cuts worth trying for probabilities ``p``: the midpoints between consecutive distinct values (at most
    :data:`MAX_THRESHOLDS`; beyond that, between quantiles), and 0.5."""
    u = np.unique(p)
    if len(u) > MAX_THRESHOLDS:
        u = np.unique(np.quantile(p, np.linspace(0, 1, MAX_THRESHOLDS + 1)))
    cuts = (u[:-1] + u[1:]) / 2 if len(u) > 1 else np.empty(0)
    return np.unique(np.concatenate([cuts, [0.5]]))


def confusions_at(p: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """2x2 confusion matrices (len(cuts), 2, 2) of ``p > cut`` against 0/1 ``y``, for every cut at once."""
    y = np.asarray(y)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    tp = len(pos) - np.searchsorted(pos, cuts, side="right")
    fp = len(neg) - np.searchsorted(neg, cuts, side="right")
    out = np.empty((len(cuts), 2, 2))
    out[:, 0, 0], out[:, 0, 1] = len(neg) - fp, fp
    out[:, 1, 0], out[:, 1, 1] = len(pos) - tp, tp
    return out


def best_threshold(p: np.ndarray, y: np.ndarray, target: Target) -> tuple[float, float]:
    """The cut of crop probabilities ``p`` that maximises ``target`` against 0/1 ``y`` (a pixel is crop when
    its probability is above it), and the target there; ties go to the cut nearest 0.5."""
    cuts = threshold_candidates(np.asarray(p, dtype=np.float64))
    scores = np.array([target.score(cm) for cm in confusions_at(p, y, cuts)])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    i = best[np.argmin(np.abs(cuts[best] - 0.5))]
    return float(cuts[i]), float(scores[i])


# -- balancing inside the training folds --------------------------------------------------------------


def undersample(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices (sorted) of a balanced subset of ``y``: every pixel of the smallest class and as many of each
    other class, drawn without replacement (seeded)."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    n = int(counts.min())
    keep = [
        np.flatnonzero(y == c) if cnt == n else rng.choice(np.flatnonzero(y == c), n, replace=False)
        for c, cnt in zip(classes, counts)
    ]
    return np.sort(np.concatenate(keep))


class _Wrapped:
    """Base of the fit-time wrappers below: prediction goes to the fitted inner ``estimator``."""

    estimator: Any

    @property
    def classes_(self) -> Any:
        return self.estimator.classes_

    def predict(self, X: Any) -> Any:
        return self.estimator.predict(X)

    def predict_proba(self, X: Any) -> Any:
        return self.estimator.predict_proba(X)


class BalancedSample(_Wrapped):
    """``estimator`` fitted on a balanced subset of its training pixels (:func:`undersample`): the
    ``sample`` balance mode, the same in every CV fold and at the refit."""

    def __init__(self, estimator: Any, seed: int = 0):
        self.estimator, self.seed = estimator, int(seed)

    def fit(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> BalancedSample:
        idx = undersample(y, self.seed)
        params = {k: np.asarray(v)[idx] for k, v in fit_params.items()}
        self.estimator.fit(np.asarray(X)[idx], np.asarray(y)[idx], **params)
        return self


class SampleWeighted(_Wrapped):
    """``estimator`` fitted with balanced per-pixel ``sample_weight`` passed as ``param`` (classifiers whose
    estimator takes no ``class_weight``)."""

    def __init__(self, estimator: Any, param: str):
        self.estimator, self.param = estimator, param

    def fit(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> SampleWeighted:
        self.estimator.fit(X, y, **{**fit_params, self.param: balanced_sample_weight(y)})
        return self


def unwrap(estimator: Any) -> Any:
    """The estimator inside :class:`BalancedSample` / :class:`SampleWeighted` wrappers."""
    while isinstance(estimator, _Wrapped):
        estimator = estimator.estimator
    return estimator


# -- grid extension -----------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def extend_values(
    values: Sequence[Any], side: str, n: int = EXTEND_STEPS, limits: tuple[float | None, float | None] = (None, None)
) -> list[Any]:
    """Up to ``n`` new values beyond the ``"low"`` or ``"high"`` end of a numeric grid, inside ``limits``
    (inclusive; ``None``: open). Evenly spaced grids continue their step; other grids of positive values
    (and two-value grids spanning a factor of 2 or more) continue their ratio. Integer grids stay integer;
    a grid of positive values never reaches 0 or below, one without negatives never goes below 0. An
    empty list: the grid cannot move that way (a limit, or ``null`` at the top)."""
    nums = sorted({float(v) for v in values if _is_number(v)})
    if len(nums) < 2 or (side == "high" and any(v is None for v in values)):
        return []
    ints = all(isinstance(v, int) for v in values if _is_number(v))
    lo_lim, hi_lim = limits
    if nums[0] > 0:
        lo_lim = max(lo_lim if lo_lim is not None else 0.0, 1.0 if ints else 0.0)
    elif nums[0] >= 0:
        lo_lim = max(lo_lim if lo_lim is not None else 0.0, 0.0)
    diffs = np.diff(nums)
    even = np.allclose(diffs, diffs[0], rtol=1e-6, atol=0)
    positive = nums[0] > 0
    geometric = positive and (not even or (len(nums) == 2 and nums[1] / nums[0] >= 2))
    edge = nums[-1] if side == "high" else nums[0]
    if geometric:
        ratio = (nums[-1] / nums[0]) ** (1 / (len(nums) - 1))
        step = ratio if side == "high" else 1 / ratio
        raw = [edge * step**i for i in range(1, n + 1)]
    else:
        d = float(diffs[-1] if side == "high" else diffs[0])
        raw = [edge + (d if side == "high" else -d) * i for i in range(1, n + 1)]
    out: list[Any] = []
    for v in raw:
        if ints:
            v = int(round(v))
        if hi_lim is not None and v > hi_lim:
            v = int(hi_lim) if ints else hi_lim
        if lo_lim is not None and v < lo_lim:
            v = int(math.ceil(lo_lim)) if ints else lo_lim
        if lo_lim is not None and nums[0] > 0 and not ints and v <= 0:
            break
        beyond = v > edge if side == "high" else v < edge
        if not beyond or v in out or (nums[0] > 0 and v <= 0):
            break
        out.append(v if ints else float(f"{v:.6g}"))
        if (side == "high" and hi_lim is not None and v >= hi_lim) or (
            side == "low" and lo_lim is not None and v <= lo_lim
        ):
            break
    return out


def edge_side(values: Sequence[Any], chosen: Any) -> str | None:
    """``"low"`` / ``"high"`` when ``chosen`` is the smallest / largest value of a numeric grid (``null``
    is the top end: a chosen ``null`` is no edge to extend, the largest number before it is inside)."""
    nums = [v for v in values if _is_number(v)]
    has_null = any(v is None for v in values)
    if len(nums) + has_null != len(values) or len(set(nums)) + has_null < 2 or not _is_number(chosen):
        return None
    if chosen == min(nums):
        return "low"
    if chosen == max(nums) and not has_null:
        return "high"
    return None


# -- cross-validation ---------------------------------------------------------------------------------

#: ``predict_all(X_train, y_train, X_test, candidates)``: one crop-probability array per candidate, e.g.
#: every k of a KNN grid from a single neighbour query (see :func:`tune`)
PredictAll = Callable[[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]], list[np.ndarray]]


def oof_probabilities(
    build: Callable[..., Any],
    candidates: list[dict[str, Any]],
    X: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    fit_params: Mapping[str, Any] | None = None,
    predict_all: PredictAll | None = None,
) -> np.ndarray:
    """Out-of-fold crop probabilities (len(candidates), len(y)): each candidate fitted on every fold's
    training part and asked about its held-out part (``predict_all``: all candidates of a fold at once)."""
    out = np.zeros((len(candidates), len(y)))
    for train, test in folds:
        if predict_all is not None and not fit_params:
            for j, p in enumerate(predict_all(X[train], y[train], X[test], candidates)):
                out[j, test] = p
            continue
        params = {k: np.asarray(v)[train] for k, v in dict(fit_params or {}).items()}
        for j, cand in enumerate(candidates):
            est = build(**cand).fit(X[train], y[train], **params)
            out[j, test] = crop_probability(est, X[test])
    return out


@dataclass
class CVResult:
    """One candidate's cross-validation: its threshold, fold confusion matrices and target per fold."""

    threshold: float
    confusions: list[np.ndarray]
    scores: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))

    def metrics(self, kind: str, per_fold: bool) -> dict[str, float]:
        """``cv_<kind>_<target>`` and ``_std`` for every target, ``cv_<kind>_f1_weighted`` (and ``_std``),
        and with ``per_fold`` the crop metrics of each fold (``cv_<kind>_crop_f1_fold1`` ...)."""
        out: dict[str, float] = {}
        for name, t in TARGETS.items():
            vals = [t.score(cm) for cm in self.confusions]
            out[f"cv_{kind}_{name}"], out[f"cv_{kind}_{name}_std"] = float(np.mean(vals)), float(np.std(vals))
            if name == "weighted_f1":  # the name of the weighted score before targets existed
                out[f"cv_{kind}_f1_weighted"], out[f"cv_{kind}_f1_weighted_std"] = (
                    out[f"cv_{kind}_{name}"],
                    float(np.std(vals)),
                )
            if per_fold and name in FOLD_METRICS:
                out.update({f"cv_{kind}_{name}_fold{i + 1}": v for i, v in enumerate(vals)})
        # the class rates of all folds' held-out pixels together: the CV at another crop share (shift diagnostics)
        pooled = np.sum(self.confusions, axis=0).astype(np.float64)
        for key, row in (("tpr", 1), ("fpr", 0)):
            if pooled[row].sum() > 0:
                out[f"cv_{kind}_{key}"] = float(pooled[row, 1] / pooled[row].sum())
        return out


def score_candidate(
    p: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], target: Target, threshold: str | float
) -> CVResult:
    """The fold confusion matrices and targets of out-of-fold probabilities ``p`` at ``threshold``
    (``"auto"``: :func:`best_threshold` on the pooled held-out pixels of all folds)."""
    held = np.concatenate([test for _, test in folds])
    t = best_threshold(p[held], y[held], target)[0] if threshold == "auto" else float(threshold)
    cms = [confusion(y[test], apply_threshold(p[test], t)) for _, test in folds]
    return CVResult(t, cms, [target.score(cm) for cm in cms])


@dataclass
class Tuned:
    """What :func:`tune` returns: the refitted estimator, the chosen candidate and what to log."""

    estimator: Any
    best: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: one line per tuned hyperparameter whose chosen value is the smallest or largest of its grid
    edge_warnings: list[str] = field(default_factory=list)
    #: the decision threshold on the crop probability (0.5: the classifier's own argmax)
    threshold: float = 0.5

    def fit_result(self) -> FitResult:
        from .naming import chosen_label

        tags = {"warning.grid_edge": "; ".join(self.edge_warnings)} if self.edge_warnings else {}
        # what the run is named after (knn k=9 | bands): the chosen hyperparameters, and the balance
        # unless it is the sample as drawn
        tags["chosen"] = chosen_label({k: v for k, v in self.best.items() if (k, v) != ("balance", "proportional")})
        return FitResult(params=dict(self.params), metrics=dict(self.metrics), tags=tags)


def grid_edges(
    grid: Mapping[str, Sequence[Any]] | None,
    best: Mapping[str, Any],
    where: str,
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> list[str]:
    """A warning for every numeric hyperparameter of ``grid`` (two or more values; ``null`` as the top end)
    whose chosen value in ``best`` is the smallest or largest candidate, unless that is as far as its
    ``limits`` go: the score may improve beyond it."""
    out = []
    for name, values in dict(grid or {}).items():
        side = edge_side(values, best.get(name)) if name in best else None
        if side is None or not extend_values(values, side, 1, (limits or {}).get(name, (None, None))):
            continue
        nums = [v for v in values if _is_number(v)]
        top = "null" if any(v is None for v in values) else max(nums)
        out.append(
            f"{where}: chosen {name}={best[name]} is the {'largest' if side == 'high' else 'smallest'} value of "
            f"its grid ({min(nums)}..{top}); the CV score may improve beyond it: widen the grid"
        )
    return out


def tune(
    build: Callable[..., Any],
    grid: Mapping[str, Sequence[Any]] | None,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    spec: CVSpec,
    *,
    fit_params: Mapping[str, Any] | None = None,
    allowed: Sequence[str] | None = None,
    predict_all: PredictAll | None = None,
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> Tuned:
    """Pick the best candidate of ``grid`` (and its decision threshold) by the CV ``spec.cv`` names on the
    target ``spec.scoring``, extending numeric grids beyond a chosen edge, refit it on all of ``X``, and
    score it with the other CV too.

    ``build(**candidate)`` returns a fresh unfitted scikit-learn estimator; ``fit_params`` (e.g.
    ``{"sample_weight": w}``, one value per row of ``X``) go to every fit, split with the folds.
    ``predict_all`` (optional, without ``fit_params``) gives every candidate's crop probabilities for a fold
    at once (a KNN grid from one query of the largest k); they equal those of fitting each candidate on the
    fold. ``limits`` bound grid extension per hyperparameter (``{"max_samples": (None, 1.0)}``). Params: the
    chosen values, ``cv``, ``cv_folds``, ``cv_scoring``, ``threshold`` and ``grid_extended_<name>`` (the
    values added); metrics: see the module docstring, plus ``cv_seconds`` and ``refit_seconds``.
    """
    target = spec.target
    candidates = expand_grid(grid, spec.where, allowed)
    X, y = np.asarray(X), np.asarray(y)
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    t0 = time.perf_counter()
    edges: list[str] = []
    threshold = 0.5 if spec.threshold == "auto" else float(spec.threshold)
    full_grid = {k: list(v) for k, v in dict(grid or {}).items()}
    if spec.cv == "none":
        check_untuned(spec, len(candidates))
        best = candidates[0]
        if spec.threshold == "auto":
            log.info("%s: cv=none: no out-of-fold probabilities to choose a threshold; 0.5", spec.where)
    else:
        folds = list(splitter(spec.cv, spec, y, groups).split(X, y, groups if spec.cv == "spatial" else None))
        at_once = predict_all

        def evaluate(cands: list[dict[str, Any]]) -> list[CVResult]:
            p = oof_probabilities(build, cands, X, y, folds, fit_params, at_once)
            res = [score_candidate(p[j], y, folds, target, spec.threshold) for j in range(len(cands))]
            for cand, r in zip(cands, res):
                if len(candidates) > 1:
                    metrics[f"cv_{spec.scoring}_{candidate_key(cand)}"] = r.mean
                log.info(
                    "%s: %s cv %s %s = %.4f ± %.4f (threshold %.3f)",
                    spec.where,
                    spec.cv,
                    spec.scoring,
                    candidate_key(cand) or "defaults",
                    r.mean,
                    r.std,
                    r.threshold,
                )
            return res

        results = evaluate(candidates)
        if len(candidates) > 1 and spec.extend_rounds:
            _extend(full_grid, candidates, results, evaluate, spec, limits or {}, params)

        # first of the best on ties: the grid order (as written in the config) breaks ties
        i = max(range(len(results)), key=lambda j: (results[j].mean, -j))
        best, chosen = candidates[i], results[i]
        threshold = chosen.threshold
        metrics.update(cv_score=chosen.mean, cv_score_std=chosen.std, **chosen.metrics(spec.cv, per_fold=True))
        if spec.report_both:
            other = "random" if spec.cv == "spatial" else "spatial"
            try:
                other_folds = list(splitter(other, spec, y, groups).split(X, y, groups if other == "spatial" else None))
            except ConfigError as exc:
                log.warning("%s: no %s CV score for the chosen hyperparameters: %s", spec.where, other, exc)
            else:
                p = oof_probabilities(build, [best], X, y, other_folds, fit_params, predict_all)
                r = score_candidate(p[0], y, other_folds, target, threshold)
                metrics.update(r.metrics(other, per_fold=False))
                log.info(
                    "%s: %s cv %s of the chosen %s = %.4f ± %.4f",
                    spec.where,
                    other,
                    spec.scoring,
                    candidate_key(best) or "defaults",
                    r.mean,
                    r.std,
                )
        plateau = sum(r.mean == chosen.mean for r in results) > 1
        edges = grid_edges(full_grid, best, spec.where, limits) if not plateau else []
        for line in edges:
            log.warning("%s%s", line, f" (after up to {spec.extend_rounds} extensions)" if spec.extend_rounds else "")
        log.info(
            "%s: chosen %s, decision threshold %.3f (%s), %s cv %s = %.4f ± %.4f",
            spec.where,
            candidate_key(best) or "defaults",
            threshold,
            "auto" if spec.threshold == "auto" else "fixed",
            spec.cv,
            spec.scoring,
            chosen.mean,
            chosen.std,
        )
    metrics["cv_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    estimator = build(**best).fit(X, y, **dict(fit_params or {}))
    metrics["refit_seconds"] = time.perf_counter() - t1
    params.update({k: _loggable(v) for k, v in best.items()})
    params.update(cv=spec.cv, cv_folds=spec.folds, cv_scoring=spec.scoring, threshold=round(threshold, 6))
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    return Tuned(estimator, best, params, metrics, edges, threshold)


def _extend(
    grid: dict[str, list[Any]],
    candidates: list[dict[str, Any]],
    results: list[CVResult],
    evaluate: Callable[[list[dict[str, Any]]], list[CVResult]],
    spec: CVSpec,
    limits: Mapping[str, tuple[float | None, float | None]],
    params: dict[str, Any],
) -> None:
    """Extend ``grid`` (in place, with ``candidates`` and ``results``) beyond every chosen edge value, one
    hyperparameter at a time, the others held at the current best, for at most :data:`EXTEND_ROUNDS`
    rounds each; the values added are logged and kept in ``params`` (``grid_extended_<name>``)."""
    rounds = dict.fromkeys(grid, 0)
    while True:
        i = max(range(len(results)), key=lambda j: (results[j].mean, -j))
        best = candidates[i]
        if sum(r.mean == results[i].mean for r in results) > 1:
            return  # a plateau: the edge is not where the score rises
        for name, values in grid.items():
            side = edge_side(values, best.get(name))
            if side is None or rounds[name] >= spec.extend_rounds:
                continue
            new = extend_values(values, side, EXTEND_STEPS, limits.get(name, (None, None)))
            if not new:
                continue
            rounds[name] += 1
            log.info(
                "%s: chosen %s=%s is the %s value of its grid: extending it with %s (round %d of at most %d)",
                spec.where,
                name,
                best[name],
                "largest" if side == "high" else "smallest",
                ", ".join(str(v) for v in new),
                rounds[name],
                spec.extend_rounds,
            )
            grid[name] = [*new[::-1], *values] if side == "low" else [*values, *new]
            added = [{**best, name: v} for v in new]
            candidates.extend(added)
            results.extend(evaluate(added))
            key = f"grid_extended_{name}"
            params[key] = ",".join(str(v) for v in [*str(params.get(key, "")).split(","), *new] if str(v))
            break
        else:
            return


def _loggable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def balanced_sample_weight(y: np.ndarray) -> np.ndarray:
    """Per-pixel weights ``n / (n_classes * count(class))`` (scikit-learn's ``"balanced"``)."""
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", y)


def check_threads(value: Any, where: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(
            f"{where}.n_threads: a positive number of threads or null (the libraries' default), got {value!r}"
        )
    return value


def check_class_weight(value: Any, where: str) -> str | None:
    if value not in CLASS_WEIGHTS:
        raise ConfigError(f"{where}.class_weight: null or 'balanced', got {value!r}")
    return value


def check_balance(value: Any, where: str = "fit") -> str:
    """The ``balance`` argument of a classifier's ``fit``: ``"auto"`` or one of :data:`BALANCE_MODES`."""
    if value != "auto" and value not in BALANCE_MODES:
        raise ConfigError(f"{where}: balance must be auto or one of {', '.join(BALANCE_MODES)}, got {value!r}")
    return str(value)


class TuningOptions(TypedDict, total=False):
    """The tuning options of every :class:`SklearnClassifier`, declared once: a subclass takes its own
    options by name and these as ``**tuning: Unpack[TuningOptions]``, passed on to ``super().__init__``
    (whose signature holds their defaults). The config check (:func:`cropseg.schema.factory_options`)
    accepts exactly these keys besides the named ones, and type-checks them against these annotations."""

    grid: Mapping[str, Sequence[Any]] | None
    cv: str
    cv_folds: int
    scoring: str
    threshold: str | float
    grid_extend_rounds: int
    seed: int


class WeightedTuningOptions(TuningOptions, total=False):
    """:class:`TuningOptions` and ``class_weight``: for a subclass whose estimator takes class weights
    (or that sets ``sample_weight_param``); ``train.balance=auto`` then lets the CV choose class weights."""

    class_weight: str | None


class SklearnClassifier:
    """Base of the built-in scikit-learn classifiers: options, tuning, prediction, probabilities.

    A subclass sets ``name``, lists its tunable ``hyperparameters`` (option names, values in
    ``self.hyper``) and implements :meth:`build` returning a fresh estimator (or
    :class:`~sklearn.pipeline.Pipeline`) for one candidate. ``grid`` maps hyperparameter names to candidate
    lists; the CV named by ``cv`` chooses among them (see :func:`tune`), on the target ``scoring``, with the
    decision ``threshold`` (``"auto"``: chosen by the CV; a number: fixed). A subclass's ``__init__`` names
    its own options and takes these as ``**tuning: Unpack[WeightedTuningOptions]`` (or
    :class:`TuningOptions`, without ``class_weight``), calling ``super().__init__(**hyper, **tuning)``.

    ``class_weight``: ``None`` or ``"balanced"``. Estimators that take ``class_weight`` get it in
    :meth:`build`; for the others set ``sample_weight_param`` (e.g. ``"mlp__sample_weight"``) and the base
    passes balanced per-pixel weights to ``fit`` instead. ``fit(..., balance="auto")`` (``train.balance=auto``)
    lets the CV choose among the proportional sample, a balanced sample and class weights; with
    ``class_weight="balanced"`` set, class weights stay.
    """

    name: str = "sklearn"
    hyperparameters: tuple[str, ...] = ()
    #: bounds of grid extension per hyperparameter (inclusive; None: open), e.g. fractions up to 1
    limits: dict[str, tuple[float | None, float | None]] = {}
    #: threads for OpenMP/BLAS inside fit and predict (threadpoolctl); None leaves the libraries' default.
    #: OpenMP estimators (HistGradientBoosting) slow down badly on a busy machine with more threads.
    n_threads: int | None = None
    #: fit() keyword receiving balanced sample weights when class_weight="balanced" (None: the estimator
    #: takes class_weight itself)
    sample_weight_param: str | None = None

    def __init__(
        self,
        *,
        grid: Mapping[str, Sequence[Any]] | None = None,
        cv: str = "spatial",
        cv_folds: int = 3,
        scoring: str = "crop_f1",
        seed: int = 0,
        class_weight: str | None = None,
        threshold: str | float = "auto",
        grid_extend_rounds: int = EXTEND_ROUNDS,
        **hyper: Any,
    ):
        self.where = f"classifier.{self.name}"
        self.spec = CVSpec(
            cv=cv,
            folds=cv_folds,
            scoring=scoring,
            seed=int(seed),
            where=self.where,
            threshold=threshold,
            extend_rounds=grid_extend_rounds,
        )
        self.seed = int(seed)
        self.class_weight = check_class_weight(class_weight, self.where)
        self.hyper = dict(hyper)
        self.grid = {k: [_plain(v) for v in vals] for k, vals in dict(grid or {}).items()}
        self.candidates = expand_grid(self.grid, self.where, self.hyperparameters)  # validate now
        check_untuned(self.spec, len(self.candidates))
        self.model_: Any = None
        self.threshold_ = 0.5

    def build(self, **params: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self, **candidate: Any) -> Any:
        mode = candidate.pop("balance", "proportional")
        owner = self
        if mode == "weights" and self.class_weight is None:
            owner = copy.copy(self)
            owner.class_weight = "balanced"
        est = owner.build(**{**self.hyper, **candidate})
        if owner.class_weight == "balanced" and self.sample_weight_param:
            est = SampleWeighted(est, self.sample_weight_param)
        return BalancedSample(est, self.seed) if mode == "sample" else est

    def balance_modes(self) -> list[str]:
        """What ``fit(balance="auto")`` chooses among: class weights only for a subclass that takes a
        ``class_weight`` option (e.g. through :class:`WeightedTuningOptions`; its :meth:`build` reads
        ``self.class_weight``) or sets ``sample_weight_param``; with ``class_weight="balanced"`` set, class
        weights alone."""
        if self.class_weight == "balanced":
            return ["weights"]
        weighted = self.sample_weight_param is not None or "class_weight" in (factory_options(type(self)) or {})
        return [m for m in BALANCE_MODES if m != "weights" or weighted]

    def fit(
        self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, balance: str = "proportional"
    ) -> FitResult:
        grid = dict(self.grid)
        balance = check_balance(balance, f"{self.where}.fit")
        modes = self.balance_modes() if balance == "auto" else [balance]
        if self.spec.cv == "none" and len(modes) > 1:
            log.info("%s: cv=none: no CV to choose the balance; proportional", self.where)
            modes = ["proportional"]
        if modes != ["proportional"]:
            grid["balance"] = modes
        allowed = (*self.hyperparameters, "balance")
        with self._threads():
            tuned = tune(self._build, grid, X, y, groups, self.spec, allowed=allowed, limits=self.grid_limits())
        self.model_ = tuned.estimator
        self.threshold_ = tuned.threshold
        extra = self.describe(unwrap(self.model_))
        tuned.params.update(extra)
        tuned.params.setdefault("balance", modes[0])
        return tuned.fit_result()

    def grid_limits(self) -> dict[str, tuple[float | None, float | None]]:
        """How far grid extension may take each hyperparameter (:attr:`limits` unless overridden)."""
        return dict(self.limits)

    def describe(self, model: Any) -> dict[str, Any]:
        """Extra fitted facts to log as ``fit.*`` params (e.g. iterations run); none by default."""
        return {}

    def _threads(self) -> Any:
        from contextlib import nullcontext

        if self.n_threads is None:
            return nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=int(self.n_threads))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0/1 labels at the fitted decision threshold (the estimator's own ``predict`` at 0.5)."""
        threshold = getattr(self, "threshold_", 0.5)
        with self._threads():
            if threshold == 0.5:
                return np.asarray(self.model_.predict(X)).astype(np.uint8)
            return apply_threshold(crop_probability(self.model_, X), threshold)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with self._threads():
            proba = np.asarray(self.model_.predict_proba(X), dtype=np.float64)
        classes = list(self.model_.classes_)
        out = np.zeros((proba.shape[0], 2), dtype=np.float64)
        for j, c in enumerate(classes):
            out[:, int(c)] = proba[:, j]
        return out


def _plain(value: Any) -> Any:
    """Hydra lists arrive as lists; scikit-learn wants tuples for e.g. hidden_layer_sizes."""
    return tuple(value) if isinstance(value, list) else value


def accepts(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` takes a keyword argument ``name``."""
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
