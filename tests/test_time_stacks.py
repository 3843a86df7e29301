"""Time stacks: scenes of several dates (types / scenes / local source), their checks, ``features=temporal``,
the multi-date SYNTHETIC sample, tracking of every date, and ``cropseg predict`` with stacks.

Every file here is generated, tiny and seeded (real CRS and transform), in the test's temp dir.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from cropseg.errors import ConfigError, StackError
from cropseg.testing import TINY_COEFFICIENTS, write_planet_metadata, write_tiny_scene
from cropseg_plugins.local import LocalSource
from cropseg_plugins.temporal import TemporalFeatures, fill_gaps, series_stats

DATES = ("2017-04-01", "2017-06-15", "2017-08-20")


@pytest.fixture
def own_logging(monkeypatch):
    """In-process ``cropseg`` commands configure logging (Hydra's job logging, predict's handler) on the
    stream pytest captures for that test: give them copies of the handler lists, restored afterwards, so
    no handler on a closed capture stream outlives the test."""
    import logging

    for name in ("", "cropseg"):
        lg = logging.getLogger(name)
        monkeypatch.setattr(lg, "handlers", list(lg.handlers))


def _stack_files(tmp: Path, dates=DATES, *, shift_last: int = 0, seed: int = 0) -> list:
    """One tiny scene per date (file names start with the date, each with its metadata XML); the last date
    shifted right by ``shift_last`` pixels (another grid)."""
    out = []
    for t, d in enumerate(dates):
        left = 630000.0 + (3.0 * shift_last if t == len(dates) - 1 else 0.0)
        sc = write_tiny_scene(tmp / f"d{t}", name=f"{d.replace('-', '')}_scene", seed=seed + t, left=left)
        write_planet_metadata(sc.metadata, f"{d.replace('-', '')}_180425_t{t}", acquired=f"{d}T18:04:25+00:00")
        out.append(sc)
    return out


def _local(files, **extra) -> LocalSource:
    opts = dict(
        train_image=[str(f.image) for f in files],
        test_image=[str(f.image) for f in files],
        train_metadata=[str(f.metadata) for f in files],
        test_metadata=[str(f.metadata) for f in files],
        ground_truth=str(files[0].ground_truth),
    )
    opts.update(extra)
    return LocalSource(**opts)


# --------------------------------------------------------------------------------------------------
# Reading stacks
# --------------------------------------------------------------------------------------------------


def test_stack_reads_every_date_on_the_first_grid(tmp_path):
    files = _stack_files(tmp_path, shift_last=2)
    scene = _local(files).load(tmp_path).train
    assert scene.dates == DATES and scene.n_dates == 3
    assert scene.band_names[:5] == (
        "blue@2017-04-01",
        "green@2017-04-01",
        "red@2017-04-01",
        "nir@2017-04-01",
        "blue@2017-06-15",
    )
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, 64, 64))
    assert blk.reflectance.shape == (12, 64, 64) and blk.date_valid.shape == (3, 64, 64)
    gains = np.asarray(TINY_COEFFICIENTS, np.float32)[:, None, None]
    with rasterio.open(files[0].image) as a, rasterio.open(files[2].image) as c:
        dn0, dn2 = a.read(), c.read()
    np.testing.assert_allclose(blk.reflectance[:4][:, :, :50], dn0[:, :, :50] * gains, rtol=1e-6)
    # the last date lies 2 pixels to the right: warped (nearest) onto the first grid, its column c is the
    # file's column c - 2, and the two columns left of its footprint are invalid for that date only
    np.testing.assert_allclose(blk.reflectance[8:][:, :, 2:50], dn2[:, :, :48] * gains, rtol=1e-6)
    assert not blk.date_valid[2][:, :2].any() and blk.date_valid[0][:, :2].all() and blk.valid[:, :2].all()
    assert (blk.reflectance[8:][:, :, :2] == 0).all()


def test_usable_mask_of_one_date_keeps_the_other_dates(tmp_path):
    files = _stack_files(tmp_path)
    udm = tmp_path / "udm_d1.tif"
    with rasterio.open(files[1].image) as src:
        prof = src.profile
    prof.update(count=1, dtype="uint8", nodata=None)
    clear = np.ones((1, 64, 64), np.uint8)
    clear[:, :, :20] = 0  # cloud over the left columns on the second date
    with rasterio.open(udm, "w", **prof) as dst:
        dst.write(clear)
    scene = _local(files, train_udm=[None, str(udm), None]).load(tmp_path).train
    with scene.reader() as reader:
        blk = reader.read(Window(0, 0, 64, 64))
    assert not blk.date_valid[1][:, :20].any() and blk.date_valid[1][:, 20:56].all()
    assert blk.date_valid[0][:, :20].all() and blk.valid[:, :20].all()
    assert (blk.reflectance[4:8][:, :, :20] == 0).all()


def test_previews_and_map_show_every_date(tmp_path):
    """One true-colour preview per date, named by it, each on the first date's grid (the shifted last date
    warped onto it), and one map layer per date; a single image keeps rgb.png and one layer."""
    from cropseg.mapview import write_map
    from cropseg.previews import date_composites, write_previews

    files = _stack_files(tmp_path, shift_last=2)
    scene = _local(files).load(tmp_path).test
    comps = list(date_composites(scene, 1024))
    assert [d for d, _ in comps] == list(DATES)
    assert {img.shape for _, img in comps} == {(64, 64, 3)}
    assert (comps[2][1][:, :2] == 255).all() and not (comps[0][1][:, :2] == 255).all()  # outside the last date
    assert not np.array_equal(comps[0][1], comps[1][1])  # each date's own pixels
    labels = tmp_path / "labels.tif"
    with rasterio.open(files[0].image) as src:
        prof = {**src.profile, "count": 1, "dtype": "uint8", "nodata": None}
    with rasterio.open(labels, "w", **prof) as dst:
        dst.write(np.tile(np.arange(64, dtype=np.uint8) % 2, (1, 64, 1)))
    names = sorted(p.name for p in write_previews(scene, labels, labels, tmp_path / "previews", 32))
    assert names == sorted([*(f"rgb_{d}.png" for d in DATES), "ground_truth.png", "prediction.png", "disagreement.png"])
    html = write_map(scene, labels, None, tmp_path / "map.html", 32).read_text()
    assert all(html.count(f"scene RGB {d}") == 1 for d in DATES)
    single = LocalSource(
        train_image=str(files[0].image), test_image=str(files[0].image), ground_truth=str(files[0].ground_truth)
    ).load(tmp_path)
    assert [p.name for p in write_previews(single.test, labels, labels, tmp_path / "p1", 32)][0] == "rgb.png"
    assert "scene RGB 2017" not in write_map(single.test, labels, None, tmp_path / "m1.html", 32).read_text()


def test_dates_from_names_explicit_and_stacked_geotiff(tmp_path):
    files = _stack_files(tmp_path)
    # no metadata: dates from the file names (YYYYMMDD at the start)
    by_name = (
        LocalSource(
            train_image=[str(f.image) for f in files],
            test_image=[str(f.image) for f in files],
            ground_truth=str(files[0].ground_truth),
        )
        .load(tmp_path)
        .train
    )
    assert by_name.dates == DATES
    explicit = _local(files, train_dates=["2018-01-01", "2018-02-01", "2018-03-01"]).load(tmp_path).train
    assert explicit.dates == ("2018-01-01", "2018-02-01", "2018-03-01")
    # one stacked GeoTIFF, 4 bands per date, read like the separate files
    stacked = tmp_path / "stack.tif"
    arrays = []
    for f in files:
        with rasterio.open(f.image) as src:
            arrays.append(src.read())
            prof = src.profile
    prof.update(count=12)
    with rasterio.open(stacked, "w", **prof) as dst:
        dst.write(np.concatenate(arrays))
    st = (
        LocalSource(
            train_image=str(stacked),
            test_image=str(stacked),
            bands_per_date=4,
            train_dates=list(DATES),
            test_dates=list(DATES),
            ground_truth=str(files[0].ground_truth),
        )
        .load(tmp_path)
        .train
    )
    assert st.dates == DATES and [a.bands for a in st.acquisitions] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)]
    with st.reader() as r1, by_name.reader() as r2:
        a, b = r1.read(Window(0, 0, 64, 64)), r2.read(Window(0, 0, 64, 64))
    np.testing.assert_array_equal(a.reflectance, b.reflectance)
    np.testing.assert_array_equal(a.date_valid, b.date_valid)


# --------------------------------------------------------------------------------------------------
# Bad stacks: one line each, before any pixel is read
# --------------------------------------------------------------------------------------------------


def test_unsorted_and_duplicated_dates_are_refused(tmp_path):
    files = _stack_files(tmp_path)
    with pytest.raises(StackError, match=r"in time order, 2017-04-01 .* comes after 2017-06-15"):
        _local([files[1], files[0], files[2]]).load(tmp_path)
    with pytest.raises(StackError, match="the date 2017-06-15 is given twice"):
        _local(files, train_dates=["2017-04-01", "2017-06-15", "2017-06-15"]).load(tmp_path)
    with pytest.raises(ConfigError, match=r"source.train_dates: 'june' is not a date"):
        _local(files, train_dates=["2017-04-01", "june", "2017-09-01"]).load(tmp_path)
    with pytest.raises(ConfigError, match=r"source.train_metadata: one per date \(3 dates\)"):
        _local(files, train_metadata=[str(files[0].metadata)]).load(tmp_path)


def test_other_band_count_and_no_overlap_are_refused(tmp_path):
    files = _stack_files(tmp_path)
    five = write_tiny_scene(tmp_path / "five", name="20170901_five", bands=5)
    with pytest.raises(StackError, match=r"date 2017-09-01 has 5 bands, date 2017-04-01 .* has 4"):
        LocalSource(
            train_image=[str(files[0].image), str(five.image)],
            test_image=[str(files[0].image), str(five.image)],
            ground_truth=str(files[0].ground_truth),
        ).load(tmp_path)
    far = write_tiny_scene(tmp_path / "far", name="20170901_far", left=700000.0)
    with pytest.raises(StackError, match=r"date 2017-09-01 does not overlap the train scene's first date 2017-04-01"):
        LocalSource(
            train_image=[str(files[0].image), str(far.image)],
            test_image=[str(files[0].image), str(far.image)],
            ground_truth=str(files[0].ground_truth),
        ).load(tmp_path)


def test_a_date_without_valid_pixels_is_refused_by_check(tmp_path):
    files = _stack_files(tmp_path)
    with rasterio.open(files[1].image, "r+") as dst:
        dst.write(np.zeros((4, 64, 64), np.uint16))  # all nodata
    src = _local(files)
    src.load(tmp_path)  # headers only: loads
    with pytest.raises(StackError, match=r"date 2017-06-15 has no valid pixel in the train scene"):
        src.check(tmp_path)


@pytest.mark.parametrize(
    "order, extra, message",
    [
        ((1, 0), [], "in time order"),
        (
            (0, 1),
            ["features=indices"],
            "features=indices on time stacks: features.indices.indices: the index ndvi needs the 'nir' band",
        ),
        ((0, 1), ["source.test_image={img0}"], "the train scene has 2 date(s), the test scene 1"),
    ],
)
def test_cli_refuses_a_bad_stack_in_one_line(
    tmp_path, monkeypatch, capfd, tracking_uri, order, extra, message, own_logging
):
    from cropseg.cli import main

    files = _stack_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    imgs = f"[{files[order[0]].image},{files[order[1]].image}]"
    rc = main(
        [
            "source=local",
            f"source.train_image={imgs}",
            f"source.test_image={imgs}",
            f"source.ground_truth={files[0].ground_truth}",
            *(e.format(img0=files[0].image) for e in extra),
        ]
    )
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert rc != 0 and "Traceback" not in err and len(lines) == 1, err
    assert message in lines[0], lines[0]
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))


# --------------------------------------------------------------------------------------------------
# features=temporal
# --------------------------------------------------------------------------------------------------


def test_fill_gaps_interpolates_linearly_in_days():
    days = np.array([0.0, 10.0, 40.0, 50.0])
    series = np.array([1.0, 99.0, 4.0, 99.0], np.float32).reshape(4, 1, 1)
    valid = np.array([True, False, True, False]).reshape(4, 1)
    lin = fill_gaps(series, valid, days, "linear")[:, 0, 0]
    np.testing.assert_allclose(lin, [1.0, 1.75, 4.0, 4.0])  # 10 of 40 days from 1 to 4; constant after the last
    near = fill_gaps(series, valid, days, "nearest")[:, 0, 0]
    np.testing.assert_allclose(near, [1.0, 1.0, 4.0, 4.0])
    lead = fill_gaps(series, np.array([False, False, True, True]).reshape(4, 1), days, "linear")[:, 0, 0]
    np.testing.assert_allclose(lead, [4.0, 4.0, 4.0, 99.0])


def test_series_statistics_use_valid_dates_only():
    from datetime import date

    days = np.array([date(2017, m, 1).toordinal() for m in (3, 5, 7, 9)], dtype=float)
    v = np.array([0.1, 0.9, 0.5, 5.0], np.float32).reshape(4, 1)  # 5.0 is a cloud, masked
    valid = np.array([True, True, True, False]).reshape(4, 1)
    stats = series_stats(v, valid, days, ["min", "max", "mean", "amplitude", "doymax", "valid_fraction"], [50])[:, 0]
    np.testing.assert_allclose(stats, [0.1, 0.9, 0.5, 0.8, date(2017, 5, 1).timetuple().tm_yday, 0.75, 0.5], rtol=1e-6)
    none = series_stats(v, np.zeros((4, 1), bool), days, ["min", "std"], [10])
    assert (none == 0).all()


def test_percentiles_equal_numpy_over_valid_dates():
    from cropseg_plugins.temporal import valid_percentiles

    rng = np.random.default_rng(1)
    v = rng.uniform(0, 1, (5, 40, 30))
    valid = rng.random((5, 40, 30)) > 0.4
    valid[:, 0, 0] = False
    got = valid_percentiles(v, valid, [0, 10, 50, 90, 100])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanpercentile(np.where(valid, v, np.nan), [0, 10, 50, 90, 100], axis=0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[valid.any(axis=0)], w[valid.any(axis=0)], rtol=1e-12)
        assert g[0, 0] == 0


def test_temporal_features_in_strips_equal_the_whole_block(monkeypatch):
    """Blocks are computed in strips of rows (bounded temporaries as dates grow): the same features, bit for
    bit, whatever the strip size, with per-date masks or with gaps read from zero rows (a served model)."""
    import cropseg_plugins.temporal as temporal

    rng = np.random.default_rng(4)
    names = [f"{b}@{d}" for d in DATES for b in ("blue", "green", "red", "nir")]
    refl = rng.uniform(0.01, 0.5, (12, 37, 23)).astype(np.float32)
    valid = rng.random((3, 37, 23)) > 0.3
    feats = TemporalFeatures(fill="linear", stats=["min", "mean", "std", "doymax"], percentiles=[50])
    whole = feats.compute(refl, names, valid)
    rows = np.where(np.repeat(valid, 4, axis=0), refl, 0.0).astype(np.float32)[:, :, :1]  # (bands, n, 1)
    whole_rows = feats.compute(rows, names)
    monkeypatch.setattr(temporal, "STRIP_PIXEL_DATES", 3 * 23 * 5)  # strips of 5 rows (the last one 2)
    np.testing.assert_array_equal(feats.compute(refl, names, valid), whole)
    monkeypatch.setattr(temporal, "STRIP_PIXEL_DATES", 1)  # one row at a time
    np.testing.assert_array_equal(feats.compute(refl, names, valid), whole)
    np.testing.assert_array_equal(feats.compute(rows, names), whole_rows)


def test_temporal_names_and_refusals():
    names = [f"{b}@{d}" for d in DATES for b in ("blue", "green", "red", "nir")]
    f = TemporalFeatures(bands=["nir"], indices=["ndvi"], stats=["max", "doymax"], percentiles=[50])
    assert f.names(names) == [
        "nir@2017-04-01",
        "ndvi@2017-04-01",
        "nir@2017-06-15",
        "ndvi@2017-06-15",
        "nir@2017-08-20",
        "ndvi@2017-08-20",
        "ndvi_max",
        "ndvi_doymax",
        "ndvi_p50",
    ]
    assert "valid@2017-06-15" in TemporalFeatures(fill="none").names(names)
    with pytest.raises(ConfigError, match="needs a time stack"):
        TemporalFeatures().names(["blue", "green", "red", "nir"])
    with pytest.raises(ConfigError, match="features.temporal.indices: the index ndvi needs the 'red' band"):
        TemporalFeatures().names([f"{b}@{d}" for d in DATES for b in ("blue", "green", "nir")])
    with pytest.raises(ConfigError, match="unknown statistic 'median'"):
        TemporalFeatures(stats=["median"])
    feats = f.compute(np.random.default_rng(0).uniform(0.01, 0.5, (12, 5, 6)).astype(np.float32), names)
    assert feats.shape == (9, 5, 6) and feats.dtype == np.float32 and np.isfinite(feats).all()


# --------------------------------------------------------------------------------------------------
# The multi-date SYNTHETIC sample
# --------------------------------------------------------------------------------------------------


def test_multidate_sample_is_deterministic_and_window_independent(tmp_path):
    from cropseg_plugins.sample.multidate import build_fields, generate_stack, render_block

    f = build_fields(7, 200, 150, 626000.0, 4243000.0)
    whole, udm = render_block(f, 1, 150.0, 0, 0, 150, 200)
    part, udm_part = render_block(f, 1, 150.0, 37, 61, 50, 70)
    np.testing.assert_array_equal(whole[:, 37:87, 61:131], part)
    np.testing.assert_array_equal(udm[:, 37:87, 61:131], udm_part)
    a, gt_a = generate_stack(
        tmp_path / "a", role="train", seed=7, n_dates=3, width=96, height=80, left=626000.0, top=4243000.0
    )
    b, gt_b = generate_stack(
        tmp_path / "b", role="train", seed=7, n_dates=3, width=96, height=80, left=626000.0, top=4243000.0
    )
    assert [x.date.isoformat() for x in a] == ["2017-03-21", "2017-06-19", "2017-09-17"]
    for x, y in zip(a, b):
        assert x.analytic.read_bytes() == y.analytic.read_bytes() and x.udm2.read_bytes() == y.udm2.read_bytes()
    assert gt_a.read_text() == gt_b.read_text() and '"SYNTHETIC":true' in gt_a.read_text()
    with rasterio.open(a[0].udm2) as u:
        assert u.count == 8 and u.tags()["SYNTHETIC"] == "true"


def test_no_single_date_separates_grassland_and_shrub_from_crop():
    """The phenology the sample is built on: for every date some non-crop cover is as green as some crop
    (within 0.15), while over the season the curves differ by more than 0.2 at some date."""
    from cropseg_plugins.sample.multidate import CLASSES, SEASON, greenness

    crop = [i for i, c in enumerate(CLASSES) if c[2]]
    noncrop = [i for i, c in enumerate(CLASSES) if not c[2] and c[0] != "water"]
    one = np.ones(1)
    for doy in range(SEASON[0], SEASON[1] + 1, 10):
        g = {i: float(greenness(np.array([i]), doy, 0 * one, one)[0]) for i in crop + noncrop}
        assert min(abs(g[n] - g[c]) for n in noncrop for c in crop) < 0.15, doy
    doys = range(SEASON[0], SEASON[1] + 1, 10)
    curves = {i: np.array([greenness(np.array([i]), d, 0 * one, one)[0] for d in doys]) for i in crop + noncrop}
    assert all(np.abs(curves[n] - curves[c]).max() > 0.2 for n in noncrop for c in crop)


def test_sample_source_dates_and_use_date(tmp_path):
    from cropseg_plugins.sample import SampleSource

    stacks = SampleSource(size=64, seed=3, dates=3).load(tmp_path)
    assert stacks.train.n_dates == 3 and stacks.test.dates == stacks.train.dates and stacks.synthetic
    assert all(a.usable_path is not None for a in stacks.train.acquisitions)
    one = SampleSource(size=64, seed=3, dates=3, use_date=1).load(tmp_path)
    assert not one.train.acquisitions and one.train.path == stacks.train.acquisitions[1].path
    with pytest.raises(ConfigError, match="source.use_date"):
        SampleSource(size=64, dates=1, use_date=0)
    with pytest.raises(ConfigError, match="source.dates"):
        SampleSource(size=64, dates=0)


# --------------------------------------------------------------------------------------------------
# A run on stacks: every date tracked; the deployed model takes a stack and refuses anything else
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stack_run_tracks_every_date_and_predict_takes_a_stack(tmp_path, monkeypatch, capfd, tracking_uri, own_logging):
    from mlflow import MlflowClient

    import cropseg
    from cropseg.cli import main

    files = _stack_files(tmp_path / "train", dates=DATES[:2])
    tests = _stack_files(tmp_path / "test", dates=DATES[:2], seed=5)
    imgs = lambda fs: "[" + ",".join(str(f.image) for f in fs) + "]"  # noqa: E731
    metas = lambda fs: "[" + ",".join(str(f.metadata) for f in fs) + "]"  # noqa: E731
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    result = cropseg.run(
        [
            "source=local",
            f"source.train_image={imgs(files)}",
            f"source.test_image={imgs(tests)}",
            f"source.train_metadata={metas(files)}",
            f"source.test_metadata={metas(tests)}",
            f"source.train_ground_truth={files[0].ground_truth}",
            f"source.test_ground_truth={tests[0].ground_truth}",
            "features=temporal",
            "classifier=random_forest",
            "train.spatial_block=16",
            f"tracking.uri={tracking_uri}",
        ],
        output_dir=tmp_path / "out",
    )
    assert result.metrics["test_crop_f1"] > 0.9  # green crop vs soil on every date: easy, but must hold
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["train.dates"] == "2017-04-01,2017-06-15"
    assert "ndvi_amplitude" in run.data.params["features.names"]
    scenes = [d for d in run.inputs.dataset_inputs if {t.key: t.value for t in d.tags}.get("cropseg.kind") == "scene"]
    assert len(scenes) == 4 and sum("2017-06-15" in d.dataset.name for d in scenes) == 2
    # a preview and a map layer per date of the test stack, logged with the run
    previews = {f.path for f in client.list_artifacts(result.run_id, "previews")}
    assert {"previews/rgb_2017-04-01.png", "previews/rgb_2017-06-15.png"} <= previews
    assert "previews/rgb.png" not in previews
    html = result.outputs["map"].read_text()
    assert "scene RGB 2017-04-01" in html and "scene RGB 2017-06-15" in html

    model = f"runs:/{result.run_id}/model"
    common = ["--tracking-uri", tracking_uri]
    # one image for a two-date model: one line, before any prediction run
    line_rc = main(["predict", model, str(tests[0].image), "--output-dir", str(tmp_path / "p1"), *common])
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert line_rc != 0 and "Traceback" not in err and len(lines) == 1, err
    assert "trained on a time stack of 2 dates (2017-04-01, 2017-06-15)" in lines[0] and "got 1" in lines[0]
    assert not (tmp_path / "p1").exists()
    rc = main(
        [
            "predict",
            model,
            str(tests[0].image),
            str(tests[1].image),
            "--metadata",
            str(tests[0].metadata),
            "--metadata",
            str(tests[1].metadata),
            "--ground-truth",
            str(tests[0].ground_truth),
            "--output-dir",
            str(tmp_path / "p2"),
            *common,
        ]
    )
    assert rc == 0, capfd.readouterr().err
    masks = list((tmp_path / "p2").rglob("*mask*.tif"))
    assert masks
    with rasterio.open(masks[0]) as src, rasterio.open(tests[0].image) as img:
        assert (src.width, src.height) == (img.width, img.height)
