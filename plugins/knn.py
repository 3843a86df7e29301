"""Classifier ``knn`` (the reference): scikit-learn's KNeighborsClassifier with k tuned by cross-validation.

The seed study tuned k over 3..9 with 3-fold CV on pixels. ``cv="random"`` does that (stratified, shuffled,
seeded); ``cv="spatial"`` uses the framework's spatial block groups (GroupKFold) so neighbouring pixels do
not leak between folds. The training scene alone is used for tuning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropseg import FitResult, hookimpl
from cropseg.errors import ConfigError


class KNNClassifier:
    def __init__(self, k_grid: Sequence[int] = (3, 4, 5, 6, 7, 8, 9), cv_folds: int = 3, cv: str = "random",
                 scoring: str = "f1_weighted", weights: str = "uniform", algorithm: str = "auto",
                 n_jobs: int = -1, seed: int = 0):
        k_grid = [int(k) for k in ([k_grid] if isinstance(k_grid, int) else k_grid)]
        if not k_grid or min(k_grid) < 1:
            raise ConfigError(f"classifier.knn.k_grid: needs positive integers, got {k_grid!r}")
        if cv not in ("random", "spatial"):
            raise ConfigError(f"classifier.knn.cv: 'random' or 'spatial', got {cv!r}")
        if weights not in ("uniform", "distance"):
            raise ConfigError(f"classifier.knn.weights: 'uniform' or 'distance', got {weights!r}")
        if cv_folds < 2:
            raise ConfigError(f"classifier.knn.cv_folds: at least 2, got {cv_folds!r}")
        self.k_grid, self.cv_folds, self.cv, self.scoring = k_grid, cv_folds, cv, scoring
        self.weights, self.algorithm, self.n_jobs, self.seed = weights, algorithm, n_jobs, seed
        self.model_ = None

    def _estimator(self, k: int):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=k, weights=self.weights, algorithm=self.algorithm, n_jobs=self.n_jobs)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> FitResult:
        from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold

        if len(self.k_grid) == 1:
            self.model_ = self._estimator(self.k_grid[0]).fit(X, y)
            return FitResult(params={"k": self.k_grid[0]})
        if self.cv == "spatial":
            if groups is None:
                raise ConfigError("classifier.knn.cv=spatial: the pipeline supplied no spatial groups")
            if len(np.unique(groups)) < self.cv_folds:
                raise ConfigError(f"classifier.knn.cv=spatial: fewer spatial blocks than cv_folds={self.cv_folds}")
            splitter = GroupKFold(n_splits=self.cv_folds)
        else:
            splitter = StratifiedKFold(n_splits=self.cv_folds, shuffle=True, random_state=self.seed)
        search = GridSearchCV(self._estimator(self.k_grid[0]), {"n_neighbors": self.k_grid}, cv=splitter,
                              scoring=self.scoring, n_jobs=1, refit=True)
        search.fit(X, y, groups=groups if self.cv == "spatial" else None)
        self.model_ = search.best_estimator_
        res = search.cv_results_
        metrics = {f"cv_{self.scoring}_k{k}": float(m) for k, m in zip(res["param_n_neighbors"], res["mean_test_score"])}
        best = int(search.best_index_)
        metrics.update({"cv_score": float(res["mean_test_score"][best]), "cv_score_std": float(res["std_test_score"][best])})
        return FitResult(params={"k": int(search.best_params_["n_neighbors"]), "cv": self.cv,
                                 "cv_scoring": self.scoring}, metrics=metrics)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The fitted KNeighborsClassifier's labels, computed by :func:`cropseg.neighbors.knn_predict`: a
        cKDTree queried by all the task's threads with a cheap exact vote, several times faster than
        ``model_.predict``. It agrees with scikit-learn except where training pixels tie in distance at the
        k-th neighbour (either library may keep a different one of the equidistant pixels); see
        :mod:`cropseg.neighbors`."""
        from cropseg.neighbors import knn_predict

        return knn_predict(self.model_, X).astype(np.uint8)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)


@hookimpl
def cropseg_register_classifiers(register):
    register("knn", KNNClassifier)
