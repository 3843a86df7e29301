"""The per-block tasks of the raster stages, run by :class:`cropseg.parallel.BlockExecutor`.

Each task reads its own window from the files (so a Dask worker needs only paths, never pixel arrays
from the driver) and returns a small result the driver writes in order. This module imports no MLflow,
plotting or Hydra code, so workers start light.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from .errors import PluginError
from .featurize import window_features
from .raster import read_with_halo
from .types import IGNORE, Classifier, Features, MaskFilter, Scene

#: pixels a pixel classifier predicts at once within a block (a quarter of a 512 x 512 block)
PREDICT_CHUNK = 1 << 16


@dataclass(frozen=True)
class PredictContext:
    """What every prediction task needs (sent to each worker once)."""

    scene: Scene
    features: Features
    classifier: Classifier


def predict_block(ctx: PredictContext, window: Window) -> tuple[np.ndarray, int, float]:
    """Classify the valid pixels of one window: (uint8 mask with 255 nodata, pixels classified, seconds
    spent in the classifier)."""
    with ctx.scene.reader() as reader:
        feats, valid = window_features(reader, ctx.features, window, ctx.scene.band_names)
    mask = np.full(valid.shape, IGNORE, dtype=np.uint8)
    if not valid.any():
        return mask, 0, 0.0
    X = np.ascontiguousarray(feats[:, valid].T)
    del feats
    t = time.perf_counter()
    # in chunks of pixels: a classifier's own copies (scikit-learn's float64 input, probabilities) stay
    # bounded as the features per pixel grow (dates x bands of a time stack); each pixel is its own row
    out = np.empty(X.shape[0], dtype=np.uint8)
    for i in range(0, X.shape[0], PREDICT_CHUNK):
        out[i : i + PREDICT_CHUNK] = ctx.classifier.predict(X[i : i + PREDICT_CHUNK])
    mask[valid] = out
    return mask, int(X.shape[0]), time.perf_counter() - t


@dataclass(frozen=True)
class FilterContext:
    """What every filter task needs: the mask file to read and the filter."""

    path: Path
    name: str
    filter: MaskFilter


def filter_block(ctx: FilterContext, window: Window) -> np.ndarray:
    """Filter one window of a mask read with the filter's halo (edges replicated, so the result equals
    whole-image filtering); nodata stays nodata and is seen as non-crop by the filter."""
    import rasterio

    h = int(ctx.filter.halo)
    with rasterio.open(ctx.path) as src:
        padded = read_with_halo(src, window, h)
    nodata = padded == IGNORE
    res = np.asarray(ctx.filter.apply(np.where(nodata, 0, padded).astype(np.uint8)))
    if res.shape != padded.shape:
        raise PluginError(f"postprocessor {ctx.name!r} changed the block shape {padded.shape} -> {res.shape}")
    inner = (slice(h, h + int(window.height)), slice(h, h + int(window.width)))
    return np.where(nodata[inner], IGNORE, res[inner]).astype(np.uint8)
