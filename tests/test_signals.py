"""SIGTERM and SIGINT sent to real ``cropseg`` processes at several stages (during fit, during prediction,
during model logging, during a sweep's job, during ``cropseg predict``): every one ends with exit 143 / 130,
exactly one ``cropseg: error:`` line and no traceback, its MLflow run(s) KILLED, no result files beside
FAILED.txt, no predict staging folder, and no process of its group (Dask workers) left behind.

All cases run at once (each with its own store and folders) in one module fixture, so the module costs
about one tiny run's time; a stage is reached by waiting for the log line that starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow import MlflowClient

import cropseg
from cropseg.testing import local_overrides, write_tiny_scene

pytestmark = pytest.mark.slow


@dataclass
class Case:
    """One ``cropseg`` process, the log line on which it gets ``sig``, and what it left."""

    name: str
    args: list[str]
    trigger: str
    sig: signal.Signals
    root: Path
    uri: str
    out: Path
    #: send to the whole process group, as a terminal's Ctrl-C does
    group: bool = False
    proc: subprocess.Popen | None = None
    lines: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    sent: bool = False

    def start(self, env: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cropseg.cli", *self.args],
            cwd=self.root,
            env=dict(env, MLFLOW_TRACKING_URI=self.uri),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.threads = [threading.Thread(target=self._read, args=(s,), daemon=True) for s in ("stdout", "stderr")]
        for t in self.threads:
            t.start()

    def _read(self, stream: str) -> None:
        assert self.proc is not None
        for line in getattr(self.proc, stream):
            self.lines[stream].append(line)
            if not self.sent and self.trigger in line:
                self.sent = True
                if self.group:
                    os.killpg(self.proc.pid, self.sig)
                else:
                    self.proc.send_signal(self.sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        for t in self.threads:
            t.join(timeout=30)
        return rc

    @property
    def stderr(self) -> str:
        return "".join(self.lines["stderr"])

    @property
    def output(self) -> str:
        return "".join(self.lines["stdout"]) + self.stderr


@pytest.fixture(scope="module")
def cases(tmp_path_factory, store_template) -> dict[str, tuple[Case, int]]:
    root = tmp_path_factory.mktemp("signals")
    tiny = root / "tiny"
    train, test = write_tiny_scene(tiny, name="train", seed=1), write_tiny_scene(tiny, name="test", seed=2)
    env = dict(os.environ, CROPSEG_CACHE_DIR=str(root / "cache"), PYTHONUNBUFFERED="1")
    env.pop("CROPSEG_BLOCK_PLUGINS", None)
    local = local_overrides(train, test)[:-1]

    def run_case(name: str, trigger: str, sig: signal.Signals, *extra: str) -> Case:
        d = root / name
        return Case(
            name,
            [*local, f"output_dir={d / 'out'}", f"cache_dir={root / 'cache'}", *extra],
            trigger,
            sig,
            d,
            store_template.copy(d),
            d / "out",
        )

    cases = [
        # KNN's k grid is tuned by spatial CV right after the sample is drawn
        run_case("fit-SIGTERM", "training sample:", signal.SIGTERM),
        # the in-process Dask cluster starts with the first blocks of the test scene's prediction
        run_case("predict-SIGINT", "dask: in-process LocalCluster", signal.SIGINT, "block_size=32"),
        run_case("model-SIGTERM", "logging the pipeline as the run's MLflow model", signal.SIGTERM),
        # Ctrl-C in a terminal reaches the Dask worker processes too: they leave the shutdown to cropseg
        run_case(
            "workers-ctrl-c",
            "dask: LocalCluster of 2 worker processes",
            signal.SIGINT,
            "block_size=32",
            "parallel.processes=true",
            "parallel.workers=2",
        ),
    ]
    sweep = root / "sweep-SIGTERM"
    cases.append(
        Case(
            "sweep-SIGTERM",
            ["--multirun", *local, "classifier.k_grid=[3],[5]", f"hydra.sweep.dir={sweep / 'multirun'}"],
            "training sample:",
            signal.SIGTERM,
            sweep,
            store_template.copy(sweep),
            sweep / "multirun" / "0",
        )
    )
    cases[3].group = True  # workers-ctrl-c
    for c in cases:
        c.start(env)

    # a model for `cropseg predict`, trained in this process meanwhile
    trained = root / "trained"
    uri = store_template.copy(trained)
    result = cropseg.run(
        [
            *local,
            "classifier=logistic_regression",
            "classifier.cv=none",
            "classifier.grid.C=[1]",
            f"tracking.uri={uri}",
            f"cache_dir={root / 'cache'}",
        ],
        output_dir=trained / "out",
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = root / f"cropseg-predict-{sig.name}"
        c = Case(
            f"cropseg-predict-{sig.name}",
            [
                "predict",
                f"runs:/{result.run_id}/model",
                str(test.image),
                "--metadata",
                str(test.metadata),
                "--ground-truth",
                str(test.ground_truth),
                "--output-dir",
                str(d / "out"),
                "--block-size",
                "32",
                "--run-name",
                d.name,
            ],
            "dask: in-process LocalCluster",
            sig,
            d,
            uri,
            d / "out",
        )
        c.start(env)
        cases.append(c)
    return {c.name: (c, c.wait(timeout=600)) for c in cases}


NAMES = [
    "fit-SIGTERM",
    "predict-SIGINT",
    "model-SIGTERM",
    "workers-ctrl-c",
    "sweep-SIGTERM",
    "cropseg-predict-SIGTERM",
    "cropseg-predict-SIGINT",
]


@pytest.mark.parametrize("name", NAMES)
def test_signal_ends_the_command_cleanly(cases, name):
    case, rc = cases[name]
    assert case.sent, f"{name}: never reached {case.trigger!r}:\n{case.output[-3000:]}"
    assert rc == 128 + case.sig, case.output[-3000:]
    assert "Traceback" not in case.output, case.output[-3000:]
    errors = [ln for ln in case.stderr.splitlines() if ln.startswith("cropseg: error:")]
    what = "terminated by SIGTERM" if case.sig == signal.SIGTERM else "interrupted by SIGINT"
    assert len(errors) == 1 and what in errors[0], case.stderr[-3000:]
    if not name.startswith("cropseg-predict"):  # a run logs to stdout: the error is all of stderr
        assert case.stderr.strip().splitlines() == errors
    else:
        assert case.stderr.strip().splitlines()[-1] == errors[0]

    # nothing of the process group is left (the Dask cluster's threads and processes stopped)
    assert case.proc is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(case.proc.pid, 0)

    # the MLflow run(s) ended KILLED with the signal as the error
    client = MlflowClient(case.uri)
    exp = client.get_experiment_by_name("cropseg-predict" if name.startswith("cropseg-predict") else "cropseg")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    if name.startswith("cropseg-predict"):
        runs = [r for r in runs if r.info.run_name == name]
        assert len(runs) == 1
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    reason = "terminated by SIGTERM" if case.sig == signal.SIGTERM else "interrupted by SIGINT (Ctrl-C)"
    if name == "sweep-SIGTERM":  # the parent and the job it was running
        assert {r.data.tags.get("cropseg.sweep"): r.data.tags["cropseg.error"] for r in runs} == {
            "true": "the sweep was stopped by a signal",
            None: reason,
        }
    else:
        assert [r.data.tags["cropseg.error"] for r in runs] == [reason]
    if name == "model-SIGTERM":  # the model MLflow had logged (READY) before the signal took effect is gone
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        assert client.search_logged_models(experiment_ids=[exp.experiment_id]) == []
        with pytest.raises((MlflowException, OSError)):
            download_artifacts(
                f"runs:/{runs[0].info.run_id}/model", tracking_uri=case.uri, dst_path=str(case.root / "dl")
            )

    # nothing that looks like a result: FAILED.txt only (Hydra's own .hydra/ and job log aside)
    left = sorted(
        p.relative_to(case.out).as_posix()
        for p in case.out.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    )
    assert left == ["FAILED.txt"], left
    assert (
        (case.out / "FAILED.txt")
        .read_text()
        .startswith("Terminated:" if case.sig == signal.SIGTERM else "KeyboardInterrupt")
    )
    assert not list(case.out.parent.glob(f".{case.out.name}.partial-*"))


def test_a_signal_python_drops_inside_a_gc_callback_still_stops_the_command(tmp_path):
    """Python drops an exception raised by a signal handler while a garbage-collector callback runs (it prints
    "Exception ignored in ..."; Dask's GC diagnostics install such a callback, and a `cropseg predict` once ran
    to FINISHED after its SIGTERM this way). The signal is remembered and raised again where the command
    would commit its result, quietly."""
    script = tmp_path / "gc_signal.py"
    script.write_text(
        """
