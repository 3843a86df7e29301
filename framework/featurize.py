"""Features of one window of a scene, read with the halo of context the feature plugin asks for.

A :class:`cropseg.types.Features` plugin that looks at neighbourhoods (e.g. ``context``) declares
``halo`` (pixels of context per side) and accepts ``compute(reflectance, band_names, valid=...)``. Its
blocks are then read grown by ``halo`` pixels: pixels outside the scene's grid and invalid pixels are
marked invalid (the plugin leaves them out of its statistics), and the features are cropped back to the
window, so block-wise features equal whole-scene features whatever the block size. Pixel features
(``halo`` absent or 0) read just the window, as before. Used by training-pixel sampling and prediction.

Features that declare ``temporal = True`` (e.g. ``temporal``) read time stacks: they also get
``date_valid=`` (``(dates, h, w)``, which date is valid at each pixel) to fill or skip cloudy dates.

:func:`probe_features` computes features on one pixel of zeros with a scene's band names (their roles),
so a band or index a feature needs and the scene lacks is one line before any pixel is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rasterio.windows import Window

from .types import Block, Features, SceneReader, _inside_mask


def feature_halo(features: Features) -> int:
    """Pixels of context per side the features need (0 for per-pixel features)."""
    return int(getattr(features, "halo", 0) or 0)


def block_features(features: Features, blk: Block, band_names: Sequence[str]) -> np.ndarray:
    """Per-pixel features of a block already read (temporal features also get its per-date masks)."""
    if getattr(features, "temporal", False):
        return features.compute(blk.reflectance, band_names, date_valid=blk.date_valid)  # type: ignore[call-arg]
    return features.compute(blk.reflectance, band_names)


def probe_features(features: Features, band_names: Sequence[str], n_dates: int = 1) -> list[str]:
    """The feature names for a scene of ``band_names`` (``n_dates`` dates), after computing the features
    on one pixel of zeros: a :class:`cropseg.errors.ConfigError` naming the option and the missing band
    when the features need a band (or index) the scene does not have."""
    names = list(features.names(band_names))
    zeros = np.zeros((len(band_names), 1, 1), dtype=np.float32)
    extra: dict[str, np.ndarray] = {"valid": np.ones((1, 1), bool)} if feature_halo(features) else {}
    if getattr(features, "temporal", False):
        extra["date_valid"] = np.ones((n_dates, 1, 1), bool)
    features.compute(zeros, band_names, **extra)
    return names


def window_features(
    reader: SceneReader, features: Features, window: Window, band_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n_features, h, w)`` float32 of ``window`` and its valid mask ``(h, w)``."""
    halo = feature_halo(features)
    temporal = bool(getattr(features, "temporal", False))
    if halo == 0:
        blk = reader.read(window)
        return block_features(features, blk, band_names), blk.valid
    h, w = int(window.height), int(window.width)
    big = Window(int(window.col_off) - halo, int(window.row_off) - halo, w + 2 * halo, h + 2 * halo)
    blk = reader.read(big)
    # the scene is its grid: file pixels beyond a scene's window (an AOI crop) do not count either
    valid = blk.valid & _inside_mask(big, reader.grid.height, reader.grid.width)
    extra = {"date_valid": blk.date_valid} if temporal else {}
    feats = features.compute(blk.reflectance, band_names, valid=valid, **extra)  # type: ignore[call-arg]
    inner = (slice(halo, halo + h), slice(halo, halo + w))
    return np.ascontiguousarray(feats[:, inner[0], inner[1]]), valid[inner]
