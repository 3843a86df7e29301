"""Features ``indices``: spectral indices from the reflectance bands, by default appended to the bands.

The indices (ndvi, ndwi, savi, sr, evi; with red edge ndre; with SWIR ndmi, mndwi, nbr, nbr2) and their
formulas are in :mod:`cropseg.spectral`; where a denominator is 0 (e.g. nodata pixels, whose reflectance
is 0) the index is 0, never inf or NaN. An index the scene holds as a band (``ndvi`` of an index-only
stack) is that band, listed once; an index needing a band the scene lacks is refused before any work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.spectral import INDICES, check_indices, compute_indices, safe_ratio

__all__ = ["INDICES", "IndexFeatures", "safe_ratio"]


class IndexFeatures:
    def __init__(
        self, indices: Sequence[str] = ("ndvi", "ndwi", "savi", "sr"), include_bands: bool = True, savi_l: float = 0.5
    ):
        indices = check_indices(indices, "features.indices.indices")
        if not indices and not include_bands:
            raise ConfigError("features.indices: no indices and include_bands=false leaves no features")
        if not savi_l >= 0:
            raise ConfigError(f"features.indices.savi_l: a soil factor >= 0, got {savi_l!r}")
        self.indices, self.include_bands, self.savi_l = indices, bool(include_bands), float(savi_l)

    def _indices(self, band_names: Sequence[str]) -> list[str]:
        """The indices to append: those the bands do not already hold (when the bands are included)."""
        return [i for i in self.indices if not (self.include_bands and i in band_names)]

    def names(self, band_names: Sequence[str]) -> list[str]:
        return [*(band_names if self.include_bands else ()), *self._indices(band_names)]

    def compute(self, reflectance: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
        out = [reflectance.astype(np.float32, copy=False)] if self.include_bands else []
        out.append(
            compute_indices(
                reflectance,
                band_names,
                self._indices(band_names),
                savi_l=self.savi_l,
                option="features.indices.indices",
            )
        )
        return np.concatenate(out, axis=0)


@hookimpl
def cropseg_register_features(register):
    register("indices", IndexFeatures)
