"""Spectral indices from reflectance bands, shared by the feature plugins (``indices``, ``context``).

=======  ====================================  =====================================================
name     formula                               what it shows
=======  ====================================  =====================================================
ndvi     (nir - red) / (nir + red)             green vegetation (Rouse et al. 1974)
ndwi     (green - nir) / (green + nir)         open water (McFeeters 1996)
savi     (1 + L)(nir - red) / (nir + red + L)  vegetation with a soil-brightness correction L (Huete 1988)
sr       nir / red                             simple ratio
=======  ====================================  =====================================================

Where a denominator is 0 (e.g. nodata pixels, whose reflectance is 0) the index is 0, never inf or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

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


def check_indices(indices: Sequence[str] | str, option: str) -> list[str]:
    """Lower-cased index names; one :class:`ConfigError` naming ``option`` for an unknown or repeated one."""
    names = [str(indices).lower()] if isinstance(indices, str) else [str(i).lower() for i in indices]
    unknown = [i for i in names if i not in INDICES]
    if unknown:
        raise ConfigError(f"{option}: unknown index {unknown[0]!r} (known: {', '.join(INDICES)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"{option}: an index is listed twice: {names!r}")
    return names


def band(reflectance: np.ndarray, band_names: Sequence[str], name: str, option: str) -> np.ndarray:
    """The band ``name`` of ``reflectance`` ``(bands, ...)`` as float32; a :class:`ConfigError` naming
    ``option`` when the scene has no such band."""
    try:
        return reflectance[list(band_names).index(name)].astype(np.float32, copy=False)
    except ValueError:
        raise ConfigError(f"{option}: the scene has no {name!r} band (bands: {', '.join(band_names)})") from None


def compute_indices(
    reflectance: np.ndarray,
    band_names: Sequence[str],
    indices: Sequence[str],
    *,
    savi_l: float = 0.5,
    option: str = "features",
) -> np.ndarray:
    """The ``indices`` of ``reflectance`` ``(bands, h, w)`` as float32 ``(len(indices), h, w)``."""
    b = {n: band(reflectance, band_names, n, option) for i in indices for n in INDICES[i]}
    out = np.empty((len(indices), *reflectance.shape[1:]), dtype=np.float32)
    for k, i in enumerate(indices):
        if i == "ndvi":
            out[k] = safe_ratio(b["nir"] - b["red"], b["nir"] + b["red"])
        elif i == "ndwi":
            out[k] = safe_ratio(b["green"] - b["nir"], b["green"] + b["nir"])
        elif i == "savi":
            out[k] = (1.0 + savi_l) * safe_ratio(b["nir"] - b["red"], b["nir"] + b["red"] + savi_l)
        else:  # sr
            out[k] = safe_ratio(b["nir"], b["red"])
    return out
