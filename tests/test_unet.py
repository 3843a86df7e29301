"""Patch models and the U-Net plugin (``classifier=unet``) on tiny SYNTHETIC sample scenes (160 px, 2 epochs).

One U-Net run is trained once for the module; the tests check its MLflow record (per-epoch step metrics,
kept weights), that its pyfunc model / ``cropseg predict`` reproduce its own test mask, that masks do not
depend on the block size, that `cropseg compare` lists it, and that bad input stops with one line.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from epoch_helpers import FakeClock, scripted_scores
from mlflow import MlflowClient

import cropseg
from cropseg.cli import main
from cropseg.conformance import PatchModelConformance
from cropseg.extras import CLONE, install_command
from cropseg.patches import PatchOptions, draw_patches, holdout_blocks


@pytest.fixture(scope="module", autouse=True)
def _deep_extra() -> None:
    """PyTorch and segmentation-models-pytorch (the 'deep' extra), imported when this module's tests run,
    not when the suite is collected (the import costs seconds in every test worker)."""
    pytest.importorskip("torch", reason="the 'deep' extra (make test and make setup-deep install it)")
    pytest.importorskip(
        "segmentation_models_pytorch", reason="the 'deep' extra (make test and make setup-deep install it)"
    )


SIZE = 160
#: a small U-Net (3 encoder stages of resnet18, narrow decoder) keeps the tests fast on 2 CPU cores
SMALL = [
    "classifier.arch_options={encoder_depth:3,decoder_channels:[32,16,8]}",
    "classifier.patch_size=32",
    "classifier.batch_size=8",
    "classifier.threads=1",
    "classifier.tile_size=64",
    "classifier.class_weight=null",
]
FAST = [
    "classifier=unet",
    f"source.size={SIZE}",
    "classifier.epochs=2",
    *SMALL,
    "train.patches.max_patches=48",
    "block_size=64",
    "parallel.backend=serial",
]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory, store_template):
    root = tmp_path_factory.mktemp("unet")
    uri = store_template.copy(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = cropseg.run([*FAST, f"tracking.uri={uri}", f"cache_dir={root / 'cache'}"], output_dir=root / "run")
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    test_id = run.data.tags["cropseg.test.scene_id"]
    cache = next((root / "cache" / "sample").glob(f"v*-{SIZE}x{SIZE}"))
    return {
        "uri": uri,
        "root": root,
        "result": result,
        "run": run,
        "client": client,
        "test_tif": cache / f"{test_id}_3B_AnalyticMS.tif",
        "test_xml": cache / f"{test_id}_3B_AnalyticMS_metadata.xml",
    }


def test_run_records_learning_curves_and_weights(unet_run):
    run, client = unet_run["run"], unet_run["client"]
    assert run.info.status == "FINISHED" and run.data.tags["cropseg.classifier"] == "unet"
    assert not {"train_loss", "val_crop_f1"} & set(run.data.metrics)  # the curves share one prefix (the UI's group)
    for key in ("epoch/train_loss", "epoch/val_crop_f1", "epoch/val_iou"):
        hist = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in hist) == [1, 2], key
        assert all(np.isfinite(m.value) for m in hist)
    m = run.data.metrics
    assert 1 <= m["best_epoch"] <= 2 and m["train_patches"] > 0 and m["val_patches"] > 0
    assert 0.0 <= m["test_crop_f1"] <= 1.0 and m["predict_pixels"] > 0
    assert run.data.params["fit.best_epoch"] == str(int(m["best_epoch"]))
    names = [a.path for a in client.list_artifacts(run.info.run_id, "model_weights")]
    assert names == ["model_weights/unet_weights.pt"]
    import mlflow

    from cropseg.tracking.model import mlflow_uri

    with mlflow_uri(unet_run["uri"]):  # the logged model's pip requirements pin what loading it needs
        reqs = Path(mlflow.pyfunc.get_model_dependencies(f"runs:/{run.info.run_id}/model")).read_text().split()
    from importlib import metadata

    assert f"torch=={metadata.version('torch')}" in reqs
    assert any(r.startswith("segmentation-models-pytorch==") for r in reqs)


def test_cropseg_predict_reproduces_the_run_test_mask(unet_run, tmp_path, capsys):
    run, client = unet_run["run"], unet_run["client"]
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            f"runs:/{run.info.run_id}/model",
            str(unet_run["test_tif"]),
            "--metadata",
            str(unet_run["test_xml"]),
            "--output-dir",
            str(out),
            "--tracking-uri",
            unet_run["uri"],
            "--block-size",
            "96",
        ]
    )
    assert code == 0, capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    mine = _read(out / summary["outputs"]["mask"])
    logged = _read(Path(client.download_artifacts(run.info.run_id, "prediction/test_mask.tif", str(tmp_path / "dl"))))
    assert {0, 1} <= set(np.unique(logged).tolist())
    assert np.array_equal(mine, logged)


def test_mask_does_not_depend_on_block_size(unet_run, tmp_path):
    """Fixed prediction tiles with a halo: blocks of 24 and 100 px (not aligned with the 64-px tiles; rounded
    up to whole tiles) and one whole-scene block give the same mask, pixel for pixel, and it is the run's own
    raw test mask and the tile-by-tile reference's."""
    from cropseg.tracking.model import load_pipeline_model

    pipe = load_pipeline_model(unet_run["uri"], f"runs:/{unet_run['run'].info.run_id}/model").pipeline
    scene = pipe.scene(unet_run["test_tif"], metadata=unet_run["test_xml"])
    masks = []
    for i, block in enumerate((24, 100, SIZE)):
        pipe.predict_scene(scene, tmp_path / f"{i}.tif", block=block, raw_path=tmp_path / f"{i}_raw.tif")
        masks.append(_read(tmp_path / f"{i}_raw.tif"))
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2])
    assert np.array_equal(masks[2], _read(unet_run["result"].outputs["test_mask_raw"]))
    # the straightforward implementation (each 64-px tile read with its 32-px halo and predicted on its own,
    # centre kept) gives the same mask: on CPU in float32 the tolerance is zero pixels
    from rasterio.windows import Window

    model, feats = pipe.classifier, pipe.features
    ref = np.full((SIZE, SIZE), 255, dtype=np.uint8)
    with scene.reader() as reader:
        for r in range(0, SIZE, 64):
            for c in range(0, SIZE, 64):
                th, tw = min(64, SIZE - r), min(64, SIZE - c)
                blk = reader.read(Window(c - 32, r - 32, tw + 64, th + 64))
                pred = model.predict_block(feats.compute(blk.reflectance, scene.band_names), blk.valid)
                core = (slice(32, 32 + th), slice(32, 32 + tw))
                ref[r : r + th, c : c + tw] = np.where(blk.valid[core], pred[core], 255)
    assert np.array_equal(ref, masks[0])


