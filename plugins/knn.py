"""Classifier ``knn`` (the reference): scikit-learn's KNeighborsClassifier with k tuned by cross-validation.

The default grid is every odd k from 3 to 31 (odd: no ties between two classes); CV scores every k of a
fold from one neighbour query of the largest k, so the wide grid costs about what one k does. A chosen k
on the edge of the grid extends the grid (odd steps, a few rounds) and warns only if it is still on the
edge (:mod:`cropseg.tuning`). The seed study tuned k over 3..9 with 3-fold CV on pixels (``cv="random"``,
stratified, shuffled, seeded). ``cv="spatial"`` (the default) uses the framework's spatial block groups so
neighbouring pixels do not leak between folds; either way the chosen k is scored with both CVs. The CV
maximises the target (``scoring``, ``${evaluate.target}`` in the config) and, with ``threshold: auto``,
chooses the decision threshold on the crop vote fraction, which prediction then applies (from the same
vote-shaped search: crop needs ``floor(threshold * k) + 1`` of the k votes). KNeighborsClassifier takes
neither class weights nor sample weights: ``fit(..., balance="auto")`` (``train.balance=auto``) lets the CV
choose between the proportional sample and a balanced one (the majority class undersampled). The training
scene alone is used for tuning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropseg import FitResult, hookimpl
from cropseg.errors import ConfigError
from cropseg.tuning import BalancedSample, CVSpec, check_balance, check_untuned, tune, undersample, unwrap


class KNNClassifier:
    def __init__(
        self,
        k_grid: Sequence[int] = tuple(range(3, 32, 2)),
        cv_folds: int = 3,
        cv: str = "spatial",
        scoring: str = "crop_f1",
        weights: str = "uniform",
        algorithm: str = "auto",
        n_jobs: int = -1,
        seed: int = 0,
        threshold: str | float = "auto",
        grid_extend_rounds: int = 3,
    ):
        k_grid = [int(k) for k in ([k_grid] if isinstance(k_grid, int) else k_grid)]
        if not k_grid or min(k_grid) < 1:
            raise ConfigError(f"classifier.knn.k_grid: needs positive integers, got {k_grid!r}")
        if weights not in ("uniform", "distance"):
            raise ConfigError(f"classifier.knn.weights: 'uniform' or 'distance', got {weights!r}")
        self.spec = CVSpec(
            cv=cv,
            folds=cv_folds,
            scoring=scoring,
            seed=seed,
            where="classifier.knn",
            threshold=threshold,
            extend_rounds=grid_extend_rounds,
        )
        check_untuned(self.spec, len(k_grid), grid="k_grid")
        self.k_grid, self.cv_folds, self.cv, self.scoring = k_grid, cv_folds, cv, scoring
        self.weights, self.algorithm, self.n_jobs, self.seed = weights, algorithm, n_jobs, seed
        self.model_ = None
        self.threshold_ = 0.5

    def _estimator(self, k: int, balance: str = "proportional"):
        # scikit-learn's KNeighborsClassifier with the fast exact vote as predict (CV folds score with it)
        from cropseg.neighbors import FastKNeighborsClassifier

        est = FastKNeighborsClassifier(
            n_neighbors=k, weights=self.weights, algorithm=self.algorithm, n_jobs=self.n_jobs
        )
        return BalancedSample(est, self.seed) if balance == "sample" else est

    def min_training_pixels(self) -> int:
        """The smallest training sample the k grid can work with (every CV training fold holds k pixels)."""
        k = max(self.k_grid)
        folds = int(self.cv_folds)
        return k if self.cv == "none" else -(-k * folds // (folds - 1))

    def fit(
        self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, balance: str = "proportional"
    ) -> FitResult:
        n = len(y)
        usable = n if self.cv == "none" else n - -(-n // int(self.cv_folds))  # pixels a CV training fold keeps
        if max(self.k_grid) > usable:
            where = f"a CV training fold ({self.cv_folds} folds of {n} pixels)" if self.cv != "none" else "the sample"
            raise ConfigError(
                f"classifier.k_grid: k={max(self.k_grid)} is larger than the training sample: "
                f"{where} holds about {usable} pixels; use smaller k or more training pixels"
            )
        grid: dict[str, list] = {"k": list(self.k_grid)}
        balance = check_balance(balance, "classifier.knn.fit")
        if balance == "weights":
            raise ConfigError("classifier.knn: KNN takes no class weights (balance by sampling instead)")
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
        balanced = 2 * int(counts.min())
        balanced_usable = balanced if self.cv == "none" else balanced - -(-balanced // int(self.cv_folds))
        if balance == "auto":  # KNN takes no weights: the CV chooses between the sample as drawn and a balanced one
            grid["balance"] = ["proportional"]
            if self.cv != "none" and max(self.k_grid) <= balanced_usable:
                grid["balance"].append("sample")
        elif balance == "sample":
            grid["balance"] = ["sample"]
        # grid extension stops where a CV training fold (or the sample) runs out of pixels
        tuned = tune(
            self._estimator,
            grid,
            X,
            y,
            groups,
            self.spec,
            predict_all=self._predict_all,
            limits={"k": (1, max(1, balanced_usable if "sample" in grid.get("balance", []) else usable))},
        )
        self.model_ = unwrap(tuned.estimator)
        self.threshold_ = tuned.threshold
        tuned.params.setdefault("balance", grid.get("balance", ["proportional"])[0])
        return tuned.fit_result()

    def _predict_all(
        self, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, candidates: list[dict]
    ) -> list[np.ndarray]:
        """Every candidate's crop vote fraction (``predict_proba``'s crop column) for ``X_test`` from one
        query of the largest k per balance mode (:func:`cropseg.neighbors.kneighbors_labels`): the k nearest
        are the first k of the k_max nearest (uniform weights: crop votes / k; distance weights 1/d, exact
        matches only, as scikit-learn). A balanced candidate queries the fold's balanced subset
        (:func:`cropseg.tuning.undersample`, as its fit would). A wide grid then costs about one query per
        CV fold and balance mode."""
        out: list[np.ndarray] = [np.empty(0)] * len(candidates)
        for mode in dict.fromkeys(c.get("balance", "proportional") for c in candidates):
            which = [j for j, c in enumerate(candidates) if c.get("balance", "proportional") == mode]
            Xt, yt = X_train, y_train
            if mode == "sample":
                keep = undersample(y_train, self.seed)
                Xt, yt = X_train[keep], y_train[keep]
            for j, p in zip(which, self._vote_fractions(Xt, yt, X_test, [int(candidates[j]["k"]) for j in which])):
                out[j] = p
        return out

    def _vote_fractions(self, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, ks: list[int]):
        from cropseg.neighbors import kneighbors_labels

        yi = (np.asarray(y_train) == 1).astype(np.int64)
        out = [np.empty(len(X_test)) for _ in ks]
        for lo in range(0, len(X_test), 200_000):  # bounded memory: (rows, k_max) per chunk
            d2, lab = kneighbors_labels(X_train, yi, X_test[lo : lo + 200_000], max(ks))
            if self.weights == "distance":
                with np.errstate(divide="ignore"):
                    w = 1.0 / np.sqrt(d2)
                exact = ~np.isfinite(w)
                w = np.where(exact.any(axis=1, keepdims=True), exact.astype(float), w)
            else:
                w = np.ones(d2.shape)
            crop, total = np.cumsum(w * (lab == 1), axis=1), np.cumsum(w, axis=1)
            for j, k in enumerate(ks):
                c = min(k, lab.shape[1]) - 1
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[j][lo : lo + len(lab)] = np.where(total[:, c] > 0, crop[:, c] / total[:, c], 0.0)
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The fitted KNeighborsClassifier's labels, computed by :func:`cropseg.neighbors.knn_predict`
        (numba KD-trees, Morton-ordered queries, warm-started vote-shaped searches), several times faster
        than scikit-learn's ``KNeighborsClassifier.predict``. It agrees with scikit-learn except where
        training pixels tie in distance at the k-th neighbour (either library may keep a different one of
        the equidistant pixels); see :mod:`cropseg.neighbors`."""
        from cropseg.neighbors import knn_predict

        return knn_predict(self.model_, X, threshold=getattr(self, "threshold_", 0.5)).astype(np.uint8)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(non-crop, crop) vote fractions: from the tuning CV's neighbour query (numba KD-tree) where
        :func:`cropseg.neighbors.supports` the model, else scikit-learn's ``predict_proba``."""
        from cropseg.neighbors import supports

        m = self.model_
        if supports(m) and isinstance(X, np.ndarray) and X.ndim == 2 and list(m.classes_) == [0, 1]:
            crop = self._vote_fractions(m._fit_X, m.classes_[m._y], X, [m.n_neighbors])[0]
            return np.column_stack([1.0 - crop, crop])
        return self.model_.predict_proba(X)


@hookimpl
def cropseg_register_classifiers(register):
    register("knn", KNNClassifier)
