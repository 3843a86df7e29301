"""``cropseg search``: a budgeted Optuna search over whole pipelines, scored on the training scene only.

Each trial is one configuration: a pixel classifier and one value of each of its own grid's
hyperparameters (``k_grid``, ``grid.*``, each numeric grid widened by three values on both sides within the
classifier's limits, :func:`search_values`; widen it further with the usual overrides), its ``class_weight``
where it has one, the features (``bands``, ``indices``, ``context`` with a choice of radii),
``train.balance`` and the median blur kernel. A trial is scored by **spatial cross-validation of the whole
pipeline on the training scene**: the training pixels are drawn as a run draws them, the
``train.spatial_block`` squares are split into ``--folds`` folds (GroupKFold, as the tuning CV does), a
model fitted without a fold's blocks predicts the training scene, and each block of the training scene
keeps the prediction of the model that did not see it. That out-of-fold map is median-blurred like a run's
test mask and scored against the training labels on the target metric (``evaluate.target``), pixel by
pixel over every labelled pixel, as the test scene will be. The trial's classifier is fitted without a CV of
its own (one candidate): with ``classifier.threshold=auto`` the trial's CV chooses its decision threshold on
the folds' out-of-fold crop probabilities (:func:`pipeline_cv`), and the refits use it.

The test scene is checked before the search starts (its header and ground truth file, as every run's
preflight does) and not read again until the end: then the chosen configuration is refit and run once
through the ordinary pipeline (:func:`cropseg.pipeline.execute`), which tests it on the test scene. All
trials are child runs of one MLflow parent run tagged like a sweep (``cropseg compare --sweep latest``
reads it); the chosen run logs ``search_cv_score``, ``cv_test_gap`` (CV target minus test target) and
``cv_at_test_share`` / ``cv_test_gap_at_test_share`` (the search CV's class rates at the test scene's
labelled crop share, and that minus the test target: the part of the gap a crop share difference does not
explain).

``--posthoc-test N`` checks the choice once it is made and logged (it cannot change it): the ``N`` best
trials by CV are each refit on the training scene and tested once on the test scene
(:func:`posthoc_test`), ``posthoc_test_<target>`` on their child runs and the chosen trial's test score
minus the best of them (``posthoc_chosen_minus_best``) on the parent: did the CV pick the configuration
that tests best?

Trials run ``--jobs`` at a time (threads). The wall-time budget (``--minutes``) is checked before each trial
and before each fold: no trial or fold starts after it, a fold in progress finishes; the final refit runs
after it.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import ConfigError, CropsegError
from .targets import Target, at_crop_share, target_from_config
from .types import PatchModel

log = logging.getLogger("cropseg")

DEFAULT_CLASSIFIERS = ("knn", "random_forest", "hist_gradient_boosting", "logistic_regression")
DEFAULT_FEATURES = ("bands", "indices", "context")
#: ``features.radii`` a context trial chooses from
CONTEXT_RADII = ((2,), (5,), (10,), (2, 5, 10))
DEFAULT_KERNELS = (1, 3, 5, 7, 9)
#: keys the search sets itself: a user override of one of them is refused
SEARCHED = ("classifier", "features", "train.balance", "postprocessor.median_blur.kernel", "classifier.cv")


@dataclass
class SearchOptions:
    minutes: float = 20.0
    #: at most this many trials (None: until the budget is spent)
    trials: int | None = None
    jobs: int = 1
    folds: int = 3
    seed: int = 0
    classifiers: Sequence[str] = DEFAULT_CLASSIFIERS
    features: Sequence[str] = DEFAULT_FEATURES
    kernels: Sequence[int] = DEFAULT_KERNELS
    name: str | None = None
    #: after the choice: refit this many of the best trials by CV and test each once (0: none)
    posthoc_test: int = 0

    def check(self) -> None:
        if not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ConfigError(f"--minutes: a positive number, got {self.minutes}")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials: at least 1, got {self.trials}")
        if self.jobs < 1:
            raise ConfigError(f"--jobs: at least 1, got {self.jobs}")
        if self.posthoc_test < 0:
            raise ConfigError(f"--posthoc-test: 0 or more trials, got {self.posthoc_test}")
        if self.folds < 2:
            raise ConfigError(f"--folds: at least 2, got {self.folds}")
        if not self.classifiers or not self.features or not self.kernels:
            raise ConfigError("--classifiers, --features and --kernels: at least one value each")
        for k in self.kernels:
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"--kernels: odd positive integers (1 = no blur), got {k}")


@dataclass
class TrialResult:
    number: int
    overrides: list[str]
    label: str
    score: float
    raw_score: float
    fold_scores: list[float]
    seconds: float
    run_id: str = ""
    #: the blurred out-of-fold map's confusion matrix over all folds (rows truth, columns prediction)
    confusion: np.ndarray | None = None
    #: the decision threshold the trial's CV chose (``classifier.threshold=auto``); None: the classifier's own
    threshold: float | None = None

    @property
    def refit_overrides(self) -> list[str]:
        """The trial's overrides for a refit on the whole training scene, with the threshold its CV chose."""
        return [*self.overrides, *([f"classifier.threshold={self.threshold!r}"] if self.threshold is not None else [])]


