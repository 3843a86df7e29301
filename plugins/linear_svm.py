"""Classifier ``linear_svm``: standardised features -> scikit-learn's LinearSVC, with probabilities from
CalibratedClassifierCV (sigmoid calibration on internal folds), ``C`` tuned by CV."""

from __future__ import annotations

from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.tuning import SklearnClassifier, Unpack, WeightedTuningOptions


class LinearSVM(SklearnClassifier):
    name = "linear_svm"
    hyperparameters = ("C",)

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 2000,
        calibration: str = "sigmoid",
        calibration_folds: int = 3,
        **tuning: Unpack[WeightedTuningOptions],
    ):
        super().__init__(C=C, **tuning)
        if calibration not in ("sigmoid", "isotonic"):
            raise ConfigError(f"{self.where}.calibration: 'sigmoid' or 'isotonic', got {calibration!r}")
        if not isinstance(calibration_folds, int) or calibration_folds < 2:
            raise ConfigError(f"{self.where}.calibration_folds: an integer of at least 2, got {calibration_folds!r}")
        self.max_iter, self.calibration, self.calibration_folds = max_iter, calibration, calibration_folds

    def build(self, **params: Any) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        svc = LinearSVC(
            C=float(params["C"]),
            dual="auto",
            max_iter=self.max_iter,
            class_weight=self.class_weight,
            random_state=self.seed,
        )
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("svm", CalibratedClassifierCV(svc, method=self.calibration, cv=self.calibration_folds)),
            ]
        )


@hookimpl
def cropseg_register_classifiers(register):
    register("linear_svm", LinearSVM)