def test_pixel_rows_answer_as_uniform_fields(unet_run):
    from cropseg.tracking.model import load_pipeline_model

    loaded = load_pipeline_model(unet_run["uri"], f"runs:/{unet_run['run'].info.run_id}/model")
    soil, crop = [0.12, 0.15, 0.19, 0.25], [0.03, 0.06, 0.03, 0.45]
    import pandas as pd

    pred = loaded.pyfunc.predict(pd.DataFrame([soil, crop], columns=["blue", "green", "red", "nir"]))
    assert pred.dtype == np.int64 and pred.shape == (2,) and set(pred.tolist()) <= {0, 1}


@pytest.mark.slow
def test_compare_lists_unet_beside_pixel_models(unet_run, tmp_path, capsys):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(unet_run["root"])
        cropseg.run(
            [
                f"source.size={SIZE}",
                "train.max_per_class=2000",
                "classifier=logistic_regression",
                "classifier.grid.C=[1]",
                "postprocessor=[median_blur]",
                "tracking.log_model=false",
                f"tracking.uri={unet_run['uri']}",
                f"cache_dir={unet_run['root'] / 'cache'}",
            ],
            output_dir=unet_run["root"] / "knn",
        )
    capsys.readouterr()
    code = main(
        ["compare", "--tracking-uri", unet_run["uri"], "--out", str(tmp_path / "cmp"), "--rank-by", "test_crop_f1"]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "unet" in text and "logistic_regression" in text


@pytest.mark.slow
def test_same_seed_same_mask_on_cpu(unet_run, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(unet_run["root"])
        again = cropseg.run(
            [
                *FAST,
                "classifier.device=cpu",
                "tracking.log_model=false",
                f"tracking.uri={unet_run['uri']}",
                f"cache_dir={unet_run['root'] / 'cache'}",
            ],
            output_dir=tmp_path / "again",
        )
    first = unet_run["result"]
    assert np.array_equal(_read(first.outputs["test_mask_raw"]), _read(again.outputs["test_mask_raw"]))
    assert again.metrics["test_crop_f1"] == first.metrics["test_crop_f1"]


# -- patch drawing -----------------------------------------------------------------------------------------


def test_patches_stratified_seeded_and_held_out(tmp_path):
    from cropseg.plugins import Registry, get_plugin_manager
    from cropseg.types import CROP

    reg = Registry.from_plugin_manager(get_plugin_manager())
    scene = reg.create("source", "sample", {"size": 128}).load(tmp_path / "cache").train
    labels = reg.create("labeler", "rasterize", {}).label(scene, tmp_path / "labels.tif")
    feats = reg.create("features", "bands", {})
    opts = PatchOptions(max_patches=12, val_fraction=0.25, min_per_class=2, min_val_pixels=0)
    a = draw_patches(scene, labels, feats, 32, opts, seed=4, spatial_block=32)
    b = draw_patches(scene, labels, feats, 32, opts, seed=4, spatial_block=32)
    assert np.array_equal(a.train.origins, b.train.origins) and np.array_equal(a.train.X, b.train.X)
    assert len(a.train) == 12 and a.train.X.shape[1:] == (4, 32, 32)
    with_crop = (a.train.y == CROP).reshape(12, -1).any(1).sum()
    assert 0 < with_crop < 12
    # training patches never touch a held-out block; validation patches lie inside held-out blocks
    held = holdout_blocks(128, 128, 32, 0.25, 4)
    for r, c in a.train.origins:
        assert not held[r // 32 : (r + 31) // 32 + 1, c // 32 : (c + 31) // 32 + 1].any()
    assert a.validation is not None
    for r, c in a.validation.origins:
        assert held[r // 32 : (r + 31) // 32 + 1, c // 32 : (c + 31) // 32 + 1].all()
    assert a.info["val_fraction"] == 0.25 and not a.warnings
    # validation short of min_val_pixels per class: more blocks held out (up to half), then a warning
    big = draw_patches(scene, labels, feats, 32, PatchOptions(12, None, 0.25, 0.05, 2, 10**6), seed=4, spatial_block=32)
    assert 0.25 < big.info["val_fraction"] <= 0.5 and big.info["val_blocks"] > held.sum()
    assert big.validation is not None and len(big.validation) > len(a.validation)
    assert big.warnings and "min_val_pixels=1000000" in big.warnings[0]
    held_big = holdout_blocks(128, 128, 32, big.info["val_fraction"], 4)
    for r, c in big.train.origins:
        assert not held_big[r // 32 : (r + 31) // 32 + 1, c // 32 : (c + 31) // 32 + 1].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_blocks_spread_over_the_scene(seed):
    """64 of 256 blocks held out: every band of 4 block rows (a quarter of the scene) holds 16 of them, and
    no block row more than 6 (a plain random draw of 64 blocks puts 9-23 in a quarter)."""
    held = holdout_blocks(1024, 1024, 64, 0.25, seed)
    assert held.shape == (16, 16) and held.sum() == 64
    assert [int(held[i : i + 4].sum()) for i in range(0, 16, 4)] == [16, 16, 16, 16]
    assert held.sum(axis=1).max() <= 6 and held.sum(axis=0).max() <= 10
    assert not np.array_equal(held, holdout_blocks(1024, 1024, 64, 0.25, seed + 10))


# -- bad input: one line, non-zero exit, FAILED run, nothing that looks like a result ------------------------


def _one_line(capfd, code: int) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def wrong_weights(tmp_path) -> Path:
    import segmentation_models_pytorch as smp
    import torch

    path = tmp_path / "rgb_unet.pt"  # a U-Net for 3 input channels: does not fit 4 bands
    torch.save(smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1).state_dict(), path)
    return path


@pytest.mark.parametrize(
    "case", ["missing_weights", "wrong_weights", "cuda", "encoder_weights", "max_minutes", "class_weight", "threads"]
)
def test_bad_options_stop_before_any_work(case, tmp_path, capfd, monkeypatch, wrong_weights):
    import torch

    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    override, expect = {
        "missing_weights": (f"classifier.weights={tmp_path / 'nope.pt'}", "file not found"),
        "wrong_weights": (f"classifier.weights={wrong_weights}", "does not fit Unet"),
        "cuda": ("classifier.device=cuda", "no CUDA device"),
        "encoder_weights": ("classifier.encoder_weights=imagenet", "downloads no weights"),
        "max_minutes": ("classifier.max_minutes=0", "a positive number of minutes"),
        "class_weight": ("classifier.class_weight=weighted", "auto, balanced or null"),
        "threads": ("classifier.threads=0", "a positive integer, auto or null"),
    }[case]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    line = _one_line(capfd, main([*FAST, override, f"tracking.uri={uri}", f"cache_dir={tmp_path / 'cache'}"]))
    assert "classifier." in line and expect in line
    assert not (tmp_path / "cache").exists() and not (tmp_path / "outputs").exists()  # nothing loaded or written


@pytest.mark.parametrize("case", ["patch_too_large", "too_few_patches"])
def test_bad_scene_for_patches_fails_the_run(case, unet_run, tmp_path, capfd, monkeypatch, tracking_uri):
    monkeypatch.chdir(tmp_path)
    override, expect = {
        "patch_too_large": ("classifier.patch_size=192", "larger than the training scene"),
        "too_few_patches": ("train.patches.min_per_class=500", "too few labelled training patches"),
    }[case]
    uri = tracking_uri
    line = _one_line(
        capfd,
        main(
            [
                *FAST,
                override,
                f"tracking.uri={uri}",
                f"cache_dir={unet_run['root'] / 'cache'}",
                f"hydra.run.dir={tmp_path / 'out'}",
            ]
        ),
    )
    assert expect in line
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("cropseg").experiment_id])
    assert run.info.status == "FAILED"
    out = tmp_path / "out"
    assert (out / "FAILED.txt").exists() and not (out / "metrics.json").exists()
    assert not (out / "prediction").exists() and not (out / "model").exists()


def test_without_the_extra_one_line_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['segmentation_models_pytorch'] = None\n"
        "from cropseg.cli import main\n"
        f"sys.exit(main(['classifier=unet', 'tracking.uri=sqlite:///{tmp_path / 'm.db'}']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cropseg: error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    command = lines[0].split("install it with: ")[1]
    # this clone's own .venv: `make -C CLONE setup-deep` (the test runs elsewhere); any other environment: its
    # python's pip with the clone's extra
    in_clone_venv = Path(sys.prefix).resolve() == (CLONE / ".venv").resolve()
    assert command == (
        f"make -C {CLONE} setup-deep" if in_clone_venv else f"{sys.executable} -m pip install -e '{CLONE}[deep]'"
    )


def test_install_command_names_the_running_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", str(CLONE / ".venv"))
    monkeypatch.chdir(CLONE)
    assert install_command("deep") == "make setup-deep"
    monkeypatch.chdir(tmp_path)
    assert install_command("deep") == f"make -C {CLONE} setup-deep"
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "other-venv"))
    assert install_command("deep") == f"{sys.executable} -m pip install -e '{CLONE}[deep]'"


