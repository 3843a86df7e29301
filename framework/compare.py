"""``cropseg compare``: rank tracked runs against ground truth, as tables, a chart and mask panels."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, CropsegError
from .tracking import TAG_PREFIX, Tracker, register_run_model

log = logging.getLogger("cropseg")

METRIC_COLUMNS = [
    ("test_crop_precision", "crop precision"),
    ("test_crop_recall", "crop recall"),
    ("test_crop_f1", "crop F1"),
    ("test_weighted_avg_f1", "weighted F1"),
    ("test_iou", "crop IoU"),
    ("cv_score", "CV score"),
    ("cv_spatial_f1_weighted", "spatial CV F1"),
    ("cv_random_f1_weighted", "random CV F1"),
    ("fit_seconds", "fit s"),
    ("predict_seconds", "predict s"),
    ("predict_pixels_per_second", "pixels/s"),
]
STAGE_TAGS = ["source", "labeler", "features", "classifier", "postprocessor"]
STAGE_PREFIXES = tuple(f"{s}." for s in STAGE_TAGS)
#: params never shown as "key params" (paths, bookkeeping)
_NOISE = ("tracking.", "output_dir", "cache_dir", "preview.", "plugins.", "source.train_", "source.test_",
          "source.image", "source.ground_truth", "features.names", "train.n_pixels", "hydra")


@dataclass
class Row:
    run_id: str
    name: str
    status: str
    stages: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    error: str


def collect(tracker: Tracker, parent_run_id: str | None) -> list[Row]:
    rows = []
    for r in tracker.runs(parent_run_id):
        rows.append(Row(
            run_id=r.info.run_id, name=r.info.run_name or r.info.run_id[:8], status=r.info.status,
            stages={s: r.data.tags.get(f"{TAG_PREFIX}{s}", "") for s in STAGE_TAGS},
            params=dict(r.data.params), metrics=dict(r.data.metrics),
            error=r.data.tags.get(f"{TAG_PREFIX}error", ""),
        ))
    return rows


def key_params(rows: list[Row]) -> list[str]:
    """Params whose values differ between the compared runs (plus fitted hyperparameters)."""
    keys = sorted({k for r in rows for k in r.params})
    out = []
    for k in keys:
        if k.startswith(_NOISE) or (k.startswith(STAGE_PREFIXES) and k.endswith(".name")):
            continue  # paths and bookkeeping; plugin names have their own columns
        values = {r.params.get(k) for r in rows}
        if len(values) > 1 or k.startswith("fit."):
            out.append(k)
    return out



def rank(rows: list[Row], by: str) -> list[Row]:
    def key(r: Row) -> tuple:
        v = r.metrics.get(by)
        ok = r.status == "FINISHED" and v is not None and not math.isnan(v)
        return (0 if ok else 1, -(v if ok else 0.0), r.name)

    return sorted(rows, key=key)


def table(rows: list[Row], params: list[str]) -> tuple[list[str], list[list[Any]]]:
    header = ["rank", "run", "run id", "status", *STAGE_TAGS, *params, *[label for _, label in METRIC_COLUMNS],
              "error"]
    body = []
    for i, r in enumerate(rows, 1):
        body.append([i, r.name, r.run_id, r.status, *[r.stages[s] for s in STAGE_TAGS],
                     *[r.params.get(p, "") for p in params],
                     *[r.metrics.get(m, "") for m, _ in METRIC_COLUMNS], r.error])
    return header, body


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"
    return str(v)


def markdown(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in body:
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def console(header: list[str], body: list[list[Any]]) -> str:
    keep = [i for i, h in enumerate(header) if h not in ("run id", "labeler", "features", "postprocessor", "error")]
    cells = [[header[i] for i in keep]] + [[_fmt(row[i]) for i in keep] for row in body]
    widths = [max(len(c[j]) for c in cells) for j in range(len(keep))]
    out = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells[1:]]
    return "\n".join(out)


def chart(rows: list[Row], path: Path) -> Path:
    from matplotlib.figure import Figure

    done = [r for r in rows if r.status == "FINISHED"]
    metrics = [("test_crop_precision", "crop precision"), ("test_crop_recall", "crop recall"),
               ("test_crop_f1", "crop F1"), ("test_weighted_avg_f1", "weighted F1"), ("test_iou", "crop IoU")]
    fig = Figure(figsize=(max(6, 1.6 * len(done) + 2), 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    x = np.arange(len(done))
    for i, (m, label) in enumerate(metrics):
        ax.bar(x + i * width, [r.metrics.get(m, np.nan) for r in done], width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, [r.name for r in done], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test scene")
    ax.legend(fontsize=8, ncol=len(metrics), loc="upper center", bbox_to_anchor=(0.5, 1.12), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def mask_panels(tracker: Tracker, rows: list[Row], path: Path, window: Sequence[int] | None,
                workdir: Path) -> Path | None:
    """Ground truth and each run's prediction-vs-ground-truth map for the same window of the test scene."""
    import rasterio
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from rasterio.windows import Window

    from .previews import DISAGREEMENT, PALETTE, _paint

    panels: list[tuple[str, np.ndarray]] = []
    win = None
    for r in rows:
        if r.status != "FINISHED":
            continue
        mask = tracker.download(r.run_id, "prediction/test_mask.tif", workdir / r.run_id)
        labels = tracker.download(r.run_id, "labels/test_labels.tif", workdir / r.run_id)
        if mask is None or labels is None:
            continue
        with rasterio.open(mask) as m, rasterio.open(labels) as t:
            if win is None:
                if window:
                    c, rr, size = (list(window) + [512])[:3]
                else:
                    size = min(512, m.width, m.height)
                    c, rr = (m.width - size) // 2, (m.height - size) // 2
                win = Window(c, rr, size, size)
                truth0 = t.read(1, window=win, boundless=True, fill_value=255)
                panels.append(("ground truth", _paint(truth0)))
            pred = m.read(1, window=win, boundless=True, fill_value=255)
            truth = t.read(1, window=win, boundless=True, fill_value=255)
        img = np.full((*pred.shape, 3), 255, dtype=np.uint8)
        for (tv, pv), (colour, _) in DISAGREEMENT.items():
            img[(truth == tv) & (pred == pv)] = colour
        f1 = r.metrics.get("test_weighted_avg_f1", float("nan"))
        panels.append((f"{r.name}\nweighted F1 {f1:.3f}", img))
    if len(panels) < 2:
        return None
    n = len(panels)
    cols = min(n, 4)
    nrows = -(-n // cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * nrows + 0.6), dpi=100)
    for i, (title, img) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    legend = [Patch(color=np.array(c) / 255, label=t) for c, t in DISAGREEMENT.values()]
    legend.append(Patch(color=np.array(PALETTE[0]) / 255, label="ground truth non-crop"))
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"test scene window cols {win.col_off}..{win.col_off + win.width}, rows {win.row_off}.."
                 f"{win.row_off + win.height}", fontsize=9)
    fig.savefig(path)
    return path


