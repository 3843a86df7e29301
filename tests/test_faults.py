"""Fault suite (issues 11, 21): bad option values, corrupt and wrong input files, unusable destinations
(full disk, read-only folders, overlong names: tests/fsfaults.py), killed runs.

Every bad input gives one line ``cropseg: error: ...`` naming the option or file, a non-zero exit, no
traceback, an MLflow run that is FAILED (never RUNNING) where one was started, and nothing that looks
like a result; valid-but-awkward inputs (NaN pixels, a constant scene, ground truth in another CRS, a
self-intersecting polygon, the training scene reused as test scene) run to FINISHED and say what they
noticed. Real GeoTIFF / GeoJSON files (tiny, seeded, SYNTHETIC, EPSG:32610), a real sqlite MLflow store,
the real ``cropseg`` entry point (in-process with captured stderr) and real subprocesses for a
representative set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fsfaults import cropseg, run_on
from mlflow import MlflowClient
from pyproj import Transformer

from cropseg.cli import main
from cropseg.testing import TinyScene, local_overrides, write_tiny_scene

# a library's warning printed on the way (shapely's "invalid value encountered" for NaN coordinates was one)
# is more lines on the user's terminal before the one error line; tests that call ``main`` in this process
# would not see it in stderr, so the warnings a user's Python shows are errors here
pytestmark = [
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::FutureWarning"),
    pytest.mark.filterwarnings("error::UserWarning"),
    # MLflow warns so while importing mlflow.pyfunc under pytest's warning capture only (not in a command)
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

RESULT_FILES = (
    "metrics.json",
    "prediction/test_mask.tif",
    "prediction/test_mask_raw.tif",
    "segments/test_segments.geojson",
    "model",
)


# -- files --------------------------------------------------------------------------------------------


def _copy_scene(src: TinyScene, image: Path) -> TinyScene:
    return TinyScene(
        image,
        src.metadata,
        src.ground_truth,
        src.width,
        src.height,
        src.left,
        src.top,
        src.res,
        src.crop_boxes,
        src.hole_box,
        src.noncrop_box,
        src.nodata_cols_from,
    )


def _rewrite(src: Path, dst: Path, fn, dtype: str | None = None) -> Path:
    with rasterio.open(src) as s:
        prof, data = s.profile, s.read()
    data = fn(data.astype(dtype) if dtype else data)
    prof.update(dtype=str(data.dtype), count=data.shape[0])
    with rasterio.open(dst, "w", **prof) as d:
        d.write(data)
    return dst


def _features(scene: TinyScene) -> list[dict]:
    data = json.loads(scene.ground_truth.read_text())
    return data["features"] if isinstance(data, dict) else data


def _fc(path: Path, feats: list[dict], crs: str | None = None) -> Path:
    payload: dict = {"type": "FeatureCollection", "synthetic": True, "features": feats}
    if crs:
        payload = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}}, **payload}
    path.write_text(json.dumps(payload))
    return path


def _map_coords(feats: list[dict], fn) -> list[dict]:
    out = json.loads(json.dumps(feats))
    for f in out:
        f["geometry"]["coordinates"] = [[list(fn(*xy)) for xy in ring] for ring in f["geometry"]["coordinates"]]
    return out


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Tiny SYNTHETIC scenes and every broken or awkward variant the suite feeds to cropseg."""
    d = tmp_path_factory.mktemp("faults")
    train = write_tiny_scene(d, name="train", seed=1)
    test = write_tiny_scene(d, name="test", seed=2)
    f: dict = {"dir": d, "train": train, "test": test}

    def with_nan(a):
        a[:, 0:6, 0:6] = np.nan
        a[0, 10, 10], a[2, 11, 11] = np.inf, -np.inf
        return a

    f["nan"] = _rewrite(train.image, d / "nan.tif", with_nan, "float32")
    f["all_nodata"] = _rewrite(train.image, d / "all_nodata.tif", lambda a: np.zeros_like(a))

    def sparse(a):
        keep = a[:, 20:21, 20:23].copy()
        a[:] = 0
        a[:, 20:21, 20:23] = keep
        return a

    f["sparse"] = _rewrite(test.image, d / "sparse.tif", sparse)

    def six(a):  # three crop pixels (in field 1) and three non-crop pixels (in its hole)
        keep = a[:, 20:21, 10:13].copy(), a[:, 20:21, 20:23].copy()
        a[:] = 0
        a[:, 20:21, 10:13], a[:, 20:21, 20:23] = keep
        return a

    f["six_pixels"] = _rewrite(train.image, d / "six_pixels.tif", six)
    f["local_crs"] = _rewrite(train.image, d / "local_crs.tif", lambda a: a)
    with rasterio.open(f["local_crs"], "r+") as dst:  # what GDAL makes of an unknown EPSG code
        dst.crs = rasterio.crs.CRS.from_wkt('LOCAL_CS["unknown",UNIT["metre",1]]')
    f["constant"] = _rewrite(train.image, d / "constant.tif", lambda a: np.where(a > 0, 3000, 0).astype(a.dtype))
    trunc = d / "truncated.tif"
    shutil.copy(train.image, trunc)
    os.truncate(trunc, trunc.stat().st_size * 6 // 10)
    f["truncated"] = trunc
    with rasterio.open(
        d / "udm_small.tif",
        "w",
        driver="GTiff",
        width=32,
        height=32,
        count=1,
        dtype="uint8",
        crs="EPSG:32610",
        transform=rasterio.transform.from_origin(train.left, train.top, 3, 3),
    ) as dst:
        dst.write(np.ones((1, 32, 32), dtype=np.uint8))
    f["udm_small"] = d / "udm_small.tif"

    feats = _features(train)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32610", always_xy=True)
    f["gt_empty"] = _fc(d / "empty.geojson", [])
    f["gt_unknown_crs"] = _fc(d / "unknown_crs.geojson", feats, "EPSG:999999")
    nan_feats = json.loads(json.dumps(feats))
    nan_feats[0]["geometry"]["coordinates"][0][1] = [float("nan"), float("nan")]
    f["gt_nan"] = _fc(d / "nan_coords.geojson", nan_feats)
    points = [
        {
            "type": "Feature",
            "properties": p["properties"],
            "geometry": {"type": "Point", "coordinates": p["geometry"]["coordinates"][0][0]},
        }
        for p in feats
    ]
    f["gt_points"] = _fc(d / "points.geojson", points)
    utm = _map_coords(feats, to_utm.transform)
    f["gt_projected_as_lonlat"] = _fc(d / "projected_as_lonlat.geojson", utm)
    f["gt_wrong_zone"] = _fc(d / "wrong_zone.geojson", utm, "EPSG:32611")
    f["gt_far"] = _fc(d / "far.geojson", _map_coords(feats, lambda x, y: (x + 0.5, y)))
    f["gt_utm"] = _fc(d / "utm.geojson", utm, "EPSG:32610")
    # a self-intersecting (bow-tie) crop polygon inside the scene, beside the real fields
    x0, y0 = train.xy(2, 2)
    x1, y1 = train.xy(8, 8)
    to_ll = Transformer.from_crs("EPSG:32610", "EPSG:4326", always_xy=True)
    bowtie = [list(to_ll.transform(x, y)) for x, y in ((x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0))]
    f["gt_bowtie"] = _fc(
        d / "bowtie.geojson",
        [
            *feats,
            {
                "type": "Feature",
                "properties": {"CLASS1": "F"},
                "geometry": {"type": "Polygon", "coordinates": [bowtie]},
            },
        ],
    )
    f["bad_db"] = d / "not_sqlite.db"
    f["bad_db"].write_bytes(b"this is not an SQLite database\n" * 64)
    f["a_file"] = d / "a_file.txt"
    f["a_file"].write_text("not a directory\n")
    return f


# -- helpers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """One real sqlite MLflow store for the suite (created once); each test uses its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def tracking_uri(store) -> str:
    return store


@pytest.fixture
def env(monkeypatch, tmp_path, store, request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sys.modules[__name__], "EXPERIMENT", _experiment(request))
    return tmp_path


EXPERIMENT = "cropseg"


def _experiment(request) -> str:
    return "faults-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:120]


def _args(files, *extra: str, out: Path | None = None) -> list[str]:
    return [
        *local_overrides(files["train"], files["test"]),
        "train.max_per_class=300",
        f"tracking.experiment={EXPERIMENT}",
        *([f"output_dir={out}"] if out else []),
        *extra,
    ]


def _set(args: list[str], key: str, value) -> list[str]:
    return [a for a in args if not a.startswith(f"{key}=")] + [f"{key}={value}"]


def one_line_error(capfd, code: int) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def run_statuses(tracking_uri: str, experiment: str | None = None) -> list[str]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment or EXPERIMENT)
    return [] if exp is None else [r.info.status for r in client.search_runs([exp.experiment_id])]


