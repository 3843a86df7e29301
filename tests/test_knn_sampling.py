"""The ``knn`` classifier on seeded synthetic data, and training-pixel sampling from a tiny labelled scene."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import rasterio

from cropseg.errors import ConfigError, LabelError
from cropseg.sampling import sample_training_pixels
from cropseg.testing import TINY_COEFFICIENTS, write_tiny_scene
from cropseg.types import Classifier, FitResult, Grid, LabelRaster, Scene, VectorGroundTruth
from cropseg_plugins.bands import BandFeatures
from cropseg_plugins.knn import KNNClassifier
from cropseg_plugins.rasterize import RasterizeLabeler

K_GRID = (3, 5, 7)


def blobs(n_per_class: int, seed: int, n_features: int = 4, sep: float = 8.0):
    """Two well-separated Gaussian blobs: class 0 around 0, class 1 around ``sep`` in every feature."""
    rng = np.random.default_rng(seed)
    X0 = rng.normal(0.0, 1.0, size=(n_per_class, n_features))
    X1 = rng.normal(sep, 1.0, size=(n_per_class, n_features))
    X = np.vstack([X0, X1]).astype(np.float32)
    y = np.repeat(np.array([0, 1], dtype=np.uint8), n_per_class)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


# --------------------------------------------------------------------------------------------------
# KNNClassifier
# --------------------------------------------------------------------------------------------------


def test_knn_implements_the_classifier_interface():
    assert isinstance(KNNClassifier(), Classifier)


def test_knn_predicts_separable_data():
    X, y = blobs(150, seed=0)
    clf = KNNClassifier(k_grid=K_GRID, n_jobs=1, seed=0, cv="random")
    fit = clf.fit(X, y)
    assert isinstance(fit, FitResult)
    assert fit.params["k"] in K_GRID
    assert fit.params["cv"] == "random"
    assert fit.metrics["cv_score"] == pytest.approx(1.0)
    assert 0.0 <= fit.metrics["cv_score_std"] < 1e-9
    assert fit.metrics["cv_random_crop_f1"] == fit.metrics["cv_score"]
    assert "cv_spatial_f1_weighted" not in fit.metrics  # no groups: no spatial CV to report
    assert set(fit.metrics) >= {f"cv_crop_f1_k{k}" for k in K_GRID}
    Xt, yt = blobs(100, seed=1)
    pred = clf.predict(Xt)
    assert pred.dtype == np.uint8 and pred.shape == yt.shape
    np.testing.assert_array_equal(pred, yt)


def test_knn_best_k_is_the_best_cv_score():
    X, y = blobs(120, seed=3, sep=2.0)  # overlapping blobs: the k's score differently
    fit = KNNClassifier(k_grid=(1, 3, 9, 15), n_jobs=1, seed=0, cv="random").fit(X, y)
    scores = {int(k[len("cv_crop_f1_k") :]): v for k, v in fit.metrics.items() if k.startswith("cv_crop_f1_k")}
    assert {1, 3, 9, 15} <= set(scores)  # and the k of any extension of the grid
    assert fit.params["k"] in scores
    assert scores[fit.params["k"]] == max(scores.values())
    assert fit.metrics["cv_score"] == pytest.approx(max(scores.values()))
    assert 0.5 < fit.metrics["cv_score"] < 1.0


def test_knn_single_k_with_cv_none_skips_cross_validation():
    X, y = blobs(50, seed=2)
    clf = KNNClassifier(k_grid=5, n_jobs=1, cv="none")
    fit = clf.fit(X, y)
    assert fit.params["k"] == 5 and fit.params["cv"] == "none"
    assert not [m for m in fit.metrics if m.startswith("cv_") and m != "cv_seconds"]
    assert clf.model_.n_neighbors == 5
    np.testing.assert_array_equal(clf.predict(X), y)


def clustered_groups():
    """Six tight clusters on a line, one per spatial group, labels alternating 0/1 between clusters.

    Random CV keeps each cluster's own pixels in the training folds (near-perfect score); spatial CV holds
    out whole clusters, whose nearest training neighbours are the adjacent clusters of the other class.
    """
    rng = np.random.default_rng(4)
    X, y, groups = [], [], []
    for g in range(6):
        X.append(rng.normal(10.0 * g, 0.5, size=(40, 2)))
        y.append(np.full(40, g % 2, dtype=np.uint8))
        groups.append(np.full(40, g))
    return np.vstack(X).astype(np.float32), np.concatenate(y), np.concatenate(groups)


def test_knn_spatial_cv_uses_the_groups():
    X, y, groups = clustered_groups()
    spatial = KNNClassifier(k_grid=(3, 5), cv="spatial", cv_folds=3, n_jobs=1).fit(X, y, groups)
    random = KNNClassifier(k_grid=(3, 5), cv="random", cv_folds=3, n_jobs=1, seed=0).fit(X, y, groups)
    assert spatial.params["cv"] == "spatial" and random.params["cv"] == "random"
    assert random.metrics["cv_score"] > 0.95
    assert spatial.metrics["cv_score"] < 0.5
    # both runs report both CVs of their chosen k; the tuning one is cv_score
    for fit in (spatial, random):
        assert fit.metrics["cv_random_f1_weighted"] > 0.95 and fit.metrics["cv_spatial_f1_weighted"] < 0.5
    assert spatial.metrics["cv_score"] == spatial.metrics["cv_spatial_f1_weighted"]
    assert random.metrics["cv_score"] == random.metrics["cv_random_f1_weighted"]


def test_knn_spatial_cv_needs_groups():
    X, y, groups = clustered_groups()
    clf = KNNClassifier(k_grid=(3, 5), cv="spatial", n_jobs=1)
    with pytest.raises(ConfigError, match="groups"):
        clf.fit(X, y, None)
    with pytest.raises(ConfigError, match="cv_folds"):
        clf.fit(X, y, np.where(groups < 3, 0, 1))  # 2 spatial blocks < 3 folds


def test_knn_is_deterministic_under_a_seed():
    X, y = blobs(100, seed=5, sep=1.5)
    Xt, _ = blobs(80, seed=6, sep=1.5)
    a = KNNClassifier(k_grid=K_GRID, n_jobs=1, seed=7, cv="random")
    b = KNNClassifier(k_grid=K_GRID, n_jobs=1, seed=7, cv="random")
    fa, fb = a.fit(X, y), b.fit(X, y)
    assert dict(fa.params) == dict(fb.params)
    timing = ("cv_seconds", "refit_seconds")
    assert {k: v for k, v in fa.metrics.items() if k not in timing} == {
        k: v for k, v in fb.metrics.items() if k not in timing
    }
    np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))


def test_knn_seed_changes_the_cv_folds():
    X, y = blobs(100, seed=5, sep=1.5)
    scores = {
        KNNClassifier(k_grid=K_GRID, n_jobs=1, seed=s, cv="random").fit(X, y).metrics["cv_score"] for s in range(4)
    }
    assert len(scores) > 1


def test_knn_fitted_model_is_picklable():
    X, y = blobs(60, seed=8)
    clf = KNNClassifier(k_grid=(3, 5), n_jobs=1, cv="random")
    clf.fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    proba = again.predict_proba(X[:5])
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "opts",
    [
        {"k_grid": []},
        {"k_grid": [0, 3]},
        {"k_grid": [-1]},
        {"cv": "loo"},
        {"weights": "gaussian"},
        {"cv_folds": 1},
        {"scoring": "f1_wieghted"},
    ],
)
def test_knn_bad_options(opts):
    with pytest.raises(ConfigError):
        KNNClassifier(**opts)


# --------------------------------------------------------------------------------------------------
# sample_training_pixels
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A tiny scene and its rasterize labels (880 crop, 2704 non-crop, 512 ignored pixels)."""
    d = tmp_path_factory.mktemp("sampling")
    tiny = write_tiny_scene(d, seed=3)
    scene = Scene(
        name="t", path=tiny.image, gains=TINY_COEFFICIENTS, nodata=0, ground_truth=VectorGroundTruth(tiny.ground_truth)
    )
    labels = RasterizeLabeler().label(scene, d / "labels.tif")
    with rasterio.open(labels.path) as src:
        lab = src.read(1)
    with rasterio.open(tiny.image) as src:
        dn = src.read()
    return scene, labels, lab, dn


