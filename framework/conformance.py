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

:class:`PatchModelConformance` does the same for patch models (:class:`cropseg.types.PatchModel`, e.g. the
U-Net): protocol, per-epoch callback, ignore labels masked out of the loss, block prediction of any size,
determinism under the seed, pickling.

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

from .types import IGNORE, Classifier, FitResult, PatchModel, PatchSet

#: reflectance (blue, green, red, NIR) of the two synthetic classes of :func:`separable_pixels`
SOIL = (0.12, 0.15, 0.19, 0.25)
CROP = (0.05, 0.08, 0.05, 0.40)


def separable_pixels(
    n_per_class: int = 150,
    seed: int = 0,
    noise: float = 0.01,
    n_groups: int = 12,
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
    def fitted(self, classifier_name: str, make_classifier: Callable[[], Any], train_data: tuple) -> tuple[Any, Any]:
        """The classifier fitted on ``train_data`` and its :class:`FitResult`, fitted once per test class and
        classifier and shared by the tests that only read it (as :class:`PatchModelConformance` shares its
        model; ``test_deterministic_under_seed`` fits two fresh ones)."""
        cls = type(self)
        cache: dict[tuple[str, tuple[str, ...]], tuple[Any, Any]] = cls.__dict__.get("_fitted_cache") or {}
        cls._fitted_cache = cache  # type: ignore[attr-defined]
        key = (classifier_name, tuple(self.overrides))
        if key not in cache:
            clf = make_classifier()
            X, y, groups = train_data
            cache[key] = (clf, clf.fit(X, y, groups))
        return cache[key]

    # -- the tests -------------------------------------------------------------------------------------

    def test_constructible_from_config_defaults(
        self, classifier_name: str, classifier_config: Any, make_classifier: Callable[[], Any]
    ) -> None:
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

    def test_deterministic_under_seed(
        self, make_classifier: Callable[[], Any], train_data: tuple, test_data: tuple
    ) -> None:
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


# --------------------------------------------------------------------------------------------------
# Patch models
# --------------------------------------------------------------------------------------------------


def separable_patches(n: int = 24, size: int = 64, seed: int = 0, noise: float = 0.01, ignore: bool = True) -> PatchSet:
    """SYNTHETIC patches like the framework draws: soil background with rectangles of crop spectrum,
    features ``(n, 4, size, size)`` reflectance, labels 0/1 with ``ignore=True`` marking two thirds of
    every rectangle **and** two thirds of the soil as 255 (ignore): a model that learns from ignore pixels
    (as crop or as non-crop) learns the wrong class for most of one spectrum, a model that masks them
    learns both right."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, 4, size, size), dtype=np.float32)
    y = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        is_crop = np.zeros((size, size), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            h, w = (int(v) for v in rng.integers(size // 6, size // 2, size=2))
            r, c = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
            is_crop[r : r + h, c : c + w] = True
        spec = np.where(
            is_crop[None], np.asarray(CROP, np.float32)[:, None, None], np.asarray(SOIL, np.float32)[:, None, None]
        )
        X[i] = spec + rng.normal(0, noise, size=spec.shape).astype(np.float32)
        y[i] = is_crop
        if ignore:
            y[i][(rng.random((size, size)) < 2 / 3)] = IGNORE
    origins = np.stack([np.arange(n) * size, np.zeros(n, dtype=np.int64)], axis=1)
    return PatchSet(X, y, origins, ["blue", "green", "red", "nir"])


class PatchModelConformance:
    """The tests every patch-model plugin passes (:class:`cropseg.types.PatchModel`). Set :attr:`name`;
    optionally :attr:`overrides` (e.g. ``["classifier.epochs=3"]`` to keep it fast)::

        from cropseg.conformance import PatchModelConformance

        class TestMyNet(PatchModelConformance):
            name = "my_net"                    # as registered by cropseg_register_patch_models
            overrides = ["classifier.epochs=3"]

    The model is built as a run builds it (Hydra ``classifier=<name>``, the registry) and checked to:
    implement the protocol with integer ``patch_size``/``halo``; accept ``prepare(4)``; return a
    :class:`FitResult` from ``fit_patches`` and call ``on_epoch`` once per epoch (epochs from 1, finite
    loss, validation predictions of the validation labels' shape, uint8 0/1); mask ignore (255) labels
    out of its loss (:func:`separable_patches` ignores two thirds of each class); predict blocks of any
    size (not only multiples of the patch size) as uint8 0/1 of the input's shape and get separable
    blocks right; be deterministic under its seed; pickle and reload with identical predictions.
    The fitted model is shared by the tests of a class (one fit, plus one for determinism).
    """

    name: str = ""
    overrides: Sequence[str] = ()

    @pytest.fixture(scope="class")
    @classmethod
    def make_model(cls) -> Callable[[], Any]:
        from .config import compose, instantiate
        from .plugins import Registry, get_plugin_manager

        if not cls.name:
            pytest.fail(f"{cls.__name__}: set `name` to the registered patch model name")
        cfg = compose([f"classifier={cls.name}", *cls.overrides])
        registry = Registry.from_plugin_manager(get_plugin_manager())
        return lambda: instantiate(registry, "classifier", cfg.classifier)

    @pytest.fixture(scope="class")
    @classmethod
    def patch_data(cls, make_model: Callable[[], Any]) -> tuple[PatchSet, PatchSet]:
        p = int(make_model().patch_size)
        return separable_patches(24, p, seed=0), separable_patches(6, p, seed=1)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted_patch_model(
        cls, make_model: Callable[[], Any], patch_data: tuple[PatchSet, PatchSet]
    ) -> tuple[Any, Any, list[tuple[int, float, Any]]]:
        model = make_model()
        model.prepare(4)
        calls: list[tuple[int, float, Any]] = []

        def on_epoch(epoch: int, loss: float, val_pred: Any) -> dict[str, float]:
            calls.append((epoch, loss, None if val_pred is None else np.array(val_pred)))
            return {"val_crop_f1": float(epoch)}

        result = model.fit_patches(patch_data[0], patch_data[1], on_epoch)
        return model, result, calls

    @pytest.fixture(scope="class")
    @classmethod
    def test_block(cls) -> tuple[np.ndarray, np.ndarray]:
        data = separable_patches(1, 96, seed=5, ignore=False)
        return data.X[0][:, :90, :75], data.y[0][:90, :75]

    def test_implements_protocol(self, make_model: Callable[[], Any]) -> None:
        model = make_model()
        assert isinstance(model, PatchModel), f"{self.name} lacks the cropseg.types.PatchModel members"
        assert isinstance(model.patch_size, int) and model.patch_size > 0
        assert isinstance(model.halo, int) and model.halo >= 0

    def test_fit_and_epoch_callback(self, fitted_patch_model: tuple, patch_data: tuple) -> None:
        _, result, calls = fitted_patch_model
        assert isinstance(result, FitResult)
        for key, value in result.metrics.items():
            assert isinstance(key, str) and isinstance(value, numbers.Real) and math.isfinite(value), (key, value)
        assert calls, "fit_patches never called on_epoch"
        assert [c[0] for c in calls] == list(range(1, len(calls) + 1)), "epochs must count 1, 2, ..."
        for _, loss, val_pred in calls:
            assert math.isfinite(loss)
            assert val_pred is not None and val_pred.shape == patch_data[1].y.shape
            assert val_pred.dtype == np.uint8 and set(np.unique(val_pred).tolist()) <= {0, 1}

    def test_predict_block_shape_and_values(self, fitted_patch_model: tuple, test_block: tuple) -> None:
        model = fitted_patch_model[0]
        X, _ = test_block
        pred = np.asarray(model.predict_block(X, np.ones(X.shape[1:], dtype=bool)))
        assert pred.dtype == np.uint8 and pred.shape == X.shape[1:]
        assert set(np.unique(pred).tolist()) <= {0, 1}

    def test_learns_with_ignore_masked(self, fitted_patch_model: tuple, test_block: tuple) -> None:
        """Two thirds of each class were labelled ignore in training: both classes still come out right."""
        model = fitted_patch_model[0]
        X, y = test_block
        pred = np.asarray(model.predict_block(X, np.ones(X.shape[1:], dtype=bool)))
        for cls in (0, 1):
            acc = float(np.mean(pred[y == cls] == cls))
            assert acc > 0.9, f"class {cls}: {acc:.3f} of its pixels right (are ignore labels in the loss?)"

    def test_deterministic_under_seed(
        self, make_model: Callable[[], Any], fitted_patch_model: tuple, patch_data: tuple, test_block: tuple
    ) -> None:
        again = make_model()
        again.prepare(4)
        again.fit_patches(patch_data[0], patch_data[1], None)
        X = test_block[0]
        ones = np.ones(X.shape[1:], dtype=bool)
        np.testing.assert_array_equal(again.predict_block(X, ones), fitted_patch_model[0].predict_block(X, ones))

    def test_pickle_roundtrip(self, fitted_patch_model: tuple, test_block: tuple) -> None:
        model = fitted_patch_model[0]
        X = test_block[0]
        ones = np.ones(X.shape[1:], dtype=bool)
        again = pickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        np.testing.assert_array_equal(again.predict_block(X, ones), model.predict_block(X, ones))