@dataclass
class SearchResult:
    parent_run_id: str
    target: Target
    trials: list[TrialResult]
    best: TrialResult
    final_run_id: str
    test_score: float
    #: ``--posthoc-test``: trial number -> its test target, measured after the choice
    posthoc: dict[int, float] = field(default_factory=dict)
    #: clock readings: search start, the budget's end, first trial start, last trial end, final refit start
    times: dict[str, float] = field(default_factory=dict)
    output_dir: Path = Path(".")

    @property
    def gap(self) -> float:
        return self.best.score - self.test_score


def _value(v: Any) -> str:
    """A Hydra override value: null, true/false, numbers as they are, strings quoted."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return repr(v)
    return f"'{v}'"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_overrides(overrides: Sequence[str]) -> None:
    for o in overrides:
        if o.startswith("-"):
            raise ConfigError(f"{o}: cropseg search takes Hydra overrides (key=value), not Hydra flags")
        k = _key(o)
        if k in SEARCHED:
            raise ConfigError(
                f"{o}: {k} is searched by cropseg search (choose among values with --classifiers, --features, "
                "--kernels)"
            )


def search_values(values: Sequence[Any], limits: tuple[float | None, float | None] | None = None) -> list[Any]:
    """The values a trial may take for one hyperparameter: its numeric grid widened on both sides by one
    round of the grid extension a run's tuning does (:func:`cropseg.tuning.extend_values`: three values,
    within the classifier's limits; ``null`` stays the top end), so the search is not held at the edge of
    a grid written for one run's CV (the default random forest grid ``[8, 16]`` is searched over 1..128).
    Other grids (strings, a single value) are searched as given."""
    from .tuning import extend_values

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    lim = limits or (None, None)
    wider = [*extend_values(values, "low", limits=lim), *values, *extend_values(values, "high", limits=lim)]
    numbers = sorted({v for v in wider if number(v)})
    return [*numbers, *dict.fromkeys(v for v in values if not number(v))]


class _Space:
    """The search space: what Optuna suggests per trial, as Hydra overrides."""

    def __init__(
        self,
        base: Sequence[str],
        opts: SearchOptions,
        limits: Mapping[str, Mapping[str, tuple[float | None, float | None]]] | None = None,
    ):
        from .config import compose

        self.opts = opts
        self.limits = limits or {}
        self.nodes = {}
        for clf in opts.classifiers:
            cfg = compose([*base, f"classifier={clf}"])
            self.nodes[clf] = cfg.classifier
        self.has_blur = any(n == "median_blur" for n, _ in _postprocessors(cfg))

    def suggest(self, trial: Any) -> tuple[list[str], str]:
        """A trial's Hydra overrides and a readable label (``knn k=7 | context r=5 | balance=true | blur 5``)."""
        from omegaconf import OmegaConf

        clf = trial.suggest_categorical("classifier", list(self.opts.classifiers))
        node = self.nodes[clf]
        ov, hp = [f"classifier={clf}"], []
        if "k_grid" in node:
            k = trial.suggest_categorical(
                f"{clf}.k", search_values(list(node.k_grid), self.limits.get(clf, {}).get("k"))
            )
            ov.append(f"classifier.k_grid=[{k}]")
            hp.append(f"k={k}")
        grid: dict[str, list[Any]] = OmegaConf.to_container(node.grid, resolve=True) if node.get("grid") else {}  # type: ignore[assignment]
        for name, values in grid.items():
            v = trial.suggest_categorical(
                f"{clf}.{name}", search_values(list(values), self.limits.get(clf, {}).get(name))
            )
            ov.append(f"classifier.grid.{name}=[{_value(v)}]")
            hp.append(f"{name}={v}")
        if "class_weight" in node:
            cw = trial.suggest_categorical(f"{clf}.class_weight", [None, "balanced"])
            ov.append(f"classifier.class_weight={_value(cw)}")
            hp += ["class_weight=balanced"] if cw else []
        if "cv" in node:
            ov.append("classifier.cv=none")  # one candidate: the search's own CV scores it
        balance = trial.suggest_categorical("train.balance", [False, True])
        ov.append(f"train.balance={_value(balance)}")
        feats = trial.suggest_categorical("features", list(self.opts.features))
        ov.append(f"features={feats}")
        feats_label = feats
        if feats == "context":
            radii = trial.suggest_categorical("features.radii", [",".join(map(str, r)) for r in CONTEXT_RADII])
            ov.append(f"features.radii=[{radii}]")
            feats_label += f" r={radii}"
        parts = [" ".join([clf, *hp]), feats_label, f"balance={_value(balance)}"]
        if self.has_blur:
            kernel = trial.suggest_categorical("blur", list(self.opts.kernels))
            ov.append(f"postprocessor.median_blur.kernel={kernel}")
            parts.append(f"blur {kernel}")
        return ov, " | ".join(parts)