def assert_no_result(out: Path) -> None:
    for name in RESULT_FILES:
        assert not (out / name).exists(), f"{name} left beside a failure"


# -- option values: refused when the config is composed, before any run or scene -------------------------

OPTION_CASES = [
    ("classifier.k_grid=[abc]", ["classifier.k_grid=[abc]", "list of integers"]),
    ("source.scale=abc", ["source.scale=abc", "number"]),
    ("train.max_per_class=lots", ["train.max_per_class=lots", "integer"]),
    ("block_size=0", ["block_size=0", "between 16 and 16384"]),
    ("block_size=-512", ["block_size=-512", "between 16 and 16384"]),
    ("train.spatial_block=0", ["train.spatial_block=0", ">= 1"]),
    ("labeler.block_size=-512", ["labeler.block_size=-512", ">= 1"]),
    ("postprocessor.median_blur.kernel=4001", ["kernel=4001", "at most 2049"]),
    ("postprocessor.median_blur.kernel=abc", ["postprocessor.median_blur.kernel=abc", "integer"]),
    ("train.balance=maybe", ["train.balance=maybe", "true or false"]),
    ("preview.max_side=0", ["preview.max_side=0", "between 16"]),
    # the tests' k grid [3,5]: without CV there is nothing to choose between them (refused before any scene)
    ("classifier.cv=none", ["classifier.knn.cv=none", "k_grid holds 2 candidates"]),
]


