"""Logging a run's model and its metrics against a real ``mlflow server``: the order cropseg used before
(metrics, then the model: MLflow links the run's metrics to the new model with one metric-history request
per metric) side by side with the order it uses now (the model, then the metrics in one batch carrying the
model's id). Same server, same run shape (107 metrics, as a cropseg run logs), alternating repeats.

    .venv/bin/python benchmarks/bench_model_logging.py [--repeats 3] [--metrics 107]

Prints a Markdown table of seconds per run (median) and the ratio; checks that both ways give the logged
model every metric.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _server(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--backend-store-uri", f"sqlite:///{tmp / 's.db'}", "--artifacts-destination", str(tmp / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):  # noqa: S310 - a local server
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("mlflow server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metrics", type=int, default=107)
    args = ap.parse_args()

    import mlflow
    import mlflow.pyfunc
    from mlflow.entities import Metric

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with tempfile.TemporaryDirectory() as d:
        proc, url = _server(Path(d))
        try:
            os.environ["MLFLOW_TRACKING_URI"] = url
            client = mlflow.MlflowClient(url)
            exp = client.create_experiment("bench-model-logging")
            names = [f"metric_{i:03d}" for i in range(args.metrics)]

            def one(order: str) -> float:
                run = client.create_run(exp)  # ended by start_run's context (FINISHED)
                rid = run.info.run_id
                t0 = time.perf_counter()
                ts = int(time.time() * 1000)
                if order == "metrics, then model (MLflow links each metric)":
                    client.log_batch(rid, metrics=[Metric(n, 0.5, ts, 0) for n in names])
                    with mlflow.start_run(run_id=rid):
                        info = mlflow.pyfunc.log_model(name="model", python_model=Model())
                else:
                    with mlflow.start_run(run_id=rid):
                        info = mlflow.pyfunc.log_model(name="model", python_model=Model())
                    client.log_batch(
                        rid, metrics=[Metric(n, 0.5, ts, 0, run_id=rid, model_id=info.model_id) for n in names]
                    )
                seconds = time.perf_counter() - t0
                got = {m.key for m in client.get_logged_model(info.model_id).metrics or []}
                assert got == set(names), f"{order}: the model has {len(got)} of {len(names)} metrics"
                return seconds

            orders = ["metrics, then model (MLflow links each metric)", "model, then metrics with its id (cropseg)"]
            one(orders[1])  # warm-up (imports, first requests)
            times: dict[str, list[float]] = {o: [] for o in orders}
            for _ in range(args.repeats):
                for o in orders:
                    times[o].append(one(o))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    base = statistics.median(times[orders[0]])
    print(f"{args.metrics} metrics per run, mlflow {mlflow.__version__}, {args.repeats} alternating repeats, "
          f"load {' / '.join(f'{x:.2f}' for x in os.getloadavg())}\n")  # fmt: skip
    print("| order | seconds per run (median) | each repeat | ratio |")
    print("|---|---:|---|---:|")
    for o in orders:
        med = statistics.median(times[o])
        each = ", ".join(f"{t:.2f}" for t in times[o])
        print(f"| {o} | {med:.2f} | {each} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
