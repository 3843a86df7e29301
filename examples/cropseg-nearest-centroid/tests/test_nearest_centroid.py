"""The plugin's own test suite: cropseg's classifier conformance suite, plus a behaviour of its own."""

from __future__ import annotations

import numpy as np
from cropseg_nearest_centroid import NearestCentroidClassifier

from cropseg.conformance import ClassifierConformance, separable_pixels


class TestNearestCentroidConformance(ClassifierConformance):
    name = "nearest_centroid"


def test_predicts_the_class_of_the_nearer_mean():
    X, y, groups = separable_pixels(seed=3)
    clf = NearestCentroidClassifier(cv="none")
    clf.fit(X, y, groups)
    means = np.stack([X[y == 0].mean(axis=0), X[y == 1].mean(axis=0)])
    np.testing.assert_array_equal(clf.predict(means.astype(np.float32)), [0, 1])
