"""The block executor: config validation, ordering, and prediction / filtering on a real Dask cluster
(a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1) equal to the serial path byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropseg.errors import ClusterError, ConfigError
from cropseg.parallel import BlockExecutor, ParallelConfig, current_executor, task_threads, use_executor
from cropseg.sampling import sample_training_pixels
from cropseg.scene_ops import apply_filters, predict_scene
from cropseg.testing import TINY_COEFFICIENTS, write_tiny_scene
from cropseg.types import Scene, VectorGroundTruth
from cropseg_plugins.bands import BandFeatures
from cropseg_plugins.knn import KNNClassifier
from cropseg_plugins.median_blur import MedianBlur
from cropseg_plugins.rasterize import RasterizeLabeler

DASK = Path(sys.executable).parent / "dask"
BLOCK = 48


# --------------------------------------------------------------------------------------------------
# config and executor basics
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"backend": "ray"}, "parallel.backend"),
        ({"workers": 0}, "parallel.workers"),
        ({"threads_per_worker": 0}, "parallel.threads_per_worker"),
        ({"max_in_flight": -2}, "parallel.max_in_flight"),
        ({"min_blocks": "many"}, "parallel.min_blocks"),
        ({"scheduler": ""}, "parallel.scheduler"),
        ({"nodes": 3}, "unknown option 'nodes'"),
    ],
)
def test_bad_parallel_options(opts, match):
    with pytest.raises(ConfigError, match=match):
        ParallelConfig.from_config(opts)


def test_config_defaults_and_yaml_section():
    from cropseg.config import compose

    cfg = compose([])
    pc = ParallelConfig.from_config(cfg.parallel)
    # runs process blocks in parallel by default: a Dask LocalCluster of threads in this process
    assert pc.backend == "dask" and pc.scheduler is None and pc.processes is False and pc.min_blocks == 1
    assert pc.threads_per_worker == 1
    # library calls outside a run (no config) stay single-process
    assert ParallelConfig.from_config(None) == ParallelConfig() and ParallelConfig().backend == "serial"
    with pytest.raises(ConfigError, match="parallel.processes"):
        ParallelConfig.from_config({"processes": "yes"})


def _square(ctx, item):
    return ctx * item * item, task_threads()


def test_serial_map_keeps_order_and_gives_tasks_every_core():
    ex = BlockExecutor(ParallelConfig(backend="serial"))
    out = list(ex.map(_square, range(5), 10, 5))
    assert [v for v, _ in out] == [0, 10, 40, 90, 160]
    assert {t for _, t in out} == {task_threads()} and task_threads() >= 1


def test_small_scenes_stay_serial_and_current_executor_is_scoped():
    ex = BlockExecutor(ParallelConfig(backend="dask", min_blocks=100))
    assert not ex.uses_cluster(99) and ex.uses_cluster(100)
    assert [v for v, _ in ex.map(_square, [3], 1, 1)] == [9]
    assert ex._client is None  # never started a cluster
    assert current_executor().config.backend == "serial"
    with use_executor(ex):
        assert current_executor() is ex
    assert current_executor() is not ex


def test_unreachable_scheduler_is_one_clear_error():
    ex = BlockExecutor(ParallelConfig(backend="dask", scheduler="tcp://127.0.0.1:9"))
    with pytest.raises(ClusterError, match=r"parallel.scheduler: cannot connect to tcp://127.0.0.1:9"):
        list(ex.map(_square, [1, 2], 1, 2))


# --------------------------------------------------------------------------------------------------
# a real cluster
# --------------------------------------------------------------------------------------------------


def _stop(procs: list[subprocess.Popen]) -> None:
    """Workers first, then the scheduler: SIGTERM, then SIGKILL after 10 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A ``dask scheduler`` and two single-threaded ``dask worker`` processes on 127.0.0.1; yields the
    scheduler address. Start-up waits are bounded; every process is stopped at the end, even on failure."""
    from distributed import Client

    tmp_path = tmp_path_factory.mktemp("dask")
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def spawn(name: str, *args: str) -> None:
        out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([str(DASK), *args], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path))
        out.close()

    try:
        spawn(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(sched_file),
        )
        deadline = time.monotonic() + 60
        while not sched_file.is_file():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(logs / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            spawn(
                f"worker{i}",
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                f"w{i}",
                "--death-timeout",
                "60",
                "--local-directory",
                str(tmp_path / f"w{i}"),
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A SYNTHETIC 200x160 test scene (20 blocks of 48 px) and a KNN trained on another tiny scene."""
    d = tmp_path_factory.mktemp("par")
    train = write_tiny_scene(d, name="train", width=120, height=96, seed=1)
    test = write_tiny_scene(d, name="test", width=200, height=160, seed=2, noise=0.04)
    scenes = [
        Scene(name=n, path=t.image, gains=TINY_COEFFICIENTS, nodata=0, ground_truth=VectorGroundTruth(t.ground_truth))
        for n, t in (("train", train), ("test", test))
    ]
    labels = RasterizeLabeler().label(scenes[0], d / "train_labels.tif")
    ts = sample_training_pixels(scenes[0], labels, BandFeatures(), max_per_class=2000, seed=0)
    clf = KNNClassifier(k_grid=5, cv="random", n_jobs=1)
    clf.fit(ts.X, ts.y, ts.groups)
    return scenes[1], clf


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_prediction_in_chunks_of_pixels_equals_whole_blocks(tmp_path, tiny_model, monkeypatch):
    """A block's pixels are classified in chunks (bounded copies inside the classifier): the same mask
    whatever the chunk size."""
    import cropseg.blocks

    scene, clf = tiny_model
    whole = tmp_path / "whole.tif"
    n_whole, _ = predict_scene(scene, BandFeatures(), clf, whole, BLOCK)
    monkeypatch.setattr(cropseg.blocks, "PREDICT_CHUNK", 97)  # every 48 px block in ~24 uneven chunks
    chunked = tmp_path / "chunked.tif"
    n_chunked, _ = predict_scene(scene, BandFeatures(), clf, chunked, BLOCK)
    assert n_chunked == n_whole > 97 * 20
    assert _read(chunked).tobytes() == _read(whole).tobytes()
    assert {0, 1} <= set(np.unique(_read(whole)).tolist())