def _postprocessors(cfg: Any) -> list[tuple[str, Any]]:
    from .config import postprocessor_nodes

    return postprocessor_nodes(cfg)


class _Budget(Exception):
    """A trial stopped because the budget is spent (not scored)."""


def _training_sample(cfg: Any, st: Any, scene: Any, labels: Any) -> Any:
    """The training pixels of ``scene`` as a run of ``cfg`` draws them (a trial's ``train.balance`` is
    true or false)."""
    from .sampling import sample_training_pixels

    tcfg = cfg.get("train", {})
    caps = {k: None if tcfg.get(k) in (None, "all") else int(tcfg.get(k)) for k in ("max_pixels", "max_per_class")}
    return sample_training_pixels(
        scene,
        labels,
        st.features,
        **caps,
        seed=int(tcfg.get("seed", cfg.get("seed", 0))),
        spatial_block=int(tcfg.get("spatial_block", 128)),
        block=int(cfg.get("block_size", 512)),
        balance=tcfg.get("balance", False) is True,
    )


def posthoc_test(
    cfg: Any, registry: Any, train: Any, train_labels: Any, test: Any, test_labels: Any, target: Target, workdir: Path
) -> float:
    """A trial's configuration fitted on the whole training sample and scored once on the test scene as a
    run scores it (the blurred mask against the test labels, every labelled pixel): the post-hoc check of
    ``--posthoc-test``, after the choice."""
    from .config import instantiate
    from .pipeline import build_stages
    from .scene_ops import apply_filters, predict_scene
    from .uncertainty import block_confusions

    st = build_stages(cfg, registry)
    block = int(cfg.get("block_size", 512))
    ts = _training_sample(cfg, st, train, train_labels)
    clf = instantiate(registry, "classifier", cfg.classifier)
    clf.fit(ts.X, ts.y, ts.groups)
    del ts
    raw = workdir / "test_mask_raw.tif"
    predict_scene(test, st.features, clf, raw, block)
    final = apply_filters(raw, st.filters, workdir / "test_mask.tif", block)
    return target.score(block_confusions(test_labels.path, final, block).sum(axis=0))


def line_printer(progress: Callable[[str], None] | None = None, stream: Any = None) -> Callable[[str], None]:
    """The search's progress output: ``progress`` (default: a line on ``stream``, standard error), one whole
    line at a time: trials running in threads (``--jobs``) would otherwise interleave their lines (``print``
    writes a line and its newline separately)."""
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            if progress is not None:
                progress(line)
            else:
                out = stream if stream is not None else sys.stderr
                out.write(line + "\n")
                out.flush()

    return say


class PipelineCV(NamedTuple):
    """What :func:`pipeline_cv` measured."""

    #: the target of the blurred out-of-fold map (the trial's score)
    score: float
    #: the target of the raw (not postprocessed) out-of-fold map
    raw_score: float
    #: the target of each fold's blocks of the blurred map
    fold_scores: list[float]
    #: the blurred map's confusion matrix over all folds (rows truth, columns prediction)
    confusion: np.ndarray
    #: the decision threshold chosen on the out-of-fold crop probabilities (None: not chosen here)
    threshold: float | None


