"""Sweeps: parent + child MLflow runs with the in-process and the joblib (process) launchers, a fresh
sqlite store hit by parallel jobs, a real ``mlflow server``, failing jobs, and ``cropseg compare``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cropseg.testing import local_overrides


def run_cli(args, cwd, env, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def compare_inproc(args, cwd, env, monkeypatch, capfd) -> subprocess.CompletedProcess:
    """``cropseg compare`` in this process (its one-line errors in a real subprocess are checked by
    test_compare_errors_are_one_line), with ``env``'s store and ``cwd`` as the working directory."""
    from cropseg.cli import main

    with monkeypatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        capfd.readouterr()
        code = main(args)
        out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def sweep_runs(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cropseg")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("cropseg.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("cropseg.sweep") != "true"]
    return client, parents, children


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


#: two built-ins and the example third-party plugin (examples/cropseg-nearest-centroid)
CLASSIFIERS = ["knn", "random_forest", "nearest_centroid"]


@pytest.mark.slow
def test_parallel_sweep_on_fresh_store_then_compare(
    example_plugin, work, tiny_pair, cli_env, fresh_tracking_uri, tmp_path, monkeypatch, capfd
):
    """Built-in classifiers and a third-party plugin through the joblib launcher (two processes at once) on a
    store that does not exist yet, then `cropseg compare` ranks them and registers the best model."""
    tracking_uri = fresh_tracking_uri
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()
    cli_env = example_plugin.env(dict(cli_env, MLFLOW_TRACKING_URI=tracking_uri))
    args = [
        "--multirun",
        "hydra/launcher=parallel",
        *local_overrides(*tiny_pair)[:-1],
        f"classifier={','.join(CLASSIFIERS)}",
        "tracking.sweep_name=model-sweep",
    ]
    proc = run_cli(args, work, cli_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client, parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1 and parents[0].info.run_name == "model-sweep"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["cropseg.sweep.launcher"] == "JoblibLauncher"
    assert len(children) == len(CLASSIFIERS)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    tags = {c.data.tags["cropseg.classifier"]: c.data.tags for c in children}
    assert sorted(tags) == sorted(CLASSIFIERS)
    assert tags["nearest_centroid"]["cropseg.classifier.nearest_centroid.version"].startswith(
        "cropseg-nearest-centroid "
    )
    knn = next(c for c in children if c.data.tags["cropseg.classifier"] == "knn")
    for kind in ("spatial", "random"):  # both CV scores are reported, not only the tuning one
        assert 0 < knn.data.metrics[f"cv_{kind}_f1_weighted"] <= 1
    assert parent.data.tags["cropseg.sweep.finished"] == str(len(CLASSIFIERS))

    out = tmp_path / "cmp"
    args = ["compare", "--sweep", "latest", "--out", str(out), "--register", "best-crop"]
    proc = compare_inproc(args, work, cli_env, monkeypatch, capfd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "as models:/best-crop/1" in proc.stdout
    for name in ("comparison.csv", "comparison.md", "comparison.png", "masks.png"):
        assert (out / name).is_file(), name
    with open(out / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(CLASSIFIERS)
    by_id = {c.info.run_id: c for c in children}
    f1s = [float(r["crop F1"]) for r in rows]  # ranked by the default target, crop F1
    assert f1s == sorted(f1s, reverse=True)
    for r in rows:  # the table's figures are the runs' logged metrics
        run = by_id[r["run id"]]
        assert float(r["weighted F1"]) == pytest.approx(run.data.metrics["test_weighted_avg_f1"])
        assert float(r["crop precision"]) == pytest.approx(run.data.metrics["test_crop_precision"])
        assert float(r["crop IoU"]) == pytest.approx(run.data.metrics["test_iou"])
        assert r["status"] == "FINISHED" and r["classifier"] == run.data.tags["cropseg.classifier"]
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/masks.png", "comparison/comparison.md"} <= logged
    assert client.get_run(parent.info.run_id).data.tags["cropseg.best_run_id"] == rows[0]["run id"]
    version = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version("best-crop", "1")
    assert version.run_id == rows[0]["run id"]


@pytest.mark.slow
def test_sweep_with_a_failing_job(work, tiny_pair, cli_env, tracking_uri, tmp_path, monkeypatch, capfd):
    """One job's ground truth has no crop polygons: it ends FAILED, the other finishes, exit code 1."""
    train, test = tiny_pair
    args = ["--multirun", *local_overrides(train, test), "tracking.log_model=false", "source.crop_values=[F,V],[X]"]
    proc = run_cli(args, work, cli_env)
    assert proc.returncode == 1
    assert "1 job(s) of the sweep failed" in proc.stderr and "no crop polygons" in proc.stderr
    _, parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["cropseg.sweep.failed"] == "1"
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "no crop polygons" in failed.data.tags["cropseg.error"]

    out = tmp_path / "cmp"
    proc = compare_inproc(
        ["compare", "--sweep", parents[0].info.run_id, "--out", str(out)], work, cli_env, monkeypatch, capfd
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["FINISHED", "FAILED"]
    assert "no crop polygons" in rows[1]["error"]

    proc = compare_inproc(
        ["compare", "--sweep", parents[0].info.run_id, "--rank-by", "nosuch_metric", "--out", str(tmp_path / "cmp2")],
        work,
        cli_env,
        monkeypatch,
        capfd,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert (
        proc.stderr.startswith("cropseg: error: --rank-by nosuch_metric: no compared run has this metric; e.g. ")
        and "test_weighted_avg_f1" in proc.stderr
    )
    assert not (tmp_path / "cmp2").exists()


def test_compare_errors_are_one_line(work, cli_env):
    proc = run_cli(["compare", "--experiment", "nope"], work, cli_env)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cropseg: error:") and "nope" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_server_fails_before_the_sweep(work, tiny_pair, cli_env):
    env = dict(cli_env, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    proc = run_cli(["--multirun", *local_overrides(*tiny_pair), "classifier.k_grid=[3],[5]"], work, env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cropseg: error: tracking server http://127.0.0.1:9 is unreachable: [Errno 111] Connection refused"
    ]
    assert not (work / "multirun").exists()


@pytest.mark.slow
def test_optuna_sweeper_maximises_the_spatial_cv_score(work, tiny_pair, cli_env, tracking_uri):
    """Hydra's Optuna sweeper tunes KNN's k on the training scene's spatial-CV score, never the test score."""
    import yaml

    args = [
        "--multirun",
        "+experiment=optuna_knn",
        *local_overrides(*tiny_pair)[:-1],
        "hydra.sweeper.n_trials=3",
        "tracking.log_model=false",
        "hydra.sweep.dir=optuna-sweep",
    ]
    proc = run_cli(args, work, cli_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _, parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1 and parents[0].data.tags["cropseg.sweep.sweeper"] == "OptunaSweeper"
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.params["fit.cv"] == "spatial" for c in children)
    best = yaml.safe_load((work / "optuna-sweep" / "optimization_results.yaml").read_text())
    scores = [c.data.metrics["cv_score"] for c in children]
    assert best["best_value"] == pytest.approx(max(scores))
    assert best["best_value"] == pytest.approx(max(c.data.metrics["cv_spatial_crop_f1"] for c in children))
