"""Bands beyond PlanetScope's four (issue 19, item 8): ``source.bands`` naming band roles (SWIR, red
edge, indices stored as bands), SWIR indices, features and the U-Net taking whatever bands a scene has,
refusals before any work, and the deployed model refusing a scene with other bands.

Every file here is generated, tiny, seeded and SYNTHETIC (tests/band_files.py; real CRS and transform).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from band_files import L2_OFFSET, L2_SCALE, write_landsat_scene, write_ndvi_stack
from mlflow import MlflowClient
from rasterio.windows import Window

from cropseg.errors import ConfigError
from cropseg.spectral import INDICES, compute_indices, parse_band_roles
from cropseg_plugins.context import ContextFeatures
from cropseg_plugins.indices import IndexFeatures
from cropseg_plugins.local import LocalSource
from cropseg_plugins.temporal import TemporalFeatures

LANDSAT = "[blue,green,red,nir,swir1,swir2]"
DATES = ("2017-04-01", "2017-05-15", "2017-07-01", "2017-08-15")


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]


def landsat_overrides(train, test, bands: str = LANDSAT) -> list[str]:
    return [
        "source=local",
        f"source.train_image={train.image}",
        f"source.test_image={test.image}",
        f"source.train_ground_truth={train.ground_truth}",
        f"source.test_ground_truth={test.ground_truth}",
        f"source.bands={bands}",
        f"source.scale={L2_SCALE}",
        f"source.offset={L2_OFFSET}",
        "train.spatial_block=16",
    ]


# --------------------------------------------------------------------------------------------------
# Roles and indices
# --------------------------------------------------------------------------------------------------


def test_band_option_forms_and_refusals():
    assert parse_band_roles([1, 2, 3, 4]) == ((1, 2, 3, 4), ("blue", "green", "red", "nir"), None)
    assert parse_band_roles([4, 3, 2, 1])[0] == (4, 3, 2, 1)
    assert parse_band_roles(["Blue", "green", "red", "nir", "swir1", "swir2"]) == (
        (1, 2, 3, 4, 5, 6),
        ("blue", "green", "red", "nir", "swir1", "swir2"),
        6,
    )
    # null leaves a band of the file out (Sentinel-2's water-vapour band)
    s2 = ["coastal", "blue", "green", "red", "red_edge", "red_edge2", "red_edge3", "nir", "nir_narrow", None]
    idx, roles, count = parse_band_roles([*s2, "swir1", "swir2"])
    assert idx == (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12) and roles[-2:] == ("swir1", "swir2") and count == 12
    assert parse_band_roles(["ndvi"]) == ((1,), ("ndvi",), 1)
    for bad, message in (
        ([1, 2, 3], "four band indexes"),
        (["blue", "thermal"], "unknown band role 'thermal'"),
        (["nir", "NIR"], "the band role 'nir' is given twice"),
        ([1, "nir"], "four band indexes, or the roles"),
        ([1, 1, 2, 3], "four different band indexes"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_band_roles(bad)


def test_swir_and_red_edge_indices_follow_their_formulas():
    rng = np.random.default_rng(3)
    names = ("blue", "green", "red", "red_edge", "nir", "swir1", "swir2")
    refl = rng.uniform(0.02, 0.6, size=(7, 5, 5)).astype(np.float32)
    b = dict(zip(names, refl))
    out = compute_indices(refl, names, ["ndmi", "nbr", "nbr2", "mndwi", "ndre", "evi"])
    nd = lambda x, y: (x - y) / (x + y)  # noqa: E731
    np.testing.assert_allclose(out[0], nd(b["nir"], b["swir1"]), rtol=1e-5)
    np.testing.assert_allclose(out[1], nd(b["nir"], b["swir2"]), rtol=1e-5)
    np.testing.assert_allclose(out[2], nd(b["swir1"], b["swir2"]), rtol=1e-5)
    np.testing.assert_allclose(out[3], nd(b["green"], b["swir1"]), rtol=1e-5)
    np.testing.assert_allclose(out[4], nd(b["nir"], b["red_edge"]), rtol=1e-5)
    evi = 2.5 * (b["nir"] - b["red"]) / (b["nir"] + 6 * b["red"] - 7.5 * b["blue"] + 1)
    np.testing.assert_allclose(out[5], evi, rtol=1e-4)
    # an index the scene holds as a band is that band, not recomputed (and needs no red / nir)
    ndvi = rng.uniform(-1, 1, size=(1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(compute_indices(ndvi, ("ndvi",), ["ndvi"]), ndvi)
    with pytest.raises(ConfigError, match="features.x: the index ndmi needs the 'swir1' band.*bands: blue, green"):
        compute_indices(refl[:5], names[:5], ["ndmi"], option="features.x")
    assert set(INDICES) >= {"ndmi", "nbr", "ndre"}


def test_index_features_list_an_index_band_once():
    feats = IndexFeatures(indices=["ndvi", "nbr"])
    assert feats.names(("ndvi", "nir", "swir2")) == ["ndvi", "nir", "swir2", "nbr"]
    x = np.random.default_rng(0).uniform(0.1, 0.5, size=(3, 2, 2)).astype(np.float32)
    assert feats.compute(x, ("ndvi", "nir", "swir2")).shape == (4, 2, 2)


def test_context_features_list_an_index_band_once():
    """NDVI held as a band and asked for as an index: one ``ndvi`` value and one set of its statistics."""
    feats = ContextFeatures(radii=[1], stats=["mean"], bands=["ndvi"], indices=["ndvi", "nbr"], include_indices=True)
    roles = ("ndvi", "nir", "swir2")
    names = feats.names(roles)
    assert names == ["ndvi", "nir", "swir2", "nbr", "ndvi_mean_r1", "nbr_mean_r1"]
    x = np.random.default_rng(0).uniform(0.1, 0.5, size=(3, 5, 5)).astype(np.float32)
    out = feats.compute(x, roles)
    assert out.shape == (len(names), 5, 5)
    np.testing.assert_array_equal(out[3], compute_indices(x, roles, ["nbr"])[0])
    np.testing.assert_allclose(out[4, 2, 2], x[0, 1:4, 1:4].mean(), rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# The local source reads the roles
# --------------------------------------------------------------------------------------------------


def test_local_source_reads_a_landsat_stack_with_scale_and_offset(tmp_path):
    sc = write_landsat_scene(tmp_path, seed=1)
    src = LocalSource(
        train_image=str(sc.image),
        test_image=str(sc.image),
        ground_truth=str(sc.ground_truth),
        bands=["blue", "green", "red", "nir", "swir1", "swir2"],
        scale=L2_SCALE,
        offset=L2_OFFSET,
    )
    assert src.band_roles() == ("blue", "green", "red", "nir", "swir1", "swir2")
    scene = src.load(tmp_path).train
    assert scene.band_names == ("blue", "green", "red", "nir", "swir1", "swir2") and scene.bands == (1, 2, 3, 4, 5, 6)
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, 64, 64))
    with rasterio.open(sc.image) as f:
        dn = f.read()
    assert blk.reflectance.shape == (6, 64, 64)
    ok = blk.valid
    np.testing.assert_allclose(blk.reflectance[:, ok], dn[:, ok] * L2_SCALE + L2_OFFSET, rtol=1e-5, atol=1e-6)
    assert not ok[:, sc.nodata_cols_from :].any()
    # null leaves the SWIR bands out: bands 1-4 only
    four = LocalSource(
        train_image=str(sc.image),
        test_image=str(sc.image),
        ground_truth=str(sc.ground_truth),
        bands=["blue", "green", "red", "nir", None, None],
    ).load(tmp_path)
    assert four.train.band_names == ("blue", "green", "red", "nir") and four.train.bands == (1, 2, 3, 4)


def test_local_source_refuses_roles_the_files_do_not_fit(tmp_path):
    sc = write_landsat_scene(tmp_path, seed=1)
    common = dict(train_image=str(sc.image), test_image=str(sc.image), ground_truth=str(sc.ground_truth))
    with pytest.raises(ConfigError, match=r"4 bands named \(blue, green, red, nir\) but .* has 6 bands"):
        LocalSource(**common, bands=["blue", "green", "red", "nir"]).load(tmp_path)
    # the Planet XML's coefficients are PlanetScope's: refused for SWIR before any file is read
    with pytest.raises(ConfigError, match="source.train_metadata: .*PlanetScope bands only, not for the swir1 band"):
        LocalSource(**common, train_metadata=str(sc.metadata), bands=["blue", "green", "red", "nir", "swir1", "swir2"])


def test_sentinel2_stacked_dates_with_a_band_left_out(tmp_path):
    """A stacked GeoTIFF of two dates x 12 Sentinel-2 L2A bands (B1..B8, B8A, B9, B11, B12), B9 left out."""
    from cropseg.testing import write_tiny_scene

    sc = write_tiny_scene(tmp_path, name="s2", seed=4)
    with rasterio.open(sc.image) as src:
        prof = src.profile
    dn = np.arange(1, 25, dtype=np.uint16)[:, None, None] * np.ones((24, 64, 64), np.uint16) * 100
    prof.update(count=24)
    with rasterio.open(sc.image, "w", **prof) as dst:
        dst.write(dn)
    s2 = ["coastal", "blue", "green", "red", "red_edge", "red_edge2", "red_edge3", "nir", "nir_narrow", None]
    scene = (
        LocalSource(
            train_image=str(sc.image),
            test_image=str(sc.image),
            ground_truth=str(sc.ground_truth),
            bands=[*s2, "swir1", "swir2"],
            bands_per_date=12,
            train_dates=["2021-05-03", "2021-07-12"],
            test_dates=["2021-05-03", "2021-07-12"],
        )
        .load(tmp_path)
        .train
    )
    assert scene.base_band_names[-3:] == ("nir_narrow", "swir1", "swir2") and len(scene.band_names) == 22
    assert scene.acquisitions[1].bands == (13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24)
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, 4, 4))
    expected = [b * 100 * 1e-4 for b in (*range(1, 10), 11, 12, *range(13, 22), 23, 24)]
    np.testing.assert_allclose(blk.reflectance[:, 0, 0], expected, rtol=1e-5)
    assert TemporalFeatures(indices=["ndmi"], stats_of=["ndre"], percentiles=[]).names(scene.band_names)[-6:] == [
        "ndre_min",
        "ndre_max",
        "ndre_mean",
        "ndre_std",
        "ndre_amplitude",
        "ndre_doymax",
    ]


def test_ndvi_only_stack_gives_temporal_features_without_duplicates(tmp_path):
    sc = write_ndvi_stack(tmp_path, 4, seed=1)
    scene = (
        LocalSource(
            train_image=str(sc.image),
            test_image=str(sc.image),
            ground_truth=str(sc.ground_truth),
            bands=["ndvi"],
            bands_per_date=1,
            scale=1.0,
            nodata=-9999,
            train_dates=list(DATES),
            test_dates=list(DATES),
        )
        .load(tmp_path)
        .train
    )
    assert scene.band_names == tuple(f"ndvi@{d}" for d in DATES)
    feats = TemporalFeatures(stats=["max", "amplitude"], percentiles=[])
    names = feats.names(scene.band_names)
    assert names == [*(f"ndvi@{d}" for d in DATES), "ndvi_max", "ndvi_amplitude"]
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, 64, 64))
    out = feats.compute(blk.reflectance, scene.band_names, date_valid=blk.date_valid)
    with rasterio.open(sc.image) as f:
        ndvi = f.read()
    r0, _, c0, _ = sc.crop_boxes[0]
    np.testing.assert_allclose(out[:4, r0, c0], ndvi[:, r0, c0], rtol=1e-6)
    assert out[4, r0, c0] == pytest.approx(ndvi[:, r0, c0].max(), rel=1e-6)
    with pytest.raises(ConfigError, match="features.temporal.stats_of: the index ndmi needs the 'nir' band"):
        TemporalFeatures(stats_of=["ndmi"]).names(scene.band_names)


# --------------------------------------------------------------------------------------------------
# End to end through `cropseg`
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_landsat_stack_end_to_end_with_swir_features_and_predict(tmp_path, cli_env, tracking_uri):
    train = write_landsat_scene(tmp_path / "train", seed=1)
    test = write_landsat_scene(tmp_path / "test", seed=2)
    proc = run_cli(
        [
            *landsat_overrides(train, test),
            "features=indices",
            "features.indices=[ndvi,ndmi,nbr]",
            "classifier.k_grid=[3,5]",
            "hydra.run.dir=out",
        ],
        tmp_path,
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs(client.get_experiment_by_name("cropseg").experiment_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["band_roles"] == "blue,green,red,nir,swir1,swir2"
    assert params["features.names"] == "blue,green,red,nir,swir1,swir2,ndvi,ndmi,nbr"
    assert metrics["test_crop_f1"] > 0.9  # green crop vs soil, SYNTHETIC and easy: it must still hold

    model = f"runs:/{run.info.run_id}/model"
    common = ["--tracking-uri", tracking_uri]
    ok = run_cli(
        ["predict", model, str(test.image), "--ground-truth", str(test.ground_truth), "--output-dir", "p_ok", *common],
        tmp_path,
        cli_env,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    (mask,) = (tmp_path / "p_ok").rglob("*mask*.tif")
    with rasterio.open(mask) as m, rasterio.open(tmp_path / "out" / "prediction" / "test_mask.tif") as ref:
        np.testing.assert_array_equal(m.read(1), ref.read(1))  # the deployed model repeats the run (scale, offset)
    # the same bands in another file order, named by --bands: the same mask
    shuffled = tmp_path / "shuffled.tif"
    with rasterio.open(test.image) as src:
        prof, dn = src.profile, src.read()
    with rasterio.open(shuffled, "w", **prof) as dst:
        dst.write(dn[[5, 4, 3, 2, 1, 0]])
    again = run_cli(
        ["predict", model, str(shuffled), "--bands", "swir2,swir1,nir,red,green,blue", "--output-dir", "p_sh", *common],
        tmp_path,
        cli_env,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    (mask2,) = (tmp_path / "p_sh").rglob("*mask*.tif")
    with rasterio.open(mask) as a, rasterio.open(mask2) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    # a PlanetScope 4-band scene, and a scene named without swir2: one line saying what the model expects
    from cropseg.testing import write_tiny_scene

    planet = write_tiny_scene(tmp_path / "planet", seed=3)
    for args, expected in (
        ([str(planet.image)], "the model expects 6 bands (blue, green, red, nir, swir1, swir2), the scene has 4"),
        (
            [str(test.image), "--bands", "blue,green,red,nir,swir1,ndvi"],
            "the model expects the bands blue, green, red, nir, swir1, swir2; --bands names "
            "blue, green, red, nir, swir1, ndvi, without swir2",
        ),
    ):
        bad = run_cli(["predict", model, *args, "--output-dir", "p_bad", *common], tmp_path, cli_env)
        lines = error_lines(bad.stderr)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(lines) == 1, bad.stderr[-3000:]
        assert expected in lines[0], lines[0]
        assert not list((tmp_path / "p_bad").rglob("*mask*.tif"))
    # the served model's rows are the model's bands by role: a frame of PlanetScope columns is refused
    import mlflow
    import pandas as pd

    from cropseg.errors import CropsegError
    from cropseg.tracking.model import mlflow_uri

    with mlflow_uri(tracking_uri):
        loaded = mlflow.pyfunc.load_model(model)
    rows = np.array([[0.04, 0.08, 0.05, 0.40, 0.18, 0.08], [0.10, 0.14, 0.18, 0.26, 0.34, 0.28]])
    cols = ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert list(np.asarray(loaded.predict(pd.DataFrame(rows, columns=cols))).ravel()) == [1, 0]
    with pytest.raises((CropsegError, mlflow.exceptions.MlflowException), match="swir1"):
        loaded.predict(pd.DataFrame(rows[:, :4], columns=cols[:4]))


@pytest.mark.slow
def test_ndvi_only_stack_end_to_end_with_temporal_features(tmp_path, cli_env, tracking_uri):
    train = write_ndvi_stack(tmp_path / "train", 4, seed=1)
    test = write_ndvi_stack(tmp_path / "test", 4, seed=2)
    dates = "[" + ",".join(DATES) + "]"
    proc = run_cli(
        [
            "source=local",
            f"source.train_image={train.image}",
            f"source.test_image={test.image}",
            f"source.train_ground_truth={train.ground_truth}",
            f"source.test_ground_truth={test.ground_truth}",
            "source.bands=[ndvi]",
            "source.bands_per_date=1",
            "source.scale=1",
            "source.nodata=-9999",
            f"source.train_dates={dates}",
            f"source.test_dates={dates}",
            "features=temporal",
            "classifier=random_forest",
            "train.spatial_block=16",
            "hydra.run.dir=out",
        ],
        tmp_path,
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(cli_env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs(client.get_experiment_by_name("cropseg").experiment_id)
    params = run.data.params
    assert params["band_roles"] == "ndvi" and params["train.dates"] == ",".join(DATES)
    names = params["features.names"].split(",")
    assert names[:4] == [f"ndvi@{d}" for d in DATES] and "ndvi_amplitude" in names and len(set(names)) == len(names)
    assert run.data.metrics["test_crop_f1"] > 0.9  # a season of green-up vs flat soil, SYNTHETIC


@pytest.mark.parametrize(
    ("bands", "features", "expected"),
    [
        (
            "[blue,green,red,nir,null,null]",
            ["features=indices", "features.indices=[ndvi,ndmi]"],
            "features.indices.indices: the index ndmi needs the 'swir1' band, which the scene does not have "
            "(bands: blue, green, red, nir)",
        ),
        (
            "[blue,green,red,nir,swir1,null]",
            ["features=context", "features.indices=[nbr]"],
            "features.context.indices: the index nbr needs the 'swir2' band",
        ),
        (
            "[blue,green,red,nir,null,null]",
            ["features=context", "features.bands=[swir1]"],
            "features.context.bands: the scene has no 'swir1' band",
        ),
    ],
)
def test_a_missing_band_is_refused_in_one_line_before_any_work(tmp_path, cli_env, bands, features, expected):
    train = write_landsat_scene(tmp_path / "train", seed=1)
    proc = run_cli([*landsat_overrides(train, train, bands), *features, "hydra.run.dir=out"], tmp_path, cli_env)
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert expected in lines[0], lines[0]
    # refused while the stages are built: no run, no output directory
    assert not (tmp_path / "out").exists()
    client = MlflowClient(cli_env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("cropseg")
    assert exp is None or not client.search_runs(exp.experiment_id)


@pytest.mark.slow
def test_unet_takes_the_scene_band_count_as_input_channels(tmp_path, cli_env, tracking_uri):
    pytest.importorskip("torch", reason="the 'deep' extra (make test and make setup-deep install it)")
    pytest.importorskip("segmentation_models_pytorch", reason="the 'deep' extra")
    import torch

    train = write_landsat_scene(tmp_path / "train", seed=1)
    test = write_landsat_scene(tmp_path / "test", seed=2)
    proc = run_cli(
        [
            *landsat_overrides(train, test),
            "features=indices",
            "features.indices=[ndmi]",
            "classifier=unet",
            "classifier.epochs=1",
            "classifier.arch_options={encoder_depth:3,decoder_channels:[32,16,8]}",
            "classifier.patch_size=32",
            "classifier.batch_size=8",
            "classifier.threads=1",
            "classifier.tile_size=64",
            "classifier.class_weight=null",
            "train.patches.max_patches=16",
            "parallel.backend=serial",
            "hydra.run.dir=out",
        ],
        tmp_path,
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs(client.get_experiment_by_name("cropseg").experiment_id)
    path = client.download_artifacts(run.info.run_id, "model_weights/unet_weights.pt", str(tmp_path / "w"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    first = next(v for k, v in state.items() if k.endswith("weight") and v.ndim == 4)
    assert first.shape[1] == 7  # six bands + NDMI
