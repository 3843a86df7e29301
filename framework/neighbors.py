"""Fast exact k-nearest-neighbour prediction for a fitted scikit-learn ``KNeighborsClassifier``.

:func:`knn_predict` gives the same labels as ``model.predict(X)`` (same training set, ``k`` and
``weights``) several times faster, for the Euclidean metric on dense data:

* the neighbours come from a ``pykdtree`` KD-tree (float64, squared Euclidean distances like
  scikit-learn's KD-tree) over the model's training pixels, built once per fitted model and queried with
  OpenMP threads (as many as :func:`cropseg.parallel.task_threads` allows);
* the queries are sorted along a Morton (Z-order) curve first, so consecutive queries reuse the same tree
  nodes (about twice as fast as raster order), and the answers put back in the original order;
* the vote is a count per class (for two classes a sum of 0/1 labels), not ``scipy.stats.mode``.

Pixel vectors are not deduplicated: on PlanetScope-like data (and the bundled sample) nearly every
pixel's 4-band vector is distinct, so finding repeats would cost more than it saves.

The vote follows scikit-learn exactly: ties between classes go to the first class in ``classes_``
(uniform weights: ``scipy.stats.mode`` keeps the smallest; ``weights="distance"``: weights ``1 / d``, and a
pixel at distance 0 from training pixels gets weight 1 for those and 0 for the others). Labels can differ
from scikit-learn's only where several training pixels are equally far from a pixel at the ``k``-th
neighbour's distance (e.g. duplicated training vectors): both libraries then keep ``k`` of the
equidistant pixels, but not necessarily the same ones, and when those carry different classes the vote
can differ.

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
        from pykdtree.kdtree import KDTree

        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        X = np.ascontiguousarray(X, dtype=np.float64)
        if not 1 <= k <= len(X):
            raise ValueError(f"k must be in 1..{len(X)} (the training pixels), got {k}")
        self.k, self.weights, self.n_classes = int(k), weights, int(n_classes)
        self.y = np.ascontiguousarray(y, dtype=np.intp)
        self.tree = KDTree(X, leafsize=16)
        nf = X.shape[1]
        self._lo = X.min(axis=0)
        self._scale = (255.0 / np.maximum(X.max(axis=0) - self._lo, 1e-12))
        self._bits = bits = max(1, min(8, 64 // nf))
        code_type = np.uint32 if bits * nf <= 32 else np.uint64
        v = np.arange(1 << bits, dtype=np.uint64)
        spread = sum(((v >> np.uint64(i)) & np.uint64(1)) << np.uint64(i * nf) for i in range(bits))
        self._spread = np.asarray(spread, dtype=code_type)

    def _order(self, X: np.ndarray) -> np.ndarray:
        """An order of the rows of ``X`` along a Morton (Z-order) curve over the training data's bounding
        box: consecutive queries then walk the same tree nodes, which about halves the query time."""
        q = np.clip((X - self._lo) * self._scale, 0, 255).astype(np.intp) >> (8 - self._bits)
        code = self._spread[q[:, 0]]
        for d in range(1, X.shape[1]):
            code |= self._spread[q[:, d]] << code.dtype.type(d)
        return np.argsort(code)

    def kneighbors(self, X: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices (n, k) of the ``k`` nearest training vectors of each row of ``X``, sorted by
        distance; ``threads`` caps the OpenMP threads of the query (``None``: the library's default)."""
        X = np.asarray(X, dtype=np.float64)
        order = self._order(X)
        if threads is None:
            d, i = self.tree.query(np.ascontiguousarray(X[order]), k=self.k)
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=max(1, threads), user_api="openmp"):
                d, i = self.tree.query(np.ascontiguousarray(X[order]), k=self.k)
        if self.k == 1:
            d, i = d[:, None], i[:, None]
        dist, ind = np.empty_like(d), np.empty(i.shape, dtype=np.intp)
        dist[order], ind[order] = d, i
        return dist, ind

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Class index (into the model's ``classes_``) per row of ``X`` (n, f)."""
        if len(X) == 0:
            return np.empty(0, dtype=np.intp)
        d, i = self.kneighbors(X, threads)
        return self._vote(self.y[i], _distance_weights(d) if self.weights == "distance" else None)

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
    fit_X = getattr(model, "_fit_X", None)
    return (getattr(model, "weights", None) in ("uniform", "distance") and metric == "euclidean"
            and not getattr(model, "outputs_2d_", True) and isinstance(fit_X, np.ndarray)
            and fit_X.ndim == 2 and 1 <= getattr(model, "n_neighbors", 0) <= len(fit_X))


def index_for(model: Any) -> KNNIndex:
    """The :class:`KNNIndex` of a fitted ``KNeighborsClassifier``, built on first use and cached per model."""
    with _LOCK:
        idx = _INDEXES.get(model)
        if idx is None or idx.k != model.n_neighbors or idx.weights != model.weights:
            idx = KNNIndex(model._fit_X, model._y, len(model.classes_), model.n_neighbors, model.weights)
            _INDEXES[model] = idx
        return idx


def knn_predict(model: Any, X: np.ndarray, threads: int | None = None) -> np.ndarray:
    """``model.predict(X)`` for a fitted ``KNeighborsClassifier``, computed with :class:`KNNIndex`
    (``threads`` query threads; default: :func:`cropseg.parallel.task_threads`)."""
    if not supports(model) or not isinstance(X, np.ndarray) or X.ndim != 2:
        return model.predict(X)
    if threads is None:
        from .parallel import task_threads

        threads = task_threads()
    return model.classes_[index_for(model).predict(X, threads=threads)]
