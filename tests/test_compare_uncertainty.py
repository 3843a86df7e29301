"""``cropseg compare`` with uncertainty (issue 18, item 7): runs that differ only by seed form one row
(mean, sd, n), each row gets a spatial block bootstrap interval of its test target and of its paired
difference to the top row, and the default ranking is the target's test metric. Scenes are tiny and
SYNTHETIC (cropseg.testing), runs are real, in a real sqlite MLflow store."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from mlflow import MlflowClient

import cropseg
from cropseg.cli import main
from cropseg.compare import Row, compare, config_label, console, group_rows, merge_seed_groups
from cropseg.testing import local_overrides, write_tiny_scene
from cropseg.uncertainty import Interval

FAST = ["tracking.log_model=false", "postprocessor=[median_blur]", "parallel.backend=serial"]


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory, store_template):
    """KNN with three seeds and logistic regression with two, on one noisy tiny SYNTHETIC pair."""
    d = tmp_path_factory.mktemp("seeds")
    train = write_tiny_scene(d, name="train", seed=1, noise=0.08)
    test = write_tiny_scene(d, name="test", seed=2, noise=0.08)
    uri = store_template.copy(d)
    base = [
        f"tracking.uri={uri}",
        "tracking.experiment=seeds",
        f"cache_dir={d / 'cache'}",
        "train.max_pixels=300",
        *FAST,
    ]
    runs = {}
    for clf, seeds in (("knn", (0, 1, 2)), ("logistic_regression", (0, 1))):
        extra = local_overrides(train, test, None if clf == "knn" else clf)
        for s in seeds:
            runs[(clf, s)] = cropseg.run([*base, *extra, f"seed={s}"], output_dir=d / f"{clf}{s}").run_id
    return uri, runs


def test_compare_groups_seeds_and_shows_intervals(seeded_runs, tmp_path, capsys):
    uri, runs = seeded_runs
    code = main(["compare", "--tracking-uri", uri, "--experiment", "seeds", "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    table = out.split("\nranked by")[0]
    assert max(len(ln) for ln in table.splitlines()) <= 160
    assert "spatial block bootstrap" in " ".join(table.split()) and "ranked by test_crop_f1" in out
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2  # one row per model
    by_clf = {r["classifier"]: r for r in rows}
    assert by_clf["knn"]["runs (seeds)"] == "3" and by_clf["logistic_regression"]["runs (seeds)"] == "2"
    client = MlflowClient(uri)
    for clf, r in by_clf.items():
        ids = [runs[(c, s)] for (c, s) in runs if c == clf]
        assert set(r["run ids"].split()) == set(ids)
        f1 = [client.get_run(i).data.metrics["test_crop_f1"] for i in ids]
        assert float(r["crop F1"]) == pytest.approx(np.mean(f1))  # the mean of the seeds' logged scores
        assert float(r["target sd"]) == pytest.approx(np.std(f1, ddof=1))
        assert float(r["target 95% CI low"]) <= float(r["crop F1"]) <= float(r["target 95% CI high"])
        assert r["target"] == "crop_f1" and ("seed=0,1,2" if clf == "knn" else "seed=0,1") in r["config"].split(" | ")
    f1s = [float(r["crop F1"]) for r in rows]
    assert f1s == sorted(f1s, reverse=True)  # ranked by the target's test metric
    top, other = rows
    assert top["vs top"] == "top" and float(top["diff to top 95% CI low"]) == 0.0
    low, high = float(other["diff to top 95% CI low"]), float(other["diff to top 95% CI high"])
    assert low <= float(other["crop F1"]) - float(top["crop F1"]) <= high
    assert other["vs top"] == ("n.s." if low <= 0 <= high else "lower")


def test_interval_point_estimates_are_the_logged_scores(seeded_runs, tmp_path):
    """Streaming the logged test mask and labels block by block reproduces each run's logged metric."""
    uri, runs = seeded_runs
    res = compare(uri, "seeds", out_dir=tmp_path / "c", target="crop_iou", bootstrap=200, block=16)
    assert res["rank_by"] == "test_iou"
    client = MlflowClient(uri)
    for r in res["rows"]:
        iou = np.mean([client.get_run(i).data.metrics["test_iou"] for i in r.runs])
        assert r.interval is not None and r.interval.estimate == pytest.approx(iou)
        assert r.interval.low < r.interval.high
    res = compare(uri, "seeds", out_dir=tmp_path / "c2", bootstrap=0)
    assert all(r.interval is None for r in res["rows"]) and sorted(len(r.runs) for r in res["rows"]) == [2, 3]


def test_compare_options_are_checked(seeded_runs, capsys):
    uri, _ = seeded_runs
    for args, msg in (
        (["--target", "nosuch"], "--target=nosuch: unknown target metric"),
        (["--bootstrap", "5"], "--bootstrap: 0 (no intervals) or at least 100"),
        (["--block", "0"], "--block: a positive number"),
    ):
        code = main(["compare", "--tracking-uri", uri, "--experiment", "seeds", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"cropseg: error: {msg}"), err


def _row(i: int, clf: str, seed: int, f1: float) -> Row:
    stages = {"source": "sample", "labeler": "rasterize", "features": "bands", "classifier": clf}
    params = {"seed": str(seed), "train.seed": str(seed), "fit.k": str(5 + 2 * seed), "classifier.name": clf}
    metrics = {"test_crop_f1": f1, "test_weighted_avg_f1": f1 + 0.05, "fit_seconds": 1.5}
    return Row(f"{i:032x}", f"{clf}#{i}", "FINISHED", stages, params, metrics, "", test_digest="d")


def test_three_models_by_three_seeds_print_three_rows_in_160_columns():
    rows = [
        _row(3 * m + s, clf, s, 0.7 + m / 10 + s / 100)
        for m, clf in enumerate(["knn", "random_forest", "hist_gradient_boosting"])
        for s in range(3)
    ]
    failed = _row(99, "mlp", 0, 0.0)
    failed.status, failed.error = "FAILED", "boom"
    merged = merge_seed_groups([*rows, failed])
    assert [len(r.runs) for r in merged] == [3, 3, 3, 0]  # a failed run is never merged
    assert merged[0].metrics["test_crop_f1"] == pytest.approx(0.71)
    assert merged[0].spread["test_crop_f1"] == pytest.approx(0.01)
    groups = group_rows(merged)
    for i, r in enumerate(merged[:3]):
        r.interval = Interval(0.7, 0.65123, 0.75432)
        r.difference = Interval(-0.1 * i, -0.1 * i - 0.031, -0.1 * i + 0.02)
        r.versus_top = "top" if i == 0 else "n.s."
    for r in merged:
        r.config = config_label(r, merged)
    from cropseg.targets import get_target

    text = console(merged, groups, target=get_target("crop_f1"))
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 160
    assert len([ln for ln in lines if "[0.651,0.754]" in ln]) == 3
    assert "[-0.131,-0.080]" in text and "0.010" in text
    # what each seed's fit chose; train.seed follows seed and is not repeated
    assert merged[0].config == "knn k=5/k=7/k=9 | seed=0,1,2 | bands"  # what differs comes first
