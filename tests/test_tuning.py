"""The shared tuning/CV machinery (cropseg.tuning): candidate choice, spatial vs random CV, both reported,
no leakage on the SYNTHETIC sample, class weights, and the errors users can cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropseg.errors import ConfigError
from cropseg.sampling import sample_training_pixels
from cropseg.tuning import CVSpec, candidate_key, expand_grid, tune
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
    tuned = tune(knn, {"k": [1, 15, 31]}, X, y, groups, CVSpec(cv="random", seed=0))
    scores = {k: tuned.metrics[f"cv_f1_weighted_k{k}"] for k in (1, 15, 31)}
    assert tuned.best["k"] == max(scores, key=scores.get) and tuned.params["k"] == tuned.best["k"]
    assert tuned.metrics["cv_score"] == scores[tuned.best["k"]] == tuned.metrics["cv_random_f1_weighted"]
    assert tuned.params["cv"] == "random" and tuned.params["cv_folds"] == 3
    assert tuned.estimator.n_neighbors == tuned.best["k"]
    assert hasattr(tuned.estimator, "classes_")  # refitted on all pixels
    # the chosen candidate is scored by the spatial CV too
    assert {"cv_spatial_f1_weighted", "cv_spatial_f1_weighted_std", "cv_random_f1_weighted_std"} <= set(tuned.metrics)


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
    assert tuned.metrics["cv_score"] == spatial


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