def sample(labelled, **kwargs):
    scene, labels, _, _ = labelled
    kwargs.setdefault("seed", 0)
    return sample_training_pixels(scene, labels, BandFeatures(), **kwargs)


@pytest.mark.parametrize("block", [16, 512])
def test_sample_cap_per_class_is_exact(labelled, block):
    _, labels, lab, dn = labelled
    assert dict(labels.counts) == {"crop": 880, "noncrop": 2704, "ignore": 512}
    ts = sample(labelled, max_per_class=100, block=block)
    assert int(np.sum(ts.y == 0)) == 100 and int(np.sum(ts.y == 1)) == 100
    assert ts.X.shape == (200, 4) and ts.X.dtype == np.float32
    assert ts.feature_names == ["blue", "green", "red", "nir"]
    assert ts.available == {"noncrop": 2704, "crop": 880}
    # no pixel twice; each label and feature vector is that of its pixel
    assert len(set(zip(ts.rows.tolist(), ts.cols.tolist()))) == 200
    np.testing.assert_array_equal(ts.y, lab[ts.rows, ts.cols])
    refl = dn[:, ts.rows, ts.cols].T.astype(np.float32) * np.asarray(TINY_COEFFICIENTS, dtype=np.float32)
    np.testing.assert_allclose(ts.X, refl, rtol=1e-6)