def pipeline_cv(
    cfg: Any,
    registry: Any,
    scene: Any,
    labels: Any,
    target: Target,
    folds: int,
    workdir: Path,
    over_budget: Callable[[], bool] = lambda: False,
) -> PipelineCV:
    """Spatial cross-validation of the configured pipeline on the training ``scene`` (see the module's
    docstring).

    With ``classifier.threshold=auto`` (the default) and a classifier that gives crop probabilities, the
    decision threshold is chosen as the classifiers' own tuning CV chooses it: the cut that maximises the
    target on the out-of-fold crop probabilities of the training sample's held-out pixels, all folds pooled
    (:func:`cropseg.tuning.best_threshold`); every fold's model then predicts the scene at that threshold."""
    import rasterio

    from .config import instantiate
    from .pipeline import build_stages
    from .raster import block_writer, iter_windows
    from .scene_ops import apply_filters, predict_scene
    from .tuning import CVSpec, best_threshold, splitter
    from .uncertainty import block_confusions

    st = build_stages(cfg, registry)
    sb = int(cfg.get("train", {}).get("spatial_block", 128))
    block = int(cfg.get("block_size", 512))
    ts = _training_sample(cfg, st, scene, labels)
    split = splitter("spatial", CVSpec(cv="spatial", folds=folds, where="cropseg search"), ts.y, ts.groups)
    auto = str(cfg.classifier.get("threshold", "auto")) == "auto"
    fold_of: dict[int, int] = {}
    models: list[Any] = []
    held: list[np.ndarray] = []
    probs: list[np.ndarray] | None = []
    for k, (tr, te) in enumerate(split.split(ts.X, ts.y, ts.groups)):
        if over_budget():
            raise _Budget()
        clf = instantiate(registry, "classifier", cfg.classifier)
        clf.fit(ts.X[tr], ts.y[tr], ts.groups[tr])
        fold_of.update({int(g): k for g in np.unique(ts.groups[te])})
        models.append(clf)
        if auto and probs is not None and hasattr(clf, "threshold_"):
            try:
                probs.append(np.asarray(clf.predict_proba(ts.X[te]), dtype=np.float64)[:, 1])
                held.append(te)
            except AttributeError:  # a model without probabilities: its own labels
                probs = None
        else:
            probs = None
    threshold = None
    if probs is not None:
        idx = np.concatenate(held)
        threshold = float(best_threshold(np.concatenate(probs), ts.y[idx], target)[0])
        for clf in models:
            clf.threshold_ = threshold
    del ts, probs
    maps = []
    for k, clf in enumerate(models):
        if over_budget():
            raise _Budget()
        maps.append(workdir / f"fold{k}_mask.tif")
        predict_scene(scene, st.features, clf, maps[-1], block)
    del models
    grid = scene.grid
    raw = workdir / "oof_mask_raw.tif"
    srcs = [rasterio.open(p) for p in maps]
    try:
        with block_writer(raw, grid) as dst:
            for i, w in enumerate(iter_windows(grid.height, grid.width, sb)):
                # blocks without a training pixel were seen by no model: any fold's prediction is held out
                dst.write(srcs[fold_of.get(i, 0)].read(1, window=w), 1, window=w)
    finally:
        for s in srcs:
            s.close()
    final = apply_filters(raw, st.filters, workdir / "oof_mask.tif", block)
    cms = block_confusions(labels.path, final, sb)
    raw_cms = block_confusions(labels.path, raw, sb)
    fold = np.array([fold_of.get(i, 0) for i in range(len(cms))])
    per_fold = [target.score(cms[fold == k].sum(axis=0)) for k in range(len(maps))]
    pooled = cms.sum(axis=0)
    return PipelineCV(target.score(pooled), target.score(raw_cms.sum(axis=0)), per_fold, pooled, threshold)


