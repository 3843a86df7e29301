"""Features ``context``: focal statistics of bands and spectral indices over square neighbourhoods.

For every band in ``bands`` and every index in ``indices`` (see :mod:`cropseg.spectral`), and every
radius ``r`` in ``radii``, the statistics in ``stats`` over the ``(2r+1) x (2r+1)`` window centred on the
pixel: ``mean``, ``std`` (population standard deviation), ``min``, ``max``. They are appended to the
pixel's own values (the bands, then the indices, when ``include_bands`` / ``include_indices``), named
``<band or index>_<stat>_r<r>`` (e.g. ``ndvi_std_r5``).

Edges and nodata, deterministically: only valid pixels inside the scene count. Invalid pixels (nodata,
outside the AOI or the usable-data mask) and the positions of a window that fall outside the scene are
left out of the statistics (normalized convolution: sums of value x valid divided by the count of valid
pixels), so a pixel near the scene border or a nodata hole gets the statistics of the valid part of its
window, and a window with no valid pixel gives 0. Sums run over values quantized to a fixed-point grid
(at least 2^-12, finer for small windows; values clipped to +-64) in float64, where OpenCV's box filter
is exact: the results do not depend on where a block starts, so block-wise features equal whole-scene
features bit for bit. The framework reads each block with a halo of ``max(radii)`` pixels (the
``halo`` attribute) and hands the valid mask to :meth:`ContextFeatures.compute`.

Such features are spatial: a model trained on them cannot classify isolated pixel rows (``mlflow models
serve`` refuses them with a message; ``cropseg predict`` on scenes works).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.spectral import ROLES, check_indices, compute_indices

STATS = ("mean", "std", "min", "max")
OPTION = "features.context"
#: values are clipped to +-CLIP before the statistics (reflectance and the normalized indices lie far inside)
CLIP = 64.0


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    return list(value)


def _quant_bits(radius: int) -> int:
    """Fractional bits of the fixed-point grid for windows of ``radius``: every window sum of squared
    quantized values stays below 2^53, so float64 box sums are exact in any summation order."""
    area_bits = int(np.ceil(np.log2((2 * radius + 1) ** 2)))
    return min(20, (52 - area_bits) // 2 - int(np.log2(CLIP)))


class ContextFeatures:
    """Focal statistics per band and index (see the module docstring)."""

    def __init__(
        self,
        radii: Sequence[int] | int = (5,),
        stats: Sequence[str] | str = ("mean", "std"),
        bands: Sequence[str] | str | None = (),
        indices: Sequence[str] | str | None = ("ndvi",),
        include_bands: bool = True,
        include_indices: bool = False,
        savi_l: float = 0.5,
    ):
        rad = _as_list(radii)
        if not rad:
            raise ConfigError(f"{OPTION}.radii: at least one radius (pixels) is needed")
        for r in rad:
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or int(r) < 1:
                raise ConfigError(f"{OPTION}.radii: radii are positive whole numbers of pixels, got {r!r}")
            if int(r) > 256:
                raise ConfigError(f"{OPTION}.radii: a radius of at most 256 pixels, got {r!r}")
        if len(set(int(r) for r in rad)) != len(rad):
            raise ConfigError(f"{OPTION}.radii: a radius is listed twice: {rad!r}")
        st = [str(s).lower() for s in _as_list(stats)]
        unknown = [s for s in st if s not in STATS]
        if unknown:
            raise ConfigError(f"{OPTION}.stats: unknown statistic {unknown[0]!r} (known: {', '.join(STATS)})")
        if not st:
            raise ConfigError(f"{OPTION}.stats: at least one statistic ({', '.join(STATS)}) is needed")
        if len(set(st)) != len(st):
            raise ConfigError(f"{OPTION}.stats: a statistic is listed twice: {st!r}")
        bnd = [str(b).lower() for b in _as_list(bands)]
        unknown_bands = [b for b in bnd if b not in ROLES]
        if unknown_bands:
            raise ConfigError(f"{OPTION}.bands: unknown band {unknown_bands[0]!r} (known: {', '.join(ROLES)})")
        if len(set(bnd)) != len(bnd):
            raise ConfigError(f"{OPTION}.bands: a band is listed twice: {bnd!r}")
        idx = check_indices(_as_list(indices), f"{OPTION}.indices")
        if not bnd and not idx:
            raise ConfigError(f"{OPTION}: no bands and no indices to compute statistics of")
        if not savi_l >= 0:
            raise ConfigError(f"{OPTION}.savi_l: a soil factor >= 0, got {savi_l!r}")
        self.radii = sorted(int(r) for r in rad)
        self.stats, self.bands, self.indices = st, bnd, idx
        self.include_bands, self.include_indices, self.savi_l = (
            bool(include_bands),
            bool(include_indices),
            float(savi_l),
        )
        #: pixels of context each block needs on every side
        self.halo = max(self.radii)

    def _own_indices(self, band_names: Sequence[str]) -> list[str]:
        """The indices appended as the pixel's own values: not one the scene holds as a band that is
        already there (``include_bands``), e.g. NDVI of an NDVI stack."""
        if not self.include_indices:
            return []
        return [i for i in self.indices if not (self.include_bands and i in band_names)]

    def _stat_layers(self) -> list[str]:
        """What statistics are computed of: ``bands``, then the ``indices`` not also listed as bands."""
        return [*self.bands, *(i for i in self.indices if i not in self.bands)]

    def names(self, band_names: Sequence[str]) -> list[str]:
        base = [*(band_names if self.include_bands else ()), *self._own_indices(band_names)]
        return base + [f"{v}_{s}_r{r}" for v in self._stat_layers() for r in self.radii for s in self.stats]

    def compute(
        self, reflectance: np.ndarray, band_names: Sequence[str], valid: np.ndarray | None = None
    ) -> np.ndarray:
        """Features ``(n_features, h, w)`` float32 of ``reflectance`` ``(bands, h, w)``; ``valid`` ``(h, w)``
        marks the pixels that count in the statistics (all when None). Statistics near the array's border
        see only the pixels inside it: the framework pads blocks by :attr:`halo` and crops the result."""
        import cv2

        refl = reflectance.astype(np.float32, copy=False)
        missing = [b for b in self.bands if b not in band_names]
        if missing:
            raise ConfigError(f"{OPTION}.bands: the scene has no {missing[0]!r} band (bands: {', '.join(band_names)})")
        idx = compute_indices(refl, band_names, self.indices, savi_l=self.savi_l, option=f"{OPTION}.indices")
        by_name = dict(zip(self.indices, idx, strict=True))
        h, w = refl.shape[1:]
        ok = np.ones((h, w), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        okf = ok.astype(np.float64)
        layers = [refl[list(band_names).index(v)] if v in self.bands else by_name[v] for v in self._stat_layers()]
        own = self._own_indices(band_names)
        n_base = (len(band_names) if self.include_bands else 0) + len(own)
        out = np.empty((n_base + len(layers) * len(self.radii) * len(self.stats), h, w), dtype=np.float32)
        k = 0
        if self.include_bands:
            out[: len(band_names)] = refl
            k = len(band_names)
        for name in own:
            out[k] = by_name[name]
            k += 1
        border = cv2.BORDER_CONSTANT
        counts = {
            r: cv2.boxFilter(okf, cv2.CV_64F, (2 * r + 1, 2 * r + 1), normalize=False, borderType=border)
            for r in self.radii
        }
        want_moments = "mean" in self.stats or "std" in self.stats
        for layer in layers:
            clipped = np.clip(layer, -CLIP, CLIP)
            quant: dict[int, np.ndarray] = {}
            for r in self.radii:
                cnt = counts[r]
                has = cnt > 0
                ksize = (2 * r + 1, 2 * r + 1)
                res: dict[str, np.ndarray] = {}
                if want_moments:
                    bits = _quant_bits(r)
                    if bits not in quant:
                        quant[bits] = np.rint(clipped.astype(np.float64) * 2.0**bits) * okf
                    q = quant[bits]
                    s1 = cv2.boxFilter(q, cv2.CV_64F, ksize, normalize=False, borderType=border)
                    mean = np.divide(s1, cnt, out=np.zeros_like(s1), where=has)
                    res["mean"] = mean / 2.0**bits
                    if "std" in self.stats:
                        s2 = cv2.boxFilter(q * q, cv2.CV_64F, ksize, normalize=False, borderType=border)
                        var = np.divide(s2, cnt, out=np.zeros_like(s2), where=has) - mean * mean
                        res["std"] = np.sqrt(np.maximum(var, 0.0)) / 2.0**bits
                if "min" in self.stats or "max" in self.stats:
                    kernel = np.ones(ksize, dtype=np.uint8)
                    if "min" in self.stats:
                        lo = cv2.erode(
                            np.where(ok, clipped, np.inf).astype(np.float32),
                            kernel,
                            borderType=border,
                            borderValue=np.inf,
                        )
                        res["min"] = np.where(has, lo, 0.0)
                    if "max" in self.stats:
                        hi = cv2.dilate(
                            np.where(ok, clipped, -np.inf).astype(np.float32),
                            kernel,
                            borderType=border,
                            borderValue=-np.inf,
                        )
                        res["max"] = np.where(has, hi, 0.0)
                for s in self.stats:
                    out[k] = res[s]
                    k += 1
        return out


@hookimpl
def cropseg_register_features(register):
    register("context", ContextFeatures)