# -- the conformance suite, as a patch-model author would use it ---------------------------------------------


class TestUNetConformance(PatchModelConformance):
    name = "unet"
    overrides = [*SMALL, "classifier.epochs=3", "classifier.lr=0.01"]


def test_patch_model_hook_is_documented_and_feeds_the_classifier_stage():
    from cropseg import hookspecs
    from cropseg.plugins import Registry, get_plugin_manager
    from cropseg.types import PatchModel

    fn = hookspecs.cropseg_register_patch_models
    assert "PatchModel" in (fn.__doc__ or "") and fn.__annotations__["register"] == "Register"
    reg = Registry.from_plugin_manager(get_plugin_manager())
    info = reg.get("classifier", "unet")
    assert info.distribution == "cropseg" and info.plugin.endswith("unet")
    model = reg.create("classifier", "unet", {"patch_size": 32, "threads": 1})
    assert isinstance(model, PatchModel)


# -- training that knows when to stop (issue 18 item 6); controlled validation scores and a controllable clock --


def _tiny_unet(**options):
    """A small UNet built through the registry, as a run builds it (32-px patches, 3 encoder stages)."""
    from cropseg.plugins import Registry, get_plugin_manager

    base = {
        "arch_options": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        "patch_size": 32,
        "batch_size": 4,
        "threads": 1,
        "tile_size": 64,
        "class_weight": None,
        "seed": 0,
    }
    model = Registry.from_plugin_manager(get_plugin_manager()).create("classifier", "unet", {**base, **options})
    model.prepare(4)
    return model


