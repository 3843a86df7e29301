"""Classifier ``knn`` (the reference): scikit-learn's KNeighborsClassifier with k tuned by cross-validation.

The default grid is every odd k from 3 to 31 (odd: no ties between two classes); CV scores every k of a
fold from one neighbour query of the largest k, so the wide grid costs about what one k does. A chosen k
on the edge of the grid warns (:mod:`cropseg.tuning`). The seed study tuned k over 3..9 with 3-fold CV on pixels (``cv="random"``, stratified, shuffled, seeded).
``cv="spatial"`` (the default) uses the framework's spatial block groups so neighbouring pixels do not leak
between folds; either way the chosen k is scored with both CVs (:mod:`cropseg.tuning`). The training scene
alone is used for tuning. KNeighborsClassifier takes neither class weights nor sample weights: only
balanced sampling (``train.balance=true``) balances its classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropseg import FitResult, hookimpl
from cropseg.errors import ConfigError
from cropseg.tuning import CVSpec, check_untuned, tune


class KNNClassifier:
    def __init__(
        self,
        k_grid: Sequence[int] = tuple(range(3, 32, 2)),
        cv_folds: int = 3,
        cv: str = "spatial",
        scoring: str = "f1_weighted",
        weights: str = "uniform",
        algorithm: str = "auto",
        n_jobs: int = -1,
        seed: int = 0,
    ):
        k_grid = [int(k) for k in ([k_grid] if isinstance(k_grid, int) else k_grid)]
        if not k_grid or min(k_grid) < 1:
            raise ConfigError(f"classifier.knn.k_grid: needs positive integers, got {k_grid!r}")
        if weights not in ("uniform", "distance"):
            raise ConfigError(f"classifier.knn.weights: 'uniform' or 'distance', got {weights!r}")
        self.spec = CVSpec(cv=cv, folds=cv_folds, scoring=scoring, seed=seed, where="classifier.knn")
        check_untuned(self.spec, len(k_grid), grid="k_grid")
        self.k_grid, self.cv_folds, self.cv, self.scoring = k_grid, cv_folds, cv, scoring
        self.weights, self.algorithm, self.n_jobs, self.seed = weights, algorithm, n_jobs, seed
        self.model_ = None

    def _estimator(self, k: int):
        # scikit-learn's KNeighborsClassifier with the fast exact vote as predict (CV folds score with it)
        from cropseg.neighbors import FastKNeighborsClassifier

        return FastKNeighborsClassifier(
            n_neighbors=k, weights=self.weights, algorithm=self.algorithm, n_jobs=self.n_jobs
        )

    def min_training_pixels(self) -> int:
        """The smallest training sample the k grid can work with (every CV training fold holds k pixels)."""
        k = max(self.k_grid)
        folds = int(self.cv_folds)
        return k if self.cv == "none" else -(-k * folds // (folds - 1))

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> FitResult:
        n = len(y)
        usable = n if self.cv == "none" else n - -(-n // int(self.cv_folds))  # pixels a CV training fold keeps
        if max(self.k_grid) > usable:
            where = f"a CV training fold ({self.cv_folds} folds of {n} pixels)" if self.cv != "none" else "the sample"
            raise ConfigError(
                f"classifier.k_grid: k={max(self.k_grid)} is larger than the training sample: "
                f"{where} holds about {usable} pixels; use smaller k or more training pixels"
            )
        tuned = tune(self._estimator, {"k": self.k_grid}, X, y, groups, self.spec, predict_all=self._predict_all)
        self.model_ = tuned.estimator
        return tuned.fit_result()

    def _predict_all(
        self, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, candidates: list[dict]
    ) -> list[np.ndarray]:
        """Every candidate k's labels for ``X_test`` from one query of the largest k
        (:func:`cropseg.neighbors.kneighbors_labels`): the k nearest are the first k of the k_max nearest,
        and the vote follows scikit-learn (ties to the first class; distance weights 1/d, exact matches
        only). A wide grid then costs about one query per CV fold."""
        from cropseg.neighbors import kneighbors_labels

        ks = [int(c["k"]) for c in candidates]
        classes, yi = np.unique(y_train, return_inverse=True)
        out = [np.empty(len(X_test), dtype=y_train.dtype) for _ in ks]
        for lo in range(0, len(X_test), 200_000):  # bounded memory: (rows, k_max) per chunk
            d2, lab = kneighbors_labels(X_train, yi, X_test[lo : lo + 200_000], max(ks))
            if self.weights == "distance":
                with np.errstate(divide="ignore"):
                    w = 1.0 / np.sqrt(d2)
                exact = ~np.isfinite(w)
                w = np.where(exact.any(axis=1, keepdims=True), exact.astype(float), w)
            else:
                w = np.ones(d2.shape)
            votes = np.stack([np.cumsum(w * (lab == c), axis=1) for c in range(len(classes))], axis=2)
            for j, k in enumerate(ks):
                out[j][lo : lo + len(lab)] = classes[np.argmax(votes[:, min(k, lab.shape[1]) - 1, :], axis=1)]
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The fitted KNeighborsClassifier's labels, computed by :func:`cropseg.neighbors.knn_predict`
        (numba KD-trees, Morton-ordered queries, warm-started vote-shaped searches), several times faster
        than scikit-learn's ``KNeighborsClassifier.predict``. It agrees with scikit-learn except where
        training pixels tie in distance at the k-th neighbour (either library may keep a different one of
        the equidistant pixels); see :mod:`cropseg.neighbors`."""
        from cropseg.neighbors import knn_predict

        return knn_predict(self.model_, X).astype(np.uint8)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)


@hookimpl
def cropseg_register_classifiers(register):
    register("knn", KNNClassifier)
