"""Model selection before / after, side by side: the default KNN run on the hard SYNTHETIC preset over
several source seeds, and the default run's wall time on the bundled sample.

    .venv/bin/python benchmarks/model_selection.py --before /path/to/old/checkout --seeds 42 7 3

``--before`` is another checkout of cropseg (e.g. ``git worktree add /tmp/old <commit>`` or ``git archive
<commit> | tar -x -C /tmp/old``): its ``pkgs/`` goes first on ``PYTHONPATH`` of the "before" runs, so both
variants run in this environment, in turn, on the same files. The hard scenes (``source.preset=hard``) are
generated once with *this* checkout and read by both variants through ``source=local``, so the old code,
which has no hard preset, sees the same pixels and ground truth. Every run is a fresh ``cropseg``
process with the default configuration otherwise (``tracking.log_model`` and all). Prints a Markdown report
(mean and sd over the seeds); other jobs on the machine make absolute seconds noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: ``--ablate``: the hard preset's test scene without one of its difficulties (a diagnosis of the CV-test
#: gap, not a preset): ``gain`` no brightness / season offset, ``prior`` the training scene's crop share
ABLATIONS = ("none", "gain", "prior", "gain+prior")


def hard_files(cache: Path, seed: int, size: int, ablate: str = "none") -> dict[str, Path]:
    """Generate (once) the hard preset's scenes for ``seed``; their files for ``source=local``."""
    import dataclasses

    from cropseg_plugins import sample
    from cropseg_plugins.sample import SampleSource

    folder = cache / "sample"
    if ablate != "none":
        offset, acquired, difficulty = sample.HARD["test"]
        if "gain" in ablate:
            difficulty = dataclasses.replace(difficulty, band_gain=None)
        if "prior" in ablate:
            difficulty = dataclasses.replace(difficulty, crop_share=sample.HARD["train"][2].crop_share)
        sample.HARD = {**sample.HARD, "test": (offset, acquired, difficulty)}
        folder = cache / f"sample-ablate-{ablate.replace('+', '-')}"
    scenes = SampleSource(size=size, seed=seed, preset="hard").load(folder)
    out = {}
    for role in ("train", "test"):
        sc = getattr(scenes, role)
        out[f"{role}_image"] = Path(sc.path)
        out[f"{role}_metadata"] = Path(str(sc.path).replace("_AnalyticMS.tif", "_AnalyticMS_metadata.xml"))
        out[f"{role}_ground_truth"] = Path(sc.ground_truth.path)
    return out


