"""Shared fixtures: isolated MLflow stores and caches, tiny SYNTHETIC scenes, the seed-study files (real when
../shared holds them, else generated SYNTHETIC equivalents)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cropseg.testing import write_tiny_scene
from seed_files import SeedFiles, seed_files

REPO = Path(__file__).resolve().parents[1]
# the real seed-study files: downloaded into the clone's data/ (README), or in a shared/ folder beside it
SEED_DIRS = (REPO / "data" / "sacramento-dwr-2015", REPO.parent / "shared" / "data" / "sacramento-dwr-2015")


@pytest.fixture(scope="session")
def seed_data(tmp_path_factory: pytest.TempPathFactory) -> SeedFiles:
    """The seed study's six input files: the real ones in data/ or ../shared when present, else SYNTHETIC equivalents
    (tests/seed_files.py) with the same names and formats; ``seed_data.expected`` says what each holds."""
    return seed_files(SEED_DIRS, tmp_path_factory.mktemp("seed-study"))


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh sqlite MLflow store in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def tiny_pair(tmp_path: Path):
    """A tiny synthetic train and test scene (64x64, EPSG:32610) with DWR-style ground truth."""
    d = tmp_path / "tiny"
    return write_tiny_scene(d, name="train", seed=1), write_tiny_scene(d, name="test", seed=2)


@pytest.fixture
def cli_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """Environment for running the ``cropseg`` command in a subprocess, isolated from the user's stores."""
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=tracking_uri, CROPSEG_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("CROPSEG_BLOCK_PLUGINS", None)
    return env


EXAMPLE_PLUGIN = REPO / "examples" / "cropseg-nearest-centroid"


@pytest.fixture(scope="session")
def example_plugin() -> Path:
    """The example third-party plugin (examples/cropseg-nearest-centroid) pip-installed into this test
    environment, offline: no dependencies, no build isolation (the environment's setuptools builds it).
    A plain (not editable) install, so this very process finds its entry point and module at once."""
    import importlib
    import shutil
    import subprocess
    import sys

    shutil.rmtree(EXAMPLE_PLUGIN / "build", ignore_errors=True)  # setuptools' in-tree build folder (ignored)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", str(EXAMPLE_PLUGIN)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    importlib.invalidate_caches()
    return EXAMPLE_PLUGIN
