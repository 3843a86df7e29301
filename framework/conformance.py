"""A reusable conformance suite for classifier plugins: subclass it in your own pytest suite.

Like the test suites Hydra ships for launcher plugins, :class:`ClassifierConformance` holds the tests every
cropseg classifier must pass; a plugin author only names the registered classifier::

    # tests/test_my_classifier.py of your plugin package
    from cropseg.conformance import ClassifierConformance

    class TestMyClassifier(ClassifierConformance):
        name = "my_classifier"          # as registered by cropseg_register_classifiers
        # overrides = ["classifier.n_estimators=10"]   # optional Hydra overrides (e.g. to keep it fast)

The classifier is built exactly as a run builds it: Hydra composes ``classifier=<name>`` (so the plugin's
config must be installed, see the ``cropseg_config_dirs`` hook) and :func:`cropseg.config.instantiate`
creates it through the registry. The tests check:

* it is constructible from its Hydra config defaults and implements :class:`cropseg.types.Classifier`;
* ``fit(X, y, groups)`` returns a :class:`cropseg.types.FitResult` (params a mapping, metrics finite numbers);
* ``predict`` returns uint8 0/1 of length n (also for a single pixel);
* on separable data it predicts both classes, and (nearly) all pixels right;
* it is deterministic under its seed: two instances fitted on the same data predict the same;
* ``predict_proba``, where present, returns shape (n, 2) probabilities whose rows sum to 1;
* the fitted model pickles and reloads with identical predictions (runs log it as their model).

This module imports pytest: import it from tests only.
"""

from __future__ import annotations

import math
import numbers
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from .types import Classifier, FitResult

#: reflectance (blue, green, red, NIR) of the two synthetic classes of :func:`separable_pixels`
SOIL = (0.12, 0.15, 0.19, 0.25)
CROP = (0.05, 0.08, 0.05, 0.40)


def separable_pixels(n_per_class: int = 150, seed: int = 0, noise: float = 0.01, n_groups: int = 12,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SYNTHETIC, well-separated training pixels like the pipeline's: ``X`` (2n, 4) float32 reflectance
    around soil (class 0) and crop (class 1) spectra, ``y`` uint8 0/1, ``groups`` spatial block ids
    (``n_groups`` blocks, both classes in each). Shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(SOIL, noise, size=(n_per_class, 4)), rng.normal(CROP, noise, size=(n_per_class, 4))])
    y = np.repeat(np.array([0, 1], dtype=np.uint8), n_per_class)
    groups = np.concatenate([np.arange(n_per_class) % n_groups, np.arange(n_per_class) % n_groups])
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order], groups[order].astype(np.int64)


class ClassifierConformance:
    """The tests every classifier plugin passes. Set :attr:`name`; optionally :attr:`overrides`."""

    #: the classifier's registered name (``cropseg classifier=<name>``)
    name: str = ""
    #: extra Hydra overrides applied when composing the classifier's config
    overrides: Sequence[str] = ()

    # -- fixtures a subclass may override ------------------------------------------------------------

    @pytest.fixture
    def classifier_name(self) -> str:
        if not self.name:
            pytest.fail(f"{type(self).__name__}: set `name` to the registered classifier name")
        return self.name

    @pytest.fixture
    def classifier_config(self, classifier_name: str) -> Any:
        """The ``classifier`` node of the run configuration composed with ``classifier=<name>``."""
        from .config import compose

        cfg = compose([f"classifier={classifier_name}", *self.overrides])
        return cfg.classifier

    @pytest.fixture
    def make_classifier(self, classifier_config: Any) -> Callable[[], Any]:
        """A factory of fresh, unfitted classifiers built from the composed config through the registry."""
        from .config import instantiate
        from .plugins import Registry, get_plugin_manager

        registry = Registry.from_plugin_manager(get_plugin_manager())
        return lambda: instantiate(registry, "classifier", classifier_config)

    @pytest.fixture
    def train_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return separable_pixels(seed=0)

    @pytest.fixture
    def test_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return separable_pixels(n_per_class=100, seed=1)

    @pytest.fixture
    def fitted(self, make_classifier: Callable[[], Any], train_data: tuple) -> tuple[Any, Any]:
        clf = make_classifier()
        X, y, groups = train_data
        return clf, clf.fit(X, y, groups)

    # -- the tests -------------------------------------------------------------------------------------

    def test_constructible_from_config_defaults(self, classifier_name: str, classifier_config: Any,
                                                make_classifier: Callable[[], Any]) -> None:
        assert classifier_config.name == classifier_name
        clf = make_classifier()
        assert isinstance(clf, Classifier), f"{classifier_name} lacks fit/predict (cropseg.types.Classifier)"

    def test_fit_returns_fit_result(self, fitted: tuple[Any, Any]) -> None:
        _, result = fitted
        assert isinstance(result, FitResult), f"fit() returned {type(result).__name__}, not FitResult"
        assert isinstance(result.params, Mapping) and isinstance(result.metrics, Mapping)
        for key, value in result.metrics.items():
            assert isinstance(key, str) and isinstance(value, numbers.Real) and math.isfinite(value), (key, value)
        for key in result.params:
            assert isinstance(key, str)

    def test_predict_shape_and_dtype(self, fitted: tuple[Any, Any], test_data: tuple) -> None:
        clf, _ = fitted
        X, y, _ = test_data
        pred = clf.predict(X)
        assert isinstance(pred, np.ndarray)
        assert pred.dtype == np.uint8, f"predict() returned {pred.dtype}, not uint8"
        assert pred.shape == (len(X),)
        assert set(np.unique(pred).tolist()) <= {0, 1}
        one = clf.predict(X[:1])
        assert one.dtype == np.uint8 and one.shape == (1,)

    def test_separable_data_is_classified(self, fitted: tuple[Any, Any], test_data: tuple) -> None:
        clf, _ = fitted
        X, y, _ = test_data
        pred = clf.predict(X)
        assert set(np.unique(pred).tolist()) == {0, 1}, "both classes must be predicted on separable data"
        assert float(np.mean(pred == y)) > 0.95

    def test_deterministic_under_seed(self, make_classifier: Callable[[], Any], train_data: tuple,
                                      test_data: tuple) -> None:
        X, y, groups = train_data
        Xt = test_data[0]
        a, b = make_classifier(), make_classifier()
        fa, fb = a.fit(X, y, groups), b.fit(X, y, groups)
        assert dict(fa.params) == dict(fb.params)
        np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))
        if hasattr(a, "predict_proba"):
            np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))

    def test_probabilities(self, fitted: tuple[Any, Any], test_data: tuple) -> None:
        clf, _ = fitted
        if not hasattr(clf, "predict_proba"):
            pytest.skip("the classifier has no predict_proba (optional)")
        X, _, _ = test_data
        proba = np.asarray(clf.predict_proba(X))
        assert proba.shape == (len(X), 2)
        assert np.all(np.isfinite(proba)) and proba.min() >= 0.0 and proba.max() <= 1.0
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)

    def test_pickle_roundtrip(self, fitted: tuple[Any, Any], test_data: tuple) -> None:
        clf, _ = fitted
        X = test_data[0]
        again = pickle.loads(pickle.dumps(clf, protocol=pickle.HIGHEST_PROTOCOL))
        np.testing.assert_array_equal(again.predict(X), clf.predict(X))
        if hasattr(clf, "predict_proba"):
            np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