def search(
    overrides: Sequence[str] = (),
    opts: SearchOptions | None = None,
    *,
    output_dir: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[str], None] | None = None,
    before_final: Callable[[], None] | None = None,
) -> SearchResult:
    """Run the search (see the module docstring) and return its trials, the chosen one and its test
    score. ``clock`` (seconds) measures the budget; ``progress`` gets one line per trial;
    ``before_final`` is called once the trials are over, before the test scene is read."""
    import optuna

    from .config import compose, flatten
    from .pipeline import build_stages, execute
    from .preflight import check_destinations, check_inputs
    from .tracking import TAG_PREFIX, Tracker

    opts = opts or SearchOptions()
    opts.check()
    overrides = list(overrides)
    check_overrides(overrides)
    say = line_printer(progress)
    t0 = clock()
    deadline = t0 + opts.minutes * 60
    base = compose([*overrides, f"classifier={opts.classifiers[0]}"])
    target = target_from_config(base)
    limits: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    for clf in opts.classifiers:  # every choice builds, before any pixel is read
        built = build_stages(compose([*overrides, f"classifier={clf}"])).classifier
        if isinstance(built, PatchModel):
            raise ConfigError(f"--classifiers: {clf} is a patch model; cropseg search tries pixel classifiers")
        limits[clf] = built.grid_limits() if hasattr(built, "grid_limits") else {}
    space = _Space(overrides, opts, limits)
    st = build_stages(base)
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    out = Path(output_dir or Path("outputs") / "search" / stamp).resolve()
    cache = Path(base.get("cache_dir") or ".cache/cropseg").expanduser().resolve() / st.names["source"]
    tcfg = base.get("tracking", {})
    check_destinations(out, cache, tcfg.get("uri"))
    check_inputs(st, cache)
    tracker = Tracker(tcfg.get("uri"), tcfg.get("experiment", "cropseg"), tcfg.get("artifact_location"))
    parent = tracker.start_parent(
        opts.name or f"search {stamp}",
        {
            f"{TAG_PREFIX}sweep": "true",
            f"{TAG_PREFIX}sweep.sweeper": "cropseg search",
            f"{TAG_PREFIX}sweep.overrides": " ".join(overrides)[:5000],
            f"{TAG_PREFIX}search.target": target.name,
        },
    )
    plog = tracker.logger(parent)
    times = {"start": t0, "deadline": deadline}
    try:
        plog.log_params(
            {
                "search.minutes": opts.minutes,
                "search.trials": opts.trials,
                "search.jobs": opts.jobs,
                "search.folds": opts.folds,
                "search.seed": opts.seed,
                "search.classifiers": ",".join(opts.classifiers),
                "search.features": ",".join(opts.features),
                "search.kernels": ",".join(map(str, opts.kernels)),
                "search.posthoc_test": opts.posthoc_test,
                "evaluate.target": target.name,
            }
        )
        scenes = st.source.load(cache)
        train = scenes.train
        del scenes  # the trials see the training scene only
        labels = st.labeler.label(train, out / "search_labels" / "train_labels.tif")
        say(
            f"cropseg search: {target.name} by {opts.folds}-fold spatial CV of the whole pipeline on the training "
            f"scene; budget {opts.minutes:g} min, {opts.jobs} trial(s) at a time; parent run {parent}"
        )
        results: list[TrialResult] = []
        #: configurations already scored or being scored (the sampler proposes some again): trial number
        seen: dict[tuple[str, ...], int] = {}
        lock = threading.Lock()
        times["first_trial"] = math.inf

        def objective(trial: Any) -> float:
            now = clock()
            if now >= deadline:
                trial.study.stop()
                raise optuna.TrialPruned("budget spent")
            with lock:
                times["first_trial"] = min(times["first_trial"], now)
            with lock:  # Hydra's global state: one composition at a time
                trial_ov, label = space.suggest(trial)
                first = seen.setdefault(tuple(trial_ov), trial.number)
                cfg = compose([*overrides, *trial_ov])
            if first != trial.number:  # scored once is enough: no second run, no second child
                done = next((r for r in results if r.number == first), None)
                if done is None:  # still running in another thread, or it failed
                    say(f"trial {trial.number}: {label} repeats trial {first} (not scored here)")
                    raise optuna.TrialPruned(f"repeats trial {first}")
                say(f"trial {trial.number}: {label} repeats trial {first} (CV {target.name} {done.score:.4f})")
                return done.score
            workdir = out / "trials" / str(trial.number)
            workdir.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            try:
                cv = pipeline_cv(
                    cfg, st.registry, train, labels, target, opts.folds, workdir, lambda: clock() >= deadline
                )
            except _Budget:
                trial.study.stop()
                raise optuna.TrialPruned("budget spent") from None
            except CropsegError as exc:
                _log_trial(tracker, parent, trial.number, label, cfg, flatten, trial_ov, None, str(exc))
                say(f"trial {trial.number}: {label} failed: {exc}")
                raise
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            res = TrialResult(
                trial.number, trial_ov, label, cv.score, cv.raw_score, cv.fold_scores, time.perf_counter() - started
            )
            res.confusion, res.threshold = cv.confusion, cv.threshold
            score, raw, per_fold = cv.score, cv.raw_score, cv.fold_scores
            res.run_id = _log_trial(tracker, parent, trial.number, label, cfg, flatten, trial_ov, (res, target), None)
            with lock:
                results.append(res)
                times["last_trial_end"] = clock()
                best = max(results, key=lambda r: r.score)
                say(
                    f"trial {trial.number} ({len(results)} done, {(clock() - t0) / 60:.1f} of {opts.minutes:g} min): "
                    f"{label}: CV {target.name} {score:.4f} (raw {raw:.4f}, folds {min(per_fold):.3f}-"
                    f"{max(per_fold):.3f}"
                    + (f", threshold {res.threshold:.3f}" if res.threshold is not None else "")
                    + f") in {res.seconds:.0f} s; best {best.score:.4f} (trial {best.number})"
                )
            return score

        # Optuna logs a failed trial's traceback at WARNING: the search reports failures in its own lines
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=opts.seed))
        with warnings.catch_warnings():  # this Optuna marks n_jobs (threads) deprecated; it is what we want
            warnings.filterwarnings("ignore", "`n_jobs` argument", FutureWarning)
            study.optimize(objective, n_trials=opts.trials, n_jobs=opts.jobs, catch=(CropsegError,))
        if not results:
            raise ConfigError(
                f"cropseg search: no trial finished within --minutes {opts.minutes:g}"
                + (f" (failed: {len(study.trials)})" if study.trials else "")
            )
        best = max(results, key=lambda r: r.score)
        times["final"] = clock()
        if before_final is not None:
            before_final()
        say(f"chosen: trial {best.number}, {best.label}, CV {target.name} {best.score:.4f}; refit and test once")
        final_cfg = compose([*overrides, *best.refit_overrides])
        final = execute(final_cfg, output_dir=out / "chosen", parent_run_id=parent, run_name_suffix="(chosen)")
        test = float(final.metrics[target.test_metric])
        gap = best.score - test
        chosen_metrics = {"search_cv_score": best.score, "cv_score": best.score, "cv_test_gap": gap}
        share = final.metrics.get("test_labelled_crop_fraction")
        if best.confusion is not None and share is not None:
            at_share = target.score(at_crop_share(best.confusion, share))
            chosen_metrics.update(cv_at_test_share=at_share, cv_test_gap_at_test_share=at_share - test)
            say(
                f"the chosen configuration's CV at the test scene's crop share ({100 * share:.1f}%): "
                f"{target.name} {at_share:.4f}, minus test {at_share - test:+.4f} (the part of the CV-test gap a "
                "crop share difference does not explain)"
            )
        tracker.logger(final.run_id).log_metrics(chosen_metrics)
        tracker.logger(final.run_id).set_tags({f"{TAG_PREFIX}search.chosen_trial": best.number})
        plog.log_metrics(
            {
                "search_trials": float(len(results)),
                "search_cv_score": best.score,
                target.test_metric: test,
                "cv_test_gap": gap,
                "search_minutes": (clock() - t0) / 60,
            }
        )
        plog.set_tags(
            {
                f"{TAG_PREFIX}best_run_id": final.run_id,
                f"{TAG_PREFIX}search.chosen": " ".join(best.refit_overrides)[:5000],
                f"{TAG_PREFIX}sweep.children": len(results) + 1,
            }
        )
        if opts.posthoc_test:
            posthoc = _posthoc_check(
                overrides, results, best, opts.posthoc_test, st, train, labels, cache, out, target, say
            )
            _log_posthoc(tracker, plog, results, best, posthoc, target, say)
        else:
            posthoc = {}
        tracker.end_parent(parent, "FINISHED")
    except BaseException as exc:
        killed = isinstance(exc, KeyboardInterrupt)  # Ctrl-C, or SIGTERM through cropseg.signals.Terminated
        msg = "the search was stopped by a signal" if killed else (str(exc).splitlines() or [type(exc).__name__])[0]
        for folder in ("search_labels", "trials", "posthoc"):  # nothing that looks like a result stays behind
            shutil.rmtree(out / folder, ignore_errors=True)
        if out.is_dir():
            (out / "FAILED.txt").write_text(msg + "\n")
        tracker.logger(parent).set_tags({f"{TAG_PREFIX}error": msg})
        tracker.end_parent(parent, "KILLED" if killed else "FAILED")
        raise
    say(
        f"test {target.test_metric} {test:.4f}; CV - test = {gap:+.4f}; {len(results)} trials in "
        f"{(clock() - t0) / 60:.1f} min; chosen run {final.run_id}; compare: cropseg compare --sweep {parent}"
    )
    return SearchResult(parent, target, results, best, final.run_id, test, posthoc, times, out)