def compare(tracking_uri: str | None = None, experiment: str = "cropseg", sweep: str | None = None,
            rank_by: str = "test_weighted_avg_f1", out_dir: Path | None = None,
            window: Sequence[int] | None = None, register: str | None = None) -> dict[str, Any]:
    """Rank runs and write comparison.csv/.md/.png and masks.png; log them to the sweep's parent run;
    optionally register the top-ranked run's model as a new version of ``register``."""
    tracker = Tracker(tracking_uri, experiment, create=False)
    parent = tracker.latest_sweep() if sweep == "latest" else sweep
    if sweep == "latest" and parent is None:
        raise ConfigError(f"--sweep latest: no sweep in experiment {experiment!r} of {tracker.uri}")
    if parent:
        tracker.get_run(parent)
    rows = rank(collect(tracker, parent), rank_by)
    if not rows:
        raise ConfigError(f"no runs to compare in experiment {experiment!r}" + (f" under sweep {parent}" if parent else ""))
    finished = [r for r in rows if r.status == "FINISHED"]
    if finished and not any(rank_by in r.metrics for r in finished):
        logged = {m for r in finished for m in r.metrics}
        known = [m for m, _ in METRIC_COLUMNS if m in logged] or sorted(logged)
        raise ConfigError(f"--rank-by {rank_by}: no compared run has this metric; e.g. "
                          f"{', '.join(known[:8]) or 'none'}{' ...' if len(known) > 8 else ''}")
    params = key_params(rows)
    header, body = table(rows, params)
    out = Path(out_dir or Path("compare") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with open(out / "comparison.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(body)
        (out / "comparison.md").write_text(markdown(header, body))
        files = [out / "comparison.csv", out / "comparison.md", chart(rows, out / "comparison.png")]
        with tempfile.TemporaryDirectory() as tmp:
            panels = mask_panels(tracker, rows, out / "masks.png", window, Path(tmp))
    except BaseException:  # an error or a signal: no half-written comparison is left behind
        for name in ("comparison.csv", "comparison.md", "comparison.png", "masks.png"):
            (out / name).unlink(missing_ok=True)
        raise
    if panels:
        files.append(panels)
    if parent:
        logger = tracker.logger(parent)
        for f in files:
            logger.log_artifact(f, "comparison")
        best = rows[0]
        if best.status == "FINISHED":
            logger.set_tags({f"{TAG_PREFIX}best_run_id": best.run_id, f"{TAG_PREFIX}best_run": best.name})
    version = None
    if register:
        best = rows[0]
        if best.status != "FINISHED":
            raise ConfigError(f"--register {register}: no FINISHED run to register")
        version = register_run_model(tracker.uri, best.run_id, register)
    return {"rows": rows, "header": header, "body": body, "out_dir": out, "files": files, "parent_run_id": parent,
            "tracker": tracker, "registered": (register, version) if register else None}


def compare_command(argv: Sequence[str]) -> int:
    """``cropseg compare``: rank tracked runs by a test-scene metric."""
    p = argparse.ArgumentParser(prog="cropseg compare", description=compare_command.__doc__)
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--experiment", default="cropseg", help="MLflow experiment (default: cropseg)")
    p.add_argument("--sweep", default=None, help="a sweep's parent run id, or 'latest' (default: all runs)")
    p.add_argument("--rank-by", default="test_weighted_avg_f1", help="metric to rank by (higher is better)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: compare/<timestamp>)")
    p.add_argument("--window", default=None, help="mask panel window COL,ROW[,SIZE] in test-scene pixels")
    p.add_argument("--register", default=None, metavar="NAME",
                   help="register the top-ranked run's model in the MLflow Model Registry as NAME")
    args = p.parse_args(list(argv))
    window = None
    if args.window:
        try:
            window = [int(v) for v in args.window.split(",")]
        except ValueError:
            raise ConfigError(f"--window: expected COL,ROW[,SIZE] integers, got {args.window!r}") from None
    res = compare(args.tracking_uri, args.experiment, args.sweep, args.rank_by, args.out, window, args.register)
    print(console(res["header"], res["body"]))
    print(f"\nranked by {args.rank_by}; wrote {', '.join(f.name for f in res['files'])} to {res['out_dir']}")
    if res["parent_run_id"]:
        print(f"logged to sweep parent run {res['parent_run_id']}")
    if res["registered"]:
        name, version = res["registered"]
        print(f"registered {res['rows'][0].name} ({res['rows'][0].run_id}) as models:/{name}/{version}")
    return 0
