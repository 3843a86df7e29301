"""Features ``indices``: spectral indices from the reflectance bands, by default appended to the bands.

=======  ==================================  =====================================================
name     formula                             what it shows
=======  ==================================  =====================================================
ndvi     (nir - red) / (nir + red)           green vegetation (Rouse et al. 1974)
ndwi     (green - nir) / (green + nir)       open water (McFeeters 1996)
savi     (1 + L)(nir - red) / (nir + red + L)  vegetation with a soil-brightness correction L (Huete 1988)
sr       nir / red                           simple ratio
=======  ==================================  =====================================================

Where a denominator is 0 (e.g. nodata pixels, whose reflectance is 0) the index is 0, never inf or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError

#: index name -> the bands it needs
INDICES: dict[str, tuple[str, ...]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),
    "savi": ("nir", "red"),
    "sr": ("nir", "red"),
}


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float32, 0 where ``den`` is 0 or the result is not finite."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(num, den, out=out, where=den != 0)
    out[~np.isfinite(out)] = 0.0
    return out


class IndexFeatures:
    def __init__(self, indices: Sequence[str] = ("ndvi", "ndwi", "savi", "sr"), include_bands: bool = True,
                 savi_l: float = 0.5):
        indices = [indices] if isinstance(indices, str) else [str(i).lower() for i in indices]
        unknown = [i for i in indices if i not in INDICES]
        if unknown:
            raise ConfigError(f"features.indices.indices: unknown index {unknown[0]!r} (known: {', '.join(INDICES)})")
        if not indices and not include_bands:
            raise ConfigError("features.indices: no indices and include_bands=false leaves no features")
        if len(set(indices)) != len(indices):
            raise ConfigError(f"features.indices.indices: an index is listed twice: {indices!r}")
        if not savi_l >= 0:
            raise ConfigError(f"features.indices.savi_l: a soil factor >= 0, got {savi_l!r}")
        self.indices, self.include_bands, self.savi_l = indices, bool(include_bands), float(savi_l)

    def names(self, band_names: Sequence[str]) -> list[str]:
        return [*(band_names if self.include_bands else ()), *self.indices]

    def _band(self, reflectance: np.ndarray, band_names: Sequence[str], name: str) -> np.ndarray:
        try:
            return reflectance[list(band_names).index(name)].astype(np.float32, copy=False)
        except ValueError:
            raise ConfigError(f"features.indices: the scene has no {name!r} band (bands: "
                              f"{', '.join(band_names)})") from None

    def compute(self, reflectance: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
        b = {n: self._band(reflectance, band_names, n) for i in self.indices for n in INDICES[i]}
        out = [reflectance.astype(np.float32, copy=False)] if self.include_bands else []
        for i in self.indices:
            if i == "ndvi":
                v = safe_ratio(b["nir"] - b["red"], b["nir"] + b["red"])
            elif i == "ndwi":
                v = safe_ratio(b["green"] - b["nir"], b["green"] + b["nir"])
            elif i == "savi":
                v = (1.0 + self.savi_l) * safe_ratio(b["nir"] - b["red"], b["nir"] + b["red"] + self.savi_l)
            else:  # sr
                v = safe_ratio(b["nir"], b["red"])
            out.append(v[None].astype(np.float32, copy=False))
        return np.concatenate(out, axis=0)


@hookimpl
def cropseg_register_features(register):
    register("indices", IndexFeatures)
