"""Fast exact k-nearest-neighbour prediction for a fitted scikit-learn ``KNeighborsClassifier``.

:func:`knn_predict` gives the same labels as ``model.predict(X)`` (same training set, ``k`` and
``weights``) several times faster, for the Euclidean metric on dense data. What makes it fast:

* **Morton order.** The queries are sorted along a Morton (Z-order) curve over the training data's
  bounding box first (and the answers put back in the original order), so consecutive queries are close
  in feature space and walk the same tree nodes.
* **Warm-started searches.** Each KD-tree search starts bounded by the previous query's neighbours
  (their largest distance to this query: at least that many points lie within it), which prunes most of
  the tree from the root on. The tree and the searches are compiled with numba
  (:mod:`cropseg._knn_kernel`); scikit-learn's and pykdtree's trees cannot be seeded with a bound.
* **A vote-shaped search for crop / non-crop.** With two classes and uniform weights (the reference
  configuration) class 1 wins iff it holds ``m = k // 2 + 1`` of the ``k`` nearest, i.e. iff its ``m``-th
  nearest point is closer than class 0's ``(k - m + 1)``-th. One tree per class: a small search in the
  likely winner's tree, then a search in the other tree bounded by that distance, which stops early
  wherever the other class is far away. No neighbour list is sorted, no ``scipy.stats.mode``.
* **Threads.** Contiguous chunks of the rows are sorted and voted on threads (the compiled kernels
  release the GIL), as many as :func:`cropseg.parallel.task_threads` allows.

Pixel vectors are not deduplicated: on PlanetScope-like data (and the bundled sample) nearly every
pixel's 4-band vector is distinct, so finding repeats would cost more than it saves.

The vote follows scikit-learn exactly: ties between classes go to the first class in ``classes_``
(uniform weights: ``scipy.stats.mode`` keeps the smallest; ``weights="distance"``: weights ``1 / d``, and a
pixel at distance 0 from training pixels gets weight 1 for those and 0 for the others). Distances are
float64 squared Euclidean summed over the features in order, as scikit-learn's KD-tree computes them.
Labels can differ from scikit-learn's only where several training pixels are equally far from a pixel
at the ``k``-th neighbour's distance (the ``k``-th and ``(k+1)``-th nearest tie, e.g. duplicated training
vectors): both libraries then keep ``k`` of the equidistant pixels, but not necessarily the same ones,
and when those carry different classes the vote can differ (the two-class search gives such a tie to
class 0).

Any other configuration (another metric, callable weights, several outputs, sparse input) falls back to
``model.predict``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_CHECKED_CACHE = False
#: measured cold compile time of the kernels (``python -m cropseg.neighbors``): 13 s of CPU, one core; more
#: wall time on a busy machine (62 s with 7 jobs on 2 cores)
COMPILE_SECONDS = 15
_INDEXES: weakref.WeakKeyDictionary[Any, KNNIndex] = weakref.WeakKeyDictionary()
LEAF_SIZE = 16
MIN_CHUNK = 20_000  # queries per thread below which a second thread costs more than it saves


class KNNIndex:
    """KD-trees over training vectors ``X`` with class indices ``y`` (0..n_classes-1): exact votes.

    Two classes with uniform weights get one tree per class (:func:`cropseg._knn_kernel.vote_binary`);
    anything else one tree over all points (:func:`cropseg._knn_kernel.vote`)."""

    def __init__(
        self, X: np.ndarray, y: np.ndarray, n_classes: int, k: int, weights: str = "uniform", m: int | None = None
    ):
        from . import _knn_kernel as kernel

        _announce_compile(kernel)
        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        X = np.ascontiguousarray(X, dtype=np.float64)
        if not 1 <= k <= len(X):
            raise ValueError(f"k must be in 1..{len(X)} (the training pixels), got {k}")
        self.k, self.weights, self.n_classes = int(k), weights, int(n_classes)
        y = np.asarray(y, dtype=np.int64)
        # class 1 needs m of the k votes: the majority, or a decision threshold's count (see vote_binary)
        m = self.k // 2 + 1 if m is None else int(m)
        if not 1 <= m <= self.k:
            raise ValueError(f"m (votes class 1 needs) must be in 1..{self.k}, got {m}")
        self.m = m
        counts = np.bincount(y, minlength=self.n_classes)
        self.binary = self.n_classes == 2 and weights == "uniform" and counts[0] >= self.k - m + 1 and counts[1] >= m
        if self.binary:
            self._trees = [self._tree(kernel, X[y == c]) for c in (0, 1)]
        else:
            pts, perm, *nodes = kernel.build_tree(X, LEAF_SIZE)
            self._trees = [(pts, *nodes)]
            self._labels = np.ascontiguousarray(y[perm])
        self._lo = X.min(axis=0)
        self._scale = 255.0 / np.maximum(X.max(axis=0) - self._lo, 1e-12)
        self._bits = max(1, min(8, 64 // X.shape[1]))

    @staticmethod
    def _tree(kernel: Any, X: np.ndarray) -> tuple[np.ndarray, ...]:
        pts, _perm, *nodes = kernel.build_tree(np.ascontiguousarray(X), LEAF_SIZE)
        return (pts, *nodes)

    def _order(self, X: np.ndarray) -> np.ndarray:
        """An order of the rows of ``X`` along a Morton (Z-order) curve over the training data's bounding
        box: consecutive queries are then close, and each search starts from a tight bound."""
        from . import _knn_kernel as kernel

        codes = np.empty(len(X), dtype=np.uint64)
        kernel.morton_codes(X, self._lo, self._scale, self._bits, codes)
        return np.argsort(codes, kind="stable")

    def _vote(self, Q: np.ndarray, out: np.ndarray) -> None:
        from . import _knn_kernel as kernel

        if self.binary:  # each tree array as a pair (class 0's, class 1's)
            kernel.vote_binary(Q, *zip(*self._trees), self.k, self.m, out)  # type: ignore[call-arg]  # numba dispatcher
        else:
            pts, *nodes = self._trees[0]
            kernel.vote(
                Q,
                pts,
                self._labels,
                *nodes,
                self.k,
                self.n_classes,  # type: ignore[call-arg]  # numba
                self.weights == "distance",
                out,
            )

    def _predict_rows(self, X: np.ndarray, out: np.ndarray) -> None:
        order = self._order(X)
        Q = np.ascontiguousarray(X[order], dtype=np.float64)
        voted = np.empty(len(Q), dtype=np.int64)
        self._vote(Q, voted)
        out[order] = voted

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Class index (into the model's ``classes_``) per row of ``X`` (n, f); ``threads`` threads each sort
        and vote a contiguous chunk of the rows (``None``: every core)."""
        X = np.asarray(X)
        out = np.empty(len(X), dtype=np.intp)
        if len(X) == 0:
            return out
        if threads is None:
            from .parallel import available_cores

            threads = available_cores()
        want = max(1, threads)
        n_chunks = max(1, min(want, len(X) // MIN_CHUNK))
        if n_chunks == 1:
            self._predict_rows(X, out)
            return out
        cuts = np.linspace(0, len(X), n_chunks + 1).astype(np.intp)
        with ThreadPoolExecutor(n_chunks, thread_name_prefix="cropseg-knn") as pool:
            list(
                pool.map(
                    lambda i: self._predict_rows(X[cuts[i] : cuts[i + 1]], out[cuts[i] : cuts[i + 1]]), range(n_chunks)
                )
            )
        return out


def kneighbors_labels(
    X: np.ndarray, y: np.ndarray, Q: np.ndarray, k: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and labels (class indices ``y``) of the ``k`` nearest rows of ``X`` to each row of
    ``Q``, nearest first, both (len(Q), k): one KD-tree, Morton-ordered warm-started searches, threaded
    chunks. Cross-validation votes every k of a grid from one such query."""
    from . import _knn_kernel as kernel

    X = np.ascontiguousarray(X, dtype=np.float64)
    k = min(int(k), len(X))
    pts, perm, *nodes = kernel.build_tree(X, LEAF_SIZE)
    labels = np.ascontiguousarray(np.asarray(y, dtype=np.int64)[perm])
    lo = X.min(axis=0)
    scale = 255.0 / np.maximum(X.max(axis=0) - lo, 1e-12)
    bits = max(1, min(8, 64 // X.shape[1]))
    Q = np.asarray(Q, dtype=np.float64)
    dist = np.empty((len(Q), k))
    lab = np.empty((len(Q), k), dtype=np.int64)

    def rows(a: int, b: int) -> None:
        part = np.ascontiguousarray(Q[a:b])
        codes = np.empty(len(part), dtype=np.uint64)
        kernel.morton_codes(part, lo, scale, bits, codes)
        order = np.argsort(codes, kind="stable")
        d_out = np.empty((len(part), k))
        l_out = np.empty((len(part), k), dtype=np.int64)
        kernel.kneighbors(np.ascontiguousarray(part[order]), pts, labels, *nodes, k, d_out, l_out)  # type: ignore[call-arg]  # numba
        dist[a + order], lab[a + order] = d_out, l_out

    if threads is None:
        from .parallel import task_threads

        threads = task_threads()
    n_chunks = max(1, min(max(1, threads), len(Q) // MIN_CHUNK))
    cuts = np.linspace(0, len(Q), n_chunks + 1).astype(np.intp)
    with ThreadPoolExecutor(n_chunks, thread_name_prefix="cropseg-knn") as pool:
        list(pool.map(lambda i: rows(int(cuts[i]), int(cuts[i + 1])), range(n_chunks)))
    return dist, lab


def kernels_cached(kernel: Any = None) -> bool | None:
    """Whether numba's on-disk cache holds the compiled KNN kernels (None when it cannot tell)."""
    if kernel is None:
        from . import _knn_kernel as kernel
    try:
        return all(
            Path(f._cache._cache_file._index_path).is_file()
            for f in (kernel.build_tree, kernel.morton_codes, kernel.vote, kernel.vote_binary)
        )
    except AttributeError:  # another numba version's internals
        return None


def _announce_compile(kernel: Any) -> None:
    """Say so (once per process) when the first KNN search will compile the kernels rather than load them."""
    global _CHECKED_CACHE
    if _CHECKED_CACHE:
        return
    _CHECKED_CACHE = True
    if kernels_cached(kernel) is False:
        log.info(
            "compiling KNN kernels (once, ~%d s on an idle machine; later runs load them from numba's "
            "cache; `make setup` compiles them ahead)",
            COMPILE_SECONDS,
        )


def warmup() -> float:
    """Compile (or load from numba's cache) every KNN kernel with the argument types runs use: float32 and
    float64 pixels, the two-class vote and the general one. Returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    X = rng.random((300, 4), dtype=np.float32)
    y = (X[:, 3] > 0.5).astype(np.int64)
    for weights in ("uniform", "distance"):
        model = FastKNeighborsClassifier(n_neighbors=3, weights=weights).fit(X, y)
        model.predict(X)
        model.predict(X.astype(np.float64))
    return time.perf_counter() - start


def supports(model: Any) -> bool:
    """Whether :func:`knn_predict` reproduces ``model.predict`` (else it falls back to it)."""
    metric = getattr(model, "effective_metric_", None)
    fit_X = getattr(model, "_fit_X", None)
    return (
        getattr(model, "weights", None) in ("uniform", "distance")
        and metric == "euclidean"
        and not getattr(model, "outputs_2d_", True)
        and isinstance(fit_X, np.ndarray)
        and fit_X.ndim == 2
        and 1 <= getattr(model, "n_neighbors", 0) <= len(fit_X)
    )


def index_for(model: Any, m: int | None = None) -> KNNIndex:
    """The :class:`KNNIndex` of a fitted ``KNeighborsClassifier`` (``m``: the votes class 1 needs; None: the
    majority), built on first use and cached per model."""
    with _LOCK:
        idx = _INDEXES.get(model)
        want = model.n_neighbors // 2 + 1 if m is None else m
        if idx is None or idx.k != model.n_neighbors or idx.weights != model.weights or idx.m != want:
            idx = KNNIndex(model._fit_X, model._y, len(model.classes_), model.n_neighbors, model.weights, want)
            _INDEXES[model] = idx
        return idx


def votes_needed(k: int, threshold: float) -> int:
    """The crop votes of ``k`` a pixel needs for its vote fraction to be above ``threshold``:
    ``floor(threshold * k) + 1`` (``k + 1``: never)."""
    return int(np.floor(threshold * k + 1e-9)) + 1


def knn_predict(model: Any, X: np.ndarray, threads: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """``model.predict(X)`` for a fitted ``KNeighborsClassifier``, computed with :class:`KNNIndex`
    (``threads`` query threads; default: :func:`cropseg.parallel.task_threads`). With a ``threshold`` other
    than 0.5 (two classes 0/1): class 1 where its vote fraction (``predict_proba``) is above it, from the
    same vote-shaped search (uniform weights) or ``predict_proba`` (otherwise)."""
    majority = threshold == 0.5
    if not majority and list(getattr(model, "classes_", [])) != [0, 1]:
        raise ValueError("a decision threshold needs a two-class model with classes 0 and 1")
    if not supports(model) or not isinstance(X, np.ndarray) or X.ndim != 2:
        if majority:
            return KNeighborsClassifier.predict(model, X)
        return (KNeighborsClassifier.predict_proba(model, X)[:, 1] > threshold).astype(model.classes_.dtype)
    if threads is None:
        from .parallel import task_threads

        threads = task_threads()
    if majority:
        return model.classes_[index_for(model).predict(X, threads=threads)]
    m = votes_needed(model.n_neighbors, threshold)
    if m > model.n_neighbors:
        return np.zeros(len(X), dtype=model.classes_.dtype)
    idx = index_for(model, m)
    if not idx.binary:  # distance weights, or a class with too few pixels for the two-tree search
        return (KNeighborsClassifier.predict_proba(model, X)[:, 1] > threshold).astype(model.classes_.dtype)
    return model.classes_[idx.predict(X, threads=threads)]


class FastKNeighborsClassifier(KNeighborsClassifier):
    """scikit-learn's ``KNeighborsClassifier`` (same parameters, ``fit``, ``kneighbors``, ``predict_proba``)
    whose ``predict`` is :func:`knn_predict`: the same labels but for distance ties at the ``k``-th
    neighbour, several times faster; cross-validation folds score with it too."""

    def predict(self, X: Any) -> np.ndarray:
        return knn_predict(self, X if isinstance(X, np.ndarray) else np.asarray(X))


if __name__ == "__main__":  # `python -m cropseg.neighbors`: compile the kernels ahead (`make setup` runs it)
    _CHECKED_CACHE = True
    cached = kernels_cached()
    print(
        "cropseg: KNN kernels "
        + ("in numba's cache, loading" if cached else f"compiling (once, ~{COMPILE_SECONDS} s on an idle machine)"),
        flush=True,
    )
    print(f"cropseg: KNN kernels ready in {warmup():.1f} s", flush=True)
