"""The ``cropseg`` command end to end on tiny SYNTHETIC scenes, into a temporary MLflow store."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from mlflow import MlflowClient

from cropseg.cli import main
from cropseg.testing import local_overrides, write_tiny_scene

EXPECTED_METRICS = [
    f"{split}_{name}"
    for split in ("train", "train_raw", "test", "test_raw")
    for name in (
        "crop_precision",
        "crop_recall",
        "crop_f1",
        "crop_support",
        "noncrop_precision",
        "noncrop_recall",
        "noncrop_f1",
        "noncrop_support",
        "accuracy",
        "macro_avg_f1",
        "weighted_avg_precision",
        "weighted_avg_recall",
        "weighted_avg_f1",
        "iou",
    )
] + [
    "crop_area_ha",
    "crop_area_pixels_ha",
    "n_polygons",
    "fit_seconds",
    "fit_pixels_per_second",
    "predict_seconds",
    "predict_pixels_per_second",
    "cv_score",
    "total_seconds",
    "cv_spatial_f1_weighted",
    "cv_spatial_f1_weighted_std",
    "cv_random_f1_weighted",
    "cv_random_f1_weighted_std",
    "cv_spatial_crop_f1",
    "cv_spatial_crop_f1_fold1",
    "cv_random_crop_iou",
    "train_labelled_crop_fraction",
    "test_labelled_crop_fraction",
    "test_predicted_crop_fraction",
    "crop_share_difference",
    "cv_test_gap",
    "cv_spatial_tpr",
    "cv_spatial_fpr",
    "cv_at_test_share",
    "cv_test_gap_at_test_share",
]

EXPECTED_ARTIFACTS = [
    "config/resolved_config.yaml",
    "reports/test_classification_report.txt",
    "reports/test_classification_report.json",
    "reports/test_raw_classification_report.txt",
    "reports/train_classification_report.json",
    "reports/classification_reports.json",
    "reports/confusion_matrix.png",
    "prediction/test_mask.tif",
    "prediction/test_mask_raw.tif",
    "labels/test_labels.tif",
    "segments/test_segments.geojson",
    "previews/rgb.png",
    "previews/ground_truth.png",
    "previews/prediction.png",
    "previews/disagreement.png",
    "map/map.html",
]


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(all_artifacts(client, run_id, f.path) if f.is_dir else [f.path])
    return out


@pytest.mark.slow
def test_cli_end_to_end_local_source(tmp_path, tiny_pair, cli_env, tracking_uri):
    train, test = tiny_pair
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(local_overrides(train, test), work, cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FINISHED" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    assert "test weighted F1" in proc.stdout

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("cropseg")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id in proc.stdout
    # the UI hint ends with the experiment's runs table (tests/test_mlflow_ui.py opens it in Chromium)
    assert f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" in proc.stdout
    missing = [m for m in EXPECTED_METRICS if m not in run.data.metrics]
    assert not missing, missing
    # tiny scenes are separable: the classifier must get them (nearly) right
    assert run.data.metrics["test_crop_f1"] > 0.95
    assert run.data.metrics["test_raw_crop_support"] == 880
    assert run.data.params["classifier.name"] == "knn"
    assert run.data.params["source.train_image"] == str(train.image)
    assert int(run.data.params["fit.k"]) in (3, 5) or "fit.grid_extended_k" in run.data.params
    assert "cropseg.warning.crop_share_shift" not in run.data.tags  # separable tiny scenes: shares agree
    assert run.data.params["fit.cv"] == "spatial"  # the CV that tuned k; its score is cv_score
    assert run.data.metrics["cv_score"] == run.data.metrics["cv_spatial_crop_f1"]  # the target: crop F1
    # every target's test metric is logged; the gap is the tuning CV's target minus the test one
    from cropseg.targets import TARGETS

    assert not [t.test_metric for t in TARGETS.values() if t.test_metric not in run.data.metrics]
    m = run.data.metrics
    assert m["cv_test_gap"] == pytest.approx(m["cv_spatial_crop_f1"] - m["test_crop_f1"])
    assert m["cv_test_gap_at_test_share"] == pytest.approx(m["cv_at_test_share"] - m["test_crop_f1"])
    # the CV recall is the crop recall of all held-out pixels: between the folds' recalls
    folds = [v for k, v in m.items() if k.startswith("cv_spatial_crop_recall_fold")]
    assert folds and min(folds) - 1e-9 <= m["cv_spatial_tpr"] <= max(folds) + 1e-9
    assert m["test_predicted_crop_fraction"] == pytest.approx(
        (m["test_crop_support"] * m["test_crop_recall"] / m["test_crop_precision"])
        / (m["test_crop_support"] + m["test_noncrop_support"])
    )
    assert 0 <= float(run.data.params["fit.threshold"]) < 1 and run.data.params["fit.balance"] in (
        "proportional",
        "sample",
    )
    tags = run.data.tags
    assert tags["cropseg.source"] == "local" and tags["cropseg.classifier"] == "knn"
    assert tags["cropseg.labeler"] == "rasterize" and tags["cropseg.postprocessor"] == "median_blur,vectorize"
    assert tags["cropseg.classifier.knn.version"].startswith("cropseg ")
    assert tags["cropseg.synthetic"] == "false"  # the local source does not know the files are synthetic
    assert len(tags["cropseg.git_commit"]) in (40, 7) or tags["cropseg.git_commit"] == "unknown"
    arts = all_artifacts(client, run.info.run_id)
    assert not [a for a in EXPECTED_ARTIFACTS if a not in arts], arts
    # the whole pipeline is the run's MLflow model (runs:/<run_id>/model), not loose run artifacts
    (model_out,) = client.get_run(run.info.run_id).outputs.model_outputs
    logged = client.get_logged_model(model_out.model_id)
    assert logged.name == "model" and logged.source_run_id == run.info.run_id
    # the model carries the run's metrics (MLflow's model view), logged once for both
    model_metrics = {m.key: m.value for m in logged.metrics}
    assert set(model_metrics) == set(run.data.metrics)
    assert model_metrics["test_crop_f1"] == run.data.metrics["test_crop_f1"]
    assert "cropseg.registered_model" not in tags  # tracking.register_model is off by default

    # the mask is on the test scene's exact grid
    local = Path(client.download_artifacts(run.info.run_id, "prediction/test_mask.tif", str(tmp_path / "dl")))
    with rasterio.open(local) as m, rasterio.open(test.image) as s:
        assert m.crs == s.crs and m.transform == s.transform and (m.width, m.height) == (s.width, s.height)
        assert m.profile["compress"].lower() == "deflate"
        mask = m.read(1)
    assert set(np.unique(mask)) <= {0, 1, 255}
    assert (mask[:, test.nodata_cols_from :] == 255).all()

    # polygons are in EPSG:4326 and fall inside the test scene's valid footprint
    seg = Path(client.download_artifacts(run.info.run_id, "segments/test_segments.geojson", str(tmp_path / "dl")))
    gdf = gpd.read_file(seg)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) >= 2 and (gdf["area_ha"] > 0).all()
    footprint = shapely.box(test.left, test.top - test.height * 3, test.left + test.nodata_cols_from * 3, test.top)
    assert gdf.to_crs(32610).geometry.within(footprint.buffer(0.01)).all()
    assert abs(gdf["area_ha"].sum() - run.data.metrics["crop_area_ha"]) < 1e-3

    report = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "reports/test_classification_report.json", str(tmp_path / "dl"))
        ).read_text()
    )
    assert report["crop"]["f1-score"] == pytest.approx(run.data.metrics["test_crop_f1"])


def _one_line_error(capfd, code: int) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def inproc_env(monkeypatch, tmp_path, tracking_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_unknown_plugin_is_one_line(inproc_env, capfd):
    line = _one_line_error(capfd, main(["classifier=nope"]))
    assert "classifier=nope" in line and "knn" in line


def test_unknown_option_is_one_line(inproc_env, capfd):
    line = _one_line_error(capfd, main(["+classifier.kay=3"]))
    assert "kay" in line and "k_grid" in line


def test_unknown_key_is_one_line(inproc_env, capfd):
    line = _one_line_error(capfd, main(["nonsense.key=1"]))
    assert "nonsense" in line


def _status_and_error(tracking_uri: str) -> tuple[str, str]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("cropseg")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0].info.status, runs[0].data.tags.get("cropseg.error", "")


def test_missing_image_is_one_line_and_run_failed(inproc_env, capfd, tiny_pair, tracking_uri):
    train, test = tiny_pair
    args = local_overrides(train, test)
    args[1] = f"source.train_image={inproc_env / 'nope.tif'}"
    line = _one_line_error(capfd, main(args))
    assert "nope.tif" in line and "not found" in line
    status, error = _status_and_error(tracking_uri)
    assert status == "FAILED" and "nope.tif" in error


def test_wrong_band_count_is_one_line(inproc_env, capfd, tiny_pair):
    train, test = tiny_pair
    three = write_tiny_scene(inproc_env / "three", name="three", bands=3)
    args = local_overrides(train, test)
    args[2] = f"source.test_image={three.image}"
    line = _one_line_error(capfd, main(args))
    assert "three.tif" in line and "found 3" in line


def test_ground_truth_without_crop_is_one_line(inproc_env, capfd, tiny_pair, tracking_uri):
    train, test = tiny_pair
    line = _one_line_error(capfd, main([*local_overrides(train, test), "source.crop_values=[X]"]))
    assert "no crop polygons" in line and "ground_truth.geojson" in line
    assert _status_and_error(tracking_uri)[0] == "FAILED"


def test_ground_truth_not_overlapping_is_one_line(inproc_env, capfd, tiny_pair):
    train, test = tiny_pair
    far = write_tiny_scene(inproc_env / "far", name="far", left=700000.0)
    args = local_overrides(train, test)
    args[6] = f"source.test_ground_truth={far.ground_truth}"
    line = _one_line_error(capfd, main(args))
    assert "far_ground_truth.geojson" in line and "overlap" in line


def test_single_class_training_labels_is_one_line(inproc_env, capfd, tiny_pair):
    train, test = tiny_pair
    line = _one_line_error(
        capfd, main([*local_overrides(train, test), "source.uncovered=ignore", "source.crop_values=[F,V,U]"])
    )
    assert "no non-crop" in line


def test_unreachable_tracking_server_is_one_line(inproc_env, capfd, tiny_pair):
    train, test = tiny_pair
    line = _one_line_error(capfd, main([*local_overrides(train, test), "tracking.uri=http://127.0.0.1:9"]))
    assert "unreachable" in line and "127.0.0.1:9" in line


@pytest.mark.slow
def test_cli_sample_source_seed_experiment(tmp_path, cli_env, tracking_uri, caplog):
    """The default SYNTHETIC sample (small) with the seed study's choices; loading it again reuses the cache."""
    work = tmp_path / "work"
    work.mkdir()
    args = ["+experiment=seed_knn", "source.size=200", "classifier.k_grid=[3,5]", "train.max_per_class=3000"]
    proc = run_cli(args, work, cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cache = Path(cli_env["CROPSEG_CACHE_DIR"]) / "sample" / "v1-seed42-200x200"
    tifs = sorted(cache.glob("*_3B_AnalyticMS.tif"))
    xmls = sorted(cache.glob("*_metadata.xml"))
    assert len(tifs) == 2 and len(xmls) == 2
    mtimes = [p.stat().st_mtime_ns for p in tifs]

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "seed_knn"
    assert run.data.tags["cropseg.synthetic"] == "true"
    assert run.data.tags["cropseg.labeler"] == "contours"
    assert run.data.params["postprocessor.median_blur.kernel"] == "5"
    assert 0.5 < run.data.metrics["test_weighted_avg_f1"] <= 1.0

    # mask on the test scene's grid; polygons inside the test scene's footprint (its metadata XML)
    from cropseg.planet_metadata import parse_metadata

    test_id = run.data.tags["cropseg.test.scene_id"]
    test_tif = cache / f"{test_id}_3B_AnalyticMS.tif"
    mask = Path(client.download_artifacts(run.info.run_id, "prediction/test_mask.tif", str(tmp_path / "dl")))
    with rasterio.open(mask) as m, rasterio.open(test_tif) as s:
        assert m.crs == s.crs and m.transform == s.transform and m.shape == s.shape
    footprint = shapely.from_wkt(parse_metadata(cache / f"{test_id}_3B_AnalyticMS_metadata.xml").footprint_wkt)
    seg = gpd.read_file(
        client.download_artifacts(run.info.run_id, "segments/test_segments.geojson", str(tmp_path / "dl"))
    )
    assert len(seg) > 0
    # pixels whose centres lie in the footprint reach at most half a pixel diagonal (3 m pixels) beyond it
    footprint_utm = gpd.GeoSeries([footprint], crs=4326).to_crs(32610).iloc[0]
    assert seg.to_crs(32610).geometry.within(footprint_utm.buffer(1.5 * 2**0.5 + 0.01)).all()
    assert not seg.to_crs(32610).geometry.within(footprint_utm.buffer(-3)).all()  # fields do reach the edge

    # a second run's source step (the command loads the source from <cache_dir>/sample) reuses the files
    from cropseg_plugins.sample import SampleSource

    with caplog.at_level(logging.INFO):
        again = SampleSource(size=200).load(Path(cli_env["CROPSEG_CACHE_DIR"]) / "sample")
    assert again.test.path == test_tif and again.test.metadata["scene_id"] == test_id
    assert [p.stat().st_mtime_ns for p in tifs] == mtimes
    assert "written to" not in caplog.text