@pytest.mark.slow
def test_prediction_and_filters_on_a_dask_cluster_equal_the_serial_path(tmp_path, dask_cluster, tiny_model):
    from distributed import Client, get_task_stream

    scene, clf = tiny_model
    n_blocks = -(-scene.grid.height // BLOCK) * -(-scene.grid.width // BLOCK)
    assert n_blocks == 20
    filters = [("median_blur", MedianBlur(kernel=5)), ("median_blur3", MedianBlur(kernel=3))]

    serial_raw = tmp_path / "serial" / "raw.tif"
    n_serial, _ = predict_scene(scene, BandFeatures(), clf, serial_raw, BLOCK)
    serial_final = apply_filters(serial_raw, filters, tmp_path / "serial" / "mask.tif", BLOCK)

    cfg = ParallelConfig(backend="dask", scheduler=dask_cluster, max_in_flight=3)
    with Client(dask_cluster, timeout="30s") as watcher, get_task_stream(client=watcher) as stream:
        with BlockExecutor(cfg) as ex, use_executor(ex):
            dask_raw = tmp_path / "dask" / "raw.tif"
            n_dask, _ = predict_scene(scene, BandFeatures(), clf, dask_raw, BLOCK)
            dask_final = apply_filters(dask_raw, filters, tmp_path / "dask" / "mask.tif", BLOCK)
    workers = {t["worker"] for t in stream.data}
    n_tasks = len(stream.data)

    assert n_dask == n_serial > 0
    raw_s, raw_d = _read(serial_raw), _read(dask_raw)
    assert raw_s.tobytes() == raw_d.tobytes()
    assert _read(serial_final).tobytes() == _read(dask_final).tobytes()
    assert dask_raw.read_bytes() == serial_raw.read_bytes() and dask_final.read_bytes() == serial_final.read_bytes()
    # the masks are not trivial, and the work really ran on both cluster workers
    assert {0, 1, 255} <= set(np.unique(raw_s).tolist())
    assert n_tasks >= 3 * n_blocks  # prediction + two filter passes
    assert len(workers) == 2


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory, store_template):
    """One serial run on a tiny SYNTHETIC pair, shared by the tests comparing other executors with it: its
    overrides (less the backend) and result."""
    import cropseg
    from cropseg.testing import local_overrides

    d = tmp_path_factory.mktemp("serial-run")
    pair = write_tiny_scene(d, name="train", seed=1), write_tiny_scene(d, name="test", seed=2)
    base = [
        *local_overrides(*pair),
        f"tracking.uri={store_template.copy(d)}",
        "block_size=16",
        f"cache_dir={d / 'cache'}",
        "tracking.log_model=false",
        "classifier.k_grid=[5]",
    ]
    return base, cropseg.run([*base, "parallel.backend=serial"], output_dir=d / "serial")


@pytest.mark.slow
def test_a_run_on_the_dask_cluster_equals_the_serial_run(tmp_path, dask_cluster, serial_run):
    """The whole pipeline with ``parallel.backend=dask`` and the cluster's scheduler address writes the same
    masks and reports the same scores as the serial run."""
    import cropseg

    base, serial = serial_run
    dask = cropseg.run(
        [*base, "parallel.backend=dask", f"parallel.scheduler={dask_cluster}"], output_dir=tmp_path / "dask"
    )
    for key in ("test_mask_raw", "test_mask"):
        assert dask.outputs[key].read_bytes() == serial.outputs[key].read_bytes()
    for key in ("test_weighted_avg_f1", "test_crop_f1", "train_weighted_avg_f1", "crop_area_ha", "predict_pixels"):
        assert dask.metrics[key] == serial.metrics[key]
    assert serial.metrics["test_weighted_avg_f1"] > 0.9


