"""Classifier ``logistic_regression``: standardised features -> scikit-learn's LogisticRegression, in one
Pipeline (the scaler is fitted inside each CV fold), inverse regularisation ``C`` tuned by CV."""

from __future__ import annotations

from typing import Any

from cropseg import hookimpl
from cropseg.tuning import SklearnClassifier, Unpack, WeightedTuningOptions


class LogisticRegressionClassifier(SklearnClassifier):
    name = "logistic_regression"
    hyperparameters = ("C",)

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 1000,
        **tuning: Unpack[WeightedTuningOptions],
    ):
        super().__init__(C=C, **tuning)
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
