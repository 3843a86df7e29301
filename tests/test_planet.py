"""The ``planet`` source through the real ``planet`` SDK against a Planet API double on 127.0.0.1.

The double (tests/planet_double.py) serves SYNTHETIC scenes from cropseg's generator. Outbound traffic
other than to 127.0.0.1 goes to a dead proxy, so nothing here can reach the internet.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fsfaults import run_on
from mlflow import MlflowClient
from planet_double import (
    CLOUD,
    SEASON_WINDOWS,
    SPEC,
    PlanetDouble,
    default_scenes,
    season_scenes,
    utm_box_geojson,
)
from rasterio.windows import Window

from cropseg.errors import ConfigError, InputFileError, SourceError
from cropseg_plugins.planet import PlanetSource
from cropseg_plugins.planet.search import AoiCover, Candidate, rank

FAKE_KEY = "PLAK-cropseg-fake-key-5f1c0e9a7d3b4e21"
DEAD_PROXY = "http://127.0.0.1:9"
#: matplotlib's font cache lives under HOME, which the tests replace: keep using the user's one
MPLCONFIGDIR = os.environ.get("MPLCONFIGDIR") or __import__("matplotlib").get_configdir()
#: the double answers at once and never rate-limits: no polling delay, no backoff, no request spacing
QUICK = dict(poll_seconds=0, retry_backoff_max=0.01, retries=2, download_retries=1, rate_limit=0)


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Four SYNTHETIC PSScene items (generated once per session)."""
    return default_scenes(tmp_path_factory.mktemp("planet-scenes"))


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """PL_API_KEY set to a fake key, an empty HOME, every non-local request sent to a dead proxy, and the
    SDK's process-wide bundles spec cache emptied (restored afterwards)."""
    from planet import specs

    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PL_API_KEY": FAKE_KEY,
        "HOME": str(home),
        "HTTPS_PROXY": DEAD_PROXY,
        "HTTP_PROXY": DEAD_PROXY,
        "ALL_PROXY": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "MPLCONFIGDIR": MPLCONFIGDIR,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr("planet.constants.SECRET_FILE_PATH", home / ".planet.json")
    monkeypatch.delattr(specs.PRODUCT_BUNDLES, "cache", raising=False)
    return env


@pytest.fixture
def double(scenes, tmp_path, offline_env):
    with PlanetDouble(scenes, FAKE_KEY, tmp_path / "double") as d:
        yield d


@pytest.fixture
def aois(scenes, tmp_path):
    """AOI files inside the train and test scenes (420 m squares)."""
    out = {}
    for role in ("train", "test"):
        s = scenes[role]
        path = tmp_path / f"aoi-{role}.geojson"
        path.write_text(json.dumps(utm_box_geojson(s.left, s.top, 180, 180, 600, 600)))
        out[role] = path
    return out


def make_source(double, scenes, aois, train=None, test=None, **opts) -> PlanetSource:
    parts = {
        role: {"aoi": str(aois[role]), "ground_truth": str(scenes[role].ground_truth), **(extra or {})}
        for role, extra in (("train", train), ("test", test))
    }
    return PlanetSource(train=parts["train"], test=parts["test"], api_url=double.url, **{**QUICK, **opts})


def cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def overrides(double, scenes, aois) -> list[str]:
    return [
        "source=planet",
        f"source.api_url={double.url}",
        f"source.train.aoi={aois['train']}",
        f"source.test.aoi={aois['test']}",
        f"source.train.ground_truth={scenes['train'].ground_truth}",
        f"source.test.ground_truth={scenes['test'].ground_truth}",
        "source.poll_seconds=0",
        "source.retry_backoff_max=0.01",
        "source.rate_limit=0",
        "classifier.k_grid=[3,5]",
        "train.max_per_class=1000",
    ]