def _posthoc_check(
    overrides: Sequence[str],
    results: list[TrialResult],
    best: TrialResult,
    n: int,
    st: Any,
    train: Any,
    train_labels: Any,
    cache: Path,
    out: Path,
    target: Target,
    say: Callable[[str], None],
) -> dict[int, float]:
    """``--posthoc-test``: the ``n`` best trials by CV (the chosen one first), each refit on the training
    scene and tested once on the test scene. Runs after the choice is made and logged: it cannot change it."""
    from .config import compose

    ranked = sorted(results, key=lambda r: (r.number != best.number, -r.score, r.number))[:n]
    say(
        f"post-hoc check of the choice (made and logged already; this cannot change it): the {len(ranked)} best "
        "trial(s) by CV refit on the training scene and tested once each on the test scene"
    )
    test = st.source.load(cache).test
    folder = out / "posthoc"
    test_labels = st.labeler.label(test, folder / "test_labels.tif")
    scores: dict[int, float] = {}
    for r in ranked:
        workdir = folder / str(r.number)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = compose([*overrides, *r.refit_overrides])
        started = time.perf_counter()
        try:
            scores[r.number] = posthoc_test(cfg, st.registry, train, train_labels, test, test_labels, target, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        say(
            f"post-hoc {len(scores)}/{len(ranked)}: trial {r.number}, {r.label}: CV {target.name} {r.score:.4f}, "
            f"test {scores[r.number]:.4f} ({time.perf_counter() - started:.0f} s)"
        )
    shutil.rmtree(folder, ignore_errors=True)
    return scores


def _log_trial(
    tracker: Any,
    parent: str,
    number: int,
    label: str,
    cfg: Any,
    flatten: Callable[[Any], dict[str, Any]],
    overrides: list[str],
    scored: tuple[TrialResult, Target] | None,
    error: str | None,
) -> str:
    """One trial as a child run of the search: its config (as a run logs it), the CV scores; FAILED with
    ``error``."""
    from .tracking import TAG_PREFIX

    tags = {f"{TAG_PREFIX}{s}": str(cfg[s].get("name")) for s in ("source", "labeler", "features", "classifier")}
    tags[f"{TAG_PREFIX}postprocessor"] = ",".join(n for n, _ in _postprocessors(cfg)) or "none"
    tags[f"{TAG_PREFIX}search.trial"] = str(number)
    tags[f"{TAG_PREFIX}search.overrides"] = " ".join(overrides)
    tags[f"{TAG_PREFIX}chosen"] = label.split(" | ")[0].partition(" ")[2]  # k=7
    try:
        with tracker.run(f"trial {number}: {label}", tags, parent) as rl:
            rl.log_params(flatten(cfg))
            if error is not None:
                raise ConfigError(error)
            assert scored is not None
            res, target = scored
            rl.log_metrics(
                {
                    "cv_score": res.score,
                    f"cv_{target.name}": res.score,
                    f"cv_{target.name}_raw": res.raw_score,
                    f"cv_{target.name}_std": float(np.std(res.fold_scores)),
                    "trial_seconds": res.seconds,
                    **({"cv_threshold": res.threshold} if res.threshold is not None else {}),
                }
            )
            return rl.run_id
    except ConfigError:
        return ""


def search_command(argv: Sequence[str]) -> int:
    """``cropseg search [options] [OVERRIDES...]``: a budgeted Optuna search over classifier, its grid,
    features, class balance and blur, scored by spatial CV of the whole pipeline on the training scene only;
    the chosen configuration is refit and tested once."""
    p = argparse.ArgumentParser(prog="cropseg search", description=search_command.__doc__)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (source=..., train.max_pixels=...)")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-time budget of the trials (default: 20)")
    p.add_argument("--trials", type=int, default=None, help="at most this many trials (default: until the budget)")
    p.add_argument("--jobs", type=int, default=1, help="trials at a time (threads; default: 1)")
    p.add_argument("--folds", type=int, default=3, help="spatial CV folds per trial (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of Optuna's TPE sampler (default: 0)")
    p.add_argument(
        "--classifiers", default=",".join(DEFAULT_CLASSIFIERS), help="classifiers to try (default: %(default)s)"
    )
    p.add_argument("--features", default=",".join(DEFAULT_FEATURES), help="features to try (default: %(default)s)")
    p.add_argument(
        "--kernels",
        default=",".join(map(str, DEFAULT_KERNELS)),
        help="median blur kernels to try, 1 = no blur (default: %(default)s)",
    )
    p.add_argument(
        "--posthoc-test",
        type=int,
        default=0,
        metavar="N",
        help="after the choice (which it cannot change): refit the N best trials by CV and test each once on the "
        "test scene, logged as posthoc_test_<target> on their runs (default: 0, none)",
    )
    p.add_argument("--name", default=None, help="name of the parent run (default: search <date>/<time>)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: outputs/search/<date>/<time>")
    args = p.parse_args(list(argv))
    try:
        kernels = [int(k) for k in args.kernels.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--kernels: comma-separated odd integers, got {args.kernels!r}") from None
    opts = SearchOptions(
        minutes=args.minutes,
        trials=args.trials,
        jobs=args.jobs,
        folds=args.folds,
        seed=args.seed,
        classifiers=[c.strip() for c in args.classifiers.split(",") if c.strip()],
        features=[f.strip() for f in args.features.split(",") if f.strip()],
        kernels=kernels,
        name=args.name,
        posthoc_test=args.posthoc_test,
    )
    for noisy in ("alembic", "mlflow", "pyogrio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = search(args.overrides, opts, output_dir=args.output_dir, progress=lambda s: print(s, flush=True))
    print(f"\nparent run {res.parent_run_id}; chosen run {res.final_run_id}; outputs: {res.output_dir}")
    return 0


def _log_posthoc(
    tracker: Any,
    plog: Any,
    results: list[TrialResult],
    best: TrialResult,
    posthoc: dict[int, float],
    target: Target,
    say: Callable[[str], None],
) -> None:
    """Each post-hoc tested trial's child run gets ``posthoc_test_<target>`` and ``posthoc_cv_test_gap``;
    the parent the chosen trial's test score against the best test score among them, and a table."""
    from .tracking import TAG_PREFIX

    by_number = {r.number: r for r in results}
    for number, score in posthoc.items():
        r = by_number[number]
        if r.run_id:
            tracker.logger(r.run_id).log_metrics(
                {f"posthoc_test_{target.name}": score, "posthoc_cv_test_gap": r.score - score}
            )
    top = max(posthoc, key=lambda n: (posthoc[n], n == best.number))
    chosen = posthoc[best.number]
    plog.log_metrics(
        {
            "posthoc_trials": float(len(posthoc)),
            f"posthoc_chosen_test_{target.name}": chosen,
            f"posthoc_best_test_{target.name}": posthoc[top],
            "posthoc_chosen_minus_best": chosen - posthoc[top],
        }
    )
    plog.set_tags({f"{TAG_PREFIX}search.posthoc_best_trial": top})
    rows = sorted(posthoc, key=lambda n: -by_number[n].score)
    plog.log_table(
        {
            "trial": rows,
            "configuration": [by_number[n].label for n in rows],
            f"cv_{target.name}": [by_number[n].score for n in rows],
            f"test_{target.name}": [posthoc[n] for n in rows],
            "cv_test_gap": [by_number[n].score - posthoc[n] for n in rows],
        },
        "posthoc_test.json",
    )
    say(
        f"post-hoc: the chosen trial {best.number} tests at {chosen:.4f}, the best of the {len(posthoc)} tested "
        f"trials (trial {top}) at {posthoc[top]:.4f}: chosen - best = {chosen - posthoc[top]:+.4f}"
    )
