"""Deploying a trained run: the pyfunc model, the Model Registry, ``cropseg predict`` and ``mlflow models serve``.

One small run on the SYNTHETIC sample (200 px scenes) is trained and registered once for the module; it is
then applied to a different SYNTHETIC scene (another seed and place), loaded back, and served.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import mlflow
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from mlflow import MlflowClient

import cropseg
from cropseg.cli import main
from cropseg.errors import ConfigError, ModelInputError
from cropseg.testing import write_tiny_scene
from cropseg.tracking import register_run_model
from cropseg.tracking.model import load_pipeline_model
from cropseg_plugins.sample.synth import generate_scene

REGISTERED = "cropseg-sample-knn"
BANDS = ["blue", "green", "red", "nir"]

pytestmark = pytest.mark.slow  # every test reads a trained run and its deployed model, end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory, store_template):
    """A run on the SYNTHETIC sample, its model registered as version 1 of REGISTERED."""
    root = tmp_path_factory.mktemp("deploy")
    uri = store_template.copy(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = cropseg.run(
            [
                "source.size=200",
                "train.max_per_class=3000",
                "classifier.k_grid=[3,5]",
                f"tracking.uri={uri}",
                f"tracking.register_model={REGISTERED}",
                f"cache_dir={root / 'cache'}",
            ],
            output_dir=root / "train",
        )
    assert not (root / "mlruns").exists()  # the model went to the run's experiment, not a default file store
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    (out,) = run.outputs.model_outputs
    logged = client.get_logged_model(out.model_id)
    assert logged.name == "model" and logged.experiment_id == run.info.experiment_id
    assert logged.artifact_location.startswith((root / "mlartifacts").as_uri())
    test_id = run.data.tags["cropseg.test.scene_id"]
    cache = next((root / "cache" / "sample").glob("v*-200x200"))
    return {
        "uri": uri,
        "root": root,
        "result": result,
        "run": run,
        "client": client,
        "test_tif": cache / f"{test_id}_3B_AnalyticMS.tif",
        "test_xml": cache / f"{test_id}_3B_AnalyticMS_metadata.xml",
    }


@pytest.fixture(scope="module")
def new_scene(tmp_path_factory):
    """A different SYNTHETIC scene (another seed, ~20 km from the sample) with its survey ground truth."""
    return generate_scene(
        tmp_path_factory.mktemp("new"),
        scene_id="20170602_180000_0007",
        seed=7,
        width=160,
        height=160,
        left=652000.0,
        top=4230000.0,
        acquired=datetime(2017, 6, 2, 18, 0, tzinfo=timezone.utc),
    )


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile


def _valid_rows(pipe, image: Path, metadata: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` evenly spaced valid pixels of a scene: reflectance rows and their (row, col) positions."""
    from rasterio.windows import Window

    scene = pipe.scene(image, metadata=metadata)
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, scene.grid.width, scene.grid.height))
    rr, cc = np.nonzero(blk.valid)
    pick = np.linspace(0, len(rr) - 1, n).astype(int)
    return blk.reflectance[:, rr[pick], cc[pick]].T.astype(np.float64), rr[pick], cc[pick]


