"""The shared tuning/CV machinery (cropseg.tuning): candidate choice, spatial vs random CV, both reported,
no leakage on the SYNTHETIC sample, class weights, and the errors users can cause."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropseg.errors import ConfigError
from cropseg.sampling import sample_training_pixels
from cropseg.targets import TARGETS
from cropseg.tuning import (
    CVSpec,
    SklearnClassifier,
    TuningOptions,
    Unpack,
    best_threshold,
    candidate_key,
    confusions_at,
    expand_grid,
    extend_values,
    splitter,
    tune,
)
from cropseg_plugins.bands import BandFeatures
from cropseg_plugins.logistic_regression import LogisticRegressionClassifier
from cropseg_plugins.mlp import MLP
from cropseg_plugins.random_forest import RandomForest
from cropseg_plugins.rasterize import RasterizeLabeler
from cropseg_plugins.sample import SampleSource


def knn(k: int = 5):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k, n_jobs=1)


def overlapping(n: int = 200, seed: int = 0, sep: float = 1.5):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (n, 2)), rng.normal(sep, 1, (n, 2))]).astype(np.float32)
    y = np.repeat(np.array([0, 1], dtype=np.uint8), n)
    groups = np.tile(np.arange(8), n // 4)[: 2 * n]
    return X, y, groups


def test_the_best_candidate_of_the_tuning_cv_is_chosen_and_refitted():
    X, y, groups = overlapping()
    tuned = tune(knn, {"k": [1, 15, 31]}, X, y, groups, CVSpec(cv="random", seed=0), limits={"k": (1, 260)})
    scores = {int(k[len("cv_crop_f1_k") :]): v for k, v in tuned.metrics.items() if k.startswith("cv_crop_f1_k")}
    assert {1, 15, 31} <= set(scores)  # and any k the grid was extended with
    assert tuned.best["k"] == max(scores, key=scores.get) and tuned.params["k"] == tuned.best["k"]
    assert tuned.metrics["cv_score"] == scores[tuned.best["k"]] == tuned.metrics["cv_random_crop_f1"]
    assert tuned.params["cv"] == "random" and tuned.params["cv_folds"] == 3
    assert tuned.params["cv_scoring"] == "crop_f1"  # the default target
    assert tuned.estimator.n_neighbors == tuned.best["k"]
    assert hasattr(tuned.estimator, "classes_")  # refitted on all pixels
    # the chosen candidate is scored by the spatial CV too, every target and today's weighted F1 beside
    assert {"cv_spatial_f1_weighted", "cv_spatial_f1_weighted_std", "cv_random_f1_weighted_std"} <= set(tuned.metrics)
    assert {"cv_spatial_crop_iou", "cv_random_balanced_accuracy_std", "cv_spatial_crop_recall"} <= set(tuned.metrics)
    # the crop metrics of every fold of the tuning CV, whose mean and sd are the logged ones
    folds = [tuned.metrics[f"cv_random_crop_f1_fold{i}"] for i in (1, 2, 3)]
    assert np.mean(folds) == pytest.approx(tuned.metrics["cv_random_crop_f1"])
    assert np.std(folds) == pytest.approx(tuned.metrics["cv_random_crop_f1_std"])
    assert {f"cv_random_{m}_fold3" for m in ("crop_precision", "crop_recall", "crop_iou")} <= set(tuned.metrics)


def test_the_scoring_is_a_target_or_the_scorer_of_one():
    X, y, groups = overlapping()
    spec = CVSpec(cv="random", scoring="f1_weighted", threshold=0.5, report_both=False)
    tuned = tune(knn, {"k": [5]}, X, y, groups, spec)
    assert spec.target.name == "weighted_f1"
    assert tuned.metrics["cv_score"] == tuned.metrics["cv_random_weighted_f1"] == tuned.metrics["cv_random_f1_weighted"]
    # the weighted F1 of the folds equals scikit-learn's scorer on each fold's predictions
    from sklearn.model_selection import cross_val_score

    sk = cross_val_score(knn(5), X, y, cv=splitter("random", spec, y, None), scoring="f1_weighted")
    assert tuned.metrics["cv_score"] == pytest.approx(float(np.mean(sk)), abs=1e-12)
    with pytest.raises(ConfigError, match="roc_auc.*not a target metric"):
        CVSpec(scoring="roc_auc", where="classifier.x")


def test_ties_go_to_the_first_candidate_in_grid_order():
    X, y, groups = overlapping(sep=8.0)  # perfectly separable: every k scores 1.0
    assert tune(knn, {"k": [7, 3, 5]}, X, y, groups, CVSpec(cv="spatial")).best == {"k": 7}


def test_cv_none_fits_without_cv_and_refuses_a_grid():
    X, y, groups = overlapping()
    tuned = tune(knn, {"k": [5]}, X, y, None, CVSpec(cv="none"))
    assert tuned.params["cv"] == "none" and "cv_score" not in tuned.metrics
    with pytest.raises(ConfigError, match="cv=none"):
        tune(knn, {"k": [3, 5]}, X, y, groups, CVSpec(cv="none", where="classifier.x"))


def test_cv_none_with_a_grid_is_refused_when_the_classifier_is_built():
    from cropseg.config import compose, instantiate
    from cropseg.plugins import Registry, get_plugin_manager

    registry = Registry.from_plugin_manager(get_plugin_manager())
    cfg = compose(["classifier=random_forest", "classifier.cv=none", "classifier.grid.max_depth=[4,8]"])
    with pytest.raises(ConfigError, match=r"classifier.random_forest.cv=none: the grid holds 2 candidates"):
        instantiate(registry, "classifier", cfg.classifier)
    one = compose(["classifier=random_forest", "classifier.cv=none", "classifier.grid.max_depth=[4]"])
    assert instantiate(registry, "classifier", one.classifier).candidates == [{"max_depth": 4}]


def test_spatial_cv_errors_name_the_fix():
    X, y, groups = overlapping()
    with pytest.raises(ConfigError, match="no spatial groups"):
        tune(knn, {}, X, y, None, CVSpec(cv="spatial"))
    with pytest.raises(ConfigError, match=r"2 spatial block\(s\).*train.spatial_block"):
        tune(knn, {}, X, y, groups % 2, CVSpec(cv="spatial"))
    # tuning by random CV still works; the spatial score is left out, not invented
    tuned = tune(knn, {}, X, y, groups % 2, CVSpec(cv="random"))
    assert "cv_random_f1_weighted" in tuned.metrics and "cv_spatial_f1_weighted" not in tuned.metrics


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cv": "loo"}, "cv"),
        ({"folds": 1}, "cv_folds"),
        ({"folds": 2.5}, "cv_folds"),
        ({"scoring": "f1_wieghted"}, "scoring"),
    ],
)
def test_bad_cv_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CVSpec(where="classifier.x", **kwargs)


def test_grid_validation():
    assert expand_grid(None, "c") == [{}]
    assert expand_grid({"a": [1, 2], "b": ["x"]}, "c") == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    with pytest.raises(ConfigError, match="'depth' is not a hyperparameter"):
        expand_grid({"depth": [1]}, "classifier.random_forest", allowed=("max_depth",))
    with pytest.raises(ConfigError, match="no candidate"):
        expand_grid({"a": []}, "c")
    with pytest.raises(ConfigError, match="a list"):
        expand_grid({"a": 3}, "c")
    with pytest.raises(ConfigError, match="not a hyperparameter"):
        RandomForest(grid={"n_jobs": [1, 2]})
    assert candidate_key({"max_depth": None, "C": 0.1}) == "max_depthNone_C0.1"
    assert candidate_key({"hidden_layer_sizes": (64, 32)}) == "hidden_layer_sizes64-32"


def test_sample_weight_is_split_with_the_folds():
    """fit params (one value per pixel) reach every fold's fit, cut to the fold's pixels."""
    from sklearn.linear_model import LogisticRegression

    X, y, groups = overlapping()
    seen = []

    class Recording(LogisticRegression):
        def fit(self, X, y, sample_weight=None):
            seen.append((len(X), None if sample_weight is None else len(sample_weight)))
            return super().fit(X, y, sample_weight=sample_weight)

    w = np.ones(len(y))
    tune(lambda: Recording(), {}, X, y, groups, CVSpec(cv="spatial"), fit_params={"sample_weight": w})
    assert len(seen) == 3 + 3 + 1  # spatial folds, random folds, refit
    assert all(n == m for n, m in seen) and seen[-1] == (len(y), len(y))


@pytest.fixture(scope="module")
def sample_pixels(tmp_path_factory):
    """5000 pixels per class of the SYNTHETIC sample's train scene (256x256), in 64-pixel spatial blocks."""
    d = tmp_path_factory.mktemp("sample")
    scenes = SampleSource(size=256).load(d)
    labels = RasterizeLabeler().label(scenes.train, d / "labels.tif")
    return sample_training_pixels(scenes.train, labels, BandFeatures(), max_per_class=5000, seed=0, spatial_block=64)


