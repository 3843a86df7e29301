"""Feature plugins: ``bands`` and ``indices`` (values, names, zero denominators), and the pipeline using the
configured features for training and prediction alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

import cropseg
from cropseg.errors import ConfigError
from cropseg.testing import local_overrides
from cropseg.types import BAND_NAMES, Features
from cropseg_plugins.bands import BandFeatures
from cropseg_plugins.indices import IndexFeatures

# (bands, h=1, w=3): vegetation, bare soil, a nodata pixel (all zero)
REFL = np.array([[[0.05, 0.12, 0.0]], [[0.08, 0.15, 0.0]], [[0.05, 0.19, 0.0]], [[0.40, 0.25, 0.0]]], dtype=np.float32)


def test_bands_are_the_reflectance():
    f = BandFeatures()
    assert isinstance(f, Features)
    assert f.names(BAND_NAMES) == ["blue", "green", "red", "nir"]
    out = f.compute(REFL, BAND_NAMES)
    assert out.dtype == np.float32 and out.shape == (4, 1, 3)
    np.testing.assert_array_equal(out, REFL)


def test_indices_values_and_names():
    f = IndexFeatures()
    assert isinstance(f, Features)
    assert f.names(BAND_NAMES) == ["blue", "green", "red", "nir", "ndvi", "ndwi", "savi", "sr"]
    out = f.compute(REFL, BAND_NAMES)
    assert out.dtype == np.float32 and out.shape == (8, 1, 3)
    np.testing.assert_array_equal(out[:4], REFL)
    blue, green, red, nir = (REFL[i, 0, :2].astype(np.float64) for i in range(4))
    np.testing.assert_allclose(out[4, 0, :2], (nir - red) / (nir + red), rtol=1e-6)
    np.testing.assert_allclose(out[5, 0, :2], (green - nir) / (green + nir), rtol=1e-6)
    np.testing.assert_allclose(out[6, 0, :2], 1.5 * (nir - red) / (nir + red + 0.5), rtol=1e-6)
    np.testing.assert_allclose(out[7, 0, :2], nir / red, rtol=1e-6)
    assert out[4, 0, 0] > 0.7 and out[4, 0, 1] < 0.2  # vegetation vs soil NDVI


def test_zero_denominators_give_zero_not_inf_or_nan():
    out = IndexFeatures().compute(REFL, BAND_NAMES)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[4:, 0, 2], 0.0)  # the nodata pixel
    red_zero = REFL.copy()
    red_zero[2] = 0.0  # NIR/red with red == 0
    sr = IndexFeatures(indices=["sr"], include_bands=False).compute(red_zero, BAND_NAMES)
    assert sr.shape == (1, 1, 3) and np.all(np.isfinite(sr)) and np.all(sr == 0.0)


def test_indices_only_and_a_subset():
    f = IndexFeatures(indices=["ndwi", "ndvi"], include_bands=False, savi_l=0.0)
    assert f.names(BAND_NAMES) == ["ndwi", "ndvi"]
    out = f.compute(REFL, BAND_NAMES)
    assert out.shape == (2, 1, 3)
    np.testing.assert_allclose(
        out[1], IndexFeatures(indices=["ndvi"], include_bands=False).compute(REFL, BAND_NAMES)[0]
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"indices": ["ndvi", "gndvi"]}, "gndvi"),
        ({"indices": [], "include_bands": False}, "no features"),
        ({"indices": ["ndvi", "ndvi"]}, "twice"),
        ({"savi_l": -1}, "savi_l"),
    ],
)
def test_bad_index_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        IndexFeatures(**kwargs)


def test_a_missing_band_is_named():
    with pytest.raises(ConfigError, match="'nir'"):
        IndexFeatures(indices=["ndvi"]).compute(REFL[:3], ("blue", "green", "red"))


def test_pipeline_trains_and_predicts_on_the_configured_features(tmp_path, tiny_pair, tracking_uri):
    """features=indices: the classifier is fitted on 8 named features and predicts the test scene on the
    same 8 (a 4-feature prediction would fail in scikit-learn), names logged and saved with the model."""
    train, test = tiny_pair
    result = cropseg.run(
        [
            *local_overrides(train, test),
            "features=indices",
            "features.indices=[ndvi,sr]",
            f"tracking.uri={tracking_uri}",
        ],
        output_dir=tmp_path / "out",
    )
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["features.names"] == "blue,green,red,nir,ndvi,sr"
    assert run.data.tags["cropseg.features"] == "indices"
    model = json.loads((result.output_dir / "model" / "pipeline.json").read_text())
    assert model["features"]["name"] == "indices" and model["features"]["options"]["indices"] == ["ndvi", "sr"]
    assert model["feature_names"] == ["blue", "green", "red", "nir", "ndvi", "sr"]
    import pickle

    clf = pickle.loads((result.output_dir / "model" / "classifier.pkl").read_bytes())
    assert clf.model_.n_features_in_ == 6
    assert result.metrics["test_crop_f1"] > 0.95
