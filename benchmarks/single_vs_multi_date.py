"""Single-date vs multi-date models on the SYNTHETIC multi-date sample, over several seeds.

    .venv/bin/python benchmarks/single_vs_multi_date.py --seeds 1 2 3            # the table in docs/classifiers.md
    .venv/bin/python benchmarks/single_vs_multi_date.py --seeds 1                # one seed (about 15 minutes on 2 busy cores)

For each seed (``source.seed``: another landscape, other fields, other clouds) it runs
``cropseg --multirun +experiment=single_vs_multi_date`` (one sweep: the arms of
experiments/single_vs_multi_date.yaml) into a fresh sqlite MLflow store under ``--workdir``, then
``cropseg compare`` on that sweep (:func:`cropseg.compare.compare`, ``--bootstrap`` replicates of the
spatial block bootstrap), reads the child runs' test metrics back from the store and prints two Markdown
tables: per arm the mean and the standard deviation over the seeds of test crop F1 and IoU, and "best
single date" (per seed, the best of the single-date arms on the test scene: an optimistic choice for the
single-date side); then per arm and seed compare's 95 % interval of test crop F1 and, for the arms tested on
the same test stack (the multi-date ones; each single-date arm has its own test image), whether the arm is
distinguishable from the best of them (compare's paired difference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARMS = ("date0", "date1", "date2", "date3", "temporal", "unet", "tempcnn")


def run_seed(
    seed: int, arms: list[str], workdir: Path, report_only: bool = False, bootstrap: int = 1000
) -> dict[str, dict[str, float]]:
    store = workdir / f"seed{seed}"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    if not report_only:
        sweep(seed, store, uri, workdir)
    runs = read_runs(uri, arms)
    if bootstrap:
        found = intervals(uri, store / "compare", bootstrap)
        for m in runs.values():
            m.update(found.get(str(m["run_id"]), {}))
    return runs


def intervals(uri: str, out: Path, bootstrap: int) -> dict[str, dict[str, float | str]]:
    """``cropseg compare`` on the store's latest sweep: per run id the 95 % block bootstrap interval of its
    test crop F1 (``ci_low``, ``ci_high``) and ``versus_top`` (top / n.s. / lower within its test group)."""
    from cropseg.compare import compare

    res = compare(uri, "cropseg", "latest", out_dir=out, target="crop_f1", bootstrap=bootstrap, log_warning=False)
    found: dict[str, dict[str, float | str]] = {}
    for row in res["rows"]:
        if row.interval is not None:
            found[row.run_id] = {"ci_low": row.interval.low, "ci_high": row.interval.high, "versus_top": row.versus_top}
    return found


def sweep(seed: int, store: Path, uri: str, workdir: Path) -> None:
    store.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, CROPSEG_CACHE_DIR=str(workdir / "cache"))
    exe = Path(sys.executable).with_name("cropseg")
    cmd = [
        str(exe),
        "--multirun",
        "+experiment=single_vs_multi_date",
        f"source.seed={seed}",
        f"hydra.sweep.dir={store / 'multirun'}",
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=store, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"seed {seed}: cropseg failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"seed {seed}: {len(ARMS)} runs in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def read_runs(uri: str, arms: list[str]) -> dict[str, dict[str, float]]:
    """The child runs' metrics by arm, from the store of one seed's sweep."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    out: dict[str, dict[str, float]] = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            # the arms' tracking.run_name: single-date-<k>, multi-date-temporal, multi-date-unet, multi-date-tempcnn
            run_name = run.data.params.get("tracking.run_name") or ""
            name = run_name.replace("single-date-", "date").removeprefix("multi-date-")
            if name in arms and "test_crop_f1" in run.data.metrics:
                out[name] = {**run.data.metrics, "run_id": run.info.run_id}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workdir", type=Path, help="where the stores and the sample go (default: a temp dir)")
    parser.add_argument("--report-only", action="store_true", help="read the stores already in --workdir, run nothing")
    parser.add_argument("--bootstrap", type=int, default=1000, help="compare's bootstrap replicates (0: no intervals)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cropseg-smd-"))
    arms = list(ARMS)
    per_seed = {s: run_seed(s, arms, workdir, args.report_only, args.bootstrap) for s in args.seeds}
    rows: dict[str, list[tuple[float, float]]] = {}
    for _, runs in per_seed.items():
        for arm, m in runs.items():
            rows.setdefault(arm, []).append((m["test_crop_f1"], m["test_iou"]))
        singles = [(m["test_crop_f1"], m["test_iou"]) for a, m in runs.items() if a.startswith("date")]
        if singles:
            rows.setdefault("best single date", []).append(max(singles))

    def fmt(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    print(f"seeds {args.seeds}, workdir {workdir}\n")
    print("| arm | test crop F1 (mean ± sd over seeds) | test crop IoU | per seed (crop F1) |")
    print("|---|---|---|---|")
    for arm in [*arms, "best single date"]:
        if arm in rows:
            f1 = [v[0] for v in rows[arm]]
            iou = [v[1] for v in rows[arm]]
            print(f"| {arm} | {fmt(f1)} | {fmt(iou)} | {', '.join(f'{v:.3f}' for v in f1)} |")
    if not args.bootstrap:
        return
    print(
        f"\n`cropseg compare` per seed ({args.bootstrap} spatial block bootstrap replicates): test crop F1 and its "
        "95 % interval; for the arms tested on the same test stack, `n.s.` = not distinguishable from the best of "
        "them (paired difference), `lower` = below it\n"
    )
    print("| arm | " + " | ".join(f"seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for arm in arms:
        cells = []
        for s in args.seeds:
            m = per_seed[s].get(arm)
            if m is None or "ci_low" not in m:
                cells.append("-")
                continue
            vs = f" {m['versus_top']}" if not arm.startswith("date") and m.get("versus_top") else ""
            cells.append(f"{m['test_crop_f1']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]{vs}")
        print(f"| {arm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
