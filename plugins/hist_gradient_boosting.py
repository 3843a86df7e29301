"""Classifier ``hist_gradient_boosting``: scikit-learn's HistGradientBoostingClassifier (LightGBM-style
histogram boosting), ``max_leaf_nodes`` tuned by CV; early stopping on an internal validation split.

``n_threads`` (default 1) caps its OpenMP threads: on a small, shared machine more threads made fitting
several times slower (threads spin-waiting for busy cores), while one thread is fast on the default
sample.
"""

from __future__ import annotations

from typing import Any

from cropseg import hookimpl
from cropseg.tuning import SklearnClassifier, Unpack, WeightedTuningOptions, check_threads


class HistGradientBoosting(SklearnClassifier):
    name = "hist_gradient_boosting"
    hyperparameters = (
        "learning_rate",
        "max_iter",
        "max_leaf_nodes",
        "max_depth",
        "min_samples_leaf",
        "l2_regularization",
    )

    #: how far grid extension may go: a tree needs 2 leaves; a learning rate above 1 overshoots
    limits = {"max_leaf_nodes": (2, None), "learning_rate": (None, 1.0)}

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_iter: int = 50,
        max_leaf_nodes: int = 31,
        max_depth: int | None = None,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: bool | str = "auto",
        n_threads: int | None = 1,
        **tuning: Unpack[WeightedTuningOptions],
    ):
        super().__init__(
            **tuning,
            learning_rate=learning_rate,
            max_iter=max_iter,
            max_leaf_nodes=max_leaf_nodes,
            max_depth=max_depth,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
        )
        self.early_stopping = early_stopping
        self.n_threads = check_threads(n_threads, self.where)

    def build(self, **params: Any) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            **params, early_stopping=self.early_stopping, class_weight=self.class_weight, random_state=self.seed
        )

    def describe(self, model: Any) -> dict[str, Any]:
        return {"n_iter": int(model.n_iter_)}


@hookimpl
def cropseg_register_classifiers(register):
    register("hist_gradient_boosting", HistGradientBoosting)
