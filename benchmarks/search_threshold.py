"""``cropseg search`` with each trial's decision threshold chosen by its CV (the default,
``classifier.threshold=auto``) against the fixed 0.5 every trial had before (``classifier.threshold=0.5``),
on the hard SYNTHETIC preset, over several source seeds, the two variants alternating in order.

    .venv/bin/python benchmarks/search_threshold.py --minutes 4 --seeds 42 7 3 --workdir /tmp/sth

Prints a markdown table (mean ± sd over the seeds, and every seed's value) of the chosen configuration's
test crop F1, its search CV, CV - test, the trials scored and the chosen threshold. Each search is one
``cropseg search`` subprocess with its own sqlite store under ``--workdir``; the scenes are generated once per
seed into ``--workdir/cache``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"auto": [], "fixed 0.5": ["classifier.threshold=0.5"]}


def run_search(work: Path, seed: int, variant: str, minutes: float, jobs: int, size: int) -> dict[str, float]:
    from mlflow import MlflowClient

    slug = f"s{seed}-{variant.replace(' ', '_')}"
    store = work / f"{slug}.db"
    cmd = [
        str(Path(sys.executable).with_name("cropseg")),
        "search",
        "--minutes",
        str(minutes),
        "--jobs",
        str(jobs),
        "--output-dir",
        str(work / slug),
        "source.preset=hard",
        f"source.seed={seed}",
        f"source.size={size}",
        f"cache_dir={work / 'cache'}",
        f"tracking.uri=sqlite:///{store}",
        *VARIANTS[variant],
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{slug}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    client = MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("cropseg")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`cropseg.sweep` = 'true'")
    chosen = client.get_run(parent.data.tags["cropseg.best_run_id"])
    m = parent.data.metrics
    return {
        "test_crop_f1": m["test_crop_f1"],
        "search_cv_score": m["search_cv_score"],
        "cv_test_gap": m["cv_test_gap"],
        "trials": m["search_trials"],
        "threshold": float(chosen.data.params.get("fit.threshold", "nan")),
        "wall_minutes": (time.perf_counter() - started) / 60,
    }


def fmt(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f} ({', '.join(f'{v:.3f}' for v in vals)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    ap.add_argument("--workdir", type=Path, required=True)
    args = ap.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    for i, seed in enumerate(args.seeds):
        order = list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]
        for variant in order:
            m = run_search(work, seed, variant, args.minutes, args.jobs, args.size)
            for k, v in m.items():
                rows[variant].setdefault(k, []).append(v)
            print(f"seed {seed} {variant}: {m}", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(
        f"## cropseg search: threshold chosen by each trial's CV vs fixed 0.5 (hard SYNTHETIC preset)\n\n"
        f"`--minutes {args.minutes:g} --jobs {args.jobs}`, source seeds {', '.join(map(str, args.seeds))}, "
        f"{args.size}x{args.size} px; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
        f"{os.cpu_count()} cores. Mean ± sd over the seeds (each seed's value).\n"
    )
    print("| metric | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    for k in rows["auto"]:
        print(f"| {k} | " + " | ".join(fmt(rows[v][k]) for v in VARIANTS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
