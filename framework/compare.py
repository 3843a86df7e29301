"""``cropseg compare``: rank tracked runs against ground truth, as tables, a chart and mask panels.

Runs are grouped by their test data (the digest of the test scene and ground truth each run logged as
MLflow dataset inputs) and ranked within each group: scores on different test data are not comparable,
so a comparison spanning several groups warns (once) and ranks the groups apart, each group headed by
what differs between the test data sets (sample size, files, AOI, dates) before its digest. Each run is
shown by one readable config line: the options that differ within its group first, then its stage choices
and the hyperparameters its fit chose; what a fit reports about itself (best epoch, parameter count,
device) is not a setting and goes to the ``fit outputs`` column; the CSV keeps every parameter.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .naming import FIT_BOOKKEEPING, chosen_label, fmt_value
from .targets import Target, get_target
from .tracking import TAG_PREFIX, Tracker, register_run_model
from .uncertainty import DEFAULT_BLOCK, DEFAULT_REPLICATES, Interval

log = logging.getLogger("cropseg")

METRIC_COLUMNS = [
    ("test_crop_precision", "crop precision"),
    ("test_crop_recall", "crop recall"),
    ("test_crop_f1", "crop F1"),
    ("test_weighted_avg_f1", "weighted F1"),
    ("test_iou", "crop IoU"),
    ("cv_score", "CV score"),
    ("cv_test_gap", "CV - test"),
    ("cv_spatial_f1_weighted", "spatial CV F1"),
    ("cv_random_f1_weighted", "random CV F1"),
    ("fit_seconds", "fit s"),
    ("predict_seconds", "predict s"),
    ("predict_pixels_per_second", "pixels/s"),
]
STAGE_TAGS = ["source", "labeler", "features", "classifier", "postprocessor"]
STAGE_PREFIXES = tuple(f"{s}." for s in STAGE_TAGS)
#: params never shown as "key params" (paths, bookkeeping)
_NOISE = (
    "tracking.",
    "output_dir",
    "cache_dir",
    "preview.",
    "plugins.",
    "source.train_",
    "source.test_",
    "source.image",
    "source.ground_truth",
    "features.names",
    "train.n_pixels",
    "hydra",
)


@dataclass
class Row:
    run_id: str
    name: str
    status: str
    stages: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    error: str
    #: digest of the run's test data (scene and ground truth) and what it was, for the group's heading
    test_digest: str = "unknown"
    test_data: str = "test data not recorded"
    #: the hyperparameters its fit chose (``k=9``), the readable config line and the test group letter
    chosen: str = ""
    config: str = ""
    group: str = "A"
    #: a seed group (runs that differ only by seed): its member run ids, ``metrics`` are their means and
    #: ``spread`` their standard deviations
    runs: list[str] = field(default_factory=list)
    spread: dict[str, float] = field(default_factory=dict)
    #: block bootstrap interval of the test target and of the paired difference to the group's top row
    interval: Interval | None = None
    difference: Interval | None = None
    #: "top", "n.s." (not distinguishable from the top row) or "lower"
    versus_top: str = ""
    #: what the fit reported about itself rather than chose (``best_epoch=2 device=cpu``)
    fit_outputs: str = ""
    #: what describes its test data: file names, the source's test-side options, ``cropseg.test.*`` tags
    test_info: dict[str, str] | None = None


def split_fit_params(params: dict[str, str], chosen_tag: str | None) -> tuple[str, str]:
    """(chosen, outputs) from a run's ``fit.*`` params: a fit param is a chosen hyperparameter when the
    classifier had a grid for it (``classifier.k_grid``, ``classifier.grid.max_depth``), or when it is in
    the ``cropseg.chosen`` tag tuning sets; anything else a fit logs (best epoch, epochs run, device,
    parameter count, iterations) is an output of the fit, not a setting."""
    fit = {k[4:]: v for k, v in params.items() if k.startswith("fit.") and k[4:] not in FIT_BOOKKEEPING}
    named = {part.split("=", 1)[0] for part in (chosen_tag or "").split()}
    tuned = {
        k: v
        for k, v in fit.items()
        if k in named or f"classifier.grid.{k}" in params or f"classifier.{k}_grid" in params
    }
    outputs = {k: v for k, v in fit.items() if k not in tuned}
    return chosen_tag or chosen_label(tuned), chosen_label(outputs)


def _test_info(params: dict[str, str], tags: dict[str, str], names: list[str]) -> dict[str, str]:
    info = {"files": ", ".join(names)} if names else {}
    info.update(
        {
            k: v
            for k, v in params.items()
            if k.startswith("source.") and "train" not in k and not k.endswith((".name", "api_url", "retries"))
        }
    )
    info.update({k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(f"{TAG_PREFIX}test.")})
    return info


def collect(tracker: Tracker, parent_run_id: str | None) -> list[Row]:
    rows = []
    for r in tracker.runs(parent_run_id):
        tags = r.data.tags
        inputs = tracker.dataset_inputs(r, "testing")
        digest = tags.get(f"{TAG_PREFIX}data.testing") or "+".join(sorted(d for _, d in inputs))[:33]
        described = ", ".join(name for name, _ in inputs) or tags.get(f"{TAG_PREFIX}test.scene_id", "")
        params = dict(r.data.params)
        chosen, outputs = split_fit_params(params, tags.get(f"{TAG_PREFIX}chosen"))
        rows.append(
            Row(
                run_id=r.info.run_id,
                name=r.info.run_name or r.info.run_id[:8],
                status=r.info.status,
                stages={s: tags.get(f"{TAG_PREFIX}{s}", "") for s in STAGE_TAGS},
                params=params,
                metrics=dict(r.data.metrics),
                error=tags.get(f"{TAG_PREFIX}error", ""),
                test_digest=digest or "unknown",
                test_data=described or "test data not recorded",
                chosen=chosen,
                fit_outputs=outputs,
                test_info=_test_info(params, tags, [name for name, _ in inputs]),
            )
        )
    return rows


def key_params(rows: list[Row]) -> list[str]:
    """Params whose values differ between the compared runs (paths and bookkeeping left out)."""
    keys = sorted({k for r in rows for k in r.params})
    out = []
    for k in keys:
        if k.startswith(_NOISE) or (k.startswith(STAGE_PREFIXES) and k.endswith(".name")):
            continue  # paths and bookkeeping; plugin names have their own columns
        if len({r.params.get(k) for r in rows}) > 1:
            out.append(k)
    return out


def _differs(rows: list[Row], key: str, row: Row) -> bool:
    """Whether param ``key`` takes different values among the compared runs; a stage option
    (``classifier.alpha``) only among the runs with the same plugin in that stage."""
    stage = key.split(".", 1)[0]
    peers = [r for r in rows if stage not in STAGE_TAGS or r.stages.get(stage) == row.stages.get(stage)]
    return len({r.params.get(key) for r in peers}) > 1


def _label_parts(row: Row, rows: list[Row], shown: list[str]) -> list[tuple[str, str]]:
    """(slot, text) per part of a run's config line: a stage (its plugin, with the fit's chosen
    hyperparameters for the classifier, and the stage options that differ) or a framework option."""
    parts = []
    for stage in ("classifier", "features", "source", "labeler", "postprocessor"):
        opts = []
        if stage == "classifier":
            opts.append(row.chosen)
        for key in shown:
            if key.startswith(f"{stage}.") and key in row.params and _differs(rows, key, row):
                leaf = key[len(stage) + 1 :]
                if stage == "classifier" and leaf.endswith("_grid") and opts[0]:
                    continue  # the chosen value is shown; its grid is in the CSV
                if stage == "postprocessor":  # postprocessor.median_blur.kernel -> median_blur kernel=7
                    leaf = leaf.replace(".", " ", 1)
                opts.append(f"{leaf}={fmt_value(row.params[key])}")
        named = stage in ("classifier", "features") or len({r.stages.get(stage) for r in rows}) > 1
        if named or any(opts):
            text = " ".join(p for p in ((row.stages.get(stage, "") or "?") if named else "", *opts) if p)
            parts.append((stage, text))
    others = [
        k
        for k in shown
        if not k.startswith(STAGE_PREFIXES) and not k.startswith("fit.") and k in row.params and _differs(rows, k, row)
    ]
    parts += [(k, f"{k}={fmt_value(row.params[k])}") for k in others]
    return parts


def config_labels(rows: list[Row]) -> dict[str, str]:
    """One readable line per run (by run id), e.g. ``median_blur kernel=7 | mlp alpha=1e-04 | indices``: the
    parts that differ between the given runs first (so a clipped line never hides what tells runs apart),
    then the rest, each group of parts in stage order. The classifier (with the hyperparameters its fit
    chose) and the features are always named; another stage only when the runs differ in it, and of the
    options only those that differ. Generic: stage names come from the ``cropseg.<stage>`` tags, options
    from the params."""
    shown = key_params(rows)
    parts = {r.run_id: _label_parts(r, rows, shown) for r in rows}
    texts: dict[str, set[str]] = {}
    for r in rows:
        present = dict(parts[r.run_id])
        for slot in {s for p in parts.values() for s, _ in p}:
            texts.setdefault(slot, set()).add(present.get(slot, ""))
    out = {}
    for r in rows:
        own = parts[r.run_id]
        ordered = [t for s, t in own if len(texts[s]) > 1] + [t for s, t in own if len(texts[s]) <= 1]
        out[r.run_id] = " | ".join(ordered)
    return out


def config_label(row: Row, rows: list[Row]) -> str:
    """``row``'s line of :func:`config_labels` among ``rows`` (its test group)."""
    return config_labels(rows)[row.run_id]


