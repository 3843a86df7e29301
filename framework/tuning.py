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

The CV named by ``cv`` picks the hyperparameters; the chosen candidate is then also scored with the other
CV, so every run reports both (``cv_spatial_<scoring>``, ``cv_random_<scoring>``, each with ``_std``),
plus ``cv_score``/``cv_score_std`` = the tuning CV's score and the parameter ``cv`` naming it. Only the
training pixels a classifier is given are ever used; the test scene never reaches ``fit``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .types import FitResult

log = logging.getLogger(__name__)

CV_KINDS = ("spatial", "random", "none")
CLASS_WEIGHTS = (None, "balanced")


@dataclass(frozen=True)
class CVSpec:
    """How a classifier cross-validates: which CV tunes (``cv``), ``folds``, ``scoring`` and ``seed``.

    ``where`` (e.g. ``classifier.random_forest``) prefixes error messages. ``report_both`` scores the chosen
    candidate with the CV that did not tune as well (on by default).
    """

    cv: str = "spatial"
    folds: int = 3
    scoring: str = "f1_weighted"
    seed: int = 0
    where: str = "classifier"
    report_both: bool = True

    def __post_init__(self) -> None:
        if self.cv not in CV_KINDS:
            raise ConfigError(f"{self.where}.cv: one of {', '.join(CV_KINDS)}, got {self.cv!r}")
        if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
            raise ConfigError(f"{self.where}.cv_folds: an integer of at least 2, got {self.folds!r}")
        from sklearn.metrics import get_scorer_names

        if self.scoring not in get_scorer_names():
            raise ConfigError(
                f"{self.where}.scoring: {self.scoring!r} is not a scikit-learn scorer name "
                "(e.g. f1_weighted, f1_macro, accuracy, balanced_accuracy, roc_auc)"
            )


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
    return [dict(c) for c in ParameterGrid({k: list(v) for k, v in grid.items()})] if grid else [{}]


def candidate_key(params: Mapping[str, Any]) -> str:
    """A metric-name-safe label of a candidate: ``{"k": 5}`` -> ``k5``, ``{"C": 0.1}`` -> ``C0.1``."""
    parts = []
    for name, value in params.items():
        if isinstance(value, list | tuple):
            value = "-".join(str(v) for v in value)
        parts.append(f"{name}{value}")
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", "_".join(parts))


@dataclass
class CVScore:
    mean: float
    std: float
    seconds: float


def cv_score(
    build: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    cv: Any,
    scoring: str,
    groups: np.ndarray | None = None,
    fit_params: Mapping[str, Any] | None = None,
) -> CVScore:
    """Mean and std of ``scoring`` over the folds of ``cv`` for a fresh estimator from ``build()``."""
    from sklearn.model_selection import cross_validate

    t = time.perf_counter()
    res = cross_validate(
        build(),
        X,
        y,
        groups=groups,
        cv=cv,
        scoring=scoring,
        n_jobs=1,
        params=dict(fit_params or {}),
        error_score="raise",
    )
    scores = np.asarray(res["test_score"], dtype=float)
    return CVScore(float(np.mean(scores)), float(np.std(scores)), time.perf_counter() - t)


#: ``predict_all(X_train, y_train, X_test, candidates)``: one prediction array per candidate, e.g. every k
#: of a KNN grid from a single neighbour query (see :func:`tune`)
PredictAll = Callable[[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]], list[np.ndarray]]


def cv_scores_all(
    predict_all: PredictAll,
    candidates: list[dict[str, Any]],
    X: np.ndarray,
    y: np.ndarray,
    cv: Any,
    scoring: str,
    groups: np.ndarray | None,
) -> list[CVScore] | None:
    """CV scores of every candidate from one ``predict_all`` call per fold; ``None`` when ``scoring``
    needs more than predicted labels (e.g. ``roc_auc``), so the caller scores candidates one by one."""
    from sklearn.metrics import get_scorer

    scorer = get_scorer(scoring)
    if getattr(scorer, "_response_method", None) != "predict":
        return None
    t = time.perf_counter()
    folds: list[list[float]] = [[] for _ in candidates]
    for train, test in cv.split(X, y, groups):
        preds = predict_all(X[train], y[train], X[test], candidates)
        for j, pred in enumerate(preds):
            folds[j].append(scorer._sign * scorer._score_func(y[test], pred, **scorer._kwargs))
    each = (time.perf_counter() - t) / len(candidates)
    return [CVScore(float(np.mean(f)), float(np.std(f)), each) for f in folds]


