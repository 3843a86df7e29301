"""The fast exact KNN vote (cropseg.neighbors) against scikit-learn's KNeighborsClassifier.predict."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from cropseg.neighbors import KNNIndex, knn_predict, supports
from cropseg_plugins.knn import KNNClassifier


def reflectance_like(n: int, seed: int, quantum: float = 0.006):
    """SYNTHETIC 4-band 'reflectances' of two overlapping classes, quantized like DN * coefficient (so some
    training vectors repeat and distances tie, as in real imagery)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(np.uint8)
    centre = np.where(y[:, None] == 1, [0.05, 0.08, 0.05, 0.35], [0.11, 0.14, 0.17, 0.26])
    X = centre + rng.normal(0.0, 0.045, size=(n, 4))
    X = np.round(X / quantum) * quantum
    return X.astype(np.float32), y


@pytest.mark.parametrize(
    "k,weights", [(3, "uniform"), (4, "uniform"), (9, "uniform"), (8, "uniform"), (5, "distance"), (6, "distance")]
)
def test_agrees_with_sklearn_on_at_least_999_per_mille(k, weights):
    X, y = reflectance_like(12000, seed=11)
    Xt, _ = reflectance_like(40000, seed=12)
    model = KNeighborsClassifier(n_neighbors=k, weights=weights).fit(X, y)
    expected = model.predict(Xt)
    got = knn_predict(model, Xt, threads=2)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    agreement = float(np.mean(got == expected))
    assert agreement >= 0.999, f"k={k} {weights}: {agreement:.5f}"
    # every disagreement is a distance tie: the k-th and (k+1)-th nearest training pixels (or, for the
    # uniform vote's first query, the m-th and (m+1)-th, m = k // 2 + 1) are equally far
    differ = np.flatnonzero(got != expected)
    if differ.size:
        dist, _ = model.kneighbors(Xt[differ], n_neighbors=k + 1)
        m = k // 2 + 1
        tie = dist[:, k - 1] == dist[:, k]
        if weights == "uniform":
            tie |= dist[:, m - 1] == dist[:, m]
        assert tie.all(), f"disagreements without a distance tie at rows {differ[~tie][:5]}"
    # the classes overlap: the vote is not trivially unanimous
    assert 0.2 < expected.mean() < 0.8


def test_identical_to_sklearn_without_distance_ties():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5000, 4))
    y = (X[:, 0] + 0.8 * rng.normal(size=5000) > 0).astype(np.uint8)  # noisy labels: many mixed votes
    Xt = rng.normal(size=(20000, 4))
    for k in (1, 2, 7):
        model = KNeighborsClassifier(n_neighbors=k).fit(X, y)
        np.testing.assert_array_equal(knn_predict(model, Xt), model.predict(Xt))


def test_ties_between_classes_go_to_the_first_class_like_sklearn():
    # k=2 with one neighbour of each class at distinct distances: uniform vote ties -> class 0;
    # distance weights -> the nearer one
    X = np.array([[0.0], [1.0]], dtype=np.float32)
    y = np.array([1, 0], dtype=np.uint8)
    Xt = np.array([[0.2], [0.9]], dtype=np.float32)
    for weights in ("uniform", "distance"):
        model = KNeighborsClassifier(n_neighbors=2, weights=weights).fit(X, y)
        np.testing.assert_array_equal(knn_predict(model, Xt), model.predict(Xt))
    assert list(knn_predict(KNeighborsClassifier(n_neighbors=2).fit(X, y), Xt)) == [0, 0]


def test_exact_matches_dominate_distance_weights_like_sklearn():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.1]], dtype=np.float32)
    y = np.array([1, 1, 0, 0, 0])
    model = KNeighborsClassifier(n_neighbors=5, weights="distance").fit(X, y)
    Xt = np.array([[0.0, 0.0], [0.09, 0.05]], dtype=np.float32)
    np.testing.assert_array_equal(knn_predict(model, Xt), model.predict(Xt))
    assert list(knn_predict(model, Xt)) == [1, 0]


def test_more_than_two_classes_and_string_labels():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 3))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 3000)]
    Xt = rng.normal(size=(5000, 3))
    model = KNeighborsClassifier(n_neighbors=6).fit(X, y)
    got = knn_predict(model, Xt)
    assert got.dtype == model.predict(Xt).dtype
    np.testing.assert_array_equal(got, model.predict(Xt))