@pytest.mark.parametrize(
    "make",
    [
        lambda: knn(5),
        lambda: RandomForest(n_estimators=20, max_samples=None, cv="none", n_jobs=1).build(
            n_estimators=20, max_depth=None, min_samples_leaf=1, max_features="sqrt", max_samples=None
        ),
    ],
    ids=["knn", "random_forest"],
)
def test_spatial_cv_is_lower_than_random_cv_on_the_synthetic_sample(sample_pixels, make):
    """Neighbouring pixels are near-duplicates: random pixel folds leak them, spatial blocks do not."""
    ts = sample_pixels
    tuned = tune(make, {}, ts.X, ts.y, ts.groups, CVSpec(cv="spatial", seed=0))
    spatial, random = tuned.metrics["cv_spatial_f1_weighted"], tuned.metrics["cv_random_f1_weighted"]
    assert spatial < random - 0.02, (spatial, random)
    assert tuned.metrics["cv_score"] == tuned.metrics["cv_spatial_crop_f1"] < tuned.metrics["cv_random_crop_f1"]


def imbalanced(seed: int = 0):
    """Overlapping classes, 1 crop pixel for 9 non-crop ones."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (900, 2)), rng.normal(1.2, 1, (100, 2))]).astype(np.float32)
    y = np.repeat(np.array([0, 1], dtype=np.uint8), [900, 100])
    return X, y, np.arange(1000) % 10


@pytest.mark.parametrize("cls", [LogisticRegressionClassifier, MLP], ids=["class_weight", "sample_weight"])
def test_class_weight_balanced_raises_minority_recall(cls):
    X, y, groups = imbalanced()
    plain, balanced = cls(cv="none", grid={}), cls(cv="none", grid={}, class_weight="balanced")
    plain.fit(X, y, groups)
    balanced.fit(X, y, groups)
    recall = lambda clf: float(np.mean(clf.predict(X[y == 1]) == 1))  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.2, (recall(plain), recall(balanced))


def test_class_weight_must_be_null_or_balanced():
    with pytest.raises(ConfigError, match="class_weight"):
        LogisticRegressionClassifier(class_weight="auto")


def test_every_classifier_config_but_knn_has_class_weight():
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "classifier"
    for path in conf.glob("*.yaml"):
        assert ("class_weight" in OmegaConf.load(path)) == (path.stem != "knn"), path.name


# -- the tuning options: declared once (TuningOptions), checked like named options ---------------------


def _registry():
    from cropseg.plugins import Registry, get_plugin_manager

    return Registry.from_plugin_manager(get_plugin_manager())


#: the built-in classifiers on SklearnClassifier (all of them take class_weight)
SKLEARN_CLASSIFIERS = ["hist_gradient_boosting", "linear_svm", "logistic_regression", "mlp", "random_forest"]


def test_the_sklearn_classifiers_take_the_tuning_options_from_one_declaration():
    import inspect

    from cropseg.schema import factory_options

    reg = _registry()
    on_base = [
        n
        for n in reg.names("classifier")
        if inspect.isclass(f := reg.get("classifier", n).factory) and issubclass(f, SklearnClassifier)
    ]
    assert set(SKLEARN_CLASSIFIERS) <= set(on_base)
    base = inspect.signature(SklearnClassifier.__init__).parameters
    for name in on_base:
        factory = reg.get("classifier", name).factory
        own = inspect.signature(factory).parameters
        assert "tuning" in own and not set(TuningOptions.__annotations__) & set(own), name
        options = factory_options(factory)
        assert options is not None
        for key in [*TuningOptions.__annotations__, "class_weight"]:
            assert options[key].default == base[key].default, (name, key)  # the defaults of one signature


@pytest.mark.parametrize("name", SKLEARN_CLASSIFIERS)
def test_an_unknown_option_of_a_sklearn_classifier_is_one_line_naming_it(name):
    from cropseg.config import compose

    with pytest.raises(ConfigError) as err:
        compose([f"classifier={name}", "classifier.nosuch=1"])
    msg = str(err.value)
    assert "\n" not in msg and f"classifier.{name}: unknown option 'nosuch'" in msg
    assert "cv_folds" in msg and "threshold" in msg and "class_weight" in msg  # the valid ones, the base's included


@pytest.mark.parametrize("name", SKLEARN_CLASSIFIERS)
def test_a_tuning_option_of_the_wrong_type_is_one_line(name):
    from cropseg.config import compose
    from cropseg.pipeline import build_stages

    for override, expect in (
        ("classifier.cv_folds=three", "classifier.cv_folds=three: expected an integer"),
        ("classifier.grid_extend_rounds=[1]", "classifier.grid_extend_rounds=[1]: expected an integer"),
    ):
        with pytest.raises(ConfigError, match=re.escape(expect)):
            build_stages(compose([f"classifier={name}", override]))


@pytest.mark.parametrize("name", SKLEARN_CLASSIFIERS)
def test_the_tuning_options_reach_the_tuning(name):
    from cropseg.config import compose
    from cropseg.pipeline import build_stages

    overrides = ["cv=random", "cv_folds=4", "threshold=0.3", "grid_extend_rounds=0", "seed=7", "class_weight=balanced"]
    # this tiny set is smaller than the MLP's batch and than the forest's useful bootstrap (scikit-learn warns)
    overrides += {"mlp": ["batch_size=32"], "random_forest": ["max_samples=null"]}.get(name, [])
    cfg = compose([f"classifier={name}", *[f"classifier.{o}" for o in overrides], "classifier.grid={}"])
    clf = build_stages(cfg).classifier
    assert isinstance(clf, SklearnClassifier)
    assert clf.spec == CVSpec(cv="random", folds=4, seed=7, where=f"classifier.{name}", threshold=0.3, extend_rounds=0)
    assert clf.seed == 7 and clf.class_weight == "balanced" and clf.balance_modes() == ["weights"]
    X, y, groups = overlapping(n=60)
    params = clf.fit(X, y, groups).params
    assert (params["cv"], params["cv_folds"], params["threshold"]) == ("random", 4, 0.3)
    assert clf.threshold_ == 0.3


class Centroid(SklearnClassifier):
    """A plugin like the example package's: the tuning options without class_weight."""

    name = "centroid_test"
    hyperparameters = ("shrink_threshold",)

    def __init__(self, shrink_threshold: float | None = None, **tuning: Unpack[TuningOptions]):
        super().__init__(shrink_threshold=shrink_threshold, **tuning)

    def build(self, **params):
        from sklearn.neighbors import NearestCentroid

        return NearestCentroid(**params)