def _where(ctx, item):
    import os
    import threading

    return item * ctx, os.getpid(), threading.current_thread().name, task_threads()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [True, False])
def test_local_cluster_starts_maps_in_order_and_stops(processes, caplog):
    import logging
    import os

    caplog.set_level(logging.INFO)
    ex = BlockExecutor(ParallelConfig(backend="dask", workers=2, max_in_flight=2, processes=processes))
    with ex:
        out = list(ex.map(_where, range(7), 3, 7))
        assert [v for v, *_ in out] == [0, 3, 6, 9, 12, 15, 18]
        cluster = ex._cluster
        info = ex.client.scheduler_info()["workers"]
        # worker processes, or one in-process worker with a thread per worker
        assert len(info) == (2 if processes else 1)
        assert sum(w["nthreads"] for w in info.values()) == 2
        pids = {pid for _, pid, _, _ in out}
        assert (os.getpid() not in pids) if processes else (pids == {os.getpid()})
        if not processes:  # tasks ran on the cluster's threads, not on this (the driver's) thread
            import threading

            assert threading.current_thread().name not in {name for _, _, name, _ in out}
        assert {t for *_, t in out} == {1}  # each task is single-threaded on a cluster
    assert ex._client is None and cluster.status.name == "closed"
    # the scheduler lives in this process either way: its INFO lines ("Scheduler at: tcp://...", each worker
    # joining) stay out of the run's log
    chatter = [
        r.getMessage() for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING
    ]
    assert chatter == []


@pytest.mark.slow
def test_a_default_run_equals_the_serial_run(tmp_path, serial_run):
    """The run config's default (``parallel.backend=dask``, an in-process LocalCluster) writes the same
    masks and scores as ``parallel.backend=serial``."""
    import cropseg

    base, serial = serial_run
    default = cropseg.run(base, output_dir=tmp_path / "default")
    import mlflow

    tracking_uri = next(o.split("=", 1)[1] for o in base if o.startswith("tracking.uri="))
    logged = mlflow.MlflowClient(tracking_uri).get_run(default.run_id).data.params
    assert logged["parallel.backend"] == "dask" and logged["parallel.processes"] == "False"
    for key in ("test_mask_raw", "test_mask"):
        assert default.outputs[key].read_bytes() == serial.outputs[key].read_bytes()
    for key in ("test_weighted_avg_f1", "crop_area_ha", "predict_pixels"):
        assert default.metrics[key] == serial.metrics[key]


def test_cores_follow_the_process_cpu_affinity():
    """Slurm, taskset and cpusets restrict a process to some cores: task threads and the LocalCluster's
    default size follow the affinity, not the machine's count."""
    import os

    from cropseg.parallel import available_cores

    if not hasattr(os, "sched_getaffinity"):
        assert available_cores() == (os.cpu_count() or 1)
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cores() == 1 and task_threads() == 1
        with BlockExecutor(ParallelConfig(backend="dask")) as ex:
            list(ex.map(_square, [1], 1, 1))
            assert sum(w["nthreads"] for w in ex.client.scheduler_info()["workers"].values()) == 1
    finally:
        os.sched_setaffinity(0, before)
    assert available_cores() == len(before)


def test_the_traceback_of_an_interrupted_dask_call_is_dropped_and_nothing_else(tmp_path):
    """distributed.utils.sync's cancel callback reads an unbound ``future`` when Ctrl-C / SIGTERM interrupts a
    client call early; tornado logs that NameError with a traceback, which a stopped command must not print.
    Only that record is dropped: the same error from elsewhere, and other errors, still reach the log."""
    import logging

    from cropseg.parallel import BlockExecutor

    def record_of(source: str, filename: str) -> logging.LogRecord:
        ns: dict = {}
        exec(compile(source, filename, "exec"), ns)  # a real exception raised in code from that file
        try:
            ns["cancel"]()
        except Exception:
            info = sys.exc_info()
            return logging.LogRecord(
                "tornado.application", logging.ERROR, filename, 1, "Exception in callback", (), info
            )
        raise AssertionError("no exception")

    with BlockExecutor(ParallelConfig(backend="dask", workers=1)) as ex:
        assert [v for v, _ in ex.map(_square, [1, 2], 1, 2)] == [1, 4]  # starts the client: installs the filter
    log = logging.getLogger("tornado.application")
    dask_bug = str(tmp_path / "site-packages" / "distributed" / "utils.py")
    elsewhere = str(tmp_path / "mine.py")
    assert not log.filter(record_of("def cancel():\n    future.cancel()\n", dask_bug))
    assert log.filter(record_of("def cancel():\n    future.cancel()\n", elsewhere))
    assert log.filter(record_of("def cancel():\n    raise ValueError('x')\n", dask_bug))
