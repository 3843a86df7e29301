"""The target metric (cropseg.targets) against scikit-learn's own metrics on random labels."""

import numpy as np
import pytest
from sklearn import metrics

from cropseg.errors import ConfigError
from cropseg.targets import TARGETS, confusion, get_target

SKLEARN = {
    "crop_f1": metrics.f1_score,
    "crop_iou": metrics.jaccard_score,
    "crop_precision": metrics.precision_score,
    "crop_recall": metrics.recall_score,
    "weighted_f1": lambda t, p: metrics.f1_score(t, p, average="weighted"),
    "macro_f1": lambda t, p: metrics.f1_score(t, p, average="macro"),
    "balanced_accuracy": metrics.balanced_accuracy_score,
    "accuracy": metrics.accuracy_score,
}


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_target_matches_sklearn_and_its_scorer(name, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, 400)
    p = np.where(rng.random(400) < 0.7, t, 1 - t)
    target = TARGETS[name]
    assert target.score(confusion(t, p)) == pytest.approx(SKLEARN[name](t, p))
    scorer = metrics.get_scorer(target.scorer)
    assert scorer._score_func(t, p, **scorer._kwargs) == pytest.approx(target.score_labels(t, p))


def test_confusion_leaves_out_ignore_pixels():
    cm = confusion(np.array([0, 1, 255, 1]), np.array([0, 1, 1, 255]))
    assert cm.tolist() == [[1, 0], [0, 1]]


def test_unknown_target_is_a_config_error():
    with pytest.raises(ConfigError, match="evaluate.target=f2: unknown target"):
        get_target("f2")
    assert get_target(None).name == "crop_f1"
