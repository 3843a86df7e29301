"""The TempCNN patch model (``classifier=tempcnn``) on tiny SYNTHETIC time stacks.

One run on the multi-date sample (3 dates, 160 px, 2 epochs of a small network) is trained once for the
module through ``cropseg``; the tests check its MLflow record (step metrics, kept weights, the torch
requirement), that ``cropseg predict`` with the test stack reproduces the run's test mask, that the served
pyfunc model's pixel rows agree with block prediction, and that single-date scenes are refused in one line.
Early stopping, the time budget and the class-weight choice run on SYNTHETIC two-date patches with
controlled validation scores and a controllable clock.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from epoch_helpers import FakeClock, scripted_scores
from mlflow import MlflowClient

import cropseg
from cropseg.cli import main
from cropseg.conformance import PatchModelConformance, separable_patches
from cropseg.types import PatchSet


@pytest.fixture(scope="module", autouse=True)
def _deep_extra() -> None:
    pytest.importorskip("torch", reason="the 'deep' extra (make test and make setup-deep install it)")


DATES = ("2017-04-01", "2017-07-01")
SMALL = {
    "filters": [16, 16, 16],
    "dense_units": 32,
    "batch_size": 64,
    "max_pixels": 4000,
    "patch_size": 16,
    "tile_size": 64,
    "threads": 1,
    "class_weight": None,
    "seed": 0,
}
SIZE = 160
FAST = [
    "classifier=tempcnn",
    "features=temporal",
    "source.dates=3",
    f"source.size={SIZE}",
    "classifier.epochs=2",
    *[f"classifier.{k}={json.dumps(v).replace(' ', '')}" for k, v in SMALL.items() if k != "seed"],
    "classifier.class_weight=null",
    "train.patches.max_patches=48",
    "block_size=64",
    "parallel.backend=serial",
]


def two_dates(patches: PatchSet) -> PatchSet:
    """SYNTHETIC two-date patches from single-date ones: date 1 the patch's bands, date 2 the same bands
    darkened (features named ``<band>@<date>``, date-major)."""
    X = np.concatenate([patches.X, 0.8 * patches.X], axis=1)
    names = [f"{b}@{d}" for d in DATES for b in patches.feature_names]
    return PatchSet(X.astype(np.float32), patches.y, patches.origins, names)


class TestTempCNNConformance(PatchModelConformance):
    """The patch-model conformance tests on two-date patches (TempCNN refuses single-date features)."""

    name = "tempcnn"
    overrides = [f"classifier.{k}={json.dumps(v).replace(' ', '')}" for k, v in SMALL.items() if k != "seed"] + [
        "classifier.class_weight=null",
        "classifier.epochs=3",
        "classifier.patience=null",
    ]

    @pytest.fixture(scope="class")
    @classmethod
    def patch_data(cls, make_model):
        p = int(make_model().patch_size)
        return two_dates(separable_patches(24, p, seed=0)), two_dates(separable_patches(6, p, seed=1))

    @pytest.fixture(scope="class")
    @classmethod
    def test_block(cls):
        data = two_dates(separable_patches(1, 96, seed=5, ignore=False))
        return data.X[0][:, :90, :75], data.y[0][:90, :75]


def _tiny(**options):
    from cropseg.plugins import Registry, get_plugin_manager

    model = Registry.from_plugin_manager(get_plugin_manager()).create("classifier", "tempcnn", {**SMALL, **options})
    model.prepare(8)
    return model


@pytest.fixture(scope="module")
def tiny_patches():
    return two_dates(separable_patches(16, 16, seed=0)), two_dates(separable_patches(4, 16, seed=1))


def _scores(values):
    return scripted_scores(values, needs_validation=True)


def test_layout_groups_features_by_date_and_keeps_undated_ones():
    from cropseg_plugins.tempcnn import temporal_layout

    names = ["blue@d1", "ndvi@d1", "blue@d2", "ndvi@d2", "valid@d1", "valid@d2", "ndvi_amplitude"]
    dates, channels, series, static = temporal_layout(names)
    assert dates == ["d1", "d2"] and channels == ["blue", "ndvi", "valid"]
    assert series.tolist() == [[0, 1, 4], [2, 3, 5]] and static.tolist() == [6]
    from cropseg.errors import ConfigError

    with pytest.raises(ConfigError, match="two or more dates"):
        temporal_layout(["blue", "green", "red", "nir"])
    with pytest.raises(ConfigError, match="same features"):
        temporal_layout(["blue@d1", "red@d1", "blue@d2"])


def test_plateau_stops_early_and_keeps_the_best_epoch(tiny_patches, caplog):
    model = _tiny(epochs=10, patience=2)
    on_epoch, seen = _scores([0.5, 0.7, 0.69, 0.7, 0.6, 0.8, 0.9, 0.9, 0.9, 0.9])
    with caplog.at_level("INFO", logger="cropseg"):
        res = model.fit_patches(*tiny_patches, on_epoch)
    assert seen == [1, 2, 3, 4]  # epoch 2 best; 3 and 4 are no better: patience 2 stops after epoch 4
    assert res.params["best_epoch"] == 2 and res.params["epochs_run"] == 4 and res.params["stopped"] == "patience"
    assert res.metrics["val_best_target"] == pytest.approx(0.7) and "warning.last_epoch" not in res.tags
    assert any("early stop after epoch 4 (best epoch 2)" in r.getMessage() for r in caplog.records)
    # the kept weights are epoch 2's: a model trained for exactly 2 epochs predicts the same
    again = _tiny(epochs=2, patience=None)
    again.fit_patches(*tiny_patches, _scores([0.5, 0.7])[0])
    X = tiny_patches[1].X[0]
    ones = np.ones(X.shape[1:], bool)
    np.testing.assert_array_equal(model.predict_block(X, ones), again.predict_block(X, ones))


def test_kept_epoch_last_warns_and_time_budget_stops(tiny_patches):
    res = _tiny(epochs=3, patience=2).fit_patches(*tiny_patches, _scores([0.5, 0.6, 0.7])[0])
    assert res.params["best_epoch"] == 3 and "kept epoch is the last one run" in res.tags["warning.last_epoch"]
    model = _tiny(epochs=50, patience=None, max_minutes=1)
    model._clock = clock = FakeClock(0.5)
    start = clock.now
    res = model.fit_patches(*tiny_patches, _scores([0.01 * i for i in range(1, 51)])[0])
    assert res.params["stopped"] == "time" and 1 <= res.params["epochs_run"] < 50
    assert clock.now - start <= 60 + max(model.epoch_seconds)
    assert "time budget" in res.tags["warning.last_epoch"]


@pytest.mark.parametrize("better", ["none", "balanced"])
def test_class_weight_auto_keeps_the_better_on_validation(tiny_patches, better):
    model = _tiny(epochs=2, patience=None, class_weight="auto")
    curve = [0.5, 0.6, 0.7, 0.65] if better == "balanced" else [0.5, 0.8, 0.7, 0.65]
    on_epoch, seen = _scores(curve)
    res = model.fit_patches(*tiny_patches, on_epoch)
    assert seen == [1, 2, 3, 4] and res.params["class_weight"] == better
    assert res.metrics["val_best_target_class_weight_none"] == pytest.approx(max(curve[:2]))
    assert res.metrics["val_best_target"] == pytest.approx(max(curve))


def test_training_pixels_are_capped_and_labelled_only(tiny_patches):
    model = _tiny(max_pixels=500)
    X, y = model._pixels(tiny_patches[0], 500, np.random.default_rng(0))
    assert X.shape == (500, 8) and set(np.unique(y).tolist()) <= {0, 1}
    # each row is one pixel's features: find it back in its patch
    P = tiny_patches[0]
    i, r, c = np.unravel_index(np.flatnonzero(P.y.reshape(-1) != 255)[:3], P.y.shape)
    X_all, _ = model._pixels(P, None, np.random.default_rng(0))
    np.testing.assert_array_equal(X_all[:3], P.X[i, :, r, c])


# -- end to end through cropseg ----------------------------------------------------------------------------


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def tempcnn_run(tmp_path_factory, store_template):
    root = tmp_path_factory.mktemp("tempcnn")
    uri = store_template.copy(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = cropseg.run([*FAST, f"tracking.uri={uri}", f"cache_dir={root / 'cache'}"], output_dir=root / "run")
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    suffix = run.data.tags["cropseg.test.scene_id"].rsplit("_", 1)[1]
    test_tifs = sorted((root / "cache").rglob(f"*_{suffix}_3B_AnalyticMS.tif"), key=lambda p: p.name)
    return {"uri": uri, "root": root, "result": result, "run": run, "client": client, "test_tifs": test_tifs}


def test_run_records_learning_curves_weights_and_requirements(tempcnn_run):
    run, client = tempcnn_run["run"], tempcnn_run["client"]
    assert run.info.status == "FINISHED" and run.data.tags["cropseg.classifier"] == "tempcnn"
    for key in ("epoch/train_loss", "epoch/val_crop_f1", "epoch/val_iou"):
        hist = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in hist) == [1, 2], key
    m = run.data.metrics
    assert 1 <= m["best_epoch"] <= 2 and 0 < m["train_model_pixels"] <= 4000 and m["val_patches"] > 0
    assert 0.0 <= m["test_crop_f1"] <= 1.0 and m["predict_pixels"] > 0
    assert run.data.params["fit.dates"] == "3" and run.data.params["fit.channels"] == "blue,green,red,nir,ndvi"
    names = [a.path for a in client.list_artifacts(run.info.run_id, "model_weights")]
    assert names == ["model_weights/tempcnn_weights.pt"]
    import mlflow

    from cropseg.tracking.model import mlflow_uri

    with mlflow_uri(tempcnn_run["uri"]):
        reqs = Path(mlflow.pyfunc.get_model_dependencies(f"runs:/{run.info.run_id}/model")).read_text().split()
    from importlib import metadata

    assert f"torch=={metadata.version('torch')}" in reqs


def test_cropseg_predict_with_the_stack_reproduces_the_run_test_mask(tempcnn_run, tmp_path, capsys):
    run, client = tempcnn_run["run"], tempcnn_run["client"]
    tifs = tempcnn_run["test_tifs"]
    assert len(tifs) == 3
    metas = [a for t in tifs for a in ("--metadata", str(t).replace(".tif", "_metadata.xml"))]
    udms = [a for t in tifs for a in ("--udm", str(t).replace("_AnalyticMS.tif", "_udm2.tif"))]
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            f"runs:/{run.info.run_id}/model",
            *map(str, tifs),
            *metas,
            *udms,
            "--output-dir",
            str(out),
            "--tracking-uri",
            tempcnn_run["uri"],
            "--block-size",
            "96",
        ]
    )
    assert code == 0, capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    mine = _read(out / summary["outputs"]["mask"])
    logged = _read(Path(client.download_artifacts(run.info.run_id, "prediction/test_mask.tif", str(tmp_path / "dl"))))
    assert np.array_equal(mine, logged)


def test_pyfunc_rows_agree_with_block_prediction_and_pickle(tempcnn_run):
    """The served model's pixel rows (every band of date 1, then date 2...; a gap all zeros) give the
    classes block prediction gives the same pixels of the training stack, where the model is right on both
    classes; the unpickled classifier predicts the same."""
    import pandas as pd
    from rasterio.windows import Window

    from cropseg.config import compose
    from cropseg.featurize import block_features
    from cropseg.pipeline import build_stages
    from cropseg.tracking.model import load_pipeline_model

    loaded = load_pipeline_model(tempcnn_run["uri"], f"runs:/{tempcnn_run['run'].info.run_id}/model")
    pipe = loaded.pipeline
    cfg = compose([*FAST, f"cache_dir={tempcnn_run['root'] / 'cache'}"])
    scene = build_stages(cfg).source.load(tempcnn_run["root"] / "cache").train
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, SIZE, SIZE))
    # gaps: every third pixel's second date masked (as a cloud in its udm2 would), read as 0
    assert blk.date_valid is not None
    gap = np.zeros(blk.valid.shape, bool)
    gap.reshape(-1)[::3] = True
    blk.date_valid[1][gap] = False
    blk.reflectance[4:8][:, gap] = 0.0
    feats = block_features(pipe.features, blk, scene.band_names)
    block_pred = pipe.classifier.predict_block(feats, blk.valid)[blk.valid]
    rows = blk.reflectance[:, blk.valid].T
    served = loaded.pyfunc.predict(pd.DataFrame(rows, columns=list(pipe.spec.band_names)))
    assert served.dtype == np.int64 and set(np.unique(block_pred).tolist()) == {0, 1}
    np.testing.assert_array_equal(served, block_pred)
    again = pickle.loads(pickle.dumps(pipe.classifier))
    np.testing.assert_array_equal(again.predict_block(feats, blk.valid)[blk.valid], block_pred)


def _one_line(capfd, code: int) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_single_date_scenes_are_refused_in_one_line_before_work(tmp_path, capfd, monkeypatch, tracking_uri):
    monkeypatch.chdir(tmp_path)
    args = [a for a in FAST if not a.startswith(("source.dates", "features="))]
    code = main([*args, "features=bands", f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path / 'out'}"])
    line = _one_line(capfd, code)
    assert "classifier=tempcnn: needs a time stack of two or more dates" in line and "blue, green, red, nir" in line
    (run,) = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("cropseg").experiment_id]
    )
    assert run.info.status == "FAILED"
    out = tmp_path / "out"
    assert not (out / "labels").exists() and not (out / "prediction").exists() and not (out / "model").exists()


def test_without_the_extra_one_line_says_how_to_install(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from cropseg.cli import main\n"
        f"sys.exit(main(['classifier=tempcnn', 'tracking.uri=sqlite:///{tmp_path / 'm.db'}']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cropseg: error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "classifier=tempcnn needs PyTorch" in lines[0] and "install it with: " in lines[0]
    assert not (tmp_path / "outputs").exists()