@pytest.fixture(scope="module")
def tiny_patches():
    """SYNTHETIC separable patches (cropseg.conformance.separable_patches): 16 training, 4 validation."""
    from cropseg.conformance import separable_patches

    return separable_patches(16, 32, seed=0), separable_patches(4, 32, seed=1)


_scores = scripted_scores


def test_plateau_stops_early_and_keeps_the_best_epoch(tiny_patches, caplog):
    model = _tiny_unet(epochs=10, patience=2)
    on_epoch, seen = _scores([0.5, 0.7, 0.69, 0.7, 0.6, 0.8, 0.9, 0.9, 0.9, 0.9])
    with caplog.at_level("INFO", logger="cropseg"):
        res = model.fit_patches(*tiny_patches, on_epoch)
    # epoch 2 is best; 3 and 4 are not better (a tie is no improvement): patience 2 stops after epoch 4
    assert seen == [1, 2, 3, 4]
    assert res.params["best_epoch"] == 2 and res.params["epochs_run"] == 4 and res.params["stopped"] == "patience"
    assert res.metrics["val_best_target"] == pytest.approx(0.7)
    assert "warning.last_epoch" not in res.tags
    assert any("early stop after epoch 4 (best epoch 2)" in r.getMessage() for r in caplog.records)


def test_kept_epoch_last_warns_and_tags(tiny_patches, caplog):
    model = _tiny_unet(epochs=3, patience=2)
    on_epoch, seen = _scores([0.5, 0.6, 0.7])
    with caplog.at_level("WARNING", logger="cropseg"):
        res = model.fit_patches(*tiny_patches, on_epoch)
    assert seen == [1, 2, 3] and res.params["best_epoch"] == 3 and res.params["stopped"] == "epochs"
    assert "kept epoch is the last one run" in res.tags["warning.last_epoch"]
    assert [r for r in caplog.records if r.levelname == "WARNING" and "last one run" in r.getMessage()]
    # a curve that peaked earlier does not warn
    again = _tiny_unet(epochs=3, patience=5)
    res = again.fit_patches(*tiny_patches, _scores([0.5, 0.8, 0.7])[0])
    assert res.params["best_epoch"] == 2 and "warning.last_epoch" not in res.tags


