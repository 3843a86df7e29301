"""Features ``context``: focal statistics (values against a brute-force reference, nodata and scene edges),
independence from the block size, options, every classifier on them, and a run whose deployed model
reproduces its mask with ``cropseg predict`` while refusing single pixel rows. Scenes are tiny and SYNTHETIC."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from mlflow import MlflowClient

import cropseg
from cropseg.errors import ConfigError, ModelInputError
from cropseg.featurize import window_features
from cropseg.plugins import Registry, get_plugin_manager
from cropseg.raster import iter_windows
from cropseg.sampling import sample_training_pixels
from cropseg.scene_ops import predict_scene
from cropseg.testing import local_overrides, write_tiny_scene
from cropseg.types import BAND_NAMES, Scene
from cropseg_plugins.context import ContextFeatures


def _reference(values: np.ndarray, valid: np.ndarray, r: int) -> dict[str, np.ndarray]:
    """Brute force: statistics of the valid pixels inside the array within the (2r+1)^2 window."""
    h, w = values.shape
    out = {s: np.zeros((h, w)) for s in ("mean", "std", "min", "max")}
    for i in range(h):
        for j in range(w):
            win = values[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
            ok = valid[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
            v = win[ok].astype(np.float64)
            if v.size:
                out["mean"][i, j], out["std"][i, j] = v.mean(), v.std()
                out["min"][i, j], out["max"][i, j] = v.min(), v.max()
    return out


def test_statistics_match_a_brute_force_reference_with_nodata_and_edges():
    rng = np.random.default_rng(0)
    refl = rng.uniform(0.02, 0.6, size=(4, 13, 11)).astype(np.float32)
    valid = rng.random((13, 11)) > 0.3
    valid[:5, :5] = False  # a hole bigger than a radius-1 window: those windows hold no valid pixel
    refl[:, ~valid] = 0.0
    f = ContextFeatures(
        radii=[1, 3], stats=["mean", "std", "min", "max"], bands=["red", "nir"], indices=["ndvi"], include_indices=True
    )
    out = f.compute(refl, BAND_NAMES, valid=valid)
    names = f.names(BAND_NAMES)
    assert names[:5] == ["blue", "green", "red", "nir", "ndvi"]
    assert out.shape == (len(names), 13, 11) and out.dtype == np.float32
    assert names[5:9] == ["red_mean_r1", "red_std_r1", "red_min_r1", "red_max_r1"]
    ndvi = (refl[3] - refl[2]) / np.where(valid, refl[3] + refl[2], 1)
    np.testing.assert_allclose(out[4][valid], ndvi[valid], rtol=1e-6)
    layers = {"red": refl[2], "nir": refl[3], "ndvi": np.where(valid, ndvi, 0)}
    for k, name in enumerate(names[5:], start=5):
        var, stat, rad = name.rsplit("_", 2)
        ref = _reference(layers[var], valid, int(rad[1:]))[stat]
        np.testing.assert_allclose(out[k], ref, atol=1e-4, err_msg=name)
    assert out[names.index("red_mean_r1"), 0, 0] == 0.0  # no valid pixel in the window -> 0
    assert f.halo == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radii": [0, 3]}, r"radii: radii are positive whole numbers of pixels, got 0"),
        ({"radii": [2.5]}, r"radii: .*got 2.5"),
        ({"radii": ["3"]}, r"radii: .*got '3'"),
        ({"radii": []}, r"radii: at least one"),
        ({"radii": [3, 3]}, r"radii: a radius is listed twice"),
        ({"stats": ["mean", "median"]}, r"stats: unknown statistic 'median' \(known: mean, std, min, max\)"),
        ({"indices": ["gndvi"]}, r"indices: unknown index 'gndvi'"),
        (
            {"bands": ["swir"]},
            r"bands: unknown band 'swir' \(known: coastal, blue, green, red, red_edge, .*, swir1, swir2, ndvi",
        ),
        ({"bands": [], "indices": []}, r"no bands and no indices"),
    ],
)
def test_bad_options_are_one_line_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=r"^features\.context[.:] ?" + match) as err:
        ContextFeatures(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_options_stop_a_run_before_any_work(tmp_path, tracking_uri):
    with pytest.raises(ConfigError, match=r"features.context.radii: .*got -2"):
        cropseg.run(
            ["features=context", "features.radii=[3,-2]", f"tracking.uri={tracking_uri}"], output_dir=tmp_path / "out"
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tif"))


def test_default_features():
    f = ContextFeatures()
    assert f.names(BAND_NAMES) == [*BAND_NAMES, "ndvi_mean_r5", "ndvi_std_r5"] and f.halo == 5


def test_a_band_the_scene_lacks_is_named():
    with pytest.raises(ConfigError, match="features.context.bands: the scene has no 'nir' band"):
        ContextFeatures(bands=["nir"], indices=[]).compute(np.zeros((3, 4, 4), np.float32), ("blue", "green", "red"))


@pytest.fixture(scope="module")
def scene_and_labels(tmp_path_factory):
    """A 70x90 SYNTHETIC scene (nodata in its last 8 columns) and its label raster."""
    d = tmp_path_factory.mktemp("ctx")
    tiny = write_tiny_scene(d, name="train", seed=3, width=90, height=70)
    from cropseg.planet_metadata import parse_metadata
    from cropseg.types import VectorGroundTruth

    meta = parse_metadata(tiny.metadata)
    scene = Scene(
        name="train",
        path=tiny.image,
        gains=tuple(meta.gains(4)),
        nodata=0,
        ground_truth=VectorGroundTruth(tiny.ground_truth),
    )
    labeler = Registry.from_plugin_manager(get_plugin_manager()).create("labeler", "rasterize", {})
    return scene, labeler.label(scene, d / "labels.tif"), d


def _scene_features(scene: Scene, feats: ContextFeatures, block: int) -> np.ndarray:
    grid = scene.grid
    out = np.zeros((len(feats.names(scene.band_names)), grid.height, grid.width), np.float32)
    with scene.reader() as reader:
        for w in iter_windows(grid.height, grid.width, block):
            f, valid = window_features(reader, feats, w, scene.band_names)
            r0, c0 = int(w.row_off), int(w.col_off)
            out[:, r0 : r0 + f.shape[1], c0 : c0 + f.shape[2]] = np.where(valid, f, 0)
    return out


def test_features_and_training_pixels_do_not_depend_on_the_block_size(scene_and_labels):
    scene, labels, _ = scene_and_labels
    feats = ContextFeatures(radii=[2, 7], stats=["mean", "std", "min", "max"], bands=BAND_NAMES, include_indices=True)
    whole = _scene_features(scene, feats, 512)
    for block in (16, 23):
        assert np.array_equal(_scene_features(scene, feats, block), whole), block  # bit for bit
    # a window at the scene's corner sees only the valid pixels inside the scene
    with scene.reader() as reader:
        blk = reader.read(rasterio.windows.Window(0, 0, 8, 8))
    k = feats.names(scene.band_names).index("nir_mean_r7")
    assert whole[k, 0, 0] == pytest.approx(blk.reflectance[3].mean(), abs=1e-4)
    # every labelled pixel (a capped draw picks pixels in block order), compared position by position
    a = sample_training_pixels(scene, labels, feats, max_per_class=None, seed=0, block=17)
    b = sample_training_pixels(scene, labels, feats, max_per_class=None, seed=0, block=512)
    oa, ob = np.lexsort((a.cols, a.rows)), np.lexsort((b.cols, b.rows))
    assert np.array_equal(a.rows[oa], b.rows[ob]) and np.array_equal(a.cols[oa], b.cols[ob])
    assert np.array_equal(a.X[oa], b.X[ob]) and np.array_equal(a.y[oa], b.y[ob])
    assert a.X.shape[1] == 45 and np.array_equal(a.X[oa], whole[:, a.rows[oa], a.cols[oa]].T)


@pytest.mark.parametrize(
    "name", ["knn", "random_forest", "hist_gradient_boosting", "logistic_regression", "linear_svm", "mlp"]
)
def test_every_classifier_fits_and_predicts_on_context_features(scene_and_labels, name):
    scene, labels, d = scene_and_labels
    feats = ContextFeatures()
    ts = sample_training_pixels(scene, labels, feats, max_per_class=400, seed=0, spatial_block=32)
    opts = {"k_grid": [3, 5]} if name == "knn" else {}
    clf = Registry.from_plugin_manager(get_plugin_manager()).create("classifier", name, opts)
    clf.fit(ts.X, ts.y, ts.groups)
    out = d / f"{name}.tif"
    n_px, _ = predict_scene(scene, feats, clf, out, block=32)
    with rasterio.open(out) as m, rasterio.open(labels.path) as lab:
        mask, truth = m.read(1), lab.read(1)
    assert n_px == int((mask != 255).sum()) > 0
    known = truth != 255
    assert (mask[known] == truth[known]).mean() > 0.9, name  # the SYNTHETIC fields are easy to separate


def _context_run(train, test, tracking_uri, tmp_path):  # noqa: ANN001, ANN202
    return cropseg.run(
        [
            *local_overrides(train, test),
            "features=context",
            "features.radii=[4,2]",
            "features.include_indices=true",
            "block_size=24",
            f"tracking.uri={tracking_uri}",
        ],
        output_dir=tmp_path / "out",
    )


@pytest.mark.slow
def test_run_predict_and_served_rows(tmp_path, tiny_pair, tracking_uri, capfd, monkeypatch):
    """features=context end to end: a quiet success (no MLflow error text on stderr: the model is logged with
    its signature but no input example, which it could not serve), names logged, `cropseg predict` reproduces
    the run's test mask pixel for pixel from the logged model, and the pyfunc model refuses pixel rows with one
    clear message."""
    train, test = tiny_pair
    # handlers other tests left on the root logger (Hydra's job logging of in-process CLI runs) write to
    # streams pytest has closed since, and say so on stderr ("--- Logging error ---"): not this run's output
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _context_run(train, test, tracking_uri, tmp_path)
    err = capfd.readouterr().err
    assert "error" not in err.lower() and "Failed to validate" not in err, err
    # what Python shows by default (UserWarning; the input-example advice was one)
    mlflow_warnings = [str(w.message) for w in caught if "mlflow" in w.filename and w.category is UserWarning]
    assert not mlflow_warnings, mlflow_warnings
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    names = run.data.params["features.names"].split(",")
    assert names == [
        "blue",
        "green",
        "red",
        "nir",
        "ndvi",
        "ndvi_mean_r2",
        "ndvi_std_r2",
        "ndvi_mean_r4",
        "ndvi_std_r4",
    ]
    spec = json.loads((result.output_dir / "model" / "pipeline.json").read_text())
    assert spec["features"]["name"] == "context" and spec["feature_names"] == names

    from cropseg.cli import main
    from cropseg.tracking.model import load_pipeline_model

    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            f"runs:/{result.run_id}/model",
            str(test.image),
            "--metadata",
            str(test.metadata),
            "--output-dir",
            str(out),
            "--tracking-uri",
            tracking_uri,
            "--block-size",
            "40",
        ]
    )
    assert code == 0, capfd.readouterr().err
    run_mask = Path(client.download_artifacts(result.run_id, "prediction/test_mask.tif", str(tmp_path / "dl")))
    with rasterio.open(run_mask) as a, rasterio.open(next(out.rglob("*mask.tif"))) as b:
        assert np.array_equal(a.read(1), b.read(1))

    loaded = load_pipeline_model(tracking_uri, f"runs:/{result.run_id}/model")
    assert not loaded.pipeline.accepts_pixel_rows
    meta = loaded.pyfunc.metadata
    assert meta.get_input_schema().input_names() == list(BAND_NAMES) and meta.saved_input_example_info is None
    import pandas as pd

    rows = pd.DataFrame([[0.05, 0.08, 0.06, 0.4]], columns=list(BAND_NAMES))
    with pytest.raises(ModelInputError, match=r"features \('context'\) are spatial.*cropseg predict"):
        loaded.pyfunc.predict(rows)
    # served (MLflow's scoring server app, in process): HTTP 400 with that message, not a generic error
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    with TestClient(scoring_server.init(loaded.pyfunc)) as http:
        answer = http.post(
            "/invocations", json={"dataframe_split": {"columns": list(BAND_NAMES), "data": rows.to_numpy().tolist()}}
        )
    assert answer.status_code == 400
    assert "are spatial" in answer.json()["message"] and "cropseg predict" in answer.json()["message"]