def test_sample_cap_above_one_class_takes_all_of_it(labelled):
    ts = sample(labelled, max_per_class=1000)
    assert int(np.sum(ts.y == 1)) == 880  # fewer crop pixels than the cap: all of them
    assert int(np.sum(ts.y == 0)) == 1000


def test_sample_all_pixels(labelled):
    _, _, lab, _ = labelled
    ts = sample(labelled, max_per_class=None, block=16)
    assert len(ts.y) == 880 + 2704
    rr, cc = np.nonzero(lab != 255)
    assert set(zip(ts.rows.tolist(), ts.cols.tolist())) == set(zip(rr.tolist(), cc.tolist()))
    np.testing.assert_array_equal(ts.y, lab[ts.rows, ts.cols])


def test_sample_same_seed_same_sample_other_seed_other_sample(labelled):
    a = sample(labelled, max_per_class=50, seed=1)
    b = sample(labelled, max_per_class=50, seed=1)
    c = sample(labelled, max_per_class=50, seed=2)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.cols, b.cols)
    np.testing.assert_array_equal(a.X, b.X)
    assert set(zip(a.rows.tolist(), a.cols.tolist())) != set(zip(c.rows.tolist(), c.cols.tolist()))


def test_sample_spatial_groups(labelled):
    ts = sample(labelled, max_per_class=None, spatial_block=16)
    ncols = -(-64 // 16)
    np.testing.assert_array_equal(ts.groups, (ts.rows // 16) * ncols + ts.cols // 16)
    assert len(np.unique(ts.groups)) == 16  # every 16x16 block of the 64x64 scene holds labelled pixels


@pytest.mark.parametrize("present", [0, 1], ids=["noncrop_only", "crop_only"])
def test_sample_single_class_labels_raise(tmp_path, labelled, present):
    scene, labels, lab, _ = labelled
    single = np.where(lab == 255, 255, present).astype(np.uint8)
    path = tmp_path / "single.tif"
    with rasterio.open(labels.path) as src:
        profile = src.profile
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(single, 1)
    n = int(np.sum(single == present))
    counts = {"noncrop": n if present == 0 else 0, "crop": n if present == 1 else 0, "ignore": 512}
    single_labels = LabelRaster(path, labels.grid, counts)
    assert isinstance(single_labels.grid, Grid)
    with pytest.raises(LabelError, match="crop"):
        sample_training_pixels(scene, single_labels, BandFeatures(), max_per_class=100, seed=0)


def test_sampled_pixels_train_a_knn_that_separates_the_tiny_scene(labelled):
    """End of the chain: a sample from the tiny scene trains KNN that classifies the scene's pixels."""
    _, _, lab, dn = labelled
    ts = sample(labelled, max_per_class=200, seed=0, spatial_block=16)
    fit = KNNClassifier(k_grid=(3, 5), n_jobs=1, cv="spatial").fit(ts.X, ts.y, ts.groups)
    assert fit.params["k"] in (3, 5) and fit.metrics["cv_score"] > 0.95
    valid = lab != 255
    X = dn[:, valid].T.astype(np.float32) * np.asarray(TINY_COEFFICIENTS, dtype=np.float32)
    pred = KNNClassifier(k_grid=3, n_jobs=1, cv="none")
    pred.fit(ts.X, ts.y)
    assert np.mean(pred.predict(X) == lab[valid]) > 0.99


def test_sample_balance_draws_equal_class_sizes(labelled):
    """train.balance: as many non-crop as crop pixels (880, the smaller class), all crop pixels taken."""
    ts = sample(labelled, max_per_class=None, balance=True)
    assert int(np.sum(ts.y == 1)) == 880 and int(np.sum(ts.y == 0)) == 880
    ts = sample(labelled, max_per_class=1000, balance=True)  # cap above the smaller class: still 880 each
    assert int(np.sum(ts.y == 1)) == 880 and int(np.sum(ts.y == 0)) == 880
    ts = sample(labelled, max_per_class=300, balance=True)  # cap below it: the cap
    assert int(np.sum(ts.y == 1)) == 300 and int(np.sum(ts.y == 0)) == 300
    unbalanced = sample(labelled, max_per_class=None, balance=False)
    assert int(np.sum(unbalanced.y == 0)) == 2704


def test_sample_bad_cap_raises(labelled):
    with pytest.raises(ConfigError, match="max_per_class"):
        sample(labelled, max_per_class=0)


# --------------------------------------------------------------------------------------------------
# issue 12: one stratified cap on the total, class fractions, grid edges, every k from one query
# --------------------------------------------------------------------------------------------------


def test_sample_cap_keeps_the_labelled_class_proportions(labelled):
    labelled_crop = 880 / (880 + 2704)
    for cap in (300, 1001, 3000):
        ts = sample(labelled, max_pixels=cap)
        assert len(ts.y) == cap
        fractions = ts.crop_fractions()
        assert fractions["train_labelled_crop_fraction"] == pytest.approx(labelled_crop)
        assert abs(fractions["train_sample_crop_fraction"] - labelled_crop) < 0.01  # within 1 percentage point
    everything = sample(labelled, max_pixels=10_000)  # a cap above the labelled pixels takes them all
    assert len(everything.y) == 3584


def test_balance_still_means_equal_classes_under_the_total_cap(labelled):
    ts = sample(labelled, max_pixels=500, balance=True)
    assert int(np.sum(ts.y == 0)) == int(np.sum(ts.y == 1)) == 250
    assert ts.crop_fractions()["train_sample_crop_fraction"] == 0.5


def test_sample_bad_total_cap_raises(labelled):
    with pytest.raises(ConfigError, match="train.max_pixels"):
        sample(labelled, max_pixels=0)


def test_knn_extends_its_grid_when_the_chosen_k_is_on_the_edge(caplog):
    # noisy labels: the vote over more neighbours keeps improving, so the largest k of the grid wins
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)).astype(np.float32)
    y = ((X[:, 0] > 0) ^ (rng.random(600) < 0.3)).astype(np.uint8)
    with caplog.at_level("INFO"):
        fit = KNNClassifier(k_grid=[1, 3, 5], cv="random", threshold=0.5).fit(X, y)
    assert fit.params["grid_extended_k"].startswith("7,9,11")
    assert fit.params["k"] > 5 and fit.tags["chosen"] == f"k={fit.params['k']}"
    assert any(
        "k=5 is the largest value of its grid: extending it with 7, 9, 11" in r.getMessage() for r in caplog.records
    )
    if "warning.grid_edge" not in fit.tags:  # settled inside the extended grid
        assert fit.params["k"] < max(int(k) for k in fit.params["grid_extended_k"].split(","))
    inner = KNNClassifier(k_grid=[1, 25, 351], cv="random", threshold=0.5, scoring="f1_weighted").fit(
        X, y
    )  # the best k inside the grid: no extension
    assert inner.params["k"] == 25 and "warning.grid_edge" not in inner.tags and "grid_extended_k" not in inner.params


def test_knn_cv_scores_every_k_from_one_query_as_fitting_each_k():
    from cropseg.tuning import CVSpec, tune

    rng = np.random.default_rng(3)
    X = rng.normal(size=(900, 4))
    y = ((X[:, 0] + 0.5 * X[:, 1] > 0) ^ (rng.random(900) < 0.2)).astype(np.uint8)
    groups = rng.integers(0, 12, size=900)
    for weights in ("uniform", "distance"):
        clf = KNNClassifier(k_grid=[3, 7, 15, 31], weights=weights)
        spec = CVSpec(cv="spatial", folds=3, seed=0, where="classifier.knn")
        lim = {"k": (1, 500)}
        at_once = tune(clf._estimator, {"k": clf.k_grid}, X, y, groups, spec, predict_all=clf._predict_all, limits=lim)
        one_by_one = tune(clf._estimator, {"k": clf.k_grid}, X, y, groups, spec, limits=lim)
        keys = [k for k in one_by_one.metrics if k.startswith("cv_crop_f1_k")]
        assert len(keys) >= 4
        for k in keys:
            assert at_once.metrics[k] == pytest.approx(one_by_one.metrics[k], abs=1e-12), (weights, k)
        assert at_once.best == one_by_one.best
