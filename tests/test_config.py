"""Config composition for every group option and experiment, in-process with Hydra's compose API."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cropseg.config import VERSION_BASE, conf_dir, experiments_dir, register_experiments
from cropseg.config import compose as cropseg_compose
from cropseg.errors import ConfigError
from cropseg.pipeline import build_stages
from cropseg.types import MaskFilter, Vectorizer

CONF = conf_dir()
GROUPS = ["source", "labeler", "features", "classifier"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture
def hydra():
    register_experiments()
    with initialize_config_dir(config_dir=str(CONF), version_base=VERSION_BASE):
        yield


def test_default_config_composes_and_builds(hydra):
    cfg = compose(config_name="config")
    assert cfg.source.name == "sample"
    assert cfg.labeler.name == "rasterize"
    assert cfg.classifier.name == "knn"
    assert list(cfg.postprocessor) == ["median_blur", "vectorize"]
    stages = build_stages(cfg)
    assert [n for n, _ in stages.filters] == ["median_blur"]
    assert isinstance(stages.filters[0][1], MaskFilter)
    assert isinstance(stages.vectorizers[0][1], Vectorizer)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(hydra, group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("source", "local"):
        overrides.append("source.ground_truth=gt.geojson")
    cfg = compose(config_name="config", overrides=overrides)
    assert cfg[group].name == option
    build_stages(cfg)  # the plugin exists and accepts every option of its config


@pytest.mark.parametrize("option", options("postprocessor"))
def test_each_postprocessor_alone(hydra, option):
    cfg = compose(config_name="config", overrides=[f"postprocessor=[{option}]"])
    assert list(cfg.postprocessor) == [option]
    build_stages(cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in experiments_dir().glob("*.yaml")))
def test_every_experiment_composes(hydra, name):
    cfg = compose(config_name="config", overrides=[f"+experiment={name}"])
    build_stages(cfg)


def test_seed_knn_experiment_reproduces_seed_choices(hydra):
    cfg = compose(config_name="config", overrides=["+experiment=seed_knn"])
    assert cfg.labeler.name == "contours"
    assert cfg.classifier.name == "knn"
    assert list(cfg.classifier.k_grid) == [3, 4, 5, 6, 7, 8, 9]
    assert cfg.classifier.cv_folds == 3
    assert cfg.postprocessor.median_blur.kernel == 5
    assert "vectorize" in cfg.postprocessor


def test_unknown_group_option_is_one_clear_line():
    with pytest.raises(ConfigError) as err:
        cropseg_compose(["classifier=nope"])
    msg = str(err.value)
    assert "\n" not in msg
    assert "classifier=nope" in msg and "knn" in msg


def test_unknown_key_is_one_clear_line():
    with pytest.raises(ConfigError) as err:
        cropseg_compose(["classifier.kk=3"])
    assert "kk" in str(err.value) and "\n" not in str(err.value)


def test_unknown_plugin_name_lists_available():
    cfg = cropseg_compose(["classifier.name=nope"])
    with pytest.raises(Exception) as err:
        build_stages(cfg)
    assert "classifier=nope" in str(err.value) and "knn" in str(err.value)


def test_unknown_plugin_option_names_option_and_valid_ones():
    cfg = cropseg_compose(["+classifier.kay=3"])
    with pytest.raises(ConfigError) as err:
        build_stages(cfg)
    assert "classifier.knn" in str(err.value) and "'kay'" in str(err.value) and "k_grid" in str(err.value)


def test_conf_dir_is_the_repository_conf():
    assert CONF == Path(__file__).resolve().parents[1] / "conf"
