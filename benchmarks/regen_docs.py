"""Regenerate the numbers the docs quote, from runs made now: one command, several seeds.

    .venv/bin/python benchmarks/regen_docs.py                 # 3 seeds, every model, writes the docs
    .venv/bin/python benchmarks/regen_docs.py --seeds 2 --models knn,unet --dry-run   # print, write nothing

Every model of ``MODELS`` runs once per seed (``seed=0..N-1``: the training sample, the classifiers' and the
U-Net's seeds; the SYNTHETIC sample scene itself stays the same, so every run is tested on the same data)
in a fresh sqlite MLflow store under ``--workdir``. The runs are ranked with ``cropseg compare``'s own code:
seeds grouped into one row (mean, sd, n) and the spatial block bootstrap 95 % intervals of the test target
and of the paired difference to the top row (``cropseg.uncertainty``). The script then replaces, between
``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->`` markers:

* ``docs/classifiers.md`` ``models``: the model table, with the machine, its load, the seeds and the date;
* ``README.md`` ``readme-models``: the U-Net and best pixel model sentence of the patch-model section;
* ``README.md`` ``area-demo``: the crop-area demo numbers (the KNN runs, ``evaluate.area_sample_size=400``).

It does not run in CI (about 40 minutes on a loaded 2-core machine with 3 seeds). Seeded runs repeat on
one machine with the same thread counts; other machines give other digits (floating-point order in BLAS,
PyTorch and threads), which is why the docs quote means and spreads over seeds, never single runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (row label, features label, overrides) of the docs' model table
MODELS = {
    "knn": ("knn (reference)", "bands", ["classifier=knn"]),
    "random_forest": ("random_forest", "bands", ["classifier=random_forest"]),
    "hist_gradient_boosting": ("hist_gradient_boosting", "bands", ["classifier=hist_gradient_boosting"]),
    "logistic_regression": ("logistic_regression", "bands", ["classifier=logistic_regression"]),
    "linear_svm": ("linear_svm", "bands", ["classifier=linear_svm"]),
    "mlp": ("mlp", "bands", ["classifier=mlp"]),
    "hgb_context": ("hist_gradient_boosting", "context (defaults)", ["+experiment=spatial_arm_context"]),
    "unet": ("unet (defaults)", "bands", ["classifier=unet"]),
}
#: every run: the default sample, a simulated area protocol of 400 points, no model logged (not needed here)
COMMON = ["evaluate.area_sample_size=400", "tracking.log_model=false"]


def machine() -> str:
    import numpy
    import sklearn

    try:
        import torch

        torch_v = f", torch {torch.__version__}"
    except ImportError:
        torch_v = ""
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, scikit-learn {sklearn.__version__}{torch_v}"
    )


def run_all(
    models: list[str], seeds: int, workdir: Path, extra: list[str]
) -> tuple[str, dict[str, list[str]], list[float], float]:
    """Every model x seed as a cropseg run; returns the store's URI, the run ids per model, the load
    averages seen before each run, and the wall seconds."""
    import cropseg

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    ids: dict[str, list[str]] = {m: [] for m in models}
    loads = []
    t0 = time.perf_counter()
    for m in models:
        for s in range(seeds):
            loads.append(os.getloadavg()[0])
            t = time.perf_counter()
            res = cropseg.run(
                [
                    *MODELS[m][2],
                    *COMMON,
                    f"seed={s}",
                    f"tracking.uri={uri}",
                    "tracking.experiment=regen-docs",
                    f"cache_dir={workdir / 'cache'}",
                    *extra,
                ],
                output_dir=workdir / "runs" / f"{m}-{s}",
            )
            ids[m].append(res.run_id)
            print(
                f"{m} seed {s}: test crop F1 {res.metrics['test_crop_f1']:.4f} ({time.perf_counter() - t:.0f} s, "
                f"load {loads[-1]:.1f})",
                flush=True,
            )
    return uri, ids, loads, time.perf_counter() - t0


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def model_table(uri: str, ids: dict[str, list[str]], workdir: Path) -> tuple[str, list]:
    """The Markdown table of the compared rows (seed groups with intervals) and the rows themselves."""
    from cropseg.compare import compare

    res = compare(uri, "regen-docs", out_dir=workdir / "compare", bootstrap=1000)
    by_run = {rid: m for m, runs in ids.items() for rid in runs}
    lines = [
        "| model | features | n | crop P | crop R | crop F1 (mean ± sd) | 95% CI | minus the top: 95% CI | "
        "crop IoU (mean ± sd) | weighted F1 | spatial CV (tuning) | fit s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [r for r in res["rows"] if r.status == "FINISHED"]
    for r in rows:
        label, feats, _ = MODELS[by_run[r.run_id]]
        mt, sd = r.metrics, r.spread
        iv, d = r.interval, r.difference
        diff = "top" if r.versus_top == "top" else f"{d.low:+.3f} to {d.high:+.3f} ({r.versus_top})" if d else "-"
        cv = mt.get("cv_score")
        lines.append(
            f"| {label} | {feats} | {len(r.runs)} | {mt['test_crop_precision']:.3f} | {mt['test_crop_recall']:.3f} "
            f"| {_pm(mt['test_crop_f1'], sd.get('test_crop_f1'))} | "
            f"{f'{iv.low:.3f} to {iv.high:.3f}' if iv else '-'} | {diff} | "
            f"{_pm(mt['test_iou'], sd.get('test_iou'))} | {mt['test_weighted_avg_f1']:.3f} | "
            f"{'-' if cv is None else f'{cv:.3f}'} | {mt.get('fit_seconds', float('nan')):.1f} |"
        )
    return "\n".join(lines), rows


def models_block(table: str, rows: list, ids: dict[str, list[str]], seeds: int, info: dict) -> str:
    by_run = {rid: m for m, runs in ids.items() for rid in runs}
    top = rows[0]
    same = [MODELS[by_run[r.run_id]][0] for r in rows[1:] if r.versus_top == "n.s."]
    lines = [
        f"Generated by `benchmarks/regen_docs.py --seeds {seeds}` on {info['date']} (UTC), on the default "
        f"SYNTHETIC sample (1000x1000 px, sample seed 42, the same test scene for every run), each model with "
        f"seeds {', '.join(map(str, range(seeds)))} (`seed=`: the training sample and the model's own seed). "
        f"Machine: {info['machine']}; load average {info['load_min']:.1f} to {info['load_max']:.1f} during the "
        f"runs ({info['minutes']:.0f} min in all; times are only comparable within this table)."
        + (f" Extra overrides: `{' '.join(info['overrides'])}`." if info["overrides"] else ""),
        "",
        "Ranked by mean test crop F1 (the default target). *95% CI*: spatial block bootstrap of the test crop "
        "F1 of the seeds' mean (128-px blocks of the test scene, 1000 replicates); *minus the top*: the paired "
        "interval of this row's crop F1 minus the top row's, from the same block draws; *n.s.*: not "
        "distinguishable from the top. *spatial CV (tuning)*: each classifier's own tuning score (`cv_score`: "
        "the target, crop F1, of its spatial CV, mean over seeds); *fit s*: mean fit seconds.",
        "",
        table,
        "",
        f"Top: {MODELS[by_run[top.run_id]][0]} ({MODELS[by_run[top.run_id]][1]}); "
        + (
            f"not distinguishable from it on this test scene: {', '.join(same)}."
            if same
            else "every other row is distinguishable from it on this test scene."
        )
        + " Seeded runs repeat on one machine with the same thread counts, not across machines: compare "
        "models by the mean and spread over seeds, not by single runs.",
    ]
    return "\n".join(lines)


def readme_block(rows: list, ids: dict[str, list[str]], info: dict) -> str:
    by_run = {rid: m for m, runs in ids.items() for rid in runs}
    unet = next((r for r in rows if by_run[r.run_id] == "unet"), None)
    pixel = [r for r in rows if by_run[r.run_id] not in ("unet", "hgb_context")]
    knn = next((r for r in rows if by_run[r.run_id] == "knn"), None)

    def fig(r) -> str:  # noqa: ANN001
        return (
            f"crop F1 {_pm(r.metrics['test_crop_f1'], r.spread.get('test_crop_f1'))} and IoU "
            f"{_pm(r.metrics['test_iou'], r.spread.get('test_iou'))}"
        )

    parts = [f"Measured on the synthetic sample over {info['seeds']} seeds ({info['date']}, docs/classifiers.md):"]
    if unet is not None:
        best_name = "{} with {} features".format(*MODELS[by_run[rows[0].run_id]][:2])
        standing = {
            "top": "the best of the table",
            "n.s.": f"not distinguishable from the best, {best_name}",
            "lower": f"distinguishably below the best, {best_name}",
        }.get(unet.versus_top, "no interval")
        parts.append(f"the default U-Net reached test {fig(unet)} ({standing});")
    if pixel:
        best = pixel[0]
        parts.append(f"the best pixel-only model ({MODELS[by_run[best.run_id]][0]}) {fig(best)};")
    if knn is not None:
        parts.append(f"KNN {fig(knn)}.")
    if unet is not None:
        parts.append(
            f"A U-Net run's fit took {unet.metrics.get('fit_seconds', float('nan')):.0f} s on average "
            f"({info['machine_short']}, load {info['load_min']:.0f}-{info['load_max']:.0f})."
        )
    return " ".join(parts)


def area_block(uri: str, ids: dict[str, list[str]], info: dict) -> str | None:
    from mlflow import MlflowClient

    runs = [MlflowClient(uri).get_run(r).data.metrics for r in ids.get("knn", [])]
    runs = [m for m in runs if "area_adjusted_crop_ha" in m]
    if not runs:
        return None
    import numpy as np

    def stat(key: str) -> str:
        v = [m[key] for m in runs]
        return f"{np.mean(v):.1f}" + (f" ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else "")

    held = sum(bool(m.get("area_ci_contains_reference")) for m in runs)
    first = runs[0]
    return (
        f"On the default SYNTHETIC sample (`cropseg evaluate.area_sample_size=400`, KNN, seeds "
        f"0..{len(runs) - 1}, generated by `benchmarks/regen_docs.py` on {info['date']}): mapped crop area "
        f"{stat('area_mapped_crop_ha')} ha, reference {first['area_reference_crop_ha']:.1f} ha, error-adjusted "
        f"{stat('area_adjusted_crop_ha')} ha; seed 0's 95 % CI {first['area_adjusted_crop_ci_low_ha']:.1f} - "
        f"{first['area_adjusted_crop_ci_high_ha']:.1f} ha. The interval held the reference area in {held} of "
        f"{len(runs)} seeds."
    )


def replace_block(path: Path, name: str, text: str, dry_run: bool) -> None:
    src = path.read_text()
    pattern = re.compile(
        rf"(<!-- BEGIN GENERATED: {re.escape(name)} -->\n).*?(\n<!-- END GENERATED: {re.escape(name)} -->)", re.S
    )
    if not pattern.search(src):
        raise SystemExit(f"regen_docs: {path} has no GENERATED block {name!r}")
    new = pattern.sub(lambda m: m.group(1) + text + m.group(2), src)
    if dry_run:
        print(f"--- {path.name} [{name}]\n{text}\n")
    else:
        path.write_text(new)
        print(f"wrote {path.relative_to(REPO)} [{name}]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (default: 3)")
    p.add_argument("--models", default=",".join(MODELS), help="models of MODELS to run (default: all)")
    p.add_argument("--workdir", type=Path, default=None, help="runs and store (default: a temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="print the blocks instead of writing the docs")
    p.add_argument("overrides", nargs="*", help="extra run overrides, for a quick check (e.g. source.size=300)")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or args.seeds < 1:
        p.error(f"unknown models {unknown} (known: {', '.join(MODELS)})" if unknown else "--seeds: at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        uri, ids, loads, wall = run_all(models, args.seeds, workdir, args.overrides)
        loads.append(os.getloadavg()[0])
        info = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "machine_short": f"{os.cpu_count()} cores",
            "load_min": min(loads),
            "load_max": max(loads),
            "minutes": wall / 60,
            "seeds": args.seeds,
            "overrides": args.overrides,
        }
        table, rows = model_table(uri, ids, workdir)
        block = models_block(table, rows, ids, args.seeds, info)
        replace_block(REPO / "docs" / "classifiers.md", "models", block, args.dry_run)
        replace_block(REPO / "README.md", "readme-models", readme_block(rows, ids, info), args.dry_run)
        if (area := area_block(uri, ids, info)) is not None:
            replace_block(REPO / "README.md", "area-demo", area, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
