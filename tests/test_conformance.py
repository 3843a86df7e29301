"""Every classifier in the registry (built-ins and any installed plugin) and the example plugin pass the
conformance suite plugin authors subclass (cropseg.conformance)."""

from __future__ import annotations

import pytest

from cropseg.conformance import ClassifierConformance
from cropseg.plugins import Registry, get_plugin_manager

EXAMPLE = "nearest_centroid"
_REG = Registry.from_plugin_manager(get_plugin_manager())
# pixel classifiers only: patch models (classifier=unet) have their own suite (tests/test_unet.py)
REGISTERED = [
    n
    for n in _REG.names("classifier")
    if n != EXAMPLE and _REG.stages["classifier"][n].hook == "cropseg_register_classifiers"
]
BUILTIN_CLASSIFIERS = {"knn", "random_forest", "hist_gradient_boosting", "logistic_regression", "linear_svm", "mlp"}


def test_every_builtin_classifier_is_covered():
    assert BUILTIN_CLASSIFIERS <= set(REGISTERED)


class TestRegisteredClassifiers(ClassifierConformance):
    @pytest.fixture(params=REGISTERED)
    def classifier_name(self, request):
        return request.param


@pytest.mark.slow
class TestExamplePlugin(ClassifierConformance):
    """The example package, pip-installed into a temporary folder by the session fixture and put on sys.path
    for each test (collected even before it is installed)."""

    name = EXAMPLE

    @pytest.fixture(autouse=True)
    def _installed(self, example_plugin):
        return example_plugin
