"""The shipped Hydra launcher configs for sweeps across machines (submitit: Slurm, and its local mode) compose
with cropseg's configs and build their launcher (submitting needs a Slurm cluster, which tests do not have)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from cropseg.config import VERSION_BASE, conf_dir, register_experiments


def _compose(overrides):
    register_experiments()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=VERSION_BASE, job_name="cropseg"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_composes_with_its_defaults_and_overrides():
    cfg = _compose(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.mem_gb=32", "classifier.k_grid=[5]"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.mem_gb, launcher.cpus_per_task) == ("gpu", 32, 4)
    assert launcher.timeout_min == 120 and launcher.array_parallelism == 32 and list(launcher.setup) == []
    # keys the shipped file leaves alone keep the plugin's defaults
    assert launcher.max_num_timeout == 0 and launcher.signal_delay_s == 120
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    assert list(cfg.classifier.k_grid) == [5]


@pytest.mark.parametrize("name,cls", [("slurm", "SlurmLauncher"), ("slurm_local", "LocalLauncher")])
def test_launchers_instantiate(name, cls):
    cfg = _compose([f"hydra/launcher={name}"])
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == cls
    assert launcher.params["timeout_min"] == cfg.hydra.launcher.timeout_min
    assert str(cfg.hydra.launcher.submitit_folder).endswith(".submitit/%j")


def test_unknown_launcher_is_a_composition_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException):
        _compose(["hydra/launcher=pbs"])