@pytest.mark.parametrize("override,expect", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_option_value_is_one_line_before_any_run(env, capfd, files, tracking_uri, override, expect):
    line = one_line_error(capfd, main(_args(files, override, out=env / "out")))
    for text in expect:
        assert text in line, line
    assert "ground truth" not in line and "ground_truth" not in line
    assert run_statuses(tracking_uri) == []
    assert not (env / "out").exists()


@pytest.mark.parametrize("size", ["100000", "[64,100000]"])
def test_sample_scene_beyond_the_limit_is_refused_up_front(env, capfd, tracking_uri, size):
    line = one_line_error(capfd, main([f"source.size={size}", f"tracking.experiment={EXPERIMENT}"]))
    assert "source.size" in line and "at most 20000" in line
    assert run_statuses(tracking_uri) == [] and not (env / "cache").exists()


def test_schema_comes_from_the_factory_annotations():
    from cropseg.errors import ConfigError
    from cropseg.plugins import Registry, get_plugin_manager

    reg = Registry.from_plugin_manager(get_plugin_manager())
    reg.create("classifier", "knn", {"k_grid": 5})  # a single k is accepted, as the plugin allows
    reg.create("classifier", "random_forest", {"max_depth": None, "max_features": 0.5})
    with pytest.raises(ConfigError, match=r"classifier\.cv_folds=three: expected an integer"):
        reg.create("classifier", "knn", {"cv_folds": "three"})
    with pytest.raises(ConfigError, match=r"postprocessor\.vectorize\.min_area_ha=\[1\]: expected a number"):
        reg.create("postprocessor", "vectorize", {"min_area_ha": [1]})


# -- destinations: the store and the output directory, before the run exists -------------------------------


def test_corrupt_tracking_store_is_one_line(env, capfd, files):
    line = one_line_error(capfd, main(_args(files, f"tracking.uri=sqlite:///{files['bad_db']}")))
    assert "not_sqlite.db" in line and "not a readable SQLite database" in line


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_output_dir_that_is_or_lies_under_a_file_is_one_line(env, capfd, files, tracking_uri, where):
    out = files["a_file"] if where == "file" else files["a_file"] / "sub"
    line = one_line_error(capfd, main(_args(files, out=out)))
    assert "a_file.txt" in line and ("is a file" in line or "which is a file" in line)
    assert run_statuses(tracking_uri) == []


def test_output_dir_not_writable_is_one_line(env, capfd, files, tracking_uri):
    # /proc refuses new directories even to root, so this holds whoever runs the tests
    line = one_line_error(capfd, main(_args(files, out=Path("/proc/cropseg-out"))))
    assert "/proc/cropseg-out" in line and "the output directory (output_dir) could not be written to" in line
    assert run_statuses(tracking_uri) == []


# -- inputs: checked as the run's first step (the run ends FAILED and records why) ---------------------------

INPUT_CASES = [
    ("gt_empty", ["empty.geojson", "no features"]),
    ("gt_unknown_crs", ["unknown_crs.geojson", "unknown CRS", "EPSG:999999"]),
    ("gt_nan", ["nan_coords.geojson", "NaN or infinite coordinates", "feature #0"]),
    ("gt_points", ["points.geojson", "only Point", "polygons"]),
    ("gt_projected_as_lonlat", ["projected_as_lonlat.geojson", "look projected", "lon/lat"]),
    ("gt_wrong_zone", ["wrong_zone.geojson", "km away", "UTM zone"]),
    ("gt_far", ["far.geojson", "no polygon overlaps the scene", "km away"]),
]


@pytest.mark.parametrize("key,expect", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_wrong_ground_truth_is_one_specific_line_and_a_failed_run(env, capfd, files, tracking_uri, key, expect):
    out = env / "out"
    args = _set(_args(files, out=out), "source.test_ground_truth", files[key])
    line = one_line_error(capfd, main(args))
    for text in expect:
        assert text in line, line
    assert run_statuses(tracking_uri) == ["FAILED"]
    assert (out / "FAILED.txt").is_file() and not (out / "labels").exists()
    assert_no_result(out)


def test_band_index_beyond_the_scene_is_one_line(env, capfd, files, tracking_uri):
    line = one_line_error(capfd, main(_args(files, "source.bands=[1,2,3,5]", out=env / "out")))
    assert "source.bands=[1, 2, 3, 5]" in line and "has 4 bands" in line and "train.tif" in line
    assert run_statuses(tracking_uri) == ["FAILED"]


def test_usable_data_raster_of_the_wrong_size_is_one_line(env, capfd, files, tracking_uri):
    line = one_line_error(capfd, main(_args(files, f"+source.train_udm={files['udm_small']}", out=env / "out")))
    assert "udm_small.tif" in line and "32x32" in line and "64x64" in line
    assert run_statuses(tracking_uri) == ["FAILED"]


def test_unreachable_scheduler_is_noticed_before_loading(env, capfd, files, tracking_uri):
    out = env / "out"
    line = one_line_error(capfd, main(_args(files, "parallel.scheduler=tcp://127.0.0.1:9", out=out)))
    assert "parallel.scheduler" in line and "127.0.0.1:9" in line
    assert run_statuses(tracking_uri) == ["FAILED"] and not (out / "labels").exists()


@pytest.mark.parametrize(
    "key,role,expect",
    [
        ("all_nodata", "train", ["all_nodata.tif", "no valid labelled pixel"]),
        ("sparse", "test", ["sparse.tif", "3 valid labelled pixel(s), fewer than 5"]),
        ("truncated", "train", ["truncated.tif", "cannot read pixels"]),
        ("local_crs", "test", ["local_crs.tif", "unknown CRS", 'LOCAL_CS["unknown"']),
    ],
    ids=["all_nodata", "test_under_5_pixels", "truncated", "unknown_crs"],
)
def test_unusable_scene_names_the_input_file(env, capfd, files, tracking_uri, key, role, expect):
    out = env / "out"
    line = one_line_error(capfd, main(_set(_args(files, out=out), f"source.{role}_image", files[key])))
    for text in expect:
        assert text in line, line
    assert "labels.tif" not in line
    assert run_statuses(tracking_uri) == ["FAILED"]
    assert (out / "FAILED.txt").is_file()
    assert_no_result(out)


def test_k_beyond_what_max_per_class_can_draw_is_refused_before_any_run(env, capfd, files, tracking_uri):
    args = _set(_set(_args(files, out=env / "out"), "classifier.k_grid", "[3,40]"), "train.max_per_class", 10)
    line = one_line_error(capfd, main(args))
    assert "train.max_per_class=10 draws at most 20" in line and "needs at least 60" in line
    assert run_statuses(tracking_uri) == []


def test_k_larger_than_the_training_sample_is_refused_with_the_reason(env, capfd, files, tracking_uri):
    """The labelled pixels, not the cap, limit the sample: a training scene with six valid pixels
    (the cap allows 600) cannot give k=7 neighbours; refused before scikit-learn is asked."""
    out = env / "out"
    args = _set(_set(_args(files, out=out), "source.train_image", files["six_pixels"]), "classifier.k_grid", "[7]")
    line = one_line_error(capfd, main(_set(args, "classifier.cv", "none")))
    assert "classifier.k_grid" in line and "k=7" in line and "larger than the training sample" in line
    assert run_statuses(tracking_uri) == ["FAILED"]
    assert_no_result(out)


# -- valid but awkward inputs run to FINISHED ------------------------------------------------------------------


@pytest.fixture(scope="session")
def awkward_run(files, store, tmp_path_factory):
    """One run on awkward-but-valid inputs: a float training scene with NaN and +-inf pixels, a test
    ground truth in UTM (EPSG:32610) instead of lon/lat, a self-intersecting crop polygon in the training
    ground truth, a 1001-pixel median kernel (beyond OpenCV's 8-bit limit)."""
    from cropseg import run

    d = tmp_path_factory.mktemp("awkward")
    uri = store
    args = _set(
        _set(_args(files, out=d / "out"), "source.train_image", files["nan"]),
        "source.test_ground_truth",
        files["gt_utm"],
    )
    args = _set(args, "tracking.experiment", "faults-awkward")
    args = _set(args, "source.train_ground_truth", files["gt_bowtie"])
    args += [
        f"tracking.uri={uri}",
        f"cache_dir={d / 'cache'}",
        "postprocessor.median_blur.kernel=1001",
        "tracking.log_model=true",
    ]
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("cropseg").addHandler(handler)
    try:
        result = run(args)
    finally:
        logging.getLogger("cropseg").removeHandler(handler)
    return result, uri, records


@pytest.mark.slow
def test_nan_pixels_a_utm_ground_truth_and_a_bowtie_run_to_finished(awkward_run):
    result, uri, logged = awkward_run
    assert any("train ground truth" in m and "bowtie.geojson: 1 invalid" in m and "repaired" in m for m in logged)
    run_ = MlflowClient(uri).get_run(result.run_id)
    assert run_.info.status == "FINISHED"
    # the NaN block (6x6) and the two infinite pixels are nodata: 255 in the training-scene prediction
    with rasterio.open(result.output_dir / "train_prediction" / "train_mask_raw.tif") as src:
        mask = src.read(1)
    assert (mask[0:6, 0:6] == 255).all() and mask[10, 10] == 255 and mask[11, 11] == 255
    assert (mask[12:40, 12:40] != 255).all()
    assert run_.data.metrics["train_ground_truth_repaired_geometries"] == 1.0
    assert run_.data.tags["cropseg.train.ground_truth.repaired_geometries"] == "1"
    assert run_.data.metrics["test_ground_truth_repaired_geometries"] == 0.0


def _predict(model_uri: str, image: Path, files: dict, uri: str, out: Path) -> int:
    """``cropseg predict`` (its main, in this process) of ``image`` with the training scene's metadata."""
    args = ["predict", model_uri, str(image), "--metadata", str(files["train"].metadata)]
    return main([*args, "--tracking-uri", uri, "--output-dir", str(out), "--serial"])


@pytest.mark.slow
def test_cropseg_predict_marks_nan_pixels_255(awkward_run, files, tmp_path, capfd):
    result, uri, _ = awkward_run
    code = _predict(result.model_uri, files["nan"], files, uri, tmp_path / "pred")
    assert code == 0, capfd.readouterr().err[-3000:]
    mask = next((tmp_path / "pred" / "prediction").glob("*_mask.tif"))
    with rasterio.open(mask) as src:
        m = src.read(1)
    assert (m[0:6, 0:6] == 255).all() and m[10, 10] == 255 and m[11, 11] == 255
    assert set(np.unique(m[12:40, 12:40])) <= {0, 1}


@pytest.mark.slow
def test_cropseg_predict_on_a_truncated_scene_is_one_line(awkward_run, files, tmp_path, capfd):
    result, uri, _ = awkward_run
    code = _predict(result.model_uri, files["truncated"], files, uri, tmp_path / "pred")
    line = one_line_error(capfd, code)
    assert "truncated.tif" in line and "cannot read pixels" in line
    assert not (tmp_path / "pred" / "prediction").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["output_is_a_file", "corrupt_store"])
def test_cropseg_predict_destinations_are_one_line(awkward_run, files, tmp_path, capfd, fault):
    result, uri, _ = awkward_run
    out = files["a_file"] if fault == "output_is_a_file" else tmp_path / "pred"
    store = f"sqlite:///{files['bad_db']}" if fault == "corrupt_store" else uri
    code = main(
        [
            "predict",
            result.model_uri,
            str(files["nan"]),
            "--metadata",
            str(files["train"].metadata),
            "--tracking-uri",
            store,
            "--output-dir",
            str(out),
            "--serial",
        ]
    )
    line = one_line_error(capfd, code)
    assert (
        ("a_file.txt" in line and "is a file" in line)
        if fault == "output_is_a_file"
        else ("not_sqlite.db" in line and "not a readable SQLite database" in line)
    )


@pytest.mark.slow
def test_same_scene_as_train_and_test_is_a_warning_and_a_tag(env, files, tracking_uri, caplog):
    """A constant scene (every valid pixel the same DN) used as both training and test scene: it runs to
    FINISHED, and the reuse is a warning in the log and an MLflow tag."""
    from cropseg import run

    args = _set(
        _set(_args(files, out=env / "out"), "source.train_image", files["constant"]),
        "source.test_image",
        files["constant"],
    )
    result = run([*args, "tracking.log_model=false", "postprocessor=[median_blur]"])
    tags = MlflowClient(tracking_uri).get_run(result.run_id).data.tags
    assert MlflowClient(tracking_uri).get_run(result.run_id).info.status == "FINISHED"
    assert tags["cropseg.warning.test_is_train"] == "true"
    assert any("test scene is the training scene" in r.getMessage() for r in caplog.records)


# -- the contract through real subprocesses ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", ["option", "store", "ground_truth"])
def test_one_line_contract_in_a_real_subprocess(tmp_path, files, cli_env, store, request, case):
    out = tmp_path / "out"
    exp = _experiment(request)
    args = [*_args(files, out=out), f"tracking.experiment={exp}"]
    cli_env["MLFLOW_TRACKING_URI"] = store
    if case == "option":
        args.append("classifier.k_grid=[abc]")
    elif case == "store":
        args.append(f"tracking.uri=sqlite:///{files['bad_db']}")
    else:
        args = _set(args, "source.test_ground_truth", files["gt_unknown_crs"])
    proc = subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("cropseg: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    statuses = run_statuses(store, exp)
    assert "RUNNING" not in statuses
    assert statuses == (["FAILED"] if case == "ground_truth" else [])
    assert_no_result(out)


# -- file-system faults (issue 21): full disk, read-only folders, overlong names, in real subprocesses -------------


def _fs_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, CROPSEG_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cropseg: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_run_on_a_full_disk_is_one_line_and_a_failed_run(tmp_path, files, store_template):
    uri = store_template.copy(tmp_path / "store")
    out = tmp_path / "full" / "out"
    args = _set(_args(files, out=out), "tracking.experiment", "faults-full-disk") + [f"tracking.uri={uri}"]
    proc = run_on(cropseg(*args), full=[tmp_path / "full"], cwd=tmp_path, env=_fs_env(tmp_path))
    line = _one_line(proc)
    assert "could not be written to" in line and "no space left on device" in line, line
    assert run_statuses(uri, "faults-full-disk") == ["FAILED"]


def test_unwritable_working_directory_is_one_line_before_any_run(tmp_path, files, store_template):
    uri = store_template.copy(tmp_path / "store")
    ro = tmp_path / "ro"
    args = [*_args(files), "tracking.experiment=faults-ro-cwd", f"tracking.uri={uri}"]
    proc = run_on(
        ["sh", "-c", 'cd "$0" && exec "$@"', str(ro), *cropseg(*args)],
        read_only=[ro],
        cwd=tmp_path,
        env=_fs_env(tmp_path),
    )
    line = _one_line(proc)
    assert "outputs" in line and "read-only file system" in line, line
    assert run_statuses(uri, "faults-ro-cwd") == []


def test_overlong_output_dir_name_is_one_line(env, capfd, files, tracking_uri):
    out = env / ("x" * 300)
    line = one_line_error(capfd, main(_args(files, out=out)))
    assert "file name too long" in line and "could not be written to" in line
    assert run_statuses(tracking_uri) == []


@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_sample_design_output_faults_are_one_line(tmp_path, files, fault):
    mask = tmp_path / "mask.tif"
    with rasterio.open(files["train"].image) as src:
        prof = src.profile
    prof.update(count=1, dtype="uint8", nodata=255)
    with rasterio.open(mask, "w", **prof) as dst:
        dst.write((np.arange(64 * 64).reshape(1, 64, 64) % 2).astype(np.uint8))
    d = tmp_path / "dest"
    proc = run_on(
        cropseg("sample-design", str(mask), "--sample-size", "3000", "--output", str(d / "s.geojson")),
        **({"full": [d]} if fault == "full" else {"read_only": [d]}),
        cwd=tmp_path,
        env=_fs_env(tmp_path),
    )
    line = _one_line(proc)
    assert "could not be written to" in line and str(d) in line, line
    assert ("no space left on device" if fault == "full" else "read-only file system") in line, line


def test_killed_run_leaves_no_loadable_model(tmp_path, store_template, monkeypatch):
    """A run interrupted (Ctrl-C / SIGTERM) after its model was logged ends KILLED, and the model MLflow had
    marked READY is deleted: ``runs:/<id>/model`` does not load, and no registry version points at it."""
    import mlflow
    import mlflow.pyfunc

    from cropseg.tracking import Tracker

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):  # noqa: ANN001, ANN201
            return model_input

    uri = store_template.copy(tmp_path)
    tracker = Tracker(uri, "faults-killed-model")
    run_id = None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # not mlflow.set_tracking_uri: that would outlive the test
    with pytest.raises(KeyboardInterrupt):
        with tracker.run("killed") as rl:
            run_id = rl.run_id
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name="killed-model")
            assert MlflowClient(uri).get_logged_model(info.model_id).status.name == "READY"
            raise KeyboardInterrupt
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.search_logged_models(experiment_ids=[tracker.experiment_id]) == []
    assert client.search_model_versions("name = 'killed-model'") == []
    with pytest.raises(Exception, match="(?i)model|artifact"):
        mlflow.pyfunc.load_model(f"runs:/{run_id}/model")