def run_cli(args, cwd, env):
    return subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# -- end to end ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_planet_search_order_train_predict_then_cache_reuse(
    tmp_path, double, scenes, aois, cli_env, tracking_uri, offline_env
):
    env = {**cli_env, **offline_env}
    work = tmp_path / "work"
    work.mkdir()
    first = run_cli(overrides(double, scenes, aois), work, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "FINISHED" in first.stdout
    assert double.counts["orders_created"] == 2 and double.authorized > 0
    assert double.counts["search_pages"] >= 3  # the train search has 3 matches, 2 per page: _links._next followed
    tif_downloads = {k: v for k, v in double.downloads.items() if k.endswith(".tif")}
    assert sorted(tif_downloads.values()) == [1, 1, 1, 1]

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id])
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["cropseg.source"] == "planet" and tags["cropseg.synthetic"] == "true"
    assert tags["cropseg.train.scene_id"] == scenes["train"].id == tags["cropseg.source.train_scene_id"]
    assert tags["cropseg.test.scene_id"] == scenes["test"].id
    assert tags["cropseg.train.acquired"] == "2017-06-01T18:04:25Z"
    assert tags["cropseg.source.bundle"] == "analytic_udm2" == tags["cropseg.test.bundle"]
    assert set(double.orders) == {tags["cropseg.train.order_id"], tags["cropseg.test.order_id"]}
    assert tags["cropseg.train.reflectance"] == "toa_xml"
    assert run.data.metrics["test_crop_f1"] > 0.5  # synthetic scenes with a deliberately imperfect survey

    # the udm2 cloud patch of the test scene is nodata in the prediction
    s = scenes["test"]
    x, y = s.left + (CLOUD[1].start + 15) * 3.0, s.top - (CLOUD[0].start + 8) * 3.0
    mask = next((tmp_path / "work" / "outputs").rglob("prediction/test_mask.tif"))
    with rasterio.open(mask) as src:
        r, c = src.index(x, y)
        assert src.read(1, window=Window(c, r, 1, 1))[0, 0] == 255
        assert (src.read(1) < 255).sum() > 10000

    second = run_cli(overrides(double, scenes, aois), work, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert double.counts["orders_created"] == 2  # no new order
    assert {k: v for k, v in double.downloads.items() if k.endswith(".tif")} == tif_downloads
    runs = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["cropseg.train.from_cache"] == "True"
    assert runs[0].data.tags["cropseg.train.order_id"] == tags["cropseg.train.order_id"]

    # the key was used, yet is nowhere: outputs (incl. .hydra), cache, mlartifacts, the sqlite store, logs
    needle = FAKE_KEY.encode()
    assert (work / "outputs").is_dir() and list(work.rglob(".hydra/config.yaml"))
    assert list((tmp_path / "cache").rglob("*.tif")) and list(tmp_path.rglob("mlartifacts/**/*.tif"))
    assert not files_containing(tmp_path, needle)
    assert FAKE_KEY not in first.stdout + first.stderr + second.stdout + second.stderr


@pytest.mark.slow
def test_cli_bad_key_is_one_line_and_a_failed_run(tmp_path, double, scenes, aois, cli_env, tracking_uri, offline_env):
    env = {**cli_env, **offline_env, "PL_API_KEY": "PLAK-wrong-key-000"}
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(overrides(double, scenes, aois), work, env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("cropseg: error:")]
    assert len(err) == 1 and "HTTP 401" in err[0] and "PL_API_KEY" in err[0]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id])
    assert run.info.status == "FAILED" and "HTTP 401" in run.data.tags["cropseg.error"]
    assert double.counts["orders_created"] == 0
    assert not files_containing(tmp_path, b"PLAK-wrong-key-000")


# -- search and selection -------------------------------------------------------------------------------


def test_search_pages_coverage_and_rules(double, scenes, aois, tmp_path):
    src = make_source(double, scenes, aois)
    api = src.api()
    cands, text = src.search(api, "train")
    assert [c.id for c in cands] == [scenes[k].id for k in ("edge", "train", "train_late")]  # least cloud first
    assert double.counts["search_pages"] == 2
    cover = {c.id: c.coverage for c in cands}
    assert cover[scenes["train"].id] == pytest.approx(1.0) and 0.1 < cover[scenes["edge"].id] < 0.5
    assert "cloud_cover <= 0.1" in text
    assert src.pick(api, "train").id == scenes["train"].id  # the edge scene covers too little of the AOI
    late = make_source(double, scenes, aois, select="most_recent")
    assert late.pick(late.api(), "train").id == scenes["train_late"].id
    assert double.counts["orders_created"] == 0


def test_rank_rules_and_ties():
    c = [
        Candidate("a", "2017-06-01T00:00:00Z", 0.05, 0.9, {}),
        Candidate("b", "2017-06-03T00:00:00Z", 0.05, 1.0, {}),
        Candidate("c", "2017-06-02T00:00:00Z", 0.01, 0.6, {}),
    ]
    assert [x.id for x in rank(c, "least_cloud")] == ["c", "b", "a"]
    assert [x.id for x in rank(c, "most_recent")] == ["b", "c", "a"]
    assert [x.id for x in rank(c, "best_coverage")] == ["b", "a", "c"]


def test_aoi_cover_is_an_area_fraction():
    import shapely

    aoi = shapely.box(-121.50, 38.30, -121.48, 38.32)
    cover = AoiCover(aoi)
    half = shapely.geometry.mapping(shapely.box(-121.50, 38.30, -121.49, 38.32))
    assert cover({"geometry": half}) == pytest.approx(0.5, abs=0.01)
    assert cover({"geometry": None}) == 0.0


def test_no_scenes_match_names_the_filters(double, scenes, aois, tmp_path):
    src = make_source(double, scenes, aois, start="2018-01-01", end="2018-02-01")
    with pytest.raises(SourceError, match=r"no Planet scenes match for the train AOI .*2018-01-01.*cloud_cover <= 0.1"):
        src.load(tmp_path / "cache")
    assert double.counts["orders_created"] == 0