def test_progress_inside_the_first_epoch_within_30_s(tiny_patches, caplog):
    """Every clock read advances 6 s: an epoch of 4 batches (16 patches, batch 4) spans well over 30 s of
    this clock, so a line only at the end of an epoch would come too late; progress must come earlier."""
    model = _tiny_unet(epochs=2, patience=None)
    model._clock = clock = FakeClock(6.0)
    start = clock.now
    stamps: list[tuple[float, str]] = []

    class Stamp(logging.Handler):
        def emit(self, record):
            stamps.append((clock.now, record.getMessage()))

    handler = Stamp(level=logging.INFO)
    logger = logging.getLogger("cropseg")
    logger.addHandler(handler)
    try:
        with caplog.at_level("INFO", logger="cropseg"):
            on_epoch, _ = _scores([0.5, 0.6])
            model.fit_patches(*tiny_patches, on_epoch)
    finally:
        logger.removeHandler(handler)
    progress = [(t, m) for t, m in stamps if "batch " in m and "batches/s" in m]
    assert progress, stamps
    first_t, first = progress[0]
    assert first_t - start <= 30, (first_t - start, first)
    assert "epoch 1/2: batch 1/4" in first and "ETA" in first and "patches/s" in first
    # more lines while the epochs run, at most one per 10 s of the clock
    assert len(progress) >= 2
    assert all(b - a >= 10 for (a, _), (b, _) in zip(progress, progress[1:]))


