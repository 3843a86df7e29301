"""Shift diagnostics of a run (cropseg.pipeline.shift_diagnostics): crop shares of train, test and the
test prediction, the CV-vs-test gap of the target, and the warning when prediction and reference differ."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from cropseg.pipeline import shift_diagnostics
from cropseg.types import FitResult


def labels(crop: int, noncrop: int) -> SimpleNamespace:
    return SimpleNamespace(counts={"crop": crop, "noncrop": noncrop, "ignore": 7})


def cfg(target: str = "crop_f1", margin: float = 0.1):
    return OmegaConf.create({"evaluate": {"target": target, "crop_share_margin": margin}})


def run(cm, target="crop_f1", margin=0.1, cv_metrics=None):
    metrics = {"test_crop_f1": 0.6, "test_iou": 0.45, **(cv_metrics or {})}
    tags = shift_diagnostics(
        cfg(target, margin),
        {"train": labels(450, 550), "test": labels(250, 750)},
        np.asarray(cm, dtype=float),
        metrics,
        FitResult(params={"cv": "spatial"}),
    )
    return metrics, tags


def test_shares_are_logged_and_an_over_prediction_warns(caplog):
    # test: 250 crop of 1000 labelled; predicted crop = 200 + 150 = 350 (35 %, +40 % of the reference)
    with caplog.at_level("WARNING"):
        metrics, tags = run([[600, 150], [50, 200]], cv_metrics={"cv_spatial_crop_f1": 0.8})
    assert metrics["train_labelled_crop_fraction"] == 0.45 and metrics["test_labelled_crop_fraction"] == 0.25
    assert metrics["test_predicted_crop_fraction"] == pytest.approx(0.35)
    assert metrics["crop_share_difference"] == pytest.approx(0.10)
    assert metrics["cv_test_gap"] == pytest.approx(0.8 - 0.6)
    text = tags["cropseg.warning.crop_share_shift"]
    assert "35.0% vs 25.0%" in text and "+40%" in text and "training scene 45.0%" in text
    assert any("predicted crop share" in r.getMessage() for r in caplog.records)


def test_within_the_margin_no_warning_and_the_gap_follows_the_target():
    # predicted 260 of 1000 (+4 %): inside a 10 % margin
    metrics, tags = run(
        [[700, 50], [40, 210]], target="crop_iou", cv_metrics={"cv_spatial_crop_iou": 0.5, "cv_spatial_crop_f1": 0.9}
    )
    assert tags == {}
    assert metrics["cv_test_gap"] == pytest.approx(0.5 - 0.45)  # the crop IoU target's test metric is test_iou
    _, tight = run([[700, 50], [40, 210]], margin=0.01)
    assert "cropseg.warning.crop_share_shift" in tight


def test_no_cv_no_gap():
    metrics, _ = run([[700, 50], [40, 210]])
    assert "cv_test_gap" not in metrics


def test_the_cv_at_the_test_scenes_crop_share_separates_the_gap():
    # CV rates: recall 0.8, false-positive rate 0.1. At the test share 25 %: TP 0.2, FN 0.05, FP 0.075,
    # TN 0.675 -> crop F1 = 0.4 / (0.4 + 0.075 + 0.05) = 0.7619; the CV itself (45 % crop) said 0.8
    metrics, _ = run(
        [[600, 150], [50, 200]],
        cv_metrics={"cv_spatial_crop_f1": 0.8, "cv_spatial_tpr": 0.8, "cv_spatial_fpr": 0.1},
    )
    assert metrics["cv_at_test_share"] == pytest.approx(0.4 / 0.525)
    assert metrics["cv_test_gap_at_test_share"] == pytest.approx(0.4 / 0.525 - 0.6)
    assert metrics["cv_test_gap"] == pytest.approx(0.2)


def test_no_class_rates_no_cv_at_the_test_share():
    metrics, _ = run([[700, 50], [40, 210]], cv_metrics={"cv_spatial_crop_f1": 0.8})
    assert "cv_test_gap" in metrics and "cv_at_test_share" not in metrics


def test_at_crop_share_keeps_the_class_rates():
    from cropseg.targets import at_crop_share, get_target

    cm = np.array([[900.0, 100.0], [200.0, 800.0]])  # 50 % crop, recall 0.8, false-positive rate 0.1
    same = at_crop_share(cm, 0.5)
    assert same.sum() == pytest.approx(1.0) and get_target("crop_f1").score(same) == pytest.approx(
        get_target("crop_f1").score(cm)
    )
    low = at_crop_share(cm, 0.1)
    assert low[1].sum() == pytest.approx(0.1) and low[1, 1] / low[1].sum() == pytest.approx(0.8)
    assert low[0, 1] / low[0].sum() == pytest.approx(0.1)
    # fewer crop pixels, same rates: precision and crop F1 fall, recall does not
    assert get_target("crop_precision").score(low) == pytest.approx(0.08 / 0.17)
    assert get_target("crop_f1").score(low) < get_target("crop_f1").score(cm)
