"""Any number of ``cropseg`` processes may start at once on one fresh store: four plain runs started
together, three times on a new sqlite store (the store is created and migrated under the store lock),
and once against a real ``mlflow server``; every run ends FINISHED."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cropseg.testing import local_overrides

pytestmark = pytest.mark.slow

#: the cheapest complete run: one logistic-regression candidate without CV, no model logging
CHEAP = [
    "classifier=logistic_regression",
    "classifier.cv=none",
    "classifier.grid.C=[1]",
    "parallel.backend=serial",
    "tracking.log_model=false",
    "postprocessor=[]",
]


def _start_four(tiny_pair, env: dict[str, str], work: Path) -> list[tuple[subprocess.Popen, Path]]:
    procs = []
    for i in range(4):
        out = work / f"run{i}"
        procs.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cropseg.cli",
                        *local_overrides(*tiny_pair)[:-1],
                        *CHEAP,
                        f"output_dir={out}",
                        f"tracking.run_name=concurrent-{i}",
                    ],
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
                out,
            )
        )
    return procs


def _finish(procs: list[tuple[subprocess.Popen, Path]], uri: str) -> None:
    for proc, _ in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs) == [f"concurrent-{i}" for i in range(4)]
    assert all(r.info.status == "FINISHED" for r in runs)
    for _, out in procs:
        assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("attempt", range(3))
def test_four_runs_at_once_on_a_fresh_sqlite_store(attempt, tiny_pair, cli_env, tracking_uri, tmp_path):
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()
    work = tmp_path / "work"
    work.mkdir()
    _finish(_start_four(tiny_pair, cli_env, work), tracking_uri)


def test_four_runs_at_once_against_an_mlflow_server(tiny_pair, cli_env, mlflow_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _finish(_start_four(tiny_pair, dict(cli_env, MLFLOW_TRACKING_URI=mlflow_server), work), mlflow_server)