def test_time_budget_stops_training(tiny_patches):
    """max_minutes=1 on a clock where an epoch takes far more than 10 s: training stops by the budget
    before running all epochs, after at least one."""
    model = _tiny_unet(epochs=50, patience=None, max_minutes=1)
    model._clock = clock = FakeClock(2.0)
    start = clock.now
    on_epoch, seen = _scores([0.1 * i for i in range(1, 51)])
    res = model.fit_patches(*tiny_patches, on_epoch)
    assert res.params["stopped"] == "time" and 1 <= res.params["epochs_run"] < 50
    assert clock.now - start <= 60 + max(model.epoch_seconds), model.epoch_seconds
    assert "time budget" in res.tags["warning.last_epoch"]


@pytest.mark.parametrize("better", ["none", "balanced"])
def test_class_weight_auto_keeps_the_better_on_validation(tiny_patches, better):
    """class_weight=auto trains without, then with balanced weights (epochs numbered on: 1-2, 3-4) and keeps
    the candidate whose best validation target is higher."""
    model = _tiny_unet(epochs=2, patience=None, class_weight="auto")
    curve = [0.5, 0.6, 0.7, 0.65] if better == "balanced" else [0.5, 0.8, 0.7, 0.65]
    on_epoch, seen = _scores(curve)
    res = model.fit_patches(*tiny_patches, on_epoch)
    assert seen == [1, 2, 3, 4]
    assert res.params["class_weight"] == better
    assert res.metrics["val_best_target_class_weight_none"] == pytest.approx(max(curve[:2]))
    assert res.metrics["val_best_target_class_weight_balanced"] == pytest.approx(max(curve[2:]))
    assert res.metrics["val_best_target"] == pytest.approx(max(curve))


def test_epoch_callback_returns_the_run_target():
    from cropseg.patches import epoch_callback
    from cropseg.targets import get_target
    from cropseg.types import PatchSet

    y = np.array([[[0, 1, 1, 255]]], dtype=np.uint8)
    val = PatchSet(np.zeros((1, 4, 1, 4), np.float32), y, np.zeros((1, 2), np.int64), ["a", "b", "c", "d"])
    pred = np.array([[[1, 1, 0, 0]]], dtype=np.uint8)  # tp 1, fp 1, fn 1, tn 0
    logged = []
    for name, expected in (("crop_f1", 0.5), ("crop_iou", 1 / 3), ("accuracy", 1 / 3)):
        cb = epoch_callback(val, lambda m, step: logged.append((step, dict(m))), "t", get_target(name))
        out = cb(1, 0.1, pred)
        assert out["target"] == pytest.approx(expected)
    assert all("target" not in m for _, m in logged)  # the target is returned, not logged twice