def group_headings(groups: dict[str, list[Row]]) -> dict[str, str]:
    """What tells each group's test data apart, by group letter: the descriptions (source options of the test
    side such as the sample size or the test AOI, ``cropseg.test.*`` tags such as the acquisition date, and
    the file names) whose values differ between the groups, differing ones first, then the file names."""
    reps = {g: next((r for r in m if r.status == "FINISHED"), m[0]) for g, m in groups.items() if m}
    infos = {g: dict(r.test_info or {}) for g, r in reps.items()}
    keys = sorted({k for i in infos.values() for k in i})
    differing = [k for k in keys if len({i.get(k, "-") for i in infos.values()}) > 1]
    for k in differing:  # paths: their file names when those tell the groups apart (nothing cut by the width)
        values = {g: i.get(k, "-") for g, i in infos.items()}
        names = {g: v.rstrip("/").rsplit("/", 1)[-1] for g, v in values.items()}
        if any("/" in v for v in values.values()) and len(set(names.values())) == len(set(values.values())):
            for g, i in infos.items():
                if k in i:
                    i[k] = names[g]
    out = {}
    for g, info in infos.items():
        shown = [f"{k}={info.get(k, '-')}" for k in differing if k != "files"]
        if "files" in info:
            shown.append(info["files"])
        out[g] = "; ".join(shown) or reps[g].test_data
    return out