def test_run_logs_pyfunc_model_that_reproduces_the_mask(trained, tmp_path, monkeypatch):
    run, client, uri = trained["run"], trained["client"], trained["uri"]
    assert trained["result"].model_uri == f"runs:/{run.info.run_id}/model"
    # the user's route: plain MLflow, the store from the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    sig = loaded.metadata.signature
    assert sig.inputs.input_names() == BANDS
    assert {t.name for t in sig.inputs.input_types()} == {"double"}
    example = loaded.input_example
    assert list(example.columns) == BANDS and len(example) == 5
    assert loaded.metadata.run_id == run.info.run_id

    model = loaded.unwrap_python_model()
    spec = model.pipeline.spec
    assert spec.reflectance["mode"] == "toa_xml" and spec.band_count == 4 and spec.crs_units == "metre"
    assert [f["name"] for f in spec.filters] == ["median_blur"] and spec.filters[0]["options"] == {"kernel": 5}
    assert [v["name"] for v in spec.vectorizers] == ["vectorize"] and spec.synthetic is True

    # the whole test scene through the loaded model == the run's logged mask, byte for byte
    out = model.predict_scene(trained["test_tif"], tmp_path / "again.tif", metadata=trained["test_xml"])
    logged = Path(client.download_artifacts(run.info.run_id, "prediction/test_mask.tif", str(tmp_path / "dl")))
    mine, prof_mine = _read(out)
    theirs, prof_theirs = _read(logged)
    assert mine.dtype == theirs.dtype == np.uint8
    assert np.array_equal(mine, theirs)
    assert prof_mine["transform"] == prof_theirs["transform"] and prof_mine["crs"] == prof_theirs["crs"]
    assert {0, 1} <= set(np.unique(mine))

    # pixel rows through loaded.predict == the run's unfiltered classifier output at those pixels
    rows, rr, cc = _valid_rows(model.pipeline, trained["test_tif"], trained["test_xml"], 400)
    raw = _read(Path(client.download_artifacts(run.info.run_id, "prediction/test_mask_raw.tif", str(tmp_path / "dl"))))[
        0
    ]
    pred = loaded.predict(pd.DataFrame(rows, columns=BANDS))
    assert pred.dtype == np.int64 and set(np.unique(pred)) == {0, 1}
    assert np.array_equal(pred, raw[rr, cc])
    # column order does not matter, names do
    assert np.array_equal(loaded.predict(pd.DataFrame(rows[:, ::-1], columns=BANDS[::-1])), pred)
    with pytest.raises(ModelInputError, match="finite"):
        model.pipeline.predict_rows(np.full((2, 4), np.nan))


def test_registered_version_carries_the_run_metrics(trained):
    run, client, uri = trained["run"], trained["client"], trained["uri"]
    assert trained["result"].model_version == "1"
    assert run.data.tags["cropseg.registered_model"] == f"models:/{REGISTERED}/1"
    mv = client.get_model_version(REGISTERED, "1")
    assert mv.run_id == run.info.run_id
    m = run.data.metrics
    for key in ("test_weighted_avg_f1", "test_crop_precision", "test_crop_recall", "test_crop_f1", "test_iou"):
        assert float(mv.tags[f"cropseg.{key}"]) == pytest.approx(m[key], rel=1e-5)
    assert mv.tags["cropseg.synthetic"] == "true" and mv.tags["cropseg.source_run_id"] == run.info.run_id
    assert "SYNTHETIC" in mv.description and f"weighted F1 {m['test_weighted_avg_f1']:.4f}" in mv.description

    # the function `cropseg compare --register` calls: a second version of the same run's model
    assert register_run_model(uri, run.info.run_id, REGISTERED) == "2"
    loaded = load_pipeline_model(uri, f"models:/{REGISTERED}/2")
    assert loaded.source_run_id == run.info.run_id and loaded.registered_version == "2"
    client.set_registered_model_alias(REGISTERED, "champion", "1")
    assert load_pipeline_model(uri, f"models:/{REGISTERED}@champion").registered_version == "1"


