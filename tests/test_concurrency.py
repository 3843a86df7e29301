"""Any number of ``cropseg`` processes may start at once on one fresh store: four plain runs started
together, three times on a new sqlite store (the store is created and migrated under the store lock),
and once against a real ``mlflow server``; every run ends FINISHED. Against the same server (one per
module, each test in its own experiment): a sweep of two jobs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
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


def _start_four(
    tiny_pair, env: dict[str, str], work: Path, experiment: str = "cropseg"
) -> list[tuple[subprocess.Popen, Path]]:
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
                        f"tracking.experiment={experiment}",
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


def _finish(procs: list[tuple[subprocess.Popen, Path]], uri: str, experiment: str = "cropseg") -> None:
    for proc, _ in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs) == [f"concurrent-{i}" for i in range(4)]
    assert all(r.info.status == "FINISHED" for r in runs)
    for _, out in procs:
        assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("attempt", range(3))
def test_four_runs_at_once_on_a_fresh_sqlite_store(attempt, tiny_pair, cli_env, fresh_tracking_uri, tmp_path):
    assert not Path(fresh_tracking_uri.removeprefix("sqlite:///")).exists()
    work = tmp_path / "work"
    work.mkdir()
    _finish(_start_four(tiny_pair, dict(cli_env, MLFLOW_TRACKING_URI=fresh_tracking_uri), work), fresh_tracking_uri)


def test_four_runs_at_once_against_an_mlflow_server(tiny_pair, cli_env, mlflow_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = dict(cli_env, MLFLOW_TRACKING_URI=mlflow_server)
    _finish(_start_four(tiny_pair, env, work, "concurrent"), mlflow_server, "concurrent")


def test_sweep_against_mlflow_server(tiny_pair, cli_env, mlflow_server, tmp_path):
    """A sweep's parent and two jobs, each logging its run, artifacts and model (proxied artifacts) to the
    server; their dataset inputs as the MLflow UI reads them (REST). (Jobs in parallel worker processes:
    tests/test_sweeps.py; processes at once against the server: the test above.)"""
    work = tmp_path / "work"
    work.mkdir()
    env = dict(cli_env, MLFLOW_TRACKING_URI=mlflow_server)
    args = [
        "--multirun",
        *local_overrides(*tiny_pair)[:-1],
        "tracking.experiment=sweep",
        "classifier.k_grid=[3],[5]",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name("sweep").experiment_id
    runs = client.search_runs([exp_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("cropseg.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("cropseg.sweep") != "true"]
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    models = {m.source_run_id: m for m in client.search_logged_models([exp_id])}
    for c in children:
        assert "prediction/test_mask.tif" in {f.path for f in client.list_artifacts(c.info.run_id, "prediction")}
        # the model's files went through the server's artifact proxy
        assert "MLmodel" in {f.path for f in client.list_logged_model_artifacts(models[c.info.run_id].model_id)}
    # data lineage as the MLflow UI sees it (REST): each run's train/test scenes and ground truth
    req = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/search",
        method="POST",
        data=json.dumps({"experiment_ids": [exp_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - a local server
        found = {r["info"]["run_id"]: r for r in json.loads(resp.read())["runs"]}
    for c in children:
        inputs = found[c.info.run_id]["inputs"]["dataset_inputs"]
        seen = {
            (
                json.loads(i["dataset"]["source"])["uri"],
                i["dataset"]["digest"],
                next(t["value"] for t in i["tags"] if t["key"] == "mlflow.data.context"),
            )
            for i in inputs
        }
        want = {
            (p.resolve().as_uri(), ctx)
            for scene, ctx in zip(tiny_pair, ("training", "testing"))
            for p in (scene.image, scene.ground_truth)
        }
        assert {(uri, ctx) for uri, _, ctx in seen} == want
        assert all(len(digest) == 16 for _, digest, _ in seen)
