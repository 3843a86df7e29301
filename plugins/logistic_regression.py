"""Classifier ``logistic_regression``: standardised features -> scikit-learn's LogisticRegression, in one
Pipeline (the scaler is fitted inside each CV fold), inverse regularisation ``C`` tuned by CV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cropseg import hookimpl
from cropseg.tuning import SklearnClassifier


class LogisticRegressionClassifier(SklearnClassifier):
    name = "logistic_regression"
    hyperparameters = ("C",)

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 1000,
        class_weight: str | None = None,
        grid: Mapping[str, Sequence[Any]] | None = None,
        cv: str = "spatial",
        cv_folds: int = 3,
        scoring: str = "crop_f1",
        threshold: str | float = "auto",
        grid_extend_rounds: int = 3,
        seed: int = 0,
    ):
        super().__init__(
            grid=grid,
            cv=cv,
            cv_folds=cv_folds,
            scoring=scoring,
            seed=seed,
            threshold=threshold,
            grid_extend_rounds=grid_extend_rounds,
            class_weight=class_weight,
            C=C,
        )
        self.max_iter = max_iter

    def build(self, **params: Any) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "logreg",
                    LogisticRegression(
                        C=float(params["C"]),
                        max_iter=self.max_iter,
                        class_weight=self.class_weight,
                        random_state=self.seed,
                    ),
                ),
            ]
        )


@hookimpl
def cropseg_register_classifiers(register):
    register("logistic_regression", LogisticRegressionClassifier)
