"""Features ``bands``: the scene's bands themselves (blue, green, red, NIR as in the seed study, or
whatever roles the source names: SWIR, red edge, an index stored as a band)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropseg import hookimpl


class BandFeatures:
    def names(self, band_names: Sequence[str]) -> list[str]:
        return list(band_names)

    def compute(self, reflectance: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
        return reflectance.astype(np.float32, copy=False)


@hookimpl
def cropseg_register_features(register):
    register("bands", BandFeatures)