def test_a_plugin_on_tuning_options_without_class_weight_refuses_it_and_never_weighs():
    from cropseg.plugins import check_options
    from cropseg.schema import check_factory_types, factory_options

    options = factory_options(Centroid)
    assert options is not None and "class_weight" not in options
    assert options["scoring"].default == "crop_f1" and options["threshold"].default == "auto"
    with pytest.raises(ConfigError, match=r"classifier.centroid_test: unknown option 'class_weight' \(valid: shrink"):
        check_options("classifier.centroid_test", Centroid, {"class_weight": "balanced"})
    check_options("classifier.centroid_test", Centroid, {"cv_folds": 4, "threshold": 0.3})
    with pytest.raises(ConfigError, match=r"classifier.threshold=\[0.3\]: expected"):
        check_factory_types(lambda k: f"classifier.{k}", Centroid, {"threshold": [0.3]})
    assert Centroid().balance_modes() == ["proportional", "sample"]
    assert RandomForest().balance_modes() == ["proportional", "sample", "weights"]


def test_a_bare_kwargs_factory_takes_any_option_as_before():
    from cropseg.schema import factory_options

    def bare(a: int = 1, **kwargs: Any) -> None: ...

    def named(a: int = 1, *, b: str = "x") -> None: ...

    assert factory_options(bare) is None
    assert list(factory_options(named) or {}) == ["a", "b"]