def run(variant: str, before: Path | None, overrides: list[str], work: Path, name: str) -> dict[str, float]:
    """One ``cropseg`` run in a fresh process; its metrics.json plus wall seconds and crop shares."""
    env = dict(os.environ, CROPSEG_CACHE_DIR=str(work / "cache"))
    if variant == "before":
        assert before is not None
        env["PYTHONPATH"] = os.pathsep.join([str(before / "pkgs"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = work / "runs" / name
    cmd = [
        sys.executable,
        "-m",
        "cropseg.cli",
        *overrides,
        f"output_dir={out}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"tracking.experiment=model_selection_{variant}",
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    cm = json.loads((out / "reports" / "test_confusion_matrix.json").read_text())
    total = sum(map(sum, cm))
    m["wall_seconds"] = wall
    # the tuning's grid-edge warning (cropseg.tuning.grid_edges), once per hyperparameter left on an edge
    m["grid_edge_warnings"] = float(proc.stderr.count("the CV score may improve beyond it"))
    m["predicted_share"] = (cm[0][1] + cm[1][1]) / total
    m["reference_share"] = (cm[1][0] + cm[1][1]) / total
    # the test scene's crop recall (TPR) and false-positive rate at the training scene's labelled crop share:
    # the crop F1 the test predictions would have without the prior shift (the rest of the CV-test gap is
    # the classifier doing worse on the other scene)
    tpr, fpr = cm[1][1] / (cm[1][0] + cm[1][1]), cm[0][1] / (cm[0][0] + cm[0][1])
    p = m.get("train_labelled_crop_fraction", float("nan"))
    m["test_crop_f1_at_train_share"] = 2 * tpr * p / (tpr * p + fpr * (1 - p) + p)
    return m


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="another cropseg checkout (the baseline)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[42, 7, 3], help="source seeds of the hard preset")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--timing-repeats", type=int, default=2, help="default-sample runs per variant (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path("model_selection_bench"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="another 'after' run per seed with these overrides, e.g. 'threshold 0.5=classifier.threshold=0.5'",
    )
    ap.add_argument("--only-variants", action="store_true", help="run the --variant runs alone (no before/after)")
    ap.add_argument(
        "--timing-variant",
        default=None,
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="time the default sample for 'after' against 'after' with these overrides (instead of before/after)",
    )
    ap.add_argument(
        "--ablate",
        choices=ABLATIONS,
        default="none",
        help="a diagnosis of the CV-test gap: the hard test scene without its gain, its prior shift or both",
    )
    ap.add_argument(
        "--own-cv",
        action="store_true",
        help="a diagnosis of the CV-test gap: each variant also trained on the test scene itself (its own spatial "
        "CV: what a CV on that scene would say; it needs the test labels, never a way to choose)",
    )
    args = ap.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.before is None and not (args.only_variants and (args.timing_variant or not args.timing_repeats)):
        ap.error("--before is needed unless --only-variants")
    before = args.before.resolve() if args.before else None
    variants = {"before": [], "after": []}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        # commas inside [...] belong to a list value (features.radii=[2,5,10])
        variants[name] = [o for o in re.split(r",(?![^\[]*\])", overrides) if o]
    if args.only_variants:
        variants.pop("before")
        variants.pop("after")
    rows: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    keys = (
        "test_crop_f1",
        "test_crop_precision",
        "test_crop_recall",
        "test_weighted_avg_f1",
        "predicted_share",
        "reference_share",
        "cv_score",
        "cv_spatial_crop_f1",
        "cv_test_gap",
        "cv_at_test_share",
        "cv_test_gap_at_test_share",
        "test_scene_own_cv",
        "test_crop_f1_at_train_share",
        "wall_seconds",
    )
    for seed in args.seeds:
        files = hard_files(work / "cache", seed, args.size, args.ablate)
        overrides = ["source=local", f"source.ground_truth={files['train_ground_truth']}"]
        overrides += [f"source.{k}={v}" for k, v in files.items()]
        order = list(variants) if seed % 2 else list(variants)[::-1]  # alternate the order
        for variant in order:
            tag = "before" if variant == "before" else "after"
            slug = re.sub(r"[^A-Za-z0-9_.-]", "_", variant)
            m = run(tag, before, overrides + variants[variant], work, f"hard-{seed}-{slug}")
            for k in keys:
                if k in m:
                    rows[variant].setdefault(k, []).append(float(m[k]))
            print(f"seed {seed} {variant}: test crop F1 {m['test_crop_f1']:.4f}", file=sys.stderr, flush=True)
            if args.own_cv:  # the test scene as the training scene: its own spatial CV (the test target aside)
                own = ["source=local", f"source.ground_truth={files['test_ground_truth']}"]
                own += [
                    f"source.{role}_{k[5:]}={v}"
                    for role in ("train", "test")
                    for k, v in files.items()
                    if k[:5] == "test_"
                ]
                o = run(tag, before, own + variants[variant], work, f"hard-{seed}-{slug}-own")
                rows[variant].setdefault("test_scene_own_cv", []).append(float(o["cv_spatial_crop_f1"]))
    # the default sample's wall time (and score, grid-edge warnings) of two variants, alternating: before /
    # after, or with --timing-variant the default (after) / after with the overrides
    pair: dict[str, tuple[str, list[str]]] = {"before": ("before", []), "after": ("after", [])}
    if args.timing_variant:
        name, _, overrides = args.timing_variant.partition("=")
        pair = {"after": ("after", []), name: ("after", [o for o in re.split(r",(?![^\[]*\])", overrides) if o])}
    timing: dict[str, list[float]] = {v: [] for v in pair}
    sample: dict[str, list[tuple[float, float]]] = {v: [] for v in pair}
    for i in range(args.timing_repeats):
        for variant in list(pair) if i % 2 == 0 else list(pair)[::-1]:
            tag, extra = pair[variant]
            slug = re.sub(r"[^A-Za-z0-9_.-]", "_", variant)
            m = run(tag, before, [f"source.size={args.size}", *extra], work, f"default-{i}-{slug}")
            timing[variant].append(m["wall_seconds"])
            sample[variant].append((m["test_crop_f1"], m["grid_edge_warnings"]))
            print(f"default sample {variant}: {m['wall_seconds']:.1f} s", file=sys.stderr, flush=True)

    load = os.getloadavg()
    title = "variants side by side" if args.only_variants else "the default KNN run before / after"
    lines = [
        f"## Model selection: {title}, hard SYNTHETIC preset",
        "",
        f"Source seeds {', '.join(map(str, args.seeds))} (`source.preset=hard`, {args.size}x{args.size} px, read "
        f"through `source=local` by every variant"
        + (f"; test scene ablated: `{args.ablate}`" if args.ablate != "none" else "")
        + ("; `test_scene_own_cv`: the variant trained on the test scene, its spatial CV" if args.own_cv else "")
        + (f"); before = `{before}`" if before else ")")
        + "; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores. Mean ± sd over the seeds.",
        "",
        "| metric | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for k in keys if args.seeds and variants else ():
        lines.append(f"| {k} | " + " | ".join(fmt(rows[v].get(k, [])) for v in variants) + " |")
    for name, ov in variants.items():
        if ov:
            lines.append(f"\n{name}: after, with {' '.join(f'`{o}`' for o in ov)}.")
    if args.timing_repeats:
        first, second = pair
        b, a = statistics.median(timing[first]), statistics.median(timing[second])
        lines += [
            "",
            f"Default run on the bundled sample (`source.size={args.size}`), wall seconds per process, "
            f"{args.timing_repeats} runs each, alternating: "
            + "; ".join(f"{v} {', '.join(f'{t:.1f}' for t in timing[v])}" for v in pair)
            + f"; median ratio {second} / {first} {a / b:.2f}. Test crop F1 / grid-edge warnings per run: "
            + "; ".join(f"{v} {', '.join(f'{f:.3f} / {w:.0f}' for f, w in sample[v])}" for v in pair)
            + ".",
        ]
        if args.timing_variant:
            lines.append(f"\n{second}: the default run with {' '.join(f'`{o}`' for o in pair[second][1])}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