def group_rows(rows: list[Row]) -> dict[str, list[Row]]:
    """Runs by test-data digest, the largest group first, lettered A, B, ... (sets each row's ``group``);
    the order of the rows within a group is kept."""
    by: dict[str, list[Row]] = {}
    # a run that failed before its test data was recorded has no scores to compare: it joins the
    # largest group rather than forming one of its own
    # (nor does a run that was never tested, e.g. a `cropseg search` trial scored by CV only)
    stray = [r for r in rows if r.test_digest == "unknown" and (r.status != "FINISHED" or not _tested(r))]
    for r in rows:
        if r not in stray:
            by.setdefault(r.test_digest, []).append(r)
    out: dict[str, list[Row]] = {}

    def order(kv: tuple[str, list[Row]]) -> tuple[bool, int, str]:  # groups with scores first, larger first
        return (not any(r.status == "FINISHED" for r in kv[1]), -len(kv[1]), kv[0])

    for i, (_, members) in enumerate(sorted(by.items(), key=order)):
        out[chr(ord("A") + i) if i < 26 else f"G{i + 1}"] = members
    if stray:
        first = next(iter(out), "A")
        out.setdefault(first, [])
        position = {id(r): n for n, r in enumerate(rows)}
        out[first] = sorted(out[first] + stray, key=lambda r: position[id(r)])
    for letter, members in out.items():
        for r in members:
            r.group = letter
    return out


def _tested(r: Row) -> bool:
    return any(k.startswith("test_") for k in r.metrics)


def rank(rows: list[Row], by: str) -> list[Row]:
    def key(r: Row) -> tuple:
        v = r.metrics.get(by)
        if r.status == "FINISHED" and v is not None and not math.isnan(v):
            return (0, -v, r.name)
        return (1, -0.0, r.name)

    return sorted(rows, key=key)


def _ranks(rows: list[Row]) -> dict[str, int]:
    """Rank within each test group (the rows come ranked)."""
    seen: dict[str, int] = {}
    out = {}
    for r in rows:
        seen[r.group] = seen.get(r.group, 0) + 1
        out[r.run_id] = seen[r.group]
    return out


# -- the target, seed groups and bootstrap intervals (cropseg.uncertainty) ----------------------------


def default_target(rows: list[Row], name: str | None = None) -> Target:
    """The target metric of a comparison: ``name`` (``--target``), else the ``evaluate.target`` the runs
    logged when they all agree, else the default (crop F1)."""
    if name:
        return get_target(name, "--target")
    logged = {r.params["evaluate.target"] for r in rows if r.params.get("evaluate.target")}
    return get_target(logged.pop() if len(logged) == 1 else None)