def test_predict_new_scene_from_the_registry(trained, new_scene, tmp_path, capsys):
    uri = trained["uri"]
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            f"models:/{REGISTERED}/1",
            str(new_scene.analytic),
            "--metadata",
            str(new_scene.metadata_xml),
            "--ground-truth",
            str(new_scene.ground_truth),
            "--output-dir",
            str(out),
            "--tracking-uri",
            uri,
            "--block-size",
            "64",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "crop area (polygons)" in printed and "classification report against" in printed
    assert "SYNTHETIC" in printed
    summary = json.loads((out / "summary.json").read_text())
    mask_path = out / summary["outputs"]["mask"]
    seg_path = out / summary["outputs"]["segments"]

    # the mask lies on the new scene's exact grid; nodata outside its footprint
    mask, prof = _read(mask_path)
    with rasterio.open(new_scene.analytic) as src:
        assert prof["crs"] == src.crs and prof["transform"] == src.transform and mask.shape == (src.height, src.width)
        footprint = src.read_masks(1) > 0
    assert set(np.unique(mask)) == {0, 1, 255}
    assert (mask[~footprint] == 255).all() and (mask[footprint] != 255).all()
    # block-wise (64 px blocks) == the loaded model's scene prediction with its default blocks
    model = load_pipeline_model(uri, f"models:/{REGISTERED}/1").pyfunc.unwrap_python_model()
    again = model.predict_scene(new_scene.analytic, tmp_path / "again.tif", metadata=new_scene.metadata_xml)
    assert np.array_equal(_read(again)[0], mask)

    # summary numbers come from the mask and the polygons
    assert summary["pixels_classified"] == int(footprint.sum())
    assert summary["crop_pixels"] == int((mask == 1).sum())
    assert summary["crop_area_ha_pixels"] == pytest.approx((mask == 1).sum() * 9 / 1e4)
    seg = gpd.read_file(seg_path)
    assert seg.crs.to_epsg() == 4326 and len(seg) == summary["n_polygons"] > 0
    assert seg["area_ha"].sum() == pytest.approx(summary["crop_area_ha_polygons"], abs=1e-3)
    assert summary["scene_synthetic"] is True and summary["model_synthetic"] is True

    # the report is scikit-learn's on the label raster against the mask
    from sklearn.metrics import classification_report

    labels = _read(out / summary["outputs"]["labels"])[0]
    both = (labels != 255) & (mask != 255)
    expected = classification_report(labels[both], mask[both], output_dict=True, zero_division=0)
    rep = json.loads((out / "reports" / "classification_report.json").read_text())
    assert rep["crop"]["f1-score"] == pytest.approx(expected["1"]["f1-score"])
    assert rep["weighted avg"]["f1-score"] == pytest.approx(expected["weighted avg"]["f1-score"])

    # its own MLflow run, linked to the model's run
    client = trained["client"]
    exp = client.get_experiment_by_name("cropseg-predict")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["cropseg.model_uri"] == f"models:/{REGISTERED}/1"
    assert tags["cropseg.source_run_id"] == trained["run"].info.run_id
    assert tags["cropseg.registered_model"] == f"{REGISTERED}/1" and tags["cropseg.synthetic"] == "true"
    # blocks ran on the default in-process Dask cluster; the mask equals the serial one (model.predict_scene)
    assert run.data.params["parallel.backend"] == "dask"
    assert run.data.metrics["eval_weighted_avg_f1"] == pytest.approx(expected["weighted avg"]["f1-score"])
    assert run.data.metrics["crop_pixels"] == summary["crop_pixels"]
    arts = {
        f.path
        for d in ("prediction", "segments", "reports", "labels")
        for f in client.list_artifacts(run.info.run_id, d)
    }
    arts |= {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {
        f"prediction/{mask_path.name}",
        f"segments/{seg_path.name}",
        "summary.json",
        "reports/classification_report.txt",
    } <= arts
    assert not list(tmp_path.glob(".pred.partial-*"))


def test_predict_serially_or_with_bad_parallel_options(trained, new_scene, tmp_path, capfd):
    from cropseg.parallel import ParallelConfig
    from cropseg.predict import predict

    res = predict(
        f"models:/{REGISTERED}/1",
        new_scene.analytic,
        metadata=new_scene.metadata_xml,
        tracking_uri=trained["uri"],
        output_dir=tmp_path / "serial",
        block=48,
        parallel=ParallelConfig(backend="serial"),
    )
    model = load_pipeline_model(trained["uri"], f"models:/{REGISTERED}/1").pyfunc.unwrap_python_model()
    again = model.predict_scene(new_scene.analytic, tmp_path / "again.tif", metadata=new_scene.metadata_xml)
    assert np.array_equal(_read(res.outputs["mask"])[0], _read(again)[0])
    capfd.readouterr()  # the library calls' logging, not the command's output
    line = _one_line(
        capfd,
        main(
            [
                "predict",
                f"models:/{REGISTERED}/1",
                str(new_scene.analytic),
                "--workers",
                "0",
                "--tracking-uri",
                trained["uri"],
                "--output-dir",
                str(tmp_path / "w0"),
            ]
        ),
    )
    assert "parallel.workers" in line


def test_predict_inside_an_aoi(trained, new_scene, tmp_path):
    from cropseg.predict import predict

    with rasterio.open(new_scene.analytic) as src:
        west, south, east, north = src.bounds
    aoi = shapely.box(west - 500, south + 90, west + 240, north + 500)  # the scene's left 80 columns, less 30 rows
    aoi_path = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[aoi], crs=32610).to_crs(4326).to_file(aoi_path, driver="GeoJSON")
    res = predict(
        f"models:/{REGISTERED}/1",
        new_scene.analytic,
        metadata=new_scene.metadata_xml,
        aoi=aoi_path,
        tracking_uri=trained["uri"],
        output_dir=tmp_path / "aoi-out",
    )
    mask, prof = _read(res.outputs["mask"])
    assert mask.shape == (130, 80)
    assert prof["transform"].c == west and prof["transform"].f == north
    assert res.summary["pixels_classified"] == int((mask != 255).sum()) > 0
    assert "ground_truth" not in res.outputs and res.summary["evaluation"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - a local test server
        return json.loads(resp.read())


@pytest.mark.slow
def test_mlflow_models_serve(trained, new_scene, tmp_path):
    uri = trained["uri"]
    loaded = load_pipeline_model(uri, f"models:/{REGISTERED}/1")
    rows, _, _ = _valid_rows(loaded.pipeline, new_scene.analytic, new_scene.metadata_xml, 300)
    df = pd.DataFrame(rows, columns=BANDS)
    local = loaded.pyfunc.predict(df)
    assert set(np.unique(local)) == {0, 1}

    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # `--env-manager local` runs uvicorn from the environment
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=uri,
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        CROPSEG_SERVE_MAX_ROWS="500",
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{REGISTERED}/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "server did not answer /ping within 120 s"
            time.sleep(0.5)
        answer = _post(base + "/invocations", {"dataframe_split": {"columns": BANDS, "data": rows.tolist()}})
        assert answer["predictions"] == local.tolist()
        # a bad request is refused with a message, the server stays up
        with pytest.raises(urllib.error.HTTPError) as err:
            _post(base + "/invocations", {"dataframe_split": {"columns": ["blue", "green"], "data": [[0.1, 0.1]]}})
        assert err.value.code == 400  # cropseg's one line, not MLflow's schema error
        assert json.loads(err.value.read())["message"] == (
            "pixel rows: missing column(s) red, nir (expected blue, green, red, nir)"
        )
        assert _post(base + "/invocations", {"dataframe_split": {"columns": BANDS, "data": rows[:3].tolist()}}) == {
            "predictions": local[:3].tolist()
        }
        # null / NaN / Infinity / 1e308: a 400 with cropseg's one-line reason naming the column and row
        for bad, shown in (
            (None, "is null or NaN"),
            (float("nan"), "is null or NaN"),
            (float("inf"), "inf is not finite"),
            (1e308, "1e+308 is beyond float32 range"),
        ):
            data = rows[:3].tolist()
            data[1][2] = bad
            with pytest.raises(urllib.error.HTTPError) as err:
                _post(base + "/invocations", {"dataframe_split": {"columns": BANDS, "data": data}})
            assert err.value.code == 400
            body = json.loads(err.value.read())
            assert body["error_code"] == "BAD_REQUEST" and "stack_trace" not in body
            assert body["message"].startswith(f"pixel rows: column 'red', row 1: {shown}; ")
            assert "\n" not in body["message"]
        # JSON nested far deeper than any request of pixel rows (100,000 levels, or just past the limit): a 400
        for depth in (100_000, 40):
            req = urllib.request.Request(
                base + "/invocations",
                data=b'{"dataframe_split": ' + b"[" * depth + b"]" * depth + b"}",
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=60)  # noqa: S310 - a local test server
            assert err.value.code == 400
            assert "nested deeper than 32 levels" in json.loads(err.value.read())["message"]
        # more rows than one request may hold: refused with the limit and a batching hint
        with pytest.raises(urllib.error.HTTPError) as err:
            _post(base + "/invocations", {"dataframe_split": {"columns": BANDS, "data": [rows[0].tolist()] * 501}})
        assert err.value.code == 400
        assert json.loads(err.value.read())["message"] == (
            "pixel rows: 501 rows in one request, at most 500; send the rows in batches of up to 500"
        )
    finally:
        # SIGTERM to the `mlflow models serve` process alone (as a service manager sends it) stops the server
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
            deadline = time.monotonic() + 30
            with pytest.raises(ProcessLookupError):  # the scoring server (uvicorn) shuts down too
                while time.monotonic() < deadline:
                    os.killpg(proc.pid, 0)
                    time.sleep(0.2)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
            log.close()


# -- bad input: one line, non-zero exit, nothing presented as a result ------------------------------------


def _one_line(capfd, code: int) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _no_results(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name != "FAILED.txt" and p.is_file()] if out.exists() else True
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def _last_prediction_run(client: MlflowClient):
    exp = client.get_experiment_by_name("cropseg-predict")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


@pytest.mark.parametrize(
    "model_uri", ["runs:/0123456789abcdef0123456789abcdef/model", "models:/no-such-model/1", f"models:/{REGISTERED}/99"]
)
def test_missing_model_is_one_line(trained, new_scene, tmp_path, capfd, model_uri):
    out = tmp_path / "out"
    line = _one_line(
        capfd,
        main(
            [
                "predict",
                model_uri,
                str(new_scene.analytic),
                "--metadata",
                str(new_scene.metadata_xml),
                "--output-dir",
                str(out),
                "--tracking-uri",
                trained["uri"],
            ]
        ),
    )
    assert model_uri in line and "cannot be loaded" in line
    assert not out.exists()


def _bad_scene_case(kind: str, tmp_path: Path, new_scene) -> tuple[list[str], str]:
    if kind == "bands":
        three = write_tiny_scene(tmp_path / "three", name="three", bands=3)
        return [str(three.image), "--metadata", str(three.metadata)], "expects 4 bands"
    if kind == "degrees":
        deg = write_tiny_scene(tmp_path / "deg", name="deg", epsg=4326, left=-121.5, top=38.6, res=0.00003)
        return [str(deg.image), "--metadata", str(deg.metadata)], "'degree'"
    if kind == "aoi":
        far = tmp_path / "far.geojson"
        gpd.GeoDataFrame(geometry=[shapely.box(-100.0, 40.0, -99.9, 40.1)], crs=4326).to_file(far, driver="GeoJSON")
        return [
            str(new_scene.analytic),
            "--metadata",
            str(new_scene.metadata_xml),
            "--aoi",
            str(far),
        ], "does not overlap"
    if kind == "no-metadata":
        return [str(new_scene.analytic)], "--metadata"
    if kind == "scheduler":  # nothing listens on port 9: the blocks cannot run
        return [
            str(new_scene.analytic),
            "--metadata",
            str(new_scene.metadata_xml),
            "--scheduler",
            "tcp://127.0.0.1:9",
        ], "parallel.scheduler: cannot connect to tcp://127.0.0.1:9"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["bands", "degrees", "aoi", "no-metadata", "scheduler"])
