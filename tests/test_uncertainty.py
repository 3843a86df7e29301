"""Spatial block bootstrap (cropseg.uncertainty): interval coverage on SYNTHETIC maps with a known
accuracy, paired differences, and per-block confusion matrices streamed from real GeoTIFFs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cropseg.evaluate import confusion_from_rasters
from cropseg.targets import get_target
from cropseg.uncertainty import block_bootstrap, block_confusions, compare_entries, resample_weights

#: SYNTHETIC map model: every pixel is crop with probability Q; each block has its own error rate drawn
#: from Beta(A, B) (errors cluster in blocks, as they do in fields), pixels err independently at that rate
Q, A, B = 0.3, 2.0, 18.0
MEAN_ERR = A / (A + B)


def synthetic_blocks(rng: np.random.Generator, n_blocks: int, px: int) -> np.ndarray:
    """Per-block confusion matrices of one SYNTHETIC map (counts drawn from the model above)."""
    crop = rng.binomial(px, Q, n_blocks)
    err = rng.beta(A, B, n_blocks)
    fn = rng.binomial(crop, err)
    fp = rng.binomial(px - crop, err)
    cms = np.stack([px - crop - fp, fp, fn, crop - fn], axis=1).astype(np.float64)
    return cms.reshape(-1, 2, 2)


def population_value(name: str) -> float:
    """The target of the model's expected confusion matrix: what an endless map would score."""
    cm = np.array([[(1 - Q) * (1 - MEAN_ERR), (1 - Q) * MEAN_ERR], [Q * MEAN_ERR, Q * (1 - MEAN_ERR)]])
    return get_target(name).score(cm)


def coverage(name: str, pixels_per_block: int, n_maps: int = 300, n_blocks: int = 64) -> float:
    rng = np.random.default_rng(7)
    truth = population_value(name)
    target = get_target(name)
    hits = 0
    for seed in range(n_maps):
        cms = synthetic_blocks(rng, n_blocks, pixels_per_block)
        hits += block_bootstrap(cms, target, replicates=400, seed=seed).contains(truth)
    return hits / n_maps


@pytest.mark.parametrize("name", ["accuracy", "crop_f1"])
def test_block_bootstrap_covers_the_known_value_about_95_percent(name: str) -> None:
    cov = coverage(name, pixels_per_block=400)
    # 300 maps: the binomial sd of a 95 % coverage is 1.3 points; the percentile bootstrap runs a little short
    assert 0.89 <= cov <= 0.99, cov


def test_pixel_bootstrap_of_clustered_errors_undercovers() -> None:
    """The reason for blocks: resampling single pixels of the same SYNTHETIC maps (every pixel its own
    block) ignores that errors cluster, and its intervals miss the known value far more often."""
    rng = np.random.default_rng(3)
    truth = population_value("accuracy")
    target = get_target("accuracy")
    hits_pixel = hits_block = 0
    for seed in range(60):
        cms = synthetic_blocks(rng, 32, 100)
        hits_block += block_bootstrap(cms, target, replicates=300, seed=seed).contains(truth)
        pixels = []  # the same map, one confusion matrix per pixel
        for cm in cms.reshape(-1, 4).astype(int):
            for cell, count in enumerate(cm):
                pixels += [cell] * count
        one_hot = np.eye(4)[np.array(pixels)].reshape(-1, 2, 2)
        hits_pixel += block_bootstrap(one_hot, target, replicates=300, seed=seed).contains(truth)
    assert hits_pixel / 60 < 0.75
    assert hits_block / 60 > 0.85


def test_resample_weights_draw_every_block_count_once_per_replicate() -> None:
    w = resample_weights(10, 50, seed=1)
    assert w.shape == (50, 10)
    assert np.all(w.sum(axis=1) == 10)
    assert np.array_equal(w, resample_weights(10, 50, seed=1))
    assert not np.array_equal(w, resample_weights(10, 50, seed=2))


def test_paired_difference_detects_a_better_map_and_not_an_equal_one() -> None:
    """Two SYNTHETIC maps on the same blocks: one with half the errors in every block is distinguishable;
    a second draw from the same model as the top one is not (on most seeds)."""
    rng = np.random.default_rng(11)
    target = get_target("crop_f1")
    base = synthetic_blocks(rng, 64, 400)
    better = base.copy()
    better[:, 1, 1] += np.floor(base[:, 1, 0] / 2)  # half the missed crop found
    better[:, 1, 0] -= np.floor(base[:, 1, 0] / 2)
    better[:, 0, 0] += np.floor(base[:, 0, 1] / 2)  # half the false crop cleared
    better[:, 0, 1] -= np.floor(base[:, 0, 1] / 2)
    res = compare_entries([[better], [base]], target, top=0, replicates=500)
    assert res.intervals[0].estimate > res.intervals[1].estimate
    assert res.differences[1].high < 0
    assert res.distinguishable(1) and not res.distinguishable(0)
    # the paired difference is much narrower than the unpaired spread of either score
    width = res.differences[1].high - res.differences[1].low
    assert width < (res.intervals[1].high - res.intervals[1].low) / 2

    same = 0
    for seed in range(20):  # two maps of the same model: the difference interval holds 0 most times
        a, b = synthetic_blocks(rng, 64, 400), synthetic_blocks(rng, 64, 400)
        same += not compare_entries([[a], [b]], target, replicates=300, seed=seed).distinguishable(1)
    assert same >= 15


def test_seed_group_interval_is_that_of_the_mean() -> None:
    rng = np.random.default_rng(5)
    target = get_target("crop_f1")
    seeds = [synthetic_blocks(rng, 32, 200) for _ in range(3)]
    res = compare_entries([seeds, [seeds[0]]], target, top=0, replicates=200)
    scores = [target.score(s.sum(axis=0)) for s in seeds]
    assert res.intervals[0].estimate == pytest.approx(np.mean(scores))
    assert res.intervals[0].low < res.intervals[0].estimate < res.intervals[0].high


def test_entries_on_different_blocks_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="same blocks"):
        compare_entries([[synthetic_blocks(rng, 8, 10)], [synthetic_blocks(rng, 9, 10)]], get_target(None))


def _write(path, data) -> None:  # noqa: ANN001
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32610",
        "transform": from_origin(630000, 4270000, 3, 3),
        "nodata": 255,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def test_block_confusions_from_geotiffs_sum_to_the_whole_map(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, (70, 90)).astype(np.uint8)
    truth[:5] = 255
    pred = np.where(rng.random(truth.shape) < 0.8, truth, 1 - truth).astype(np.uint8)
    pred[truth == 255] = 255
    pred[-3:, :] = 255
    _write(tmp_path / "t.tif", truth)
    _write(tmp_path / "p.tif", pred)
    cms = block_confusions(tmp_path / "t.tif", tmp_path / "p.tif", block=32)
    assert cms.shape == (3 * 3, 2, 2)  # 70x90 px in 32-px blocks: 3 rows x 3 columns
    assert np.array_equal(cms.sum(axis=0), confusion_from_rasters(tmp_path / "t.tif", tmp_path / "p.tif"))
    top_left = truth[:32, :32], pred[:32, :32]
    m = (top_left[0] != 255) & (top_left[1] != 255)
    assert cms[0, 1, 1] == np.count_nonzero((top_left[0] == 1) & (top_left[1] == 1) & m)