def test_scene_missing_most_of_the_aoi(double, scenes, aois, tmp_path):
    src = make_source(double, scenes, aois, train={"scene_id": scenes["edge"].id})
    with pytest.raises(SourceError, match=rf"scene {scenes['edge'].id} covers only \d+% of the train AOI"):
        src.load(tmp_path / "cache")
    assert double.counts["orders_created"] == 0
    src = make_source(double, scenes, aois, train={"scene_id": "20170101_000000_ffff"})
    with pytest.raises(SourceError, match="no PSScene scene '20170101_000000_ffff'"):
        src.load(tmp_path / "cache")


def test_explicit_scene_ids_and_fetch_search_command(double, scenes, aois, tmp_path, capsys, monkeypatch):
    from cropseg_plugins.planet.fetch import main

    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    args = [o for o in overrides(double, scenes, aois) if o.startswith("source.")]
    assert main(["search", *args, f"source.test.scene_id={scenes['test'].id}"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 Planet PSScene scenes match" in out and f"* {scenes['train'].id}" in out
    assert f"test: scene {scenes['test'].id} given" in out
    assert double.counts["orders_created"] == 0 and not (tmp_path / "cache").exists()
    assert main(["search", *args, "source.start=2019-01-01"]) == 1
    assert "no Planet scenes match" in capsys.readouterr().err


def test_fetch_download_fills_the_cache_the_pipeline_reuses(double, scenes, aois, tmp_path, capsys, monkeypatch):
    from cropseg_plugins.planet.fetch import main

    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    args = [o for o in overrides(double, scenes, aois) if o.startswith("source.")]
    assert main(["download", *args]) == 0
    out = capsys.readouterr().out
    assert f"train: scene {scenes['train'].id}, order " in out and "_3B_udm2_clip.tif" in out
    assert double.counts["orders_created"] == 2
    ss = make_source(double, scenes, aois).load(tmp_path / "cache" / "planet")  # where `cropseg` looks
    assert ss.train.metadata["from_cache"] and ss.test.metadata["from_cache"]
    assert double.counts["orders_created"] == 2


def test_fetch_download_stopped_by_sigterm_is_one_line_and_resumes(double, scenes, aois, tmp_path, capsys, monkeypatch):
    """SIGTERM to a real ``cropseg-fetch download`` once its first order is placed: exit 143, one line, no
    partial file in the cache; the next download resumes that order instead of placing a new one."""
    import signal

    from cropseg_plugins.planet.fetch import main

    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    args = [o for o in overrides(double, scenes, aois) if o.startswith("source.")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cropseg_plugins.planet.fetch", "download", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    err = []
    for line in proc.stderr:  # type: ignore[union-attr]
        err.append(line)
        if "placed Planet order" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, rest = proc.communicate(timeout=120)
    err.append(rest)
    text = "".join(err)
    assert proc.returncode == 143, text
    assert "Traceback" not in text
    assert [ln for ln in text.splitlines() if "error:" in ln] == [
        "cropseg-fetch: error: terminated by SIGTERM; partial downloads are discarded and the next download "
        "resumes the Planet order"
    ]
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".partial" in p.parts and p.is_file()]
    placed = double.counts["orders_created"]
    assert main(["download", *args]) == 0
    assert "resuming Planet order" in capsys.readouterr().err
    assert double.counts["orders_created"] == placed + 1  # the interrupted role resumed, the other one ordered


@pytest.mark.parametrize("fault", ["read_only", "full"])
def test_fetch_download_to_an_unwritable_cache_is_one_line(double, scenes, aois, tmp_path, fault):
    """The cache on a read-only folder is refused before any request; on a full disk the download fails
    with one line naming the reason (real subprocess, the folder a tmpfs: tests/fsfaults.py)."""
    cache = tmp_path / "cache"
    env = dict(os.environ, CROPSEG_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    args = [o for o in overrides(double, scenes, aois) if o.startswith("source.")]
    proc = run_on(
        [sys.executable, "-m", "cropseg_plugins.planet.fetch", "download", *args],
        **({"read_only": [cache]} if fault == "read_only" else {"full": [cache]}),
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("cropseg-fetch: error: "), proc.stderr[-3000:]
    assert "could not be written to" in lines[0] and str(cache) in lines[0], lines[0]
    if fault == "read_only":
        assert "read-only file system" in lines[0] and double.counts["orders_created"] == 0
    else:
        assert "no space left on device" in lines[0]


# -- loading ---------------------------------------------------------------------------------------------


def test_loaded_scenes_toa_udm2_mask_and_aoi(double, scenes, aois, tmp_path):
    ss = make_source(double, scenes, aois).load(tmp_path / "cache")
    assert ss.synthetic and ss.metadata["train_order_id"] in double.orders
    sc = ss.train
    assert sc.metadata["reflectance"] == "toa_xml" and sc.usable_path.name.endswith("_udm2_clip.tif")
    assert sc.grid.width == 140 and sc.grid.height == 140  # the 420 m AOI at 3 m
    s = scenes["train"]
    with sc.reader() as rd:
        blk = rd.read(Window(0, 0, sc.grid.width, sc.grid.height))
        r, c = rasterio.transform.rowcol(
            sc.grid.transform, s.left + (CLOUD[1].start + 15) * 3.0, s.top - (CLOUD[0].start + 8) * 3.0
        )
        assert not blk.valid[r, c]  # udm2: cloud
        assert blk.valid.mean() > 0.9
        refl = blk.reflectance[:, blk.valid]
        assert 0.0 < refl.mean() < 0.6 and refl.max() < 1.5  # TOA reflectance, not DN


def test_surface_reflectance_bundle_is_scaled(double, scenes, aois, tmp_path):
    toa = make_source(double, scenes, aois).load(tmp_path / "c1").train
    sr = make_source(double, scenes, aois, bundle="analytic_sr_udm2").load(tmp_path / "c2").train
    assert sr.metadata["reflectance"].startswith("surface_reflectance") and "_SR_clip" in sr.path.name
    w = Window(0, 0, 64, 64)
    with toa.reader() as a, sr.reader() as b:
        ba, bb = a.read(w), b.read(w)
    assert (ba.valid == bb.valid).all()
    np.testing.assert_allclose(bb.reflectance, ba.reflectance, atol=1e-4)


def test_fallback_bundle_when_an_asset_is_missing(double, scenes, aois, tmp_path):
    late = {"scene_id": scenes["train_late"].id}
    with pytest.raises(SourceError, match="ended 'failed': Order failed: the bundle's assets are not available"):
        make_source(double, scenes, aois, train=late, bundle="analytic_sr_udm2").load(tmp_path / "cache")
    ss = make_source(
        double, scenes, aois, train=late, bundle="analytic_sr_udm2", fallback_bundles=["analytic_udm2"]
    ).load(tmp_path / "cache")
    assert ss.train.metadata["bundle"] == "analytic_udm2" and ss.train.metadata["reflectance"] == "toa_xml"
    assert ss.test.metadata["bundle"] == "analytic_sr_udm2"
    assert ss.test.metadata["reflectance"].startswith("surface_reflectance")


def test_unknown_bundle_lists_the_valid_ones(double, scenes, aois, tmp_path):
    src = make_source(double, scenes, aois, bundle="analytic_nope")
    with pytest.raises(ConfigError, match="analytic_nope.*analytic_udm2"):
        src.load(tmp_path / "cache")


def test_bundles_spec_is_seeded_from_the_api_url_else_the_shipped_copy(double, scenes, aois):
    from planet import specs

    double.spec = {"bundles": {**SPEC["bundles"], "double_only": {"assets": {"PSScene": ["ortho_visual"]}}}}
    api = make_source(double, scenes, aois).api()
    assert api.spec_origin.startswith(double.url) and "double_only" in specs.get_bundle_names()
    del specs.PRODUCT_BUNDLES.cache
    double.spec = None
    api = make_source(double, scenes, aois).api()
    assert api.spec_origin == "the copy shipped with cropseg"
    assert {"analytic_udm2", "analytic_sr_udm2"} <= set(specs.get_bundle_names())


class SteppingClock:
    """A controllable clock for the SDK's request limiter: every reading advances it by ``step`` (the limiter's
    polling interval), so the times the limiter lets requests through depend on its logic alone, not on how
    busy the machine is (wall-clock gaps between arrivals at the double shrink after a delayed request)."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("rate", [10, 4, 0])
def test_requests_are_spaced_by_the_rate_limit(double, scenes, aois, rate):
    """source.rate_limit spaces the SDK session's requests (10/s, the SDK's own throttle, by default; the
    other tests use 0 against the double, which never rate-limits); 0 lets them through at once."""
    api = make_source(double, scenes, aois, rate_limit=rate).api()
    limiter = api.pl._session._limiter
    assert limiter.cadence == (pytest.approx(1 / rate) if rate else 0)
    clock = SteppingClock(limiter.retry_interval)
    limiter._get_now = clock
    passed: list[float] = []
    throttle = limiter.throttle

    async def recorded_throttle() -> None:
        await throttle()
        passed.append(clock.now)

    limiter.throttle = recorded_throttle
    start = len(double.request_times)
    for _ in range(4):
        assert api.get_item("PSScene", scenes["train"].id)["id"] == scenes["train"].id
    assert len(double.request_times) - start == 4 and len(passed) == 4  # every request went through the limiter
    gaps = [b - a for a, b in zip(passed, passed[1:])]
    if rate:  # at the cadence, at most one polling step late (float sums of the step)
        assert all(1 / rate - 1e-9 <= g <= 1 / rate + 2 * clock.step for g in gaps), gaps
    else:
        assert clock.now == 0.0  # no spacing: the limiter never reads the clock


def test_bad_rate_limit_is_a_config_error(double, scenes, aois):
    with pytest.raises(ConfigError, match="source.rate_limit: must be >= 0"):
        make_source(double, scenes, aois, rate_limit=-1)


# -- cache ----------------------------------------------------------------------------------------------


def test_cache_reuse_and_corrupt_file_refetched_alone(double, scenes, aois, tmp_path):
    cache = tmp_path / "cache"
    make_source(double, scenes, aois).load(cache)
    assert double.counts["orders_created"] == 2
    before = dict(double.downloads)
    tif = next(cache.rglob(f"{scenes['train'].id}_3B_AnalyticMS_clip.tif"))
    data = bytearray(tif.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tif.write_bytes(bytes(data))
    ss = make_source(double, scenes, aois).load(cache)
    assert double.counts["orders_created"] == 2  # the earlier order is reused
    changed = {k for k in double.downloads if double.downloads[k] != before.get(k)}
    assert changed == {tif.name, "manifest.json"}
    assert ss.train.metadata["from_cache"] is False and ss.test.metadata["from_cache"] is True


def test_download_cut_off_leaves_nothing_truncated_and_resumes(double, scenes, aois, tmp_path):
    cache = tmp_path / "cache"
    name = f"{scenes['train'].id}_3B_AnalyticMS_clip.tif"
    double.truncate[name] = 2  # both attempts (download_retries=1) are cut off midway
    with pytest.raises(SourceError, match=rf"download of PSScene/{name} failed 2 times \(transfer cut off"):
        make_source(double, scenes, aois).load(cache)
    assert not list(cache.rglob(name)) and not [p for p in cache.rglob("*") if p.is_file() and ".partial" in str(p)]
    xml = next(cache.rglob(f"{scenes['train'].id}_3B_AnalyticMS_metadata_clip.xml"))  # verified files stay
    before = dict(double.downloads)
    ss = make_source(double, scenes, aois).load(cache)
    assert double.counts["orders_created"] == 2  # train order resumed, test order placed
    assert double.downloads[name] == before[name] + 1 and double.downloads[xml.name] == before[xml.name]
    assert ss.train.path.name == name and ss.train.grid.width == 140


def test_one_cut_off_or_corrupt_download_is_retried(double, scenes, aois, tmp_path):
    double.truncate["_udm2_clip.tif"] = 1
    double.corrupt["_metadata_clip.xml"] = 1
    ss = make_source(double, scenes, aois, download_retries=2).load(tmp_path / "cache")
    assert ss.train.usable_path.is_file() and double.counts["orders_created"] == 2


@pytest.mark.parametrize("outcome", ["failed", "partial"])
def test_failed_or_partial_order(double, scenes, aois, tmp_path, outcome):
    cache = tmp_path / "cache"
    double.order_outcome = outcome
    with pytest.raises(SourceError, match=rf"Planet order [0-9a-f-]+ for train scene .* ended '{outcome}': .*injected"):
        make_source(double, scenes, aois).load(cache)
    assert cached_files(cache) == []  # no order record, no manifest, no files
    double.order_outcome = "success"
    make_source(double, scenes, aois).load(cache)
    assert double.counts["orders_created"] == 3  # a new order replaces the failed one


# -- HTTP faults ------------------------------------------------------------------------------------------


def test_missing_key(double, scenes, aois, tmp_path, monkeypatch):
    monkeypatch.delenv("PL_API_KEY")
    with pytest.raises(SourceError, match="no Planet API key: set PL_API_KEY"):
        make_source(double, scenes, aois).load(tmp_path / "cache")
    assert not double.requests


@pytest.mark.parametrize(
    "status,match",
    [(401, r"rejected the API key \(HTTP 401\).*PL_API_KEY"), (403, r"refused access \(HTTP 403\).*PL_API_KEY")],
)
def test_auth_errors(double, scenes, aois, tmp_path, status, match):
    double.fail("search", status)
    with pytest.raises(SourceError, match=match):
        make_source(double, scenes, aois).load(tmp_path / "cache")
    assert double.counts[f"fault_{status}"] == 1 and double.counts["searches"] == 0


@pytest.mark.parametrize(
    "endpoint,status", [("search", 429), ("order_create", 500), ("order_get", 503), ("download", 429), ("item", 502)]
)
def test_transient_errors_are_retried(double, scenes, aois, tmp_path, endpoint, status):
    double.fail(endpoint, status, status)
    train = {"scene_id": scenes["train"].id} if endpoint == "item" else None
    ss = make_source(double, scenes, aois, train=train).load(tmp_path / "cache")
    assert double.counts[f"fault_{status}"] == 2 and ss.train.metadata["scene_id"] == scenes["train"].id


@pytest.mark.parametrize(
    "status,match",
    [
        (429, r"kept rate-limiting \(HTTP 429\) while searching"),
        (503, r"HTTP 503 after 3 attempts"),
        (500, r"HTTP 500 after 3 attempts"),
    ],
)
def test_persistent_errors_stop_after_bounded_retries(double, scenes, aois, tmp_path, status, match):
    double.fail("search", *[status] * 20)
    with pytest.raises(SourceError, match=match):
        make_source(double, scenes, aois).load(tmp_path / "cache")
    assert double.counts[f"fault_{status}"] == 3  # first try + source.retries=2


def test_config_errors(tmp_path, aois):
    a = str(aois["train"])
    with pytest.raises(ConfigError, match="unknown option.*scene"):
        PlanetSource(train={"aoi": a, "scene": "x"}, test={"aoi": a})
    with pytest.raises(ConfigError, match="source.select"):
        PlanetSource(train={"aoi": a}, test={"aoi": a}, select="prettiest")
    with pytest.raises(ConfigError, match="start 2017-06-09 is after end"):
        PlanetSource(train={"aoi": a}, test={"aoi": a}, start="2017-06-09", end="2017-06-01")
    with pytest.raises(ConfigError, match="max_cloud_cover"):
        PlanetSource(train={"aoi": a, "max_cloud_cover": 5}, test={"aoi": a})
    # files are read when the source is used, before any request
    with pytest.raises(ConfigError, match=r"source.train.aoi: required"):
        PlanetSource(train={"aoi": "???", "ground_truth": "gt.geojson"}, test={"aoi": a}).load(tmp_path)
    with pytest.raises(InputFileError, match=r"missing.geojson: file not found \(source.test.aoi\)"):
        PlanetSource(train={"aoi": a}, test={"aoi": str(tmp_path / "missing.geojson")}).load(tmp_path)
    with pytest.raises(InputFileError, match=r"gt.geojson: file not found \(source.train.ground_truth\)"):
        PlanetSource(train={"aoi": a, "ground_truth": "gt.geojson"}, test={"aoi": a}).load(tmp_path)
    with pytest.raises(ConfigError, match=r"source.test.aoi: the AOI holds no polygon"):
        PlanetSource(train={"aoi": a}, test={"aoi": {"type": "Point", "coordinates": [-121.5, 38.3]}}).aoi("test")
    inline = json.loads(aois["test"].read_text())
    from_file = PlanetSource(train={"aoi": a}, test={"aoi": str(aois["test"])}).aoi("test")
    assert PlanetSource(train={"aoi": a}, test={"aoi": inline}).aoi("test").equals(from_file)
    assert not list(tmp_path.rglob("*.tif"))


# -- the README's command for the seed study ----------------------------------------------------------------


def readme_seed_command() -> list[str]:
    """The overrides of the README's ``cropseg ... source=planet`` seed command, continuation lines joined."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index(".venv/bin/cropseg +experiment=seed_knn source=planet")
    block = text[start : text.index("```", start)]
    return shlex.split(block.replace("\\\n", " ").replace("$D", "SEED_DATA"))[1:]


@pytest.mark.shared
def test_readme_seed_command_composes_and_validates_offline(seed_data, offline_env, monkeypatch):
    """The seed's acquisition command is valid as written: its config composes, its AOIs and ground truth
    are read, and the order request builds with the SDK offline (spec from the shipped copy, since the
    live API is unreachable here)."""
    from planet import order_request

    from cropseg.config import compose
    from cropseg.pipeline import build_stages
    from cropseg_plugins.planet.client import seed_bundles_spec

    args = [a.replace("SEED_DATA", str(seed_data.directory)) for a in readme_seed_command()]
    assert "source.train.scene_id='20160831_180231_0e0e'" in args and "+experiment=seed_knn" in args
    stages = build_stages(compose(args))
    src = stages.source
    assert isinstance(src, PlanetSource) and src.api_url is None and src.bundle == "analytic_udm2"
    assert src.roles["test"]["scene_id"] == "20160831_180257_0e26"
    west, south, east, north = src.aoi("train").bounds
    assert -121.6 < west < east < -121.5 and 38.29 < south < north < 38.33  # near Sacramento, EPSG:4326
    assert seed_bundles_spec("https://api.planet.com", timeout=2) == "the copy shipped with cropseg"
    product = order_request.product(["20160831_180231_0e0e"], src.bundle, src.item_type)
    assert product["product_bundle"] == "analytic_udm2" and product["item_type"] == "PSScene"
    unquoted = [a.replace("'", "") for a in args]  # Hydra would read the test id as a float
    with pytest.raises(ConfigError, match=r"source.test.scene_id: got the number 2.01608\d*e\+40; .*quote the id"):
        build_stages(compose(unquoted))


# -- a season: several time windows -> one time stack per part ------------------------------------------


@pytest.fixture(scope="session")
def season(tmp_path_factory):
    """SYNTHETIC time stacks (train and test, three dates of 2017) plus two June decoys (generated once)."""
    return season_scenes(tmp_path_factory.mktemp("planet-season"))


@pytest.fixture
def season_double(season, tmp_path, offline_env):
    with PlanetDouble(season, FAKE_KEY, tmp_path / "double") as d:
        yield d


@pytest.fixture
def season_aois(season, tmp_path):
    """AOI files inside the train and test places (420 m squares of the 576 m scenes)."""
    out = {}
    for role in ("train", "test"):
        s = season[f"{role}_t0"]
        path = tmp_path / f"season-aoi-{role}.geojson"
        path.write_text(json.dumps(utm_box_geojson(s.left, s.top, 60, 60, 480, 480)))
        out[role] = path
    return out


def season_source(double, season, aois, windows=SEASON_WINDOWS, **opts) -> PlanetSource:
    parts = {
        role: {"aoi": str(aois[role]), "ground_truth": str(season[f"{role}_t0"].ground_truth)}
        for role in ("train", "test")
    }
    return PlanetSource(
        train=parts["train"], test=parts["test"], api_url=double.url, windows=list(windows), **{**QUICK, **opts}
    )


def ordered_ids(double) -> list[list[str]]:
    return [o.request["products"][0]["item_ids"] for o in double.orders.values()]


def test_windows_give_a_time_stack_from_one_order_per_part_then_the_cache(season_double, season, season_aois, tmp_path):
    cache = tmp_path / "cache"
    ss = season_source(season_double, season, season_aois).load(cache)
    for role in ("train", "test"):
        want = [season[f"{role}_t{t}"] for t in range(3)]
        scene = getattr(ss, role)
        assert scene.n_dates == 3
        assert list(scene.dates) == [s.acquired.date().isoformat() for s in want]  # from each metadata XML
        assert scene.metadata["scene_ids"] == ",".join(s.id for s in want)
        assert scene.metadata["windows"] == ",".join(SEASON_WINDOWS)
        assert all(
            a.usable_path is not None and a.usable_path.name.endswith("_udm2_clip.tif") for a in scene.acquisitions
        )
        with scene.reader() as reader:  # every date read onto the first date's grid
            block = reader.read(Window(0, 0, 32, 32))
        assert block.reflectance.shape[0] == 3 * 4 and block.date_valid.shape[0] == 3
    # June: the decoys lose (hazy: less cloud_cover but 40 % clear; sliver: covers under half the AOI)
    assert season["train_t1"].id in ss.train.metadata["scene_ids"]
    assert season["hazy"].id not in ss.train.metadata["scene_ids"]
    assert season_double.counts["orders_created"] == 2  # ONE order per part, three scenes each
    assert sorted(map(len, ordered_ids(season_double))) == [3, 3]
    assert all(o.request.get("tools") for o in season_double.orders.values())  # clipped to the AOI

    again = season_source(season_double, season, season_aois).load(cache)
    assert season_double.counts["orders_created"] == 2  # reused, nothing ordered
    assert again.train.metadata["from_cache"] and list(again.test.dates) == list(ss.test.dates)


def test_best_usable_ranks_clear_percent_over_cloud_cover():
    hazy = Candidate("hazy", "2017-06-22T00:00:00Z", 0.03, 1.0, {"properties": {"clear_percent": 40}})
    clear = Candidate("clear", "2017-06-19T00:00:00Z", 0.08, 1.0, {"properties": {"clear_percent": 92}})
    half = Candidate("half", "2017-06-24T00:00:00Z", 0.0, 0.5, {"properties": {}})
    assert [c.id for c in rank([hazy, clear, half], "best_usable")] == ["clear", "half", "hazy"]
    assert [c.id for c in rank([hazy, clear, half], "least_cloud")][0] == "half"
    assert half.clear == 1.0 and clear.usable == pytest.approx(0.92)


def test_a_window_with_no_usable_scene_is_named_before_any_order(season_double, season, season_aois, tmp_path):
    windows = [*SEASON_WINDOWS, "2017-12-01/2017-12-31"]
    with pytest.raises(SourceError, match=r"over the train AOI in window 3 2017-12-01/2017-12-31: no scene matches"):
        season_source(season_double, season, season_aois, windows).load(tmp_path / "cache")
    # a window whose only scenes cover too little of the AOI (the sliver alone, once June's others are out)
    only_sliver = ["2017-03-01/2017-03-31", "2017-06-24/2017-06-24"]
    with pytest.raises(SourceError, match=r"window 1 2017-06-24/2017-06-24: 1 scene\(s\) match but none covers 50%"):
        season_source(season_double, season, season_aois, only_sliver).load(tmp_path / "cache")
    assert season_double.counts["orders_created"] == 0


def test_partial_order_of_a_stack_uses_nothing_and_the_next_run_orders_again(
    season_double, season, season_aois, tmp_path
):
    cache = tmp_path / "cache"
    lost = season["train_t2"].id
    season_double.failed_items = {lost}
    with pytest.raises(
        SourceError, match=rf"ended 'partial': .*1 of 3 items failed .*\(not delivered: {lost}\)\. Nothing from it"
    ):
        season_source(season_double, season, season_aois).load(cache)
    assert cached_files(cache) == []  # no order record, manifest or file of the partial order kept
    season_double.failed_items = set()
    ss = season_source(season_double, season, season_aois).load(cache)
    assert ss.train.n_dates == 3 and season_double.counts["orders_created"] == 3  # a new train order, the test one


def test_window_config_errors(season_aois):
    a = {"aoi": str(season_aois["train"])}
    with pytest.raises(ConfigError, match="one window .* makes no time stack"):
        PlanetSource(train=a, test=a, windows=["2017-03-01/2017-03-31"])
    with pytest.raises(ConfigError, match=r"2017-03-20/2017-04-30 \(window 1\) starts before"):
        PlanetSource(train=a, test=a, windows=["2017-03-01/2017-03-31", "2017-03-20/2017-04-30"])
    with pytest.raises(ConfigError, match=r"source.windows\[1\]: a window START/END"):
        PlanetSource(train=a, test=a, windows=["2017-03-01/2017-03-31", "2017-06"])
    with pytest.raises(ConfigError, match="leave start and end unset"):
        PlanetSource(train=a, test=a, windows=list(SEASON_WINDOWS), start="2017-01-01")
    with pytest.raises(ConfigError, match="scene_id and source.windows"):
        PlanetSource(train={**a, "scene_id": "x"}, test=a, windows=list(SEASON_WINDOWS))
    with pytest.raises(ConfigError, match=r"source.test.windows\[0\].*starts after it ends"):
        PlanetSource(train=a, test={**a, "windows": ["2017-05-01/2017-04-01", "2017-06-01/2017-06-02"]})


def test_windows_compose_from_the_command_line_syntax(season_aois):
    from cropseg.config import compose

    cfg = compose(
        ["source=planet", "source.windows=[2016-05-01/2016-05-31,2016-07-01/2016-07-31,2016-09-01/2016-09-30]"]
    )
    assert list(cfg.source.windows) == ["2016-05-01/2016-05-31", "2016-07-01/2016-07-31", "2016-09-01/2016-09-30"]
    a = {"aoi": str(season_aois["train"])}
    src = PlanetSource(train=a, test=a, windows=cfg.source.windows)
    assert [w[2] for w in src.roles["test"]["windows"]] == list(cfg.source.windows)


def season_overrides(double, season, aois, windows=SEASON_WINDOWS) -> list[str]:
    return [
        "source=planet",
        f"source.api_url={double.url}",
        f"source.windows=[{','.join(windows)}]",
        *(f"source.{r}.aoi={aois[r]}" for r in ("train", "test")),
        *(f"source.{r}.ground_truth={season[f'{r}_t0'].ground_truth}" for r in ("train", "test")),
        "source.poll_seconds=0",
        "source.retry_backoff_max=0.01",
        "source.rate_limit=0",
        "features=temporal",
        "classifier.k_grid=[3,5]",
        "train.max_per_class=1000",
    ]


@pytest.mark.slow
def test_cli_season_stack_run_logs_dates_and_keeps_the_key_out(
    tmp_path, season_double, season, season_aois, cli_env, tracking_uri, offline_env
):
    env = {**cli_env, **offline_env}
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli(season_overrides(season_double, season, season_aois), work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id])
    assert run.info.status == "FINISHED"
    dates = [season[f"train_t{t}"].acquired.date().isoformat() for t in range(3)]
    assert run.data.params["train.dates"] == ",".join(dates)
    assert run.data.tags["cropseg.train.scene_ids"] == ",".join(season[f"train_t{t}"].id for t in range(3))
    assert season_double.counts["orders_created"] == 2
    assert all(w in run.data.params["source.windows"] for w in SEASON_WINDOWS)
    assert run.data.tags["cropseg.test.windows"] == ",".join(SEASON_WINDOWS)
    needle = FAKE_KEY.encode()
    assert not files_containing(tmp_path, needle)
    assert FAKE_KEY not in proc.stdout + proc.stderr


def test_cli_window_with_no_scene_is_one_error_line(tmp_path, season_double, season, season_aois, cli_env, offline_env):
    env = {**cli_env, **offline_env}
    work = tmp_path / "work"
    work.mkdir()
    windows = [SEASON_WINDOWS[0], "2017-07-15/2017-07-31", SEASON_WINDOWS[2]]
    proc = run_cli(season_overrides(season_double, season, season_aois, windows), work, env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("cropseg: error:")]
    assert len(err) == 1 and "window 1 2017-07-15/2017-07-31: no scene matches" in err[0], proc.stderr[-2000:]
    assert season_double.counts["orders_created"] == 0
    assert FAKE_KEY not in proc.stdout + proc.stderr


def test_fetch_search_and_download_by_window(season_double, season, season_aois, tmp_path, capsys, monkeypatch):
    from cropseg_plugins.planet.fetch import main

    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    args = [o for o in season_overrides(season_double, season, season_aois) if o.startswith("source.")]
    assert main(["search", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("train window ") == 3 and out.count("test window ") == 3
    june = next(block for block in out.split("\n\n") if block.startswith(f"train window 1 {SEASON_WINDOWS[1]}"))
    assert f"* {season['train_t1'].id}" in june and f"  {season['hazy'].id}" in june  # hazy listed, not chosen
    assert season_double.counts["orders_created"] == 0
    assert main(["download", *args]) == 0
    assert f"train: scenes {', '.join(season[f'train_t{t}'].id for t in range(3))}, order " in capsys.readouterr().out
    ss = season_source(season_double, season, season_aois).load(tmp_path / "cache" / "planet")  # what cropseg reuses
    assert ss.train.metadata["from_cache"] and ss.test.n_dates == 3
    assert season_double.counts["orders_created"] == 2