def test_deeply_nested_json_is_a_bad_request_for_the_scoring_server(monkeypatch):
    """MLflow's scoring server parses a request before any model sees it; a 100,000-deep array makes
    Python's parser raise RecursionError (HTTP 500). Once a cropseg model is loaded, such a request (and any
    nested deeper than 32 levels) is an ``MlflowInvalidInputException``: HTTP 400 with the reason. The
    served end to end case is in tests/test_deploy.py."""
    from mlflow.pyfunc import scoring_server
    from mlflow.utils.proto_json_utils import MlflowInvalidInputException

    from cropseg.tracking.model import guard_scoring_server

    # MLflow's own parser (a model loaded earlier in this process may have guarded it already)
    original = getattr(scoring_server._decode_json_input, "__wrapped__", scoring_server._decode_json_input)
    monkeypatch.setattr(scoring_server, "_decode_json_input", original)
    with pytest.raises(RecursionError):
        scoring_server._decode_json_input(b'{"dataframe_split": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    guard_scoring_server()
    guard_scoring_server()  # once only
    for depth in (100_000, 40):
        with pytest.raises(MlflowInvalidInputException, match="nested deeper than 32 levels"):
            scoring_server._decode_json_input(b'{"dataframe_split": ' + b"[" * depth + b"]" * depth + b"}")
    ok = {"dataframe_split": {"columns": ["blue"], "data": [[0.1], [0.2]]}}
    assert scoring_server._decode_json_input(json.dumps(ok)) == ok


@pytest.fixture
def area_files(tmp_path, store_template):
    """A SYNTHETIC 0/1 mask (EPSG:32610) and a sample of it labelled from the mask itself, a store."""
    from cropseg.area_sample import design_sample, write_sample

    d = tmp_path / "area"
    d.mkdir()
    rng = np.random.default_rng(3)
    mask = d / "mask.tif"
    prof = {"driver": "GTiff", "width": 60, "height": 60, "count": 1, "dtype": "uint8", "nodata": 255}
    prof.update(crs="EPSG:32610", transform=rasterio.transform.from_origin(630_000, 4_240_000, 3, 3))
    a = (rng.random((60, 60)) < 0.4).astype(np.uint8)
    with rasterio.open(mask, "w", **prof) as dst:
        dst.write(a[None])
    write_sample(design_sample(mask, n=80, allocation="equal", seed=1), d / "s.geojson", None)
    data = json.loads((d / "s.geojson").read_text())
    for k, f in enumerate(data["features"]):  # reference = map class, one error in each stratum
        f["properties"]["reference"] = str(f["properties"]["stratum"] ^ (k in (0, 1)))
    (d / "labelled.geojson").write_text(json.dumps(data))
    return {"mask": mask, "sample": d / "labelled.geojson", "uri": store_template.copy(tmp_path / "store")}


@pytest.mark.parametrize("fault", ["read_only_output", "full_output", "read_only_store", "long_name"])
def test_estimate_area_destination_faults_record_no_finished_run(tmp_path, area_files, fault):
    """estimate-area checks its output folder and store before any work and records its run FINISHED only
    once its outputs are written: a fault is one line, and no FINISHED run (no run at all) is left."""
    uri = area_files["uri"]
    dest = tmp_path / "dest"
    out = dest / ("o" * 300 if fault == "long_name" else "out")
    argv = ["estimate-area", str(area_files["mask"]), str(area_files["sample"]), "--output-dir", str(out)]
    store = uri
    kwargs: dict = {}
    if fault == "read_only_output":
        kwargs = {"read_only": [dest]}
    elif fault == "full_output":
        kwargs = {"full": [dest]}
    elif fault == "read_only_store":
        store = f"sqlite:///{tmp_path / 'rostore' / 'mlflow.db'}"
        kwargs = {"read_only": [tmp_path / "rostore"]}
    proc = run_on(
        cropseg(*argv, "--tracking-uri", store, "--experiment", "area-faults"),
        cwd=tmp_path,
        env=_fs_env(tmp_path),
        **kwargs,
    )
    line = _one_line(proc)
    reason = {
        "read_only_output": "read-only file system",
        "full_output": "no space left on device",
        "read_only_store": "read-only file system",
        "long_name": "file name too long",
    }[fault]
    assert "could not be written to" in line and reason in line, line
    assert run_statuses(uri, "area-faults") == []
    assert not dest.exists() or not any(dest.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_cropseg_predict_output_faults_are_one_line(awkward_run, files, tmp_path, fault):
    result, uri, _ = awkward_run
    dest = tmp_path / "dest"
    args = ["predict", result.model_uri, str(files["nan"]), "--metadata", str(files["train"].metadata)]
    args += ["--tracking-uri", uri, "--output-dir", str(dest / "pred")]
    proc = run_on(cropseg(*args), cwd=tmp_path, env=_fs_env(tmp_path), **{fault: [dest]})
    line = _one_line(proc)
    assert "could not be written to" in line and str(dest) in line, line
    assert ("no space left on device" if fault == "full" else "read-only file system") in line, line


@pytest.mark.slow
def test_cropseg_predict_on_a_truncated_scene_with_dask_is_one_line(awkward_run, files, tmp_path, capfd):
    """The same truncated scene through the Dask block executor (in-process threads): cropseg's own error,
    unwrapped, not ``Exception: InputFileError(...)``."""
    result, uri, _ = awkward_run
    args = ["predict", result.model_uri, str(files["truncated"]), "--metadata", str(files["train"].metadata)]
    code = main([*args, "--tracking-uri", uri, "--output-dir", str(tmp_path / "pred")])
    line = one_line_error(capfd, code)
    assert "truncated.tif" in line and "cannot read pixels" in line and "Exception" not in line


def test_run_with_a_read_only_store_folder_is_one_line_before_any_run(tmp_path, files):
    store = tmp_path / "rostore"
    args = [*_args(files, out=tmp_path / "out"), f"tracking.uri=sqlite:///{store / 'mlflow.db'}"]
    proc = run_on(cropseg(*args), read_only=[store], cwd=tmp_path, env=_fs_env(tmp_path))
    line = _one_line(proc)
    assert "the tracking store" in line and str(store) in line and "read-only file system" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["read_only_store", "unwritable_cwd", "long_name"])
def test_cropseg_predict_destination_faults_before_any_work(awkward_run, files, tmp_path, fault):
    result, uri, _ = awkward_run
    args = ["predict", result.model_uri, str(files["nan"]), "--metadata", str(files["train"].metadata)]
    kwargs: dict = {}
    cwd = tmp_path
    if fault == "read_only_store":
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'rostore' / 'mlflow.db'}"]
        args += ["--output-dir", str(tmp_path / "pred")]
        kwargs = {"read_only": [tmp_path / "rostore"]}
        reason = "read-only file system"
    elif fault == "unwritable_cwd":  # the default output folder, outputs/predict/..., in the working directory
        args += ["--tracking-uri", uri]
        kwargs = {"read_only": [tmp_path / "ro"]}
        reason = "read-only file system"
    else:
        args += ["--tracking-uri", uri, "--output-dir", str(tmp_path / ("p" * 300))]
        reason = "file name too long"
    argv = cropseg(*args)
    if fault == "unwritable_cwd":
        argv = ["sh", "-c", 'cd "$0" && exec "$@"', str(tmp_path / "ro"), *argv]
    proc = run_on(argv, cwd=cwd, env=_fs_env(tmp_path), **kwargs)
    line = _one_line(proc)
    assert "could not be written to" in line and reason in line, line


@pytest.mark.parametrize("case", ["sample_design_long_name", "estimate_area_unwritable_cwd"])
def test_area_commands_name_faults_are_one_line(tmp_path, area_files, case):
    if case == "sample_design_long_name":
        argv = cropseg("sample-design", str(area_files["mask"]), "--sample-size", "20")
        argv += ["--output", str(tmp_path / ("s" * 300 + ".geojson"))]
        proc = run_on(argv, cwd=tmp_path, env=_fs_env(tmp_path))
        reason = "file name too long"
    else:  # the default output folder, outputs/area/..., in a read-only working directory
        argv = cropseg("estimate-area", str(area_files["mask"]), str(area_files["sample"]))
        argv += ["--tracking-uri", area_files["uri"], "--experiment", "area-faults"]
        ro = tmp_path / "ro"
        proc = run_on(
            ["sh", "-c", 'cd "$0" && exec "$@"', str(ro), *argv], read_only=[ro], cwd=tmp_path, env=_fs_env(tmp_path)
        )
        reason = "read-only file system"
        assert run_statuses(area_files["uri"], "area-faults") == []
    line = _one_line(proc)
    assert "could not be written to" in line and reason in line, line
