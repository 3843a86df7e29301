"""Classifier ``mlp``: standardised features -> scikit-learn's MLPClassifier (Adam, early stopping on an
internal validation split), L2 penalty ``alpha`` tuned by CV.

MLPClassifier has no ``class_weight``; ``class_weight: balanced`` passes balanced per-pixel
``sample_weight`` to ``fit`` instead (scikit-learn >= 1.7). ``n_threads`` (default 1) caps its BLAS threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.tuning import SklearnClassifier, Unpack, WeightedTuningOptions, accepts, check_threads


class MLP(SklearnClassifier):
    name = "mlp"
    hyperparameters = ("hidden_layer_sizes", "alpha", "learning_rate_init", "batch_size")
    sample_weight_param = "mlp__sample_weight"
    limits = {"learning_rate_init": (None, 1.0)}

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (32,),
        alpha: float = 1e-4,
        learning_rate_init: float = 0.01,
        batch_size: int = 1024,
        max_iter: int = 100,
        n_iter_no_change: int = 3,
        validation_fraction: float = 0.1,
        n_threads: int | None = 1,
        **tuning: Unpack[WeightedTuningOptions],
    ):
        super().__init__(
            **tuning,
            hidden_layer_sizes=_layers(hidden_layer_sizes),
            alpha=alpha,
            learning_rate_init=learning_rate_init,
            batch_size=batch_size,
        )
        if self.class_weight == "balanced":
            from sklearn.neural_network import MLPClassifier

            if not accepts(MLPClassifier.fit, "sample_weight"):
                raise ConfigError(
                    f"{self.where}.class_weight=balanced needs scikit-learn >= 1.7 (sample_weight "
                    "in MLPClassifier.fit); use train.balance=true instead"
                )
        self.max_iter, self.n_iter_no_change = max_iter, n_iter_no_change
        self.validation_fraction = validation_fraction
        self.n_threads = check_threads(n_threads, self.where)

    def build(self, **params: Any) -> Any:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        params["hidden_layer_sizes"] = _layers(params["hidden_layer_sizes"])
        mlp = MLPClassifier(
            **params,
            early_stopping=True,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            max_iter=self.max_iter,
            random_state=self.seed,
        )
        return Pipeline([("scale", StandardScaler()), ("mlp", mlp)])

    def describe(self, model: Any) -> dict[str, Any]:
        return {"n_iter": int(model[-1].n_iter_)}


def _layers(sizes: int | Sequence[int]) -> tuple[int, ...]:
    """``32`` or ``[64, 32]`` -> a tuple of layer widths."""
    return (int(sizes),) if isinstance(sizes, int) else tuple(int(n) for n in sizes)


@hookimpl
def cropseg_register_classifiers(register):
    register("mlp", MLP)