# -- decision threshold --------------------------------------------------------------------------------


def test_threshold_choice_recovers_a_known_optimum():
    """100 crop pixels at p=0.3, 1000 non-crop at 0.1 and 10 at 0.35: crop F1 is best (200/210) for any cut
    in [0.1, 0.3), zero above 0.3 and worse below 0.1; the midpoint of the distinct values there is 0.2."""
    p = np.concatenate([np.full(100, 0.3), np.full(1000, 0.1), np.full(10, 0.35)])
    y = np.concatenate([np.ones(100), np.zeros(1010)]).astype(np.uint8)
    t, score = best_threshold(p, y, TARGETS["crop_f1"])
    assert t == pytest.approx(0.2) and score == pytest.approx(200 / 210)
    # the majority vote (0.5) would map no crop at all
    assert TARGETS["crop_f1"].score(confusions_at(p, y, np.array([0.5]))[0]) == 0.0


@pytest.mark.parametrize("target", ["crop_f1", "crop_iou", "balanced_accuracy", "weighted_f1"])
def test_threshold_choice_matches_a_brute_force_search(target):
    """Synthetic scores: the chosen cut scores what the best of a dense sweep of cuts (by scikit-learn's
    metrics on the labels) scores."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score

    rng = np.random.default_rng(4)
    y = (rng.random(3000) < 0.25).astype(np.uint8)
    p = np.clip(rng.normal(0.35 + 0.25 * y, 0.15), 0, 1).round(3)
    t, score = best_threshold(p, y, TARGETS[target])
    sk = {
        "crop_f1": lambda pred: f1_score(y, pred),
        "crop_iou": lambda pred: jaccard_score(y, pred),
        "balanced_accuracy": lambda pred: balanced_accuracy_score(y, pred),
        "weighted_f1": lambda pred: f1_score(y, pred, average="weighted"),
    }[target]
    sweep = max(sk((p > c).astype(np.uint8)) for c in np.arange(0.0, 1.0, 0.0005))
    assert score == pytest.approx(sweep, abs=1e-12)
    assert sk((p > t).astype(np.uint8)) == pytest.approx(score, abs=1e-12)


def test_a_classifier_applies_its_chosen_threshold():
    X, y, groups = imbalanced()
    clf = LogisticRegressionClassifier(grid={"C": [1.0]}, cv="random")
    fit = clf.fit(X, y, groups)
    assert fit.params["threshold"] == pytest.approx(clf.threshold_, abs=1e-6) and clf.threshold_ != 0.5
    np.testing.assert_array_equal(clf.predict(X), (clf.predict_proba(X)[:, 1] > clf.threshold_).astype(np.uint8))
    fixed = LogisticRegressionClassifier(grid={"C": [1.0]}, cv="random", threshold=0.5)
    fixed.fit(X, y, groups)
    np.testing.assert_array_equal(fixed.predict(X), fixed.model_.predict(X))
    with pytest.raises(ConfigError, match="threshold"):
        LogisticRegressionClassifier(threshold=1.5)


# -- balance as a choice ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LogisticRegressionClassifier, MLP, "knn"])
def test_auto_balance_chooses_balancing_on_an_imbalanced_set(cls):
    """1 crop pixel for 9 non-crop ones, overlapping, at the majority vote (threshold 0.5, which alone would
    otherwise re-balance): the proportional sample maps little crop, so the CV picks a balanced sample or
    class weights for crop F1."""
    from cropseg_plugins.knn import KNNClassifier

    X, y, groups = imbalanced()
    if cls == "knn":
        clf = KNNClassifier(k_grid=[15], cv="spatial", threshold=0.5)
    else:
        clf = cls(grid={}, cv="spatial", threshold=0.5)
    fit = clf.fit(X, y, groups, balance="auto")
    modes = [m for m in ("proportional", "sample", "weights") if any(k.endswith(f"balance{m}") for k in fit.metrics)]
    assert modes == (["proportional", "sample"] if cls == "knn" else ["proportional", "sample", "weights"])
    scores = {m: next(v for k, v in fit.metrics.items() if k.endswith(f"balance{m}")) for m in modes}
    assert fit.params["balance"] in ("sample", "weights") and scores[fit.params["balance"]] == max(scores.values())
    assert scores[fit.params["balance"]] > scores["proportional"] + 0.02, scores
    # the refit is balanced as chosen: more crop predicted than the proportional fit gives
    plain = (KNNClassifier(k_grid=[15], threshold=0.5) if cls == "knn" else cls(grid={}, threshold=0.5)).fit(
        X, y, groups
    )
    assert plain.params["balance"] == "proportional"


# -- grid extension ---------------------------------------------------------------------------------------


def test_extend_values():
    assert extend_values([3, 5, 7], "high") == [9, 11, 13]
    assert extend_values([3, 5, 7], "low") == [1]  # k stays positive
    assert extend_values([0.01, 1.0, 100.0], "high") == [1e4, 1e6, 1e8]  # a ratio continues
    assert extend_values([0.01, 1.0, 100.0], "low") == [1e-4, 1e-6, 1e-8]
    assert extend_values([8, 16], "high") == [32, 64, 128]  # two values a factor 2 apart: doubling
    assert extend_values([8, 16, None], "high") == []  # null is the top end
    assert extend_values([8, 16, None], "low") == [4, 2, 1]
    assert extend_values([0.05, 0.1], "high", limits=(None, 1.0)) == [0.2, 0.4, 0.8]
    assert extend_values([0.5, 1.0], "high", limits=(None, 1.0)) == []  # already at its limit
    assert extend_values([0.0, 0.5], "low") == []  # no negative values from a grid without them
    assert extend_values([15, 25], "high") == [35, 45, 55]  # evenly spaced (less than a factor 2): the step
    assert extend_values([15, 31], "high") == [64, 132, 274]


class Graded:
    """A toy estimator for grid tests: its crop probability is right for the share ``level / 100`` of the
    pixels (column 1 of X is uniform), so every score rises with ``level`` until 100."""

    def __init__(self, level):
        self.level = level

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        right = X[:, 1] < self.level / 100
        p = np.where(right, X[:, 0], 1 - X[:, 0])
        return np.column_stack([1 - p, p])


def graded_data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.uint8)
    return np.column_stack([y, rng.random(n)]), y, np.arange(n) % 10


def test_a_chosen_edge_extends_the_grid_until_the_best_lies_inside(caplog):
    X, y, groups = graded_data()
    spec = CVSpec(cv="spatial", threshold=0.5, report_both=False, where="classifier.toy")
    with caplog.at_level("INFO"):
        tuned = tune(Graded, {"level": [40, 60]}, X, y, groups, spec, limits={"level": (0, 1000)})
    # 80, 100, 120 added in round 1: 100 and 120 are both perfect (a plateau), so the first (100) is kept
    assert tuned.best == {"level": 100} and tuned.params["grid_extended_level"] == "80,100,120"
    assert tuned.edge_warnings == [] and "warning.grid_edge" not in tuned.fit_result().tags
    assert any("extending it with 80, 100, 120" in r.getMessage() for r in caplog.records)
    assert tuned.metrics["cv_crop_f1_level120"] == tuned.metrics["cv_score"] == 1.0


def test_extension_is_bounded_and_still_warns_when_the_score_keeps_rising(caplog):
    X, y, groups = graded_data()
    spec = CVSpec(cv="spatial", threshold=0.5, report_both=False, where="classifier.toy")
    with caplog.at_level("WARNING"):
        tuned = tune(Graded, {"level": [1, 2, 3]}, X, y, groups, spec)
    assert tuned.params["grid_extended_level"] == "4,5,6,7,8,9,10,11,12"  # 3 rounds of 3 steps
    assert tuned.best == {"level": 12}
    assert "level=12 is the largest value of its grid (1..12)" in tuned.fit_result().tags["warning.grid_edge"]
    assert any("largest value of its grid" in r.getMessage() for r in caplog.records)
    # a limit stops the extension without a warning: the value is as far as it can go
    capped = tune(Graded, {"level": [1, 2, 3]}, X, y, groups, spec, limits={"level": (1, 4)})
    assert capped.best == {"level": 4} and capped.edge_warnings == []


def test_null_is_the_top_end_of_a_grid():
    X, y, groups = graded_data()
    spec = CVSpec(cv="spatial", threshold=0.5, report_both=False)

    def build(level):
        return Graded(100 if level is None else level)

    tuned = tune(build, {"level": [10, 20, None]}, X, y, groups, spec)
    assert tuned.best == {"level": None} and tuned.edge_warnings == [] and "grid_extended_level" not in tuned.params
    low = tune(lambda level: Graded(100 - 4 * (level or 25)), {"level": [10, 20, None]}, X, y, groups, spec)
    # downward from 10 by its ratio (two values a factor 2 apart), staying >= 1
    assert low.best == {"level": 1} and low.params["grid_extended_level"] == "5,2,1"


def test_builtin_grid_limits_keep_extended_values_valid():
    from cropseg_plugins.hist_gradient_boosting import HistGradientBoosting

    rf = RandomForest(grid={"max_samples": [0.25, 0.5], "max_depth": [8, 16]})
    assert rf.grid_limits() == {"max_samples": (None, 1.0)}  # a fraction of the pixels at most 1
    assert extend_values([0.25, 0.5], "high", limits=rf.grid_limits()["max_samples"]) == [1.0]
    assert RandomForest(grid={"max_samples": [1000, 2000]}).grid_limits() == {}  # counts: open
    hgb = HistGradientBoosting().grid_limits()
    assert min(extend_values([15, 31], "low", limits=hgb["max_leaf_nodes"])) >= 2
    assert max(extend_values([0.1, 0.3], "high", limits=hgb["learning_rate"])) <= 1.0


def test_no_extension_rounds_keeps_the_grid_and_warns_at_its_edge():
    X, y, groups = graded_data()
    spec = CVSpec(cv="spatial", threshold=0.5, report_both=False, where="classifier.toy", extend_rounds=0)
    tuned = tune(Graded, {"level": [1, 2, 3]}, X, y, groups, spec)
    assert tuned.best == {"level": 3} and "grid_extended_level" not in tuned.params
    assert "level=3 is the largest value of its grid (1..3)" in tuned.fit_result().tags["warning.grid_edge"]
    with pytest.raises(ConfigError, match="grid_extend_rounds"):
        CVSpec(extend_rounds=-1, where="classifier.x")
    assert RandomForest(grid_extend_rounds=0).spec.extend_rounds == 0


def test_the_seed_experiment_keeps_the_seed_studys_choices():
    from cropseg.config import compose

    cfg = compose(["+experiment=seed_knn"])
    assert cfg.classifier.threshold == 0.5 and cfg.classifier.grid_extend_rounds == 0
    assert cfg.train.balance is False and cfg.classifier.scoring == "crop_f1"  # scoring follows evaluate.target
