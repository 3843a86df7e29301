"""The hard SYNTHETIC preset of the sample source (``source.preset=hard``): each documented difficulty is
there, and the default preset is untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cropseg.errors import ConfigError
from cropseg_plugins.rasterize import RasterizeLabeler
from cropseg_plugins.sample import HARD, SampleSource, synth
from cropseg_plugins.sample.synth import CROP_KINDS, Difficulty, Kind

SIZE = 500


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard")
    scenes = SampleSource(size=SIZE, seed=1, preset="hard").load(d)
    labels = {role: RasterizeLabeler().label(getattr(scenes, role), d / f"{role}.tif") for role in ("train", "test")}
    return d, scenes, labels


def share(labels) -> float:
    c = labels.counts
    return c["crop"] / (c["crop"] + c["noncrop"])


def test_train_and_test_crop_shares_differ_as_documented(hard):
    _, scenes, labels = hard
    assert share(labels["train"]) == pytest.approx(0.45, abs=0.02)
    assert share(labels["test"]) == pytest.approx(0.25, abs=0.02)
    assert scenes.synthetic and scenes.metadata["preset"] == "hard"
    assert scenes.test.metadata["preset"] == "hard" and scenes.test.metadata["acquired"].startswith("2017-08-24")


def test_the_default_preset_keeps_its_folder_and_differs_from_hard(hard, tmp_path):
    d, scenes, _ = hard
    assert Path(scenes.train.path).parent.name == f"v{synth_version()}-hard1-seed1-{SIZE}x{SIZE}"
    default = SampleSource(size=SIZE, seed=1).load(tmp_path)
    assert Path(default.train.path).parent.name == f"v{synth_version()}-seed1-{SIZE}x{SIZE}"
    assert Path(default.train.path).read_bytes() != Path(scenes.train.path).read_bytes()
    with pytest.raises(ConfigError, match="source.preset='harder'"):
        SampleSource(preset="harder")


def synth_version() -> int:
    from cropseg_plugins.sample import GENERATOR_VERSION

    return GENERATOR_VERSION


def layout(difficulty: Difficulty | None, seed: int = 11):
    return synth._build_layout(seed, SIZE, SIZE, 626000.0, 4243000.0, difficulty)


def test_crop_like_cover_differs_from_crop_in_texture_not_in_its_own_bands():
    """Green grass (non-crop) spans the spectrum of the green crops; its texture (local sd of NIR) is
    rougher. Shrubs (non-crop) look like orchards pixel by pixel."""
    lay = layout(Difficulty(crop_share=0.45), seed=13)
    refl, ids, valid = synth._render_block(lay, 0, 0, SIZE, SIZE)
    kind = lay.table["kind"][ids]
    nir, red = refl[3], refl[2]
    ndvi = (nir - red) / (nir + red)
    local_sd = np.sqrt(np.maximum(ndimage.uniform_filter(nir**2, 5) - ndimage.uniform_filter(nir, 5) ** 2, 0))
    interior = ndimage.binary_erosion(valid, iterations=3)

    def of(k):
        m = (kind == k) & interior
        m = ndimage.binary_erosion(m, iterations=3)  # away from object edges
        assert m.sum() > 500, k
        return m

    grass, crop, shrub, orchard = of(Kind.GREEN_GRASS), of(Kind.GREEN_CROP), of(Kind.SHRUB), of(Kind.ORCHARD)
    assert Kind.GREEN_GRASS not in CROP_KINDS and Kind.SHRUB not in CROP_KINDS
    # a pixel's own bands: the medians of NDVI overlap within the spread of the crops
    lo, hi = np.percentile(ndvi[crop], [10, 90])
    assert lo < np.median(ndvi[grass]) < hi
    lo, hi = np.percentile(ndvi[orchard], [10, 90])
    assert lo < np.median(ndvi[shrub]) < hi
    # texture: rougher than a green crop field
    assert np.median(local_sd[grass]) > 1.5 * np.median(local_sd[crop])


def test_label_noise_and_mimics_are_in_the_survey():
    b = synth._LayoutBuilder(11, SIZE, SIZE, 626000.0, 4243000.0, Difficulty(crop_share=0.3, label_noise=0.1))
    b.build()
    f = b.f
    noisy = b.noisy
    assert 0.05 < noisy.sum() / f.surveyed.sum() < 0.16
    says_crop = np.isin(f.survey_class, synth.CROP_CLASSES)
    is_crop = np.isin(f.kind, list(CROP_KINDS))
    # every noisy field's survey says the other side of the crop line from its cover... (the default's
    # stale survey changes more, so only the noisy ones are asserted)
    assert np.all(says_crop[noisy] != is_crop[noisy])
    mimic = np.isin(f.kind, [Kind.GREEN_GRASS, Kind.SHRUB]) & ~noisy
    assert mimic.sum() > 5 and np.all(f.survey_class[mimic] == "NV") and np.all(f.surveyed[mimic])


def test_the_test_scene_has_a_brightness_season_offset():
    gain = HARD["test"][2].band_gain
    assert gain is not None
    plain = layout(Difficulty(crop_share=0.25))
    offset = layout(Difficulty(crop_share=0.25, band_gain=gain))
    a, _, valid = synth._render_block(plain, 0, 0, 64, 64)
    b, _, _ = synth._render_block(offset, 0, 0, 64, 64)
    for band in range(4):
        np.testing.assert_allclose(b[band][valid], a[band][valid] * np.float32(gain[band]), rtol=1e-6)
    assert gain[3] < 1 < min(gain[:3])  # later in the season: less near-IR, brighter visible bands
