"""Configs shipped by plugins (hook ``cropseg_config_dirs``) join Hydra's config groups."""

from __future__ import annotations

import logging
import textwrap

import pytest

from cropseg import hookimpl
from cropseg.config import compose, plugin_config_files, register_plugin_configs
from cropseg.errors import ConfigError
from cropseg.pipeline import build_stages
from cropseg.plugins import Registry, get_plugin_manager


class ShipsConfigs:
    """A plugin object shipping a classifier (and its config), as a third-party package would."""

    def __init__(self, conf_dir):
        self.conf_dir = conf_dir

    @hookimpl
    def cropseg_config_dirs(self):
        return [str(self.conf_dir), str(self.conf_dir / "missing")]

    @hookimpl
    def cropseg_register_classifiers(self, register):
        from cropseg_plugins.knn import KNNClassifier

        register("tmp_knn_variant", KNNClassifier)


@pytest.fixture
def shipped(tmp_path):
    conf = tmp_path / "conf"
    (conf / "classifier").mkdir(parents=True)
    (conf / "classifier" / "tmp_knn_variant.yaml").write_text(
        textwrap.dedent("""\
        name: tmp_knn_variant
        k_grid: [1]
        cv: none
        seed: ${seed}
        """)
    )
    (conf / "classifier" / "knn.yaml").write_text("name: knn\nk_grid: [99]\n")  # clashes with cropseg's own
    (conf / "experiment").mkdir()
    (conf / "experiment" / "tmp_study.yaml").write_text(
        textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /classifier: tmp_knn_variant
        seed: 7
        """)
    )
    (conf / "stray.yaml").write_text("a: 1\n")
    plugin = ShipsConfigs(conf)
    return plugin, get_plugin_manager(extra=[plugin])


def test_plugin_config_files_are_found_and_clashes_reported(shipped):
    plugin, pm = shipped
    configs, problems = plugin_config_files(pm)
    mine = {(c.group, c.option) for c in configs if plugin.conf_dir in c.path.parents}  # (other plugins may ship too)
    assert mine == {("classifier", "tmp_knn_variant"), ("experiment", "tmp_study")}
    text = "\n".join(problems)
    assert "classifier/knn skipped, already provided by cropseg conf/" in text
    assert "missing does not exist" in text and "stray.yaml is not in a group folder" in text


def test_registered_plugin_configs_are_selectable(shipped, caplog):
    plugin, pm = shipped
    with caplog.at_level(logging.WARNING, logger="cropseg.config"):
        stored = register_plugin_configs(pm)
    assert {c.option for c in stored if plugin.conf_dir in c.path.parents} == {"tmp_knn_variant", "tmp_study"}
    assert "classifier/knn skipped" in caplog.text
    cfg = compose(["classifier=tmp_knn_variant"])
    assert cfg.classifier.name == "tmp_knn_variant" and list(cfg.classifier.k_grid) == [1]
    assert cfg.classifier.seed == cfg.seed == 0  # interpolations resolve against the run config
    stages = build_stages(cfg, Registry.from_plugin_manager(pm))
    assert stages.classifier.k_grid == [1]
    # cropseg's own knn config won over the plugin's clashing copy
    assert list(compose(["classifier=knn"]).classifier.k_grid) == list(range(3, 32, 2))
    # an experiment shipped by the plugin is global, like cropseg's own
    study = compose(["+experiment=tmp_study"])
    assert study.seed == 7 and study.classifier.name == "tmp_knn_variant" and study.classifier.seed == 7


def test_unknown_option_still_one_line_with_plugin_options_listed(shipped):
    _, pm = shipped
    register_plugin_configs(pm)
    with pytest.raises(ConfigError) as err:
        compose(["classifier=nope"])
    assert "tmp_knn_variant" in str(err.value) and "knn" in str(err.value) and "\n" not in str(err.value)


class Broken:
    @hookimpl
    def cropseg_config_dirs(self):
        raise RuntimeError("boom")


def test_a_failing_hook_is_reported_not_fatal():
    configs, problems = plugin_config_files(get_plugin_manager(extra=[Broken()]))
    assert any("cropseg_config_dirs() failed: RuntimeError: boom" in p for p in problems)
    assert compose([]).classifier.name == "knn"
