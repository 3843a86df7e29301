"""The end-of-run hint opens the MLflow UI on the experiment's runs table: the printed command starts the UI on
the store, the printed URL shows the runs (MLflow 3's "Model training" view, not its GenAI overview), and a
patch model's learning curves sit together in one `epoch` chart section. Checked in headless Chromium."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from mlflow import MlflowClient
from test_mapview import CHROMIUM_FLAGS, chromium

from cropseg.tracking import EPOCH_PREFIX, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, UI_URL, Tracker

#: the map test's flags, with more virtual time: MLflow's UI loads its runs through several requests
FLAGS = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_experiments_are_marked_machine_learning(fresh_tracking_uri):
    client = MlflowClient(fresh_tracking_uri)
    made_before = client.create_experiment("older")  # as an earlier cropseg made them: untagged
    new = Tracker(fresh_tracking_uri, experiment="cropseg")
    old = Tracker(fresh_tracking_uri, experiment="older")
    assert old.experiment_id == made_before
    for tracker in (new, old):
        assert client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    url = new.runs_url()
    assert url == f"{UI_URL}/#/experiments/{new.experiment_id}/runs?workflowType=machine_learning"


def test_learning_curves_share_the_epoch_prefix(fresh_tracking_uri):
    tracker = Tracker(fresh_tracking_uri)
    with tracker.run("curves") as rl:
        for epoch in (1, 2):
            rl.log_learning_curve({"train_loss": 1.0 / epoch, "val_crop_f1": 0.5 + epoch / 10}, epoch)
    client = MlflowClient(fresh_tracking_uri)
    assert set(client.get_run(rl.run_id).data.metrics) == {f"{EPOCH_PREFIX}train_loss", f"{EPOCH_PREFIX}val_crop_f1"}
    assert [m.step for m in client.get_metric_history(rl.run_id, "epoch/train_loss")] == [1, 2]


@pytest.mark.slow
def test_the_printed_hint_opens_the_runs_table(tmp_path, fresh_tracking_uri, monkeypatch):
    exe = chromium()
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(fresh_tracking_uri)
    with tracker.run("knn k=5 | bands (SYNTHETIC)") as rl:
        for epoch in (1, 2, 3):
            rl.log_learning_curve({"train_loss": 1.0 / epoch, "val_crop_f1": 0.5 + epoch / 10}, epoch)
        rl.log_metrics({"test_crop_f1": 0.8})
    command, url = tracker.ui_hint().split(", then open ")
    assert url == tracker.runs_url() and url.startswith(UI_URL + "/")
    # the printed command as it is, on a free port (5000 may be taken on a shared machine), one worker
    port = _free_port()
    url = url.replace(UI_URL, f"http://127.0.0.1:{port}")
    server = subprocess.Popen(
        [*shlex.split(command), "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):  # noqa: S310 - local
                    break
            except OSError:
                assert server.poll() is None, "the printed mlflow ui command exited"
                assert time.monotonic() < deadline, "mlflow ui did not answer within 180 s"
                time.sleep(0.5)

        def render(page: str, *extra: str) -> str:
            return subprocess.run(
                [exe, *FLAGS, "--virtual-time-budget=20000", *extra, page],
                capture_output=True,
                text=True,
                timeout=180,
            ).stdout

        dom = render(url, f"--user-data-dir={tmp_path / 'c1'}", "--dump-dom")
        assert "knn k=5 | bands (SYNTHETIC)" in dom  # the runs table, with the run
        assert ">Runs<" in dom and "Training runs" not in dom  # the Model training view (GenAI says "Training runs")
        assert "Detect Issues" not in dom  # not the GenAI overview
        run_page = url.replace("/runs?", f"/runs/{rl.run_id}/model-metrics?")
        dom = render(run_page, f"--user-data-dir={tmp_path / 'c2'}", "--dump-dom")
        assert ">epoch</div>" in dom and ">(2)</div>" in dom  # the two curves in one chart section
        shot = tmp_path / "runs.png"
        render(url, f"--user-data-dir={tmp_path / 'c3'}", "--window-size=1400,900", f"--screenshot={shot}")
        assert shot.is_file() and shot.stat().st_size > 10_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