@dataclass
class Tuned:
    """What :func:`tune` returns: the refitted estimator, the chosen candidate and what to log."""

    estimator: Any
    best: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: one line per tuned hyperparameter whose chosen value is the smallest or largest of its grid
    edge_warnings: list[str] = field(default_factory=list)

    def fit_result(self) -> FitResult:
        from .naming import chosen_label

        tags = {"warning.grid_edge": "; ".join(self.edge_warnings)} if self.edge_warnings else {}
        if self.best:
            tags["chosen"] = chosen_label(self.best)
        return FitResult(params=dict(self.params), metrics=dict(self.metrics), tags=tags)


def grid_edges(grid: Mapping[str, Sequence[Any]] | None, best: Mapping[str, Any], where: str) -> list[str]:
    """A warning for every numeric hyperparameter of ``grid`` (two or more values) whose chosen value in
    ``best`` is the smallest or largest candidate: the CV score may still improve beyond the grid."""
    out = []
    for name, values in dict(grid or {}).items():
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(nums) != len(values) or len(set(nums)) < 2 or name not in best:
            continue
        chosen, lo, hi = best[name], min(nums), max(nums)
        if chosen in (lo, hi):
            side = "largest" if chosen == hi else "smallest"
            out.append(
                f"{where}: chosen {name}={chosen} is the {side} value of its grid ({lo}..{hi}); the CV "
                f"score may improve beyond it: widen the grid"
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
) -> Tuned:
    """Pick the best candidate of ``grid`` by the CV ``spec.cv`` names, refit it on all of ``X``, and score
    it with the other CV too.

    ``build(**candidate)`` returns a fresh unfitted scikit-learn estimator; ``fit_params`` (e.g.
    ``{"sample_weight": w}``, one value per row of ``X``) go to every fit, split with the folds. Metrics:
    ``cv_<scoring>_<candidate>`` for every candidate when there are several, ``cv_score``/``cv_score_std``
    (the tuning CV), ``cv_<kind>_<scoring>``/``..._std`` for spatial and random, ``cv_seconds`` and
    ``refit_seconds``. Params: the chosen values, ``cv`` (the CV that tuned), ``cv_folds``, ``cv_scoring``.

    ``predict_all`` (optional, without ``fit_params``) scores every candidate of a fold at once (a KNN grid
    from one query of the largest k); the scores are those of fitting each candidate on the fold. A chosen
    value on the edge of a numeric grid warns (log, and the ``warning.grid_edge`` tag of the fit result).
    """
    candidates = expand_grid(grid, spec.where, allowed)
    y = np.asarray(y)
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    t0 = time.perf_counter()
    scores: dict[str, CVScore] = {}
    results: list[CVScore] = []
    if spec.cv == "none":
        check_untuned(spec, len(candidates))
        best = candidates[0]
    else:
        tuning_cv = splitter(spec.cv, spec, y, groups)
        cv_groups = groups if spec.cv == "spatial" else None
        at_once = None
        if predict_all is not None and len(candidates) > 1 and not fit_params:
            at_once = cv_scores_all(predict_all, candidates, np.asarray(X), y, tuning_cv, spec.scoring, cv_groups)
        for n, cand in enumerate(candidates):
            if at_once is not None:
                results.append(at_once[n])
                if len(candidates) > 1:
                    metrics[f"cv_{spec.scoring}_{candidate_key(cand)}"] = at_once[n].mean
                log.info(
                    "%s: %s cv %s %s = %.4f ± %.4f",
                    spec.where,
                    spec.cv,
                    spec.scoring,
                    candidate_key(cand) or "defaults",
                    at_once[n].mean,
                    at_once[n].std,
                )
                continue
            s = cv_score(
                functools.partial(build, **cand),
                X,
                y,
                tuning_cv,
                spec.scoring,
                groups if spec.cv == "spatial" else None,
                fit_params,
            )
            results.append(s)
            if len(candidates) > 1:
                metrics[f"cv_{spec.scoring}_{candidate_key(cand)}"] = s.mean
            log.info(
                "%s: %s cv %s %s = %.4f ± %.4f (%.1f s)",
                spec.where,
                spec.cv,
                spec.scoring,
                candidate_key(cand) or "defaults",
                s.mean,
                s.std,
                s.seconds,
            )
        # first of the best on ties: the grid order (as written in the config) breaks ties
        i = max(range(len(results)), key=lambda j: (results[j].mean, -j))
        best = candidates[i]
        scores[spec.cv] = results[i]
        metrics.update(cv_score=results[i].mean, cv_score_std=results[i].std)
        if spec.report_both:
            other = "random" if spec.cv == "spatial" else "spatial"
            try:
                other_cv = splitter(other, spec, y, groups)
            except ConfigError as exc:
                log.warning("%s: no %s CV score for the chosen hyperparameters: %s", spec.where, other, exc)
            else:
                scores[other] = cv_score(
                    lambda: build(**best),
                    X,
                    y,
                    other_cv,
                    spec.scoring,
                    groups if other == "spatial" else None,
                    fit_params,
                )
                log.info(
                    "%s: %s cv %s of the chosen %s = %.4f ± %.4f",
                    spec.where,
                    other,
                    spec.scoring,
                    candidate_key(best) or "defaults",
                    scores[other].mean,
                    scores[other].std,
                )
        for kind, s in scores.items():
            metrics[f"cv_{kind}_{spec.scoring}"] = s.mean
            metrics[f"cv_{kind}_{spec.scoring}_std"] = s.std
    metrics["cv_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    estimator = build(**best).fit(X, y, **dict(fit_params or {}))
    metrics["refit_seconds"] = time.perf_counter() - t1
    params.update({k: _loggable(v) for k, v in best.items()})
    params.update(cv=spec.cv, cv_folds=spec.folds, cv_scoring=spec.scoring)
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    # a chosen value on the edge of its grid warns, unless another candidate scored the same (a plateau)
    plateau = spec.cv != "none" and sum(r.mean == scores[spec.cv].mean for r in results) > 1
    edges = grid_edges(grid, best, spec.where) if len(candidates) > 1 and not plateau else []
    for line in edges:
        log.warning("%s", line)
    return Tuned(estimator, best, params, metrics, edges)


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


class SklearnClassifier:
    """Base of the built-in scikit-learn classifiers: options, tuning, prediction, probabilities.

    A subclass sets ``name``, lists its tunable ``hyperparameters`` (option names, values in
    ``self.hyper``) and implements :meth:`build` returning a fresh estimator (or
    :class:`~sklearn.pipeline.Pipeline`) for one candidate. ``grid`` maps hyperparameter names to candidate
    lists; the CV named by ``cv`` chooses among them (see :func:`tune`).

    ``class_weight``: ``None`` or ``"balanced"``. Estimators that take ``class_weight`` get it in
    :meth:`build`; for the others set ``sample_weight_param`` (e.g. ``"mlp__sample_weight"``) and the base
    passes balanced per-pixel weights to ``fit`` instead.
    """

    name: str = "sklearn"
    hyperparameters: tuple[str, ...] = ()
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
        scoring: str = "f1_weighted",
        seed: int = 0,
        class_weight: str | None = None,
        **hyper: Any,
    ):
        self.where = f"classifier.{self.name}"
        self.spec = CVSpec(cv=cv, folds=cv_folds, scoring=scoring, seed=int(seed), where=self.where)
        self.seed = int(seed)
        self.class_weight = check_class_weight(class_weight, self.where)
        self.hyper = dict(hyper)
        self.grid = {k: [_plain(v) for v in vals] for k, vals in dict(grid or {}).items()}
        self.candidates = expand_grid(self.grid, self.where, self.hyperparameters)  # validate now
        check_untuned(self.spec, len(self.candidates))
        self.model_: Any = None

    def build(self, **params: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self, **candidate: Any) -> Any:
        return self.build(**{**self.hyper, **candidate})

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> FitResult:
        fit_params = {}
        if self.class_weight == "balanced" and self.sample_weight_param:
            fit_params[self.sample_weight_param] = balanced_sample_weight(y)
        with self._threads():
            tuned = tune(
                self._build, self.grid, X, y, groups, self.spec, fit_params=fit_params, allowed=self.hyperparameters
            )
        self.model_ = tuned.estimator
        extra = self.describe(self.model_)
        tuned.params.update(extra)
        return tuned.fit_result()

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
        with self._threads():
            return np.asarray(self.model_.predict(X)).astype(np.uint8)

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
