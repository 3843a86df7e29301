"""Readable comparisons and data lineage (issue 12): runs log their train/test scenes and ground truth as
MLflow dataset inputs (tests/test_sweeps.py checks them through a real ``mlflow server``'s REST API),
``cropseg compare`` groups
runs by test data, warns when they differ, fits its table in the given width and names runs readably.
Scenes are tiny and SYNTHETIC (cropseg.testing)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

import cropseg
from cropseg.cli import main
from cropseg.compare import (
    Row,
    compare,
    config_label,
    console,
    group_headings,
    group_rows,
    markdown,
    split_fit_params,
    table,
)
from cropseg.testing import local_overrides, write_tiny_scene

FAST = ["tracking.log_model=false", "postprocessor=[median_blur]", "parallel.backend=serial"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, store_template):
    """Three tiny runs: knn with bands and with indices on test scene A, knn with bands on test scene B."""
    d = tmp_path_factory.mktemp("lineage")
    train = write_tiny_scene(d, name="train", seed=1)
    test_a = write_tiny_scene(d, name="test_a", seed=2)
    test_b = write_tiny_scene(d, name="test_b", seed=5)
    uri = store_template.copy(d)
    base = [f"tracking.uri={uri}", "tracking.experiment=lineage", f"cache_dir={d / 'cache'}", *FAST]
    results = {
        "a_bands": cropseg.run([*local_overrides(train, test_a), *base], output_dir=d / "o1"),
        "a_indices": cropseg.run([*local_overrides(train, test_a), "features=indices", *base], output_dir=d / "o2"),
        "b_bands": cropseg.run([*local_overrides(train, test_b), *base], output_dir=d / "o3"),
    }
    return uri, results, (train, test_a, test_b)


def test_runs_log_their_scenes_and_ground_truth_as_dataset_inputs(runs):
    uri, results, (train, test_a, test_b) = runs
    client = MlflowClient(uri)
    digests = {}
    for key, res in results.items():
        run = client.get_run(res.run_id)
        test = test_a if key.startswith("a") else test_b
        got = {
            (json.loads(i.dataset.source)["uri"], next(t.value for t in i.tags if t.key == "mlflow.data.context"))
            for i in run.inputs.dataset_inputs
        }
        assert got == {
            (p.resolve().as_uri(), ctx)
            for p, ctx in (
                (train.image, "training"),
                (train.ground_truth, "training"),
                (test.image, "testing"),
                (test.ground_truth, "testing"),
            )
        }
        digests[key] = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        assert run.data.tags["cropseg.data.testing"]
    # the same files give the same digests; another test scene another one
    assert digests["a_bands"] == digests["a_indices"]
    a_test = {v for n, v in digests["a_bands"].items() if n.startswith("testing")}
    b_test = {v for n, v in digests["b_bands"].items() if n.startswith("testing")}
    assert a_test.isdisjoint(b_test)


def test_run_names_carry_chosen_hyperparameters_and_features(runs):
    url, results, _ = runs
    client = MlflowClient(url)
    names = {k: client.get_run(r.run_id).info.run_name for k, r in results.items()}
    k_a = results["a_bands"].params["k"]
    assert names["a_bands"] == f"knn k={k_a} | bands"
    assert names["a_indices"].startswith("knn k=") and names["a_indices"].endswith("| indices")
    assert client.get_run(results["a_bands"].run_id).data.tags["cropseg.chosen"] == f"k={k_a}"


def test_run_summary_prints_areas_in_hectares_with_two_decimals_and_counts_as_integers():
    from cropseg.pipeline import RunResult

    res = RunResult(
        "r",
        "1",
        "sqlite://",
        Path("."),
        {
            "crop_area_pixels_ha": 48.8043,
            "crop_area_ha": 371.0,
            "n_polygons": 21.0,
            "n_polygons_dropped": 657.0,
            "test_weighted_avg_f1": 0.81234,
        },
        {},
    )
    values = dict(line.rsplit(None, 1) for line in res.summary().splitlines()[2:])
    values = {k.strip(): v for k, v in values.items()}
    assert values["crop area, all crop pixels (ha)"] == "48.80" and values["crop area, kept polygons (ha)"] == "371.00"
    assert values["crop polygons kept"] == "21" and values["crop polygons dropped (small)"] == "657"
    assert values["test weighted F1"] == "0.8123"


def test_compare_groups_by_test_data_and_warns(runs, tmp_path, capsys):
    url, results, _ = runs
    code = main(
        ["compare", "--tracking-uri", url, "--experiment", "lineage", "--out", str(tmp_path / "cmp"), "--width", "120"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "warning: the runs were tested on 2 different test data sets" in err
    lines = out.split("\nranked by")[0].splitlines()
    assert max(len(ln) for ln in lines) <= 120
    group_lines = [ln for ln in lines if ln.startswith("test group ")]
    assert [ln.split(",")[0] for ln in group_lines] == ["test group A", "test group B"]
    assert "test_a" in group_lines[0] and "test_b" in group_lines[1]
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {r["run id"]: r for r in rows}
    a, ai, b = (by_id[results[k].run_id] for k in ("a_bands", "a_indices", "b_bands"))
    assert a["test group"] == ai["test group"] == "A" and b["test group"] == "B"
    assert b["rank"] == "1" and {a["rank"], ai["rank"]} == {"1", "2"}  # ranked within each group
    # the features differ within group A: they lead (the classifier and its k follow, unless k differs too)
    assert "bands" in a["config"].split(" | ") and "indices" in ai["config"].split(" | ")
    assert any(part.startswith("knn k=") for part in a["config"].split(" | "))
    assert "source.test_image" in rows[0] and "classifier.k_grid" in rows[0]  # the CSV keeps every param
    # no single best run across different test data: registering is refused, one group can be chosen
    code = main(
        [
            "compare",
            "--tracking-uri",
            url,
            "--experiment",
            "lineage",
            "--out",
            str(tmp_path / "cmp2"),
            "--register",
            "x",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "different test data" in err and "--test-data" in err
    res = compare(url, "lineage", out_dir=tmp_path / "cmp3", test_data=a["test data digest"][:8])
    assert res["warning"] is None and {r.run_id for r in res["rows"]} == {
        results["a_bands"].run_id,
        results["a_indices"].run_id,
    }


def test_the_warning_is_printed_once(runs, tmp_path):
    """The cross-group warning, as a user sees it (a subprocess: no test logging handlers), appears once."""
    url, _, _ = runs
    proc = subprocess.run(
        [sys.executable, "-m", "cropseg.cli", "compare", "--tracking-uri", url, "--experiment", "lineage"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("different test data sets") == 1, proc.stderr
    assert proc.stderr.startswith("cropseg: warning: the runs were tested on 2 different test data sets")
    headings = [ln for ln in proc.stdout.splitlines() if ln.startswith("test group ")]
    assert len(headings) == 2 and "test_a" in headings[0] and "test_b" in headings[1]


def _row(i: int, clf: str, feats: str, chosen: str, params: dict[str, str], f1: float, digest: str = "d1") -> Row:
    stages = {
        "source": "sample",
        "labeler": "rasterize",
        "features": feats,
        "classifier": clf,
        "postprocessor": "median_blur,vectorize",
    }
    base = {"fit.cv": "spatial", "fit.cv_folds": "3", "source.size": "1000", "postprocessor.median_blur.kernel": "5"}
    return Row(
        f"{i:032x}",
        f"{clf}#{i}",
        "FINISHED",
        stages,
        {**base, **params},
        {
            "test_weighted_avg_f1": f1,
            "test_crop_f1": f1 - 0.01,
            "fit_seconds": 12.345,
            "predict_pixels_per_second": 1234567.0,
        },
        "",
        test_digest=digest,
        chosen=chosen,
    )


SWEEP = [  # a four-classifier x two-feature sweep as its runs log it
    (clf, feats, chosen, params)
    for clf, chosen, params in [
        ("knn", "k=9", {"classifier.k_grid": "[3, 5, 7, 9]", "fit.k": "9"}),
        (
            "mlp",
            "alpha=0.0001",
            {
                "classifier.alpha_grid": "[0.0001, 0.001]",
                "classifier.hidden_layer_sizes": "[64, 32]",
                "fit.alpha": "0.0001",
                "fit.n_iter": "200",
            },
        ),
        ("random_forest", "max_depth=20", {"classifier.n_estimators": "200", "fit.max_depth": "20"}),
        ("hist_gradient_boosting", "learning_rate=0.1", {"classifier.max_iter": "300", "fit.learning_rate": "0.1"}),
    ]
    for feats in ("bands", "indices")
]


def test_sweep_table_fits_160_columns_and_tells_every_run_apart():
    rows = [_row(i, c, f, ch, p, 0.7 + i / 100) for i, (c, f, ch, p) in enumerate(SWEEP)]
    groups = group_rows(rows)
    for r in rows:
        r.config = config_label(r, rows)
    text = console(rows, groups)
    assert max(len(ln) for ln in text.splitlines()) <= 160
    assert len({r.config for r in rows}) == len(rows)  # every run told apart
    knn = next(r for r in rows if r.stages["classifier"] == "knn" and r.stages["features"] == "bands")
    assert knn.config == "knn k=9 | bands"  # identical params (fit.cv, source.size, blur) are left out
    mlp = next(r for r in rows if r.stages["classifier"] == "mlp" and r.stages["features"] == "indices")
    assert mlp.config == "mlp alpha=0.0001 | indices"
    assert "12.3" in text and "1,234,567" in text and "0.770" in text  # fixed precision
    assert "test group" not in text  # one test data set: no groups shown


def test_config_shows_options_that_differ_between_runs():
    rows = [
        _row(0, "mlp", "indices", "alpha=0.0001", {"postprocessor.median_blur.kernel": "7"}, 0.8),
        _row(1, "mlp", "indices", "alpha=0.001", {}, 0.7),
    ]
    for r in rows:
        r.config = config_label(r, rows)
    # what differs first (a clipped line keeps it), then what the runs share
    assert rows[0].config == "mlp alpha=0.0001 | median_blur kernel=7 | indices"
    assert rows[1].config == "mlp alpha=0.001 | median_blur kernel=5 | indices"


def test_differing_options_come_first_and_survive_clipping():
    """Two runs that differ only in a framework option: it leads their config, so a narrow table clipping the
    config column (``~``) still shows it."""
    rows = [
        _row(0, "hist_gradient_boosting", "context", "max_leaf_nodes=31", {"evaluate.target": "crop_f1"}, 0.8),
        _row(1, "hist_gradient_boosting", "context", "max_leaf_nodes=31", {"evaluate.target": "iou"}, 0.7),
    ]
    groups = group_rows(rows)
    for r in rows:
        r.config = config_label(r, rows)
    assert rows[0].config == "evaluate.target=crop_f1 | hist_gradient_boosting max_leaf_nodes=31 | context"
    text = console(rows, groups, width=100)
    assert max(len(ln) for ln in text.splitlines()) <= 100 and "~" in text  # the config column was clipped
    assert "evaluate.target=crop_f1" in text and "evaluate.target=iou" in text


def test_the_cv_test_gap_is_a_column_when_runs_logged_it():
    """Issue 18, item 5: compare shows each run's CV-test gap (``cv_test_gap``, signed); runs that logged
    none (older runs) show ``-``, and with no such run the column is left out."""
    rows = [_row(0, "knn", "bands", "k=9", {}, 0.8), _row(1, "knn", "context", "k=9", {}, 0.7)]
    rows[0].metrics.update(cv_score=0.9, cv_test_gap=0.377)
    groups = group_rows(rows)
    head, first, second = [ln for ln in console(rows, groups).splitlines() if ln and not ln.startswith("-")]
    at = slice(head.index("CV-test"), head.index("CV-test") + len("CV-test"))  # right-aligned under its head
    assert first[at].strip() == "+0.377" and second[at].strip() == "-"
    assert "| +0.377 |" in markdown(rows)
    del rows[0].metrics["cv_test_gap"]
    assert "CV-test" not in console(rows, group_rows(rows)) and "CV-test" not in markdown(rows)


def test_fit_outputs_are_not_settings():
    """A patch model logs what its fit reported (best epoch, epochs run, device, parameter count) as fit.*
    params without a grid: they go to the fit outputs column, not into the config name; a tuned
    hyperparameter (with its grid) stays in the name."""
    params = {"params": {"fit.best_epoch": "2", "fit.epochs_run": "5", "fit.device": "cpu", "fit.n_parameters": "1e7"}}
    assert split_fit_params(params["params"], None) == ("", "best_epoch=2 epochs_run=5 device=cpu n_parameters=1e+07")
    tuned = {"fit.k": "9", "classifier.k_grid": "[3, 9]", "fit.n_iter": "3", "fit.n_features_in": "4"}
    assert split_fit_params(tuned, None) == ("k=9", "n_features_in=4")
    assert split_fit_params(tuned, "k=9") == ("k=9", "n_features_in=4")
    unet = _row(0, "unet", "bands", "", params["params"], 0.8)
    knn = _row(1, "knn", "bands", "k=9", {}, 0.7)
    unet.chosen, unet.fit_outputs = split_fit_params(unet.params, None)
    for r in (unet, knn):
        r.config = config_label(r, [unet, knn])
    assert unet.config == "unet | bands" and knn.config == "knn k=9 | bands"
    header, body = table([unet, knn], [])
    assert body[0][header.index("fit outputs")] == "best_epoch=2 epochs_run=5 device=cpu n_parameters=1e+07"


def test_group_headings_name_what_differs_between_test_data():
    """Four test sets of the sample source at four sizes: same file names, different digests; each heading
    names its size first, then the files, then (in the console) the digest."""
    rows = []
    for i, size in enumerate((200, 500, 1000, 2000)):
        r = _row(i, "knn", "bands", "k=9", {"source.size": str(size)}, 0.8, digest=f"digest{size:04d}")
        r.test_info = {"files": "test_scene.tif, test_ground_truth.geojson", "source.size": str(size)}
        r.test_info["source.seed"] = "0"
        rows.append(r)
    groups = group_rows(rows)
    headings = group_headings(groups)
    assert len(set(headings.values())) == 4
    for letter, members in groups.items():
        size = members[0].params["source.size"]
        assert headings[letter] == f"source.size={size}; test_scene.tif, test_ground_truth.geojson"
    text = console(rows, groups)
    lines = [ln for ln in text.splitlines() if ln.startswith("test group ")]
    assert len(lines) == 4 == len(set(lines)) and all("source.size=" in ln and "digest digest" in ln for ln in lines)


def test_groups_by_test_data_digest_and_ranks_within_each():
    rows = [
        _row(0, "knn", "bands", "k=9", {}, 0.9, digest="big"),
        _row(1, "knn", "bands", "k=7", {}, 0.8, digest="small"),
        _row(2, "mlp", "bands", "alpha=0.001", {}, 0.7, digest="big"),
    ]
    failed_early = _row(3, "mlp", "bands", "", {}, 0.0, digest="unknown")
    failed_early.status, failed_early.error = "FAILED", "source.image: file not found"
    groups = group_rows([*rows, failed_early])
    assert {k: [r.run_id[-1] for r in v] for k, v in groups.items()} == {"A": ["0", "2", "3"], "B": ["1"]}
    for r in [*rows, failed_early]:
        r.config = config_label(r, [*rows, failed_early])
    text = console([*groups["A"], *groups["B"]], groups)
    assert text.count("test group ") == 2 and "digest big" in text and "digest small" in text
    assert "FAILED: source.image: file not found" in text