def _seed_key(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def _identity(row: Row) -> tuple:
    """What a run is apart from its seed: test data, stage choices and every param except seeds, paths and
    bookkeeping and what the fit chose."""
    params = sorted(
        (k, v)
        for k, v in row.params.items()
        if not _seed_key(k) and not k.startswith(_NOISE) and not k.startswith(("fit.", "train.n_"))
    )
    return (row.test_digest, tuple(sorted(row.stages.items())), tuple(params))


def _numeric_first(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _merge(members: list[Row]) -> Row:
    first = members[0]
    if len(members) == 1:
        first.runs = [first.run_id]
        return first
    common = set.intersection(*(set(m.metrics) for m in members))
    values = {k: [m.metrics[k] for m in members] for k in sorted(common)}
    params = dict(first.params)
    for k in {k for m in members for k in m.params if _seed_key(k)}:
        params[k] = ",".join(sorted({m.params.get(k, "") for m in members}, key=_numeric_first))
    for k in [k for k in params if _seed_key(k) and k != "seed" and params[k] == params.get("seed")]:
        del params[k]  # train.seed: ${seed}, the same list again
    chosen = [
        m.chosen or chosen_label({k[4:]: v for k, v in m.params.items() if k.startswith("fit.")}) for m in members
    ]
    return Row(
        run_id=first.run_id,
        name=first.name,
        status="FINISHED",
        stages=first.stages,
        params=params,
        metrics={k: float(np.mean(v)) for k, v in values.items()},
        error="",
        test_digest=first.test_digest,
        test_data=first.test_data,
        chosen="/".join(dict.fromkeys(c for c in chosen if c)),
        runs=[m.run_id for m in members],
        spread={k: float(np.std(v, ddof=1)) for k, v in values.items()},
    )


def merge_seed_groups(rows: list[Row]) -> list[Row]:
    """Finished runs on the same test data that differ only by their seed (``seed``, ``train.seed``...)
    become one row: metrics are the members' means, ``spread`` their standard deviations, ``runs`` the
    member run ids (the first member's id and name stand for the row). Other runs pass unchanged, in
    order of first appearance."""
    members: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.status == "FINISHED":
            members.setdefault(_identity(r), []).append(r)
    out, done = [], set()
    for r in rows:
        if r.status != "FINISHED":
            out.append(r)
        elif (key := _identity(r)) not in done:
            done.add(key)
            out.append(_merge(members[key]))
    return out


def add_intervals(
    tracker: Tracker,
    groups: dict[str, list[Row]],
    target: Target,
    workdir: Path,
    block: int = DEFAULT_BLOCK,
    replicates: int = DEFAULT_REPLICATES,
) -> list[str]:
    """Spatial block bootstrap intervals (:func:`cropseg.uncertainty.compare_entries`) of each finished
    row's test target and of its paired difference to its test group's top row (the first ranked row with
    logged masks), from every member run's ``prediction/test_mask.tif`` against its
    ``labels/test_labels.tif``. Sets ``interval``, ``difference`` and ``versus_top``; returns notes on rows
    left without an interval."""
    from .uncertainty import block_confusions, compare_entries

    notes = []
    for letter, members in groups.items():
        entries, scored = [], []
        for r in members:
            if r.status != "FINISHED" or target.test_metric not in r.metrics:
                continue
            cms: list[np.ndarray] = []
            for run_id in r.runs or [r.run_id]:
                mask = tracker.download(run_id, "prediction/test_mask.tif", workdir / run_id)
                labels = tracker.download(run_id, "labels/test_labels.tif", workdir / run_id)
                if mask is None or labels is None:
                    notes.append(f"{run_id[:8]}: no logged test mask and labels, no interval")
                    cms = []
                    break
                cms.append(block_confusions(labels, mask, block))
            if cms:
                entries.append(cms)
                scored.append(r)
        if not entries:
            continue
        try:
            res = compare_entries(entries, target, top=0, replicates=replicates)
        except ValueError as exc:  # masks of different sizes under one test-data digest
            notes.append(f"test group {letter}: no intervals ({exc})")
            continue
        for i, r in enumerate(scored):
            r.interval, r.difference = res.intervals[i], res.differences[i]
            if i == 0:
                r.versus_top = "top"
            elif not res.distinguishable(i):
                r.versus_top = "n.s."
            else:
                r.versus_top = "higher" if res.differences[i].estimate > 0 else "lower"
    return notes


#: console / Markdown columns of a comparison with seed groups or intervals
UNCERTAINTY_HEAD = ["n", "sd", "95% CI", "diff to top", "vs top"]


def uncertainty_columns(
    rows: list[Row], target: Target | None, room: int | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    """The uncertainty columns worth showing (``n`` and ``sd`` with a seed group, the intervals when there
    are any) and their cells per run id; with ``room`` (characters), columns are dropped until they fit:
    first ``diff to top``, then ``sd``, ``n`` and ``vs top`` (the CSV keeps them all)."""
    if target is None or not _shows_uncertainty(rows):
        return [], {}
    full = {r.run_id: uncertainty_cells(r, target) for r in rows}
    keep = [0, 1] if any(len(r.runs) > 1 for r in rows) else []
    keep += [2, 3, 4] if any(r.interval is not None for r in rows) else []

    def needed(cols: list[int]) -> int:
        return sum(2 + max([len(UNCERTAINTY_HEAD[j])] + [len(c[j]) for c in full.values()]) for j in cols)

    for j in (3, 1, 0, 4, 2):
        if room is None or needed(keep) <= room:
            break
        if j in keep:
            keep.remove(j)
    return [UNCERTAINTY_HEAD[j] for j in keep], {k: [c[j] for j in keep] for k, c in full.items()}


def _shows_uncertainty(rows: list[Row]) -> bool:
    return any(r.interval is not None or len(r.runs) > 1 for r in rows)


def uncertainty_cells(r: Row, target: Target) -> list[str]:
    """``n`` runs, the sd of the target over them, its 95 % interval and that of the difference to the top."""
    sd = r.spread.get(target.test_metric)
    return [
        str(len(r.runs) or 1),
        "-" if sd is None else f"{sd:.3f}",
        "-" if r.interval is None else f"[{r.interval.low:.3f},{r.interval.high:.3f}]",
        "-" if r.difference is None or r.versus_top == "top" else f"[{r.difference.low:+.3f},{r.difference.high:+.3f}]",
        r.versus_top or "-",
    ]


def uncertainty_csv(rows: list[Row], target: Target) -> tuple[list[str], list[list[Any]]]:
    """The CSV columns of the target's spread and intervals, one list of cells per row."""
    header = [
        "target",
        "runs (seeds)",
        "run ids",
        "target sd",
        "target 95% CI low",
        "target 95% CI high",
        "diff to top 95% CI low",
        "diff to top 95% CI high",
        "vs top",
    ]
    body = []
    for r in rows:
        iv, d = r.interval, r.difference
        body.append(
            [
                target.name,
                len(r.runs) or 1,
                " ".join(r.runs or [r.run_id]),
                r.spread.get(target.test_metric, ""),
                *(("", "") if iv is None else (iv.low, iv.high)),
                *(("", "") if d is None else (d.low, d.high)),
                r.versus_top,
            ]
        )
    return header, body


def table(rows: list[Row], params: list[str]) -> tuple[list[str], list[list[Any]]]:
    """The CSV: every run with its test group, readable config, stages, all metrics and ``params`` (all of
    them, for the CSV)."""
    header = [
        "rank",
        "test group",
        "test data",
        "test data digest",
        "run",
        "config",
        "fit outputs",
        "run id",
        "status",
        *STAGE_TAGS,
        *[label for _, label in METRIC_COLUMNS],
        "error",
        *params,
    ]
    ranks = _ranks(rows)
    body = [
        [
            ranks[r.run_id],
            r.group,
            r.test_data,
            r.test_digest,
            r.name,
            r.config,
            r.fit_outputs,
            r.run_id,
            r.status,
            *[r.stages[s] for s in STAGE_TAGS],
            *[r.metrics.get(m, "") for m, _ in METRIC_COLUMNS],
            r.error,
            *[r.params.get(p, "") for p in params],
        ]
        for r in rows
    ]
    return header, body


#: console and Markdown metric columns: metric, header, format
CONSOLE_METRICS = [
    ("test_crop_precision", "crop P", "{:.3f}"),
    ("test_crop_recall", "crop R", "{:.3f}"),
    ("test_crop_f1", "crop F1", "{:.3f}"),
    ("test_weighted_avg_f1", "wF1", "{:.3f}"),
    ("test_iou", "IoU", "{:.3f}"),
    ("cv_score", "CV", "{:.3f}"),
    # the CV estimate of the target minus its test value (evaluate.target): how far CV is from test; shown
    # when a compared run has it (see _console_metrics)
    ("cv_test_gap", "CV-test", "{:+.3f}"),
    ("fit_seconds", "fit s", "{:.1f}"),
    ("predict_pixels_per_second", "px/s", "{:,.0f}"),
]
DEFAULT_WIDTH = 160
#: console columns left out when no compared run logged them
OPTIONAL_CONSOLE_METRICS = ("cv_test_gap",)


def _console_metrics(rows: list[Row]) -> list[tuple[str, str, str]]:
    return [c for c in CONSOLE_METRICS if c[0] not in OPTIONAL_CONSOLE_METRICS or any(c[0] in r.metrics for r in rows)]


def _metric(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "~"


def markdown(rows: list[Row], target: Target | None = None) -> str:
    ranks = _ranks(rows)
    extra_head, extra = uncertainty_columns(rows, target)
    metrics = _console_metrics(rows)
    header = ["test group", "rank", "config", "fit outputs", "run id", "status", *[h for _, h, _ in metrics]]
    header += [*extra_head, "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [
            r.group,
            str(ranks[r.run_id]),
            r.config,
            r.fit_outputs,
            r.run_id[:8],
            r.status,
            *[_metric(r.metrics.get(m), f) for m, _, f in metrics],
            *extra.get(r.run_id, []),
            r.error,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def console(
    rows: list[Row], groups: dict[str, list[Row]], width: int = DEFAULT_WIDTH, target: Target | None = None
) -> str:
    """The ranked runs, no line longer than ``width``: rank, readable config (clipped with ``~`` when too
    long), short run id, status (when any run did not finish) and the key metrics with fixed precision;
    one section per test group, each ranked on its own. With ``target`` and seed groups or intervals, the
    columns of :data:`UNCERTAINTY_HEAD` follow."""
    ranks = _ranks(rows)
    show_status = any(r.status != "FINISHED" for r in rows)
    metrics = _console_metrics(rows)
    head = ["#", "config", "run id", *(["status"] if show_status else []), *[h for _, h, _ in metrics]]
    cells = {
        r.run_id: [
            str(ranks[r.run_id]),
            r.config,
            r.run_id[:8],
            *([r.status] if show_status else []),
            *[_metric(r.metrics.get(m), f) for m, _, f in metrics],
        ]
        for r in rows
    }
    widths = [max([len(head[j])] + [len(c[j]) for c in cells.values()]) for j in range(len(head))]
    room = width - (sum(w for j, w in enumerate(widths) if j != 1) + 2 * (len(head) - 1) + 12)
    extra_head, extra = uncertainty_columns(rows, target, room)
    head += extra_head
    for run_id, c in cells.items():
        c += extra.get(run_id, [])
    widths = [max([len(head[j])] + [len(c[j]) for c in cells.values()]) for j in range(len(head))]
    fixed = sum(w for j, w in enumerate(widths) if j != 1) + 2 * (len(head) - 1)
    widths[1] = max(12, min(widths[1], width - fixed))
    left = {1, 2, 3} if show_status else {1, 2}

    def line(values: list[str]) -> str:
        return "  ".join(
            _clip(v, w).ljust(w) if j in left else _clip(v, w).rjust(w) for j, (v, w) in enumerate(zip(values, widths))
        ).rstrip()

    text = []
    headings = group_headings(groups)
    for letter, members in groups.items():
        if len(groups) > 1:
            text.append(
                _clip(
                    f"test group {letter}, {len(members)} run(s), digest {members[0].test_digest[:12]}: "
                    f"{headings[letter]}",
                    width,
                )
            )
        text += [line(head), "  ".join("-" * w for w in widths)]
        text += [line(cells[r.run_id]) for r in members]
        text += [_clip(f"  {r.run_id[:8]} {r.status}: {r.error}", width) for r in members if r.error]
        text.append("")
    return "\n".join(text).rstrip() + "\n"


def chart(rows: list[Row], path: Path) -> Path:
    from matplotlib.figure import Figure

    done = [r for r in rows if r.status == "FINISHED"]
    metrics = [
        ("test_crop_precision", "crop precision"),
        ("test_crop_recall", "crop recall"),
        ("test_crop_f1", "crop F1"),
        ("test_weighted_avg_f1", "weighted F1"),
        ("test_iou", "crop IoU"),
    ]
    fig = Figure(figsize=(max(6, 1.6 * len(done) + 2), 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    x = np.arange(len(done))
    for i, (m, label) in enumerate(metrics):
        ax.bar(x + i * width, [r.metrics.get(m, np.nan) for r in done], width, label=label)
    multi = len({r.group for r in done}) > 1
    labels = [textwrap.fill((f"[{r.group}] " if multi else "") + r.config, 30) for r in done]
    ax.set_xticks(x + 0.4 - width / 2, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test data" + (" ([A], [B]: different, not comparable)" if multi else ""))
    ax.legend(fontsize=8, ncol=len(metrics), loc="upper center", bbox_to_anchor=(0.5, 1.12), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def mask_panels(
    tracker: Tracker, rows: list[Row], path: Path, window: Sequence[int] | None, workdir: Path
) -> Path | None:
    """Ground truth and each run's prediction-vs-ground-truth map for the same window of the test scene."""
    import rasterio
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from rasterio.windows import Window

    from .previews import DISAGREEMENT, PALETTE, _hex, _paint

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
        panels.append((f"{textwrap.fill(r.config, 40)}\nweighted F1 {f1:.3f}", img))
    if len(panels) < 2 or win is None:
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
    legend = [Patch(color=_hex(c), label=t) for c, t in DISAGREEMENT.values()]
    legend.append(Patch(color=_hex(PALETTE[0]), label="ground truth non-crop"))
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(
        f"test scene window cols {win.col_off}..{win.col_off + win.width}, rows {win.row_off}.."
        f"{win.row_off + win.height}",
        fontsize=9,
    )
    fig.savefig(path)
    return path


def compare(
    tracking_uri: str | None = None,
    experiment: str = "cropseg",
    sweep: str | None = None,
    rank_by: str | None = None,
    out_dir: Path | None = None,
    window: Sequence[int] | None = None,
    register: str | None = None,
    test_data: str | None = None,
    *,
    target: str | None = None,
    bootstrap: int = DEFAULT_REPLICATES,
    block: int | None = None,
    log_warning: bool = True,
) -> dict[str, Any]:
    """Rank runs within each test-data group and write comparison.csv/.md/.png and masks.png; log them to
    the sweep's parent run; optionally register the top-ranked run's model as a new version of
    ``register`` (only when every run was tested on the same data). ``test_data``: keep only the runs
    whose test-data digest starts with it.

    ``target`` (default: the runs' ``evaluate.target``, see :func:`default_target`) is the metric of the
    seed groups' spread and of the ``bootstrap`` replicates of the spatial block bootstrap (``block``
    pixels; default: the runs' ``train.spatial_block``, else 128; ``bootstrap=0``: no intervals);
    ``rank_by`` defaults to the target's test metric.
    A warning (runs on different test data) is returned as ``warning`` and logged unless ``log_warning`` is
    false (``cropseg compare`` prints it itself, once)."""
    tracker = Tracker(tracking_uri, experiment, create=False)
    parent = tracker.latest_sweep() if sweep == "latest" else sweep
    if sweep == "latest" and parent is None:
        raise ConfigError(f"--sweep latest: no sweep in experiment {experiment!r} of {tracker.uri}")
    if parent:
        tracker.get_run(parent)
    rows = collect(tracker, parent)
    if test_data:
        rows = [r for r in rows if r.test_digest.startswith(test_data)]
    if not rows:
        raise ConfigError(
            f"no runs to compare in experiment {experiment!r}"
            + (f" under sweep {parent}" if parent else "")
            + (f" with test data {test_data}" if test_data else "")
        )
    tgt = default_target(rows, target)
    rank_by = rank_by or tgt.test_metric
    rows = merge_seed_groups(rows)
    finished = [r for r in rows if r.status == "FINISHED"]
    if finished and not any(rank_by in r.metrics for r in finished):
        logged = {m for r in finished for m in r.metrics}
        known = [m for m, _ in METRIC_COLUMNS if m in logged] or sorted(logged)
        raise ConfigError(
            f"--rank-by {rank_by}: no compared run has this metric; e.g. "
            f"{', '.join(known[:8]) or 'none'}{' ...' if len(known) > 8 else ''}"
        )
    groups = group_rows(rank(rows, rank_by))
    rows = [r for members in groups.values() for r in members]
    for members in groups.values():  # what differs within a group: its runs are the ones compared
        labels = config_labels(members)
        for r in members:
            r.config = labels[r.run_id]
    warning = None
    scored = [g for g, members in groups.items() if any(r.status == "FINISHED" and _tested(r) for r in members)]
    if len(scored) > 1:
        warning = (
            f"the runs were tested on {len(scored)} different test data sets (groups "
            f"{', '.join(scored)}); scores of different groups are not comparable, so each group is ranked "
            "on its own (--test-data DIGEST keeps one)"
        )
        if log_warning:
            log.warning("%s", warning)
    block = block or _common_block(rows)
    notes: list[str] = []
    if bootstrap > 0:
        with tempfile.TemporaryDirectory() as tmp:
            notes = add_intervals(tracker, groups, tgt, Path(tmp), block, bootstrap)
    for note in notes:
        log.warning("%s", note)
    header, body = table(rows, sorted({k for r in rows for k in r.params}))
    u_header, u_body = uncertainty_csv(rows, tgt)
    header += u_header
    body = [b + u for b, u in zip(body, u_body)]
    out = Path(out_dir or Path("compare") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with open(out / "comparison.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(body)
        (out / "comparison.md").write_text(
            ("> **warning:** " + warning + "\n\n" if warning else "") + markdown(rows, tgt)
        )
        files = [out / "comparison.csv", out / "comparison.md", chart(rows, out / "comparison.png")]
        with tempfile.TemporaryDirectory() as tmp:  # the same test scene in every panel: the first group's
            panels = mask_panels(tracker, next(iter(groups.values())), out / "masks.png", window, Path(tmp))
    except BaseException:  # an error or a signal: no half-written comparison is left behind
        for name in ("comparison.csv", "comparison.md", "comparison.png", "masks.png"):
            (out / name).unlink(missing_ok=True)
        raise
    if panels:
        files.append(panels)
    if register and len(scored) > 1:
        raise ConfigError(
            f"--register {register}: the runs were tested on {len(scored)} different test data "
            "sets, so there is no single best run; pick one with --test-data DIGEST"
        )
    if parent:
        logger = tracker.logger(parent)
        for f in files:
            logger.log_artifact(f, "comparison")
        best = rows[0]
        if best.status == "FINISHED" and len(scored) == 1:
            logger.set_tags({f"{TAG_PREFIX}best_run_id": best.run_id, f"{TAG_PREFIX}best_run": best.name})
    version = None
    if register:
        best = rows[0]
        if best.status != "FINISHED":
            raise ConfigError(f"--register {register}: no FINISHED run to register")
        version = register_run_model(tracker.uri, best.run_id, register)
    return {
        "rows": rows,
        "groups": groups,
        "header": header,
        "body": body,
        "out_dir": out,
        "files": files,
        "parent_run_id": parent,
        "tracker": tracker,
        "warning": warning,
        "registered": (register, version) if register else None,
        "target": tgt,
        "rank_by": rank_by,
        "bootstrap": (bootstrap, block),
    }


def _common_block(rows: list[Row]) -> int:
    """The runs' ``train.spatial_block`` when they all logged the same one, else the default block."""
    logged = {r.params.get("train.spatial_block", "") for r in rows if r.status == "FINISHED"}
    try:
        return int(logged.pop()) if len(logged) == 1 else DEFAULT_BLOCK
    except (TypeError, ValueError):
        return DEFAULT_BLOCK


def uncertainty_note(res: dict[str, Any]) -> str | None:
    """The line under the table saying what its interval columns are (``None`` when it has none)."""
    rows = res["rows"]
    if not _shows_uncertainty(rows):
        return None
    tgt, (replicates, block) = res["target"], res["bootstrap"]
    text = f"n: runs that differ only by seed (metrics are their means, sd: of {tgt.test_metric})"
    if any(r.interval is not None for r in rows):
        text += (
            f"; 95% CI of {tgt.test_metric} and of its paired difference to the top row: spatial block bootstrap "
            f"({block}-px blocks of the test scene, {replicates} replicates); n.s.: not distinguishable from the top"
        )
    return text


def compare_command(argv: Sequence[str]) -> int:
    """``cropseg compare``: rank tracked runs by a test-scene metric, within groups of runs tested on the
    same data."""
    p = argparse.ArgumentParser(prog="cropseg compare", description=compare_command.__doc__)
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--experiment", default="cropseg", help="MLflow experiment (default: cropseg)")
    p.add_argument("--sweep", default=None, help="a sweep's parent run id, or 'latest' (default: all runs)")
    p.add_argument(
        "--rank-by",
        default=None,
        help="metric to rank by (higher is better; default: the target's test metric, e.g. test_crop_f1)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="target metric of the intervals and seed groups (cropseg.targets, e.g. crop_f1, crop_iou; "
        "default: the runs' evaluate.target, else crop_f1)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_REPLICATES,
        metavar="N",
        help="spatial block bootstrap replicates of the 95%% intervals (default: %(default)s; 0: no intervals)",
    )
    p.add_argument(
        "--block",
        type=int,
        default=None,
        metavar="PX",
        help="side in pixels of the resampled test-scene blocks (default: the runs' train.spatial_block, else 128)",
    )
    p.add_argument(
        "--test-data",
        default=None,
        metavar="DIGEST",
        help="only runs whose test-data digest starts with DIGEST (shown in the group headings)",
    )
    p.add_argument(
        "--width",
        type=int,
        default=DEFAULT_WIDTH,
        help="widest line of the printed table (default: %(default)s); the CSV has every column",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: compare/<timestamp>)")
    p.add_argument("--window", default=None, help="mask panel window COL,ROW[,SIZE] in test-scene pixels")
    p.add_argument(
        "--register",
        default=None,
        metavar="NAME",
        help="register the top-ranked run's model in the MLflow Model Registry as NAME",
    )
    args = p.parse_args(list(argv))
    if args.bootstrap < 0 or (args.bootstrap and args.bootstrap < 100):
        raise ConfigError(f"--bootstrap: 0 (no intervals) or at least 100 replicates, got {args.bootstrap}")
    if args.block is not None and args.block < 1:
        raise ConfigError(f"--block: a positive number of pixels, got {args.block}")
    if args.width < 60:
        raise ConfigError(f"--width: at least 60 characters, got {args.width}")
    window = None
    if args.window:
        try:
            window = [int(v) for v in args.window.split(",")]
        except ValueError:
            raise ConfigError(f"--window: expected COL,ROW[,SIZE] integers, got {args.window!r}") from None
    res = compare(
        args.tracking_uri,
        args.experiment,
        args.sweep,
        args.rank_by,
        args.out,
        window,
        args.register,
        args.test_data,
        target=args.target,
        bootstrap=args.bootstrap,
        block=args.block,
        log_warning=False,
    )
    if res["warning"]:
        print(f"cropseg: warning: {res['warning']}", file=sys.stderr)
    print(console(res["rows"], res["groups"], args.width, res["target"]))
    if note := uncertainty_note(res):
        print(textwrap.fill(note, args.width))
    print(f"ranked by {res['rank_by']}; wrote {', '.join(f.name for f in res['files'])} to {res['out_dir']}")
    if res["parent_run_id"]:
        print(f"logged to sweep parent run {res['parent_run_id']}")
    if res["registered"]:
        name, version = res["registered"]
        print(f"registered {res['rows'][0].name} ({res['rows'][0].run_id}) as models:/{name}/{version}")
    return 0