def test_cuda_fit_with_amp_and_prediction_agree_with_float32():
    """On CUDA (skipped without a GPU): device=auto trains there with AMP (bfloat16), and the AMP mask of a
    SYNTHETIC separable block agrees with the same weights' float32 mask on >= 99 % of pixels."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from cropseg.conformance import separable_patches

    model = _tiny_unet(epochs=3, patience=None, device="auto", lr=0.01)
    res = model.fit_patches(separable_patches(24, 32, seed=0), separable_patches(6, 32, seed=1), None)
    assert res.params["device"].startswith("cuda") and res.params["amp"] is True
    block = separable_patches(1, 96, seed=5, ignore=False)
    X, y = block.X[0], block.y[0]
    ones = np.ones(X.shape[1:], dtype=bool)
    amp_mask = model.predict_block(X, ones)
    model.amp, model._net = False, None
    fp32_mask = model.predict_block(X, ones)
    assert float(np.mean(amp_mask == fp32_mask)) >= 0.99
    assert float(np.mean(amp_mask == y)) > 0.9


# -- threads=auto: the training loop times its own batches with 1 thread and every core (issue 22) ----------


class ThreadClock:
    """A clock that advances ``cost[n]`` seconds per read while ``threads()`` returns ``n``: a batch timed
    between two reads takes the cost of the thread count it ran with."""

    def __init__(self, cost: dict[int, float], threads):
        self.now, self.cost, self.threads = 1000.0, cost, threads

    def __call__(self) -> float:
        self.now += self.cost[self.threads()]
        return self.now


@pytest.mark.parametrize(
    ("cost", "chosen", "timed_each"),
    [
        ({1: 1.0, 2: 2.0}, 1, 2),  # one thread twice as fast: clear after the first round
        ({1: 2.0, 2: 1.0}, 2, 2),  # every core twice as fast: clear after the first round
        ({1: 1.05, 2: 1.0}, 1, 6),  # every core only 5% faster: not worth the second core, after 3 rounds
        ({1: 1.3, 2: 1.0}, 2, 6),  # 30% faster: every core
    ],
)
def test_thread_chooser_keeps_the_faster_setting(cost, chosen, timed_each):
    from cropseg.patches import ThreadChooser

    calls: list[int] = []
    current = [0]

    def set_threads(n: int) -> None:
        calls.append(n)
        current[0] = n

    chooser = ThreadChooser(set_threads, 2, per_round=2, rounds=3, clock=ThreadClock(cost, lambda: current[0]))
    batches = 0
    while chooser.deciding:
        chooser.before_batch()
        chooser.after_batch(0)  # a batch that computed nothing does not count
        chooser.before_batch()
        chooser.after_batch(8)
        batches += 1
        assert batches < 50
    assert chooser.chosen == chosen and current[0] == chosen
    assert [len(v) for v in chooser.samples.values()] == [timed_each, timed_each]
    assert batches == 2 + 2 * timed_each  # two warm-up batches, then the timed ones; no batch is wasted
    assert calls[:2] == [2, 1] and all(a != b for a, b in zip(calls, calls[1:]))  # set only when it changes
    assert chooser.summary().endswith(f": {chosen}") and "ms/patch" in chooser.summary()
    # per patch: a batch of 8 patches costs cost[n] seconds
    assert np.median(chooser.samples[1]) == pytest.approx(cost[1] / 8)


def test_thread_chooser_with_one_core_uses_one_thread():
    from cropseg.patches import ThreadChooser

    calls: list[int] = []
    chooser = ThreadChooser(calls.append, 1)
    assert not chooser.deciding and chooser.chosen == 1 and calls == [1]
    assert "nothing to choose" in chooser.summary()


@pytest.fixture
def torch_threads():
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


@pytest.mark.parametrize("faster", [1, 2])
def test_unet_threads_auto_trains_with_the_faster(tiny_patches, caplog, monkeypatch, torch_threads, faster):
    """threads=auto on a clock where the faster thread count's batches take a third of the other's: the
    first batches decide (16 patches, batch 4: two warm-up batches and one round of 2 + 2, into the second
    epoch), the rest of training uses the choice, and the run reports it (INFO line, tag, metric)."""
    import cropseg.parallel

    torch = torch_threads
    monkeypatch.setattr(cropseg.parallel, "available_cores", lambda: 2)
    model = _tiny_unet(epochs=2, patience=None, threads="auto")
    cost = {faster: 1.0, 3 - faster: 3.0}
    model._clock = ThreadClock(cost, torch.get_num_threads)
    with caplog.at_level("INFO", logger="cropseg"):
        res = model.fit_patches(*tiny_patches, _scores([0.5, 0.6])[0])
    assert torch.get_num_threads() == faster
    assert res.metrics["train_threads"] == faster
    assert res.tags["train_threads"].startswith(
        "unet: 1 thread 250.0 ms/patch" if faster == 1 else "unet: 1 thread 750.0"
    )
    assert res.tags["train_threads"].endswith(f": {faster}")
    lines = [r.getMessage() for r in caplog.records if "threads=auto" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith(f": {faster}")


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_openmp_threads_wait_passively_unless_the_environment_says(given):
    """PyTorch's OpenMP pool reads OMP_WAIT_POLICY when it loads: cropseg sets PASSIVE before the U-Net
    plugin first imports PyTorch (in a fresh interpreter), and leaves a value the user gave alone."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys\n"
        "from cropseg.plugins import Registry, get_plugin_manager\n"
        "reg = Registry.from_plugin_manager(get_plugin_manager())\n"
        "assert 'torch' not in sys.modules\n"
        "reg.create('classifier', 'unet', {})\n"
        "assert 'torch' in sys.modules\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (given or "PASSIVE")
