"""Classifier ``nearest_centroid``: each pixel gets the class of the nearest class mean of the standardised
training features (scikit-learn's NearestCentroid); the centroid shrinkage is tuned by cropseg's CV.

An example of a third-party cropseg plugin: one module, two hooks (the classifier and the directory of
its Hydra config), announced in pyproject.toml's ``[project.entry-points.cropseg]``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.tuning import SklearnClassifier, TuningOptions, Unpack

__version__ = "0.1.0"


class NearestCentroidClassifier(SklearnClassifier):
    name = "nearest_centroid"
    hyperparameters = ("shrink_threshold",)

    def __init__(
        self,
        shrink_threshold: float | None = None,
        metric: str = "euclidean",
        **tuning: Unpack[TuningOptions],
    ):
        # the tuning options (grid, cv, cv_folds, scoring, threshold, grid_extend_rounds, seed) are the base's:
        # it validates them and does tuning, predict and predict_proba
        super().__init__(shrink_threshold=shrink_threshold, **tuning)
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
