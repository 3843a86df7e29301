"""Classifier ``nearest_centroid``: each pixel gets the class of the nearest class mean of the standardised
training features (scikit-learn's NearestCentroid); the centroid shrinkage is tuned by cropseg's CV.

An example of a third-party cropseg plugin: one module, two hooks (the classifier and the directory of
its Hydra config), announced in pyproject.toml's ``[project.entry-points.cropseg]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.tuning import SklearnClassifier

__version__ = "0.1.0"


class NearestCentroidClassifier(SklearnClassifier):
    name = "nearest_centroid"
    hyperparameters = ("shrink_threshold",)

    def __init__(
        self,
        shrink_threshold: float | None = None,
        metric: str = "euclidean",
        grid: Mapping[str, Sequence[Any]] | None = None,
        cv: str = "spatial",
        cv_folds: int = 3,
        scoring: str = "f1_weighted",
        seed: int = 0,
    ):
        # the base validates cv, cv_folds, scoring and grid, and does tuning, predict and predict_proba
        super().__init__(
            grid=grid, cv=cv, cv_folds=cv_folds, scoring=scoring, seed=seed, shrink_threshold=shrink_threshold
        )
        if metric not in ("euclidean", "manhattan"):
            raise ConfigError(f"classifier.nearest_centroid.metric: 'euclidean' or 'manhattan', got {metric!r}")
        self.metric = metric

    def build(self, shrink_threshold: float | None = None) -> Any:
        # heavy imports inside functions: `cropseg plugins` stays fast
        from sklearn.neighbors import NearestCentroid
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("centroid", NearestCentroid(metric=self.metric, shrink_threshold=shrink_threshold)),
            ]
        )


@hookimpl
def cropseg_register_classifiers(register):
    register("nearest_centroid", NearestCentroidClassifier)


@hookimpl
def cropseg_config_dirs():
    # conf/classifier/nearest_centroid.yaml makes `cropseg classifier=nearest_centroid` work
    return [str(files(__name__) / "conf")]