def test_unsupported_configurations_fall_back_to_sklearn():
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 2, 300)
    Xt = rng.normal(size=(200, 4))
    for model in (
        KNeighborsClassifier(n_neighbors=3, metric="manhattan").fit(X, y),
        KNeighborsClassifier(n_neighbors=3, weights=lambda d: np.exp(-d)).fit(X, y),
    ):
        assert not supports(model)
        np.testing.assert_array_equal(knn_predict(model, Xt), model.predict(Xt))


def test_empty_input_and_direct_index():
    idx = KNNIndex(np.zeros((4, 2)), np.array([0, 1, 1, 1]), 2, k=3)
    assert idx.predict(np.empty((0, 2))).shape == (0,)
    assert list(idx.predict(np.array([[0.0, 0.0]]))) == [1]


def test_knn_plugin_predicts_like_its_sklearn_model_and_pickles():
    X, y = reflectance_like(6000, seed=21)
    Xt, _ = reflectance_like(20000, seed=22)
    clf = KNNClassifier(k_grid=(5, 7), cv="random", n_jobs=1, seed=0, threshold=0.5)
    clf.fit(X, y)
    assert isinstance(clf.model_, KNeighborsClassifier)
    expected = KNeighborsClassifier.predict(clf.model_, Xt).astype(np.uint8)  # scikit-learn's own vote
    got = clf.predict(Xt)
    assert got.dtype == np.uint8
    assert np.mean(got == expected) >= 0.999
    again = pickle.loads(pickle.dumps(clf))  # a pickled model (MLflow artifact, Dask worker) predicts alike
    np.testing.assert_array_equal(again.predict(Xt), got)


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.45, 0.7, 0.95])
def test_a_decision_threshold_is_the_vote_fraction_above_it(threshold):
    """The vote-shaped search with m = floor(threshold * k) + 1 crop votes gives scikit-learn's
    ``predict_proba(X)[:, 1] > threshold``; the plugin applies its fitted threshold the same way."""
    X, y = reflectance_like(6000, seed=23)
    Xt, _ = reflectance_like(20000, seed=24)
    model = KNeighborsClassifier(n_neighbors=9).fit(X, y)
    expected = (model.predict_proba(Xt)[:, 1] > threshold).astype(model.classes_.dtype)
    got = knn_predict(model, Xt, threshold=threshold)
    assert np.mean(got == expected) >= 0.999
    clf = KNNClassifier(k_grid=(9,), cv="random", n_jobs=1, threshold=threshold)
    clf.fit(X, y)
    assert clf.threshold_ == threshold and clf.predict(Xt).tolist() == got.astype(np.uint8).tolist()


def test_an_auto_threshold_is_chosen_and_applied():
    X, y = reflectance_like(6000, seed=25)
    clf = KNNClassifier(k_grid=(5, 9), cv="random", n_jobs=1, seed=0)
    fit = clf.fit(X, y)
    k = clf.model_.n_neighbors
    assert fit.params["threshold"] == pytest.approx(clf.threshold_, abs=1e-6)
    # a midpoint between two vote fractions j/k and (j+1)/k
    assert (clf.threshold_ * k) % 1 == pytest.approx(0.5, abs=1e-4)
    # the logged model (a pickle) keeps and applies it: runs, the pyfunc model and `cropseg predict` alike
    Xt, _ = reflectance_like(5000, seed=26)
    again = pickle.loads(pickle.dumps(clf))
    assert again.threshold_ == clf.threshold_
    expected = (KNeighborsClassifier.predict_proba(clf.model_, Xt)[:, 1] > clf.threshold_).astype(np.uint8)
    assert np.mean(again.predict(Xt) == expected) >= 0.999


def test_reference_configuration_uses_the_two_class_search_and_small_classes_fall_back():
    X, y = reflectance_like(8000, seed=31)
    Xt, _ = reflectance_like(30000, seed=32)
    model = KNeighborsClassifier(n_neighbors=9).fit(X, y)
    assert KNNIndex(model._fit_X, model._y, 2, 9).binary
    assert not KNNIndex(model._fit_X, model._y, 2, 9, weights="distance").binary
    # a class with fewer training pixels than its share of a winning vote (m = 5 of k = 9): one shared tree
    few = np.concatenate([np.flatnonzero(y == 0)[:400], np.flatnonzero(y == 1)[:3]])
    small = KNeighborsClassifier(n_neighbors=9).fit(X[few], y[few])
    assert not KNNIndex(small._fit_X, small._y, 2, 9).binary
    np.testing.assert_array_equal(knn_predict(small, Xt), small.predict(Xt))
    # one thread or several (chunks of the sorted queries): the same labels
    np.testing.assert_array_equal(knn_predict(model, Xt, threads=1), knn_predict(model, Xt, threads=3))