import gc, os, signal, sys
from cropseg.signals import Terminated, handle_signals, raise_if_received

def callback(phase, info):
    if phase == "start":
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, inside the callback
            pass

with handle_signals():
    gc.callbacks.append(callback)
    gc.collect()
    gc.callbacks.remove(callback)
    print("the exception was dropped inside the callback", flush=True)
    try:
        raise_if_received()
    except Terminated as exc:
        print(f"raised again: {exc}", flush=True)
        sys.exit(143)
sys.exit(0)
"""
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "the exception was dropped inside the callback",
        "raised again: terminated by SIGTERM",
    ]
    assert proc.stderr == ""  # no "Exception ignored in ..." traceback


def test_a_signal_during_composition_is_raised_after_it(monkeypatch):
    """SIGINT landing while OmegaConf builds a node used to surface as a ConfigKeyError from OmegaConf's
    clean-up of the half-made node (a search stopped mid-trial then exited 1 with a traceback): the
    composition now finishes and the KeyboardInterrupt follows."""
    from omegaconf import listconfig

    from cropseg.config import compose
    from cropseg.signals import handle_signals

    original = listconfig.ListConfig._set_item_impl
    sent: list[int] = []

    def interrupted(self, *args, **kwargs):
        if not sent:
            sent.append(1)
            self._get_flag("readonly")  # as the real one does first: the node's flag cache is now set
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # Python runs the handler at its next check, inside this loop
                pass
        return original(self, *args, **kwargs)

    # append() leaves a None slot for the item _set_item_impl then fills: the signal lands in between
    monkeypatch.setattr(listconfig.ListConfig, "_set_item_impl", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught, handle_signals():
        compose(["classifier=knn"])
    assert sent and type(caught.value) is KeyboardInterrupt


_NOISY_STOP = """
import asyncio
import sys

