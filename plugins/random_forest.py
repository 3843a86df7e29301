"""Classifier ``random_forest``: scikit-learn's RandomForestClassifier, ``max_depth`` tuned by CV.

Each tree sees a bootstrap sample of ``max_samples`` of the training pixels (0.1 by default: the forest
stays fast on the 100k-pixel default sample with little loss). ``class_weight: balanced`` reweights
classes inversely to their frequency.
"""

from __future__ import annotations

from typing import Any

from cropseg import hookimpl
from cropseg.tuning import SklearnClassifier, Unpack, WeightedTuningOptions


class RandomForest(SklearnClassifier):
    name = "random_forest"
    hyperparameters = ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "max_samples")

    def __init__(
        self,
        n_estimators: int = 50,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        max_features: str | float | int | None = "sqrt",
        max_samples: float | int | None = 0.1,
        n_jobs: int = -1,
        **tuning: Unpack[WeightedTuningOptions],
    ):
        super().__init__(
            **tuning,
            n_estimators=n_estimators,
            max_depth=max_depth,
            min_samples_leaf=min_samples_leaf,
            max_features=max_features,
            max_samples=max_samples,
        )
        self.n_jobs = n_jobs

    def grid_limits(self) -> dict[str, tuple[float | None, float | None]]:
        # max_samples and max_features are fractions (at most 1) when given as floats, counts when integers
        return {
            name: (None, 1.0)
            for name in ("max_samples", "max_features")
            if any(isinstance(v, float) for v in self.grid.get(name, []))
        }

    def build(self, **params: Any) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            **params, class_weight=self.class_weight, n_jobs=self.n_jobs, random_state=self.seed
        )


@hookimpl
def cropseg_register_classifiers(register):
    register("random_forest", RandomForest)
