"""The plugin manager, entry points, registries and their errors."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata

import pytest

from cropseg import hookimpl
from cropseg.errors import DuplicatePluginError, PluginError
from cropseg.plugins import STAGES, Registry, get_plugin_manager

BUILTINS = {
    "source": {"sample", "local"},
    "labeler": {"rasterize", "contours"},
    "features": {"bands", "indices", "context"},
    "classifier": {
        "knn",
        "random_forest",
        "hist_gradient_boosting",
        "logistic_regression",
        "linear_svm",
        "mlp",
        "unet",
        "tempcnn",
    },
    "postprocessor": {"median_blur", "vectorize"},
}


def test_builtins_come_through_the_entry_point_group():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="cropseg")}
    assert set().union(*BUILTINS.values()) <= set(eps)
    pm = get_plugin_manager()
    reg = Registry.from_plugin_manager(pm)
    for stage, names in BUILTINS.items():
        assert names <= set(reg.names(stage)), stage
        for name in names:
            info = reg.stages[stage][name]
            assert info.distribution == "cropseg" and info.version
    assert not pm.failed


def test_factory_returns_fresh_managers():
    assert get_plugin_manager() is not get_plugin_manager()


def test_block_list_drops_a_plugin(monkeypatch):
    reg = Registry.from_plugin_manager(get_plugin_manager(block=["knn"]))
    assert "knn" not in reg.names("classifier")
    monkeypatch.setenv("CROPSEG_BLOCK_PLUGINS", "contours, median_blur")
    reg = Registry.from_plugin_manager(get_plugin_manager())
    assert "contours" not in reg.names("labeler") and "median_blur" not in reg.names("postprocessor")
    assert "rasterize" in reg.names("labeler")


class _Dup:
    @hookimpl
    def cropseg_register_classifiers(self, register):
        register("knn", object)


def test_duplicate_names_raise():
    with pytest.raises(DuplicatePluginError, match="knn"):
        Registry.from_plugin_manager(get_plugin_manager(extra=[_Dup()]))


def test_unknown_name_lists_available():
    reg = Registry.from_plugin_manager(get_plugin_manager())
    with pytest.raises(PluginError) as err:
        reg.get("classifier", "nope")
    assert "knn" in str(err.value) and "\n" not in str(err.value)


class _Extra:
    @hookimpl
    def cropseg_register_classifiers(self, register):
        register("always_crop", lambda: None)


def test_directly_registered_plugins_join():
    reg = Registry.from_plugin_manager(get_plugin_manager(extra=[_Extra()]))
    assert "always_crop" in reg.names("classifier") and "knn" in reg.names("classifier")


def test_hookspecs_are_documented_and_typed():
    from cropseg import hookspecs

    for hook in STAGES.values():
        fn = getattr(hookspecs, hook)
        assert fn.__doc__ and "register" in fn.__annotations__
    assert "<group>/<option>.yaml" in hookspecs.cropseg_config_dirs.__doc__
    assert hookspecs.cropseg_config_dirs.__annotations__["return"] == "list[str]"


def test_broken_plugin_is_reported_and_others_stay_usable(tmp_path, monkeypatch):
    """A distribution whose entry point fails to import is named with its error; built-ins still load."""
    site = tmp_path / "site"
    (site / "broken_cropseg_plugin").mkdir(parents=True)
    (site / "broken_cropseg_plugin" / "__init__.py").write_text("raise ImportError('missing dependency xyz')\n")
    dist = site / "broken_cropseg_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-cropseg-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [cropseg]
        broken = broken_cropseg_plugin
        """)
    )
    monkeypatch.syspath_prepend(str(site))
    pm = get_plugin_manager()
    assert "broken" in pm.failed and "missing dependency xyz" in pm.failed["broken"]
    reg = Registry.from_plugin_manager(pm)
    assert "knn" in reg.names("classifier")
    with pytest.raises(PluginError, match="broken"):
        reg.get("classifier", "nope")
    sys.modules.pop("broken_cropseg_plugin", None)
