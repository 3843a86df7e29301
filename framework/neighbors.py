"""Fast exact k-nearest-neighbour prediction for a fitted scikit-learn ``KNeighborsClassifier``.

:func:`knn_predict` gives the same labels as ``model.predict(X)`` (same training set, ``k`` and
``weights``) several times faster, for the Euclidean metric on dense data:

* the neighbours come from a :class:`scipy.spatial.cKDTree` over the model's training pixels, built once
  per fitted model and queried by all the task's threads (``workers=``, see
  :func:`cropseg.parallel.task_threads`);
* with uniform weights, a query first asks for only ``m = k // 2 + 1`` neighbours: when those ``m`` agree,
  that class holds a majority of the ``k`` nearest whatever the other ``k - m`` are, so the answer is
  known; only the pixels whose ``m`` nearest disagree (near a class boundary) are asked for all ``k``;
* the vote is a count per class (for two classes a sum of 0/1 labels), not ``scipy.stats.mode``.

The vote follows scikit-learn exactly: ties between classes go to the first class in ``classes_``
(uniform weights: ``scipy.stats.mode`` keeps the smallest; ``weights="distance"``: weights ``1 / d``, and a
pixel at distance 0 from training pixels gets weight 1 for those and 0 for the others). Labels can differ
from scikit-learn's only where several training pixels are equally far from a pixel at the ``k``-th
neighbour's distance (e.g. duplicated training vectors): both libraries then keep ``k`` of the
equidistant pixels, but not necessarily the same ones, and when those carry different classes the vote
can differ (with the ``m``-neighbour shortcut, the same holds for ties at the ``m``-th distance).

Any other configuration (another metric, callable weights, several outputs, sparse input) falls back to
``model.predict``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

_LOCK = threading.Lock()
_INDEXES: weakref.WeakKeyDictionary[Any, KNNIndex] = weakref.WeakKeyDictionary()


class KNNIndex:
    """A KD-tree over training vectors ``X`` with class indices ``y`` (0..n_classes-1): exact votes."""

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int, k: int, weights: str = "uniform"):
        from scipy.spatial import cKDTree

        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        self.k = int(min(k, len(y)))
        self.weights = weights
        self.n_classes = int(n_classes)
        self.y = np.ascontiguousarray(y, dtype=np.intp)
        self.tree = cKDTree(np.asarray(X, dtype=np.float64), leafsize=16, balanced_tree=False, compact_nodes=False)

    def _query(self, X: np.ndarray, k: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
        d, i = self.tree.query(X, k=k, workers=workers)
        return (d[:, None], i[:, None]) if k == 1 else (d, i)

    def predict(self, X: np.ndarray, workers: int = -1) -> np.ndarray:
        """Class index (into the model's ``classes_``) per row of ``X`` (n, f)."""
        X = np.asarray(X, dtype=np.float64)
        if len(X) == 0:
            return np.empty(0, dtype=np.intp)
        if self.weights == "distance":
            d, i = self._query(X, self.k, workers)
            return self._vote(self.y[i], _distance_weights(d))
        m = self.k // 2 + 1
        if m >= self.k:
            return self._vote(self.y[self._query(X, self.k, workers)[1]], None)
        lab = self.y[self._query(X, m, workers)[1]]
        out = lab[:, 0].copy()
        undecided = np.flatnonzero((lab != lab[:, :1]).any(axis=1))
        if undecided.size:
            _, i = self._query(X[undecided], self.k, workers)
            out[undecided] = self._vote(self.y[i], None)
        return out

    def _vote(self, labels: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """The class with the largest (weighted) count per row; ties go to the smallest class index."""
        if self.n_classes == 2:
            if weights is None:
                ones = labels.sum(axis=1)
                return (2 * ones > labels.shape[1]).astype(np.intp)
            w1 = np.where(labels == 1, weights, 0.0).sum(axis=1)
            w0 = np.where(labels == 0, weights, 0.0).sum(axis=1)
            return (w1 > w0).astype(np.intp)
        scores = np.zeros((labels.shape[0], self.n_classes))
        rows = np.broadcast_to(np.arange(labels.shape[0])[:, None], labels.shape)
        np.add.at(scores, (rows, labels), 1.0 if weights is None else weights)
        return scores.argmax(axis=1)


def _distance_weights(dist: np.ndarray) -> np.ndarray:
    """scikit-learn's ``weights="distance"``: 1/d, or 1 for exact matches and 0 for the rest of their row."""
    with np.errstate(divide="ignore"):
        w = 1.0 / dist
    inf = np.isinf(w)
    rows = inf.any(axis=1)
    w[rows] = inf[rows]
    return w


def supports(model: Any) -> bool:
    """Whether :func:`knn_predict` reproduces ``model.predict`` (else it falls back to it)."""
    metric = getattr(model, "effective_metric_", None)
    return (getattr(model, "weights", None) in ("uniform", "distance") and metric == "euclidean"
            and not getattr(model, "outputs_2d_", True) and isinstance(getattr(model, "_fit_X", None), np.ndarray))


def index_for(model: Any) -> KNNIndex:
    """The :class:`KNNIndex` of a fitted ``KNeighborsClassifier``, built on first use and cached per model."""
    with _LOCK:
        idx = _INDEXES.get(model)
        if idx is None or idx.k != min(model.n_neighbors, len(model._y)) or idx.weights != model.weights:
            idx = KNNIndex(model._fit_X, model._y, len(model.classes_), model.n_neighbors, model.weights)
            _INDEXES[model] = idx
        return idx


def knn_predict(model: Any, X: np.ndarray, workers: int | None = None) -> np.ndarray:
    """``model.predict(X)`` for a fitted ``KNeighborsClassifier``, computed with :class:`KNNIndex`
    (``workers`` threads; default: :func:`cropseg.parallel.task_threads`)."""
    if not supports(model) or not isinstance(X, np.ndarray):
        return model.predict(X)
    if workers is None:
        from .parallel import task_threads

        workers = task_threads()
    return model.classes_[index_for(model).predict(X, workers=workers)]