def test_bad_scene_is_one_line_and_run_failed(trained, new_scene, tmp_path, capfd, kind):
    args, expected = _bad_scene_case(kind, tmp_path, new_scene)
    out = tmp_path / "out"
    line = _one_line(
        capfd,
        main(["predict", f"models:/{REGISTERED}/1", *args, "--output-dir", str(out), "--tracking-uri", trained["uri"]]),
    )
    assert expected in line, line
    _no_results(out)
    assert (out / "FAILED.txt").is_file()
    run = _last_prediction_run(trained["client"])
    assert run.info.status == "FAILED" and expected in run.data.tags["cropseg.error"]
    assert not trained["client"].list_artifacts(run.info.run_id, "prediction")


def test_register_without_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tracking.register_model"):
        cropseg.run(
            ["tracking.log_model=false", "tracking.register_model=x", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"],
            output_dir=tmp_path / "o",
        )
    assert not (tmp_path / "m.db").exists()


# --------------------------------------------------------------------------------------------------
# issue 12: class-raster ground truth, checked before anything is predicted; the scene as dataset input
# --------------------------------------------------------------------------------------------------


def _predict_args(trained, new_scene, out: Path, *extra: str) -> list[str]:
    return [
        "predict",
        f"models:/{REGISTERED}/1",
        str(new_scene.analytic),
        "--metadata",
        str(new_scene.metadata_xml),
        "--output-dir",
        str(out),
        "--tracking-uri",
        trained["uri"],
        "--serial",
        *extra,
    ]


def test_predict_scores_against_a_class_raster_as_against_the_polygons(trained, new_scene, tmp_path, capsys):
    vec_out = tmp_path / "vector"
    assert main(_predict_args(trained, new_scene, vec_out, "--ground-truth", str(new_scene.ground_truth))) == 0
    vec = json.loads((vec_out / "summary.json").read_text())
    # the same truth as a land-cover style class raster: 7 = crop, 2 = other land, 0 = nodata (not scored)
    labels, prof = _read(vec_out / vec["outputs"]["labels"])
    classes = tmp_path / "landcover.tif"
    with rasterio.open(classes, "w", **dict(prof, nodata=0)) as dst:
        dst.write(np.select([labels == 1, labels == 0], [7, 2], 0).astype(np.uint8), 1)
    capsys.readouterr()
    ras_out = tmp_path / "raster"
    assert main(_predict_args(trained, new_scene, ras_out, "--ground-truth", str(classes), "--crop-values", "7")) == 0
    printed = capsys.readouterr().out
    ras = json.loads((ras_out / "summary.json").read_text())
    assert ras["evaluation"]["report"] == vec["evaluation"]["report"]
    assert ras["evaluation"]["label_counts"] == vec["evaluation"]["label_counts"]
    support = ras["evaluation"]["report"]["crop"]["support"]
    assert isinstance(support, int) and f" {support}\n" in printed  # supports print as integers
    run = trained["client"].get_run(_last_prediction_run(trained["client"]).info.run_id)
    logged = {
        (i.dataset.name.split()[1], next(t.value for t in i.tags if t.key == "mlflow.data.context"))
        for i in run.inputs.dataset_inputs
    }
    assert logged == {("scene", "prediction"), ("ground", "prediction")}


@pytest.mark.parametrize("kind", ["garbage-raster", "garbage-vector", "contours-on-raster"])
def test_bad_ground_truth_is_refused_before_predicting(trained, new_scene, tmp_path, capfd, kind):
    extra = []
    if kind == "garbage-raster":
        bad = tmp_path / "classes.tif"
        bad.write_text("not a raster")
        expected = "classes.tif"
        extra = ["--crop-values", "1"]
    elif kind == "garbage-vector":
        bad = tmp_path / "fields.geojson"
        bad.write_text("{not json")
        expected = "fields.geojson"
    else:
        bad = tmp_path / "classes.tif"
        with rasterio.open(new_scene.analytic) as src:
            profile = dict(src.profile, count=1, dtype="uint8", nodata=0)
        with rasterio.open(bad, "w", **profile) as dst:
            dst.write(np.ones((1, profile["height"], profile["width"]), dtype=np.uint8))
        expected = "use labeler=rasterize"
        extra = ["--crop-values", "1", "--labeler", "contours"]
    out = tmp_path / "out"
    t = time.perf_counter()
    code = main(_predict_args(trained, new_scene, out, "--ground-truth", str(bad), *extra))
    seconds = time.perf_counter() - t
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0 and "Traceback" not in err and len(lines) == 1 and expected in lines[0], err
    assert "classified pixels" not in err  # the scene was never predicted (logged right after predicting)
    print(f"refused in {seconds:.1f} s")  # measured, not asserted (see the report)
    _no_results(out)
    run = _last_prediction_run(trained["client"])
    assert run.info.status == "FAILED" and "predict_seconds" not in run.data.metrics  # nothing was predicted