from cropseg.parallel import BlockExecutor, ParallelConfig
from cropseg.signals import handle_signals, report


def wait_then_log(ctx, item):
    # in a worker process: wait until the worker stops (after the Ctrl-C the test sends), then log what a
    # worker logs when its heartbeat fails while it closes: an error with a traceback
    import logging, time
    from distributed import get_worker

    worker = get_worker()
    print("task started", flush=True)
    deadline = time.monotonic() + 60
    while worker.status.name == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        raise OSError("ConnectionPool closing.")
    except OSError:
        logging.getLogger("distributed.worker").exception("Failed to communicate with scheduler during heartbeat.")
    print(f"worker logged while {worker.status.name}", flush=True)
    return item


async def unretrieved():
    async def replicate():
        raise KeyError("tcp://127.0.0.1:9")

    task = asyncio.ensure_future(replicate())
    await asyncio.sleep(0.05)
    assert task.done()
    del task  # the last reference: asyncio logs "Task exception was never retrieved" with a traceback


def main():
    try:
        with handle_signals():
            with BlockExecutor(ParallelConfig(backend="dask", processes=True, workers=1)) as ex:
                try:
                    list(ex.map(wait_then_log, [1], None, 1))
                except KeyboardInterrupt:
                    # before the executor closes: a scatter to a worker the scheduler does not know, which it
                    # logs with a traceback (as it did for a worker it had just dropped, under load)
                    try:
                        ex.client.scatter(1, workers=["tcp://127.0.0.1:9"])
                    except KeyError:
                        print("the scheduler refused a scatter", flush=True)
                    # a coroutine's exception nobody retrieved, which asyncio logs when the task is collected
                    # (as the scheduler's scatter did when a worker was removed under it, in a loaded run)
                    asyncio.run(unretrieved())
                    print("asyncio logged an unretrieved exception", flush=True)
                    raise
    except KeyboardInterrupt as exc:
        sys.exit(report("cropseg", exc))


if __name__ == "__main__":  # the worker processes are spawned: they import this file too
    main()
"""


def test_dask_logs_after_a_signal_stay_off_stderr(tmp_path):
    """Ctrl-C during a block on worker processes: what Dask logs from then on (the scheduler in this process
    refusing a scatter to a worker it does not know; an unretrieved coroutine exception; a worker process's
    failing heartbeat while it closes, all with tracebacks, as seen in loaded runs) stays off stderr, which holds the one ``cropseg:`` line;
    the records were really logged (the script says so on stdout)."""
    script = tmp_path / "noisy_stop.py"
    script.write_text(_NOISY_STOP)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("task started"):
                os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the workers get it too
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=30)
    stdout, stderr = "".join(out), "".join(err)
    assert rc == 130, stdout + stderr
    for said in ("the scheduler refused a scatter", "asyncio logged", "worker logged while closing"):
        assert said in stdout, stdout + stderr
    assert "Traceback" not in stderr and "distributed" not in stderr, stderr
    assert stderr.splitlines() == ["cropseg: error: interrupted by SIGINT (Ctrl-C)"], stderr


def test_on_signal_callbacks_run_the_moment_the_signal_arrives():
    """A layer above (the block executor quieting Dask's logs) learns of the signal at once, even inside a
    critical section that holds the exception back; a removed callback is not called again."""
    from cropseg.signals import Terminated, deferred, handle_signals, on_signal

    seen: list[int] = []
    remove = on_signal(seen.append)
    try:
        with pytest.raises(KeyboardInterrupt), handle_signals():
            with deferred():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10_000):  # Python runs the handler at its next check, inside this loop
                    pass
                assert seen == [signal.SIGINT]  # while the KeyboardInterrupt still waits for the section's end
    finally:
        remove()
    remove()  # removing twice is harmless
    with pytest.raises(Terminated), handle_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass
    assert seen == [signal.SIGINT]
