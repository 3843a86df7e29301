"""Shared fixtures: isolated MLflow stores and caches, tiny SYNTHETIC scenes, the seed-study files (real when
../shared holds them, else generated SYNTHETIC equivalents)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from seed_files import SeedFiles, seed_files

from cropseg.testing import write_tiny_scene

REPO = Path(__file__).resolve().parents[1]
# the real seed-study files: downloaded into the clone's data/ (README), or in a shared/ folder beside it
SEED_DIRS = (REPO / "data" / "sacramento-dwr-2015", REPO.parent / "shared" / "data" / "sacramento-dwr-2015")


@pytest.fixture(scope="session")
def seed_data(tmp_path_factory: pytest.TempPathFactory) -> SeedFiles:
    """The seed study's six input files: the real ones in data/ or ../shared when present, else SYNTHETIC equivalents
    (tests/seed_files.py) with the same names and formats; ``seed_data.expected`` says what each holds."""
    return seed_files(SEED_DIRS, tmp_path_factory.mktemp("seed-study"))


@dataclass(frozen=True)
class StoreTemplate:
    """An empty sqlite MLflow store with MLflow's whole schema, made once per session: creating one (MLflow's
    migrations) costs 1-2 s a store, copying it a millisecond. ``copy(directory)`` puts a copy at
    ``directory / 'mlflow.db'`` and returns its URI. Tests of creating a store (one or many processes at
    once on a store that does not exist yet) use ``fresh_tracking_uri`` instead."""

    path: Path

    def copy(self, directory: Path, name: str = "mlflow.db") -> str:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, directory / name)
        return f"sqlite:///{directory / name}"


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> StoreTemplate:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    d = tmp_path_factory.mktemp("store-template")
    # the store's Default experiment (which cropseg never uses) keeps its artifacts beside the template
    store = SqlAlchemyStore(f"sqlite:///{d / 'mlflow.db'}", (d / "mlartifacts").as_uri())
    store.engine.dispose()
    return StoreTemplate(d / "mlflow.db")


@pytest.fixture
def tracking_uri(tmp_path: Path, store_template: StoreTemplate) -> str:
    """An empty sqlite MLflow store in the test's temporary directory (a copy of the session's template)."""
    return store_template.copy(tmp_path)


@pytest.fixture
def fresh_tracking_uri(tmp_path: Path) -> str:
    """The URI of a sqlite MLflow store that does not exist yet (in the test's temporary directory)."""
    return f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture
def tiny_pair(tmp_path: Path):
    """A tiny synthetic train and test scene (64x64, EPSG:32610) with DWR-style ground truth."""
    d = tmp_path / "tiny"
    return write_tiny_scene(d, name="train", seed=1), write_tiny_scene(d, name="test", seed=2)


@dataclass(frozen=True)
class TinyRun:
    """One finished run on a tiny SYNTHETIC pair, shared by the tests that only read its results."""

    result: Any  # cropseg.api.RunResult
    tracking_uri: str
    workdir: Path  # the working directory during the run (the run's output_dir is workdir / "out")
    cwd_after: str  # os.getcwd() right after cropseg.run returned


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, store_template: StoreTemplate) -> TinyRun:
    """``cropseg.run`` once per session on a tiny synthetic pair (local source, default stages), run from
    its own working directory with its own sqlite store."""
    import cropseg
    from cropseg.testing import local_overrides

    d = tmp_path_factory.mktemp("tiny-run")
    pair = write_tiny_scene(d / "tiny", name="train", seed=1), write_tiny_scene(d / "tiny", name="test", seed=2)
    uri = store_template.copy(d)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        result = cropseg.run([*local_overrides(*pair), f"tracking.uri={uri}"], output_dir=d / "out")
        cwd_after = os.getcwd()
    return TinyRun(result, uri, d, cwd_after)


@pytest.fixture
def cli_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """Environment for running the ``cropseg`` command in a subprocess, isolated from the user's stores."""
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=tracking_uri, CROPSEG_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("CROPSEG_BLOCK_PLUGINS", None)
    return env


EXAMPLE_PLUGIN = REPO / "examples" / "cropseg-nearest-centroid"


@dataclass(frozen=True)
class InstalledPlugin:
    """The example plugin installed into a throwaway folder ``site`` (never into the test environment):
    ``env(base)`` is a subprocess environment that sees it (``PYTHONPATH``)."""

    source: Path
    site: Path
    #: pip's output of the build and install (quiet: only warnings and errors)
    build_output: str = ""
    #: files the build left in the source folder (beside what was there before; __pycache__ aside)
    left_in_source: frozenset[str] = frozenset()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), *filter(None, [env.get("PYTHONPATH")])])
        return env


@pytest.fixture(scope="session")
def example_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> InstalledPlugin:
    """The example third-party plugin (examples/cropseg-nearest-centroid) pip-installed offline (no dependencies,
    no build isolation: this environment's flit-core builds it) with ``--target`` into a temporary folder,
    straight from its source folder in the clone, as the README tells users to (flit-core writes nothing
    there; ``left_in_source`` records anything a build did leave)."""
    import subprocess
    import sys

    def files() -> set[str]:
        return {str(p.relative_to(EXAMPLE_PLUGIN)) for p in EXAMPLE_PLUGIN.rglob("*") if "__pycache__" not in p.parts}

    before = files()
    site = tmp_path_factory.mktemp("example-plugin") / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(EXAMPLE_PLUGIN),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return InstalledPlugin(EXAMPLE_PLUGIN, site, proc.stdout + proc.stderr, frozenset(files() - before))


@pytest.fixture
def example_plugin(example_plugin_site: InstalledPlugin, monkeypatch: pytest.MonkeyPatch) -> InstalledPlugin:
    """The installed example plugin, visible to this test's process through ``sys.path`` (restored after the
    test) and to its subprocesses through ``example_plugin.env(...)``."""
    monkeypatch.syspath_prepend(str(example_plugin_site.site))
    return example_plugin_site


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (two workers) with a sqlite backend that does not exist yet and
    proxied artifacts, one per test module (its tests keep to experiments of their own)."""
    tmp_path = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:  # noqa: S310 - a local server
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


#: the modules that take longest (measured with `make test` on 2 cores), longest first. `make test` runs the
#: suite on two xdist workers, a module at a time (--dist loadscope --no-loadscope-reorder); starting the long
#: modules first keeps both workers busy to the end. A scheduling hint only: the other modules follow in
#: their usual order, and a module missing here or out of order changes only how well the load balances.
LONGEST_FIRST = (
    "test_concurrency",
    "test_sweeps",
    "test_planet",
    "test_signals",
    "test_cli",
    "test_faults",
    "test_conformance",
    "test_unet",
    "test_tempcnn",
    "test_example_plugin",
    "test_deploy",
    "test_parallel",
    "test_mlflow_ui",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a module's own order is kept


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """In-process cropseg commands configure logging (Hydra's job logging, predict's console handler) with
    stream handlers on the stream pytest captures for that one test. Remove the handlers a test added to the
    root and ``cropseg`` loggers when it ends, so none of them writes to a closed capture stream (``--- Logging
    error ---`` in a later test's stderr). pytest's own capture handlers are left to pytest."""
    import logging

    loggers = [logging.getLogger(), logging.getLogger("cropseg")]
    before = [{id(h) for h in lg.handlers} for lg in loggers]
    yield
    for lg, ids in zip(loggers, before):
        for h in list(lg.handlers):
            if id(h) not in ids and not type(h).__module__.startswith("_pytest"):
                lg.removeHandler(h)
