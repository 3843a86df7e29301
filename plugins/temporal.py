"""Features ``temporal``: per-date bands and indices of a time stack, gaps filled, and per-pixel
statistics of indices over the season.

For a scene of T dates (band names ``<band>@<date>``, see :class:`cropseg.types.Scene`) it gives, in
this order:

* per date (``per_date=true``): the chosen ``bands`` (default all) and ``indices`` of every date, named
  ``<band>@<date>`` / ``<index>@<date>``. A date that is invalid at a pixel (cloud, shadow, nodata) is a
  gap: ``fill=linear`` (default) fills it by linear interpolation in time (days) between the pixel's
  nearest valid dates before and after, and with the nearest valid date's value before the first and
  after the last; ``fill=nearest`` takes the value of the nearest valid date in time (the earlier on a
  tie); ``fill=none`` leaves the gap at 0 and adds one ``valid@<date>`` feature (1 or 0) per date, so the
  classifier sees where the gaps are.
* per index in ``stats_of`` (default ``[ndvi]``), statistics over the pixel's **valid** dates only (gaps
  never enter them): ``min``, ``max``, ``mean``, ``std``, ``amplitude`` (max - min), ``doymax`` (day of
  year of the maximum), ``doymin`` and the ``percentiles`` (e.g. ``ndvi_p50``), named
  ``<index>_<statistic>``; ``valid_fraction`` (share of valid dates) when listed in ``stats``.

A pixel with no valid date is nodata for the whole run. Bands are whatever roles the scene has (SWIR,
red edge, or an index stored as a band: an NDVI-only stack gives ``ndvi@<date>`` once, as a band, and
its statistics); indices are those of :mod:`cropseg.spectral`; an index or band the scene lacks is one
``cropseg: error:`` line before any pixel is read. On a scene of
one image this plugin is refused (use ``bands`` or ``indices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np

from cropseg import hookimpl
from cropseg.errors import ConfigError
from cropseg.spectral import check_index_bands, check_indices, compute_indices

STATS = ("min", "max", "mean", "std", "amplitude", "doymax", "doymin", "valid_fraction")
FILLS = ("linear", "nearest", "none")
#: pixel-dates a strip of a block holds while its features are computed (2 dates of a 512 x 512 block)
STRIP_PIXEL_DATES = 1 << 19


def split_stack_names(band_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(dates, bands of one date)`` of a time stack's ``<band>@<date>`` names (date-major)."""
    dates: list[str] = []
    bands: list[str] = []
    for name in band_names:
        band, sep, when = str(name).partition("@")
        if not sep:
            raise ConfigError(
                "features=temporal: needs a time stack of two or more dates (source.dates=N for the sample, a list "
                f"of images per scene for source=local); the scene has single-date bands {list(band_names)}"
            )
        if when not in dates:
            dates.append(when)
        if len(dates) == 1:
            bands.append(band)
    if len(bands) * len(dates) != len(band_names):
        raise ConfigError(f"features=temporal: band names are not dates x bands: {list(band_names)}")
    return dates, bands


class TemporalFeatures:
    temporal = True

    def __init__(
        self,
        bands: Sequence[str] | None = None,
        indices: Sequence[str] = ("ndvi",),
        per_date: bool = True,
        fill: str = "linear",
        stats_of: Sequence[str] = ("ndvi",),
        stats: Sequence[str] = ("min", "max", "mean", "std", "amplitude", "doymax"),
        percentiles: Sequence[float] = (10, 50, 90),
        savi_l: float = 0.5,
    ):
        self.indices = check_indices(indices, "features.temporal.indices")
        self.stats_of = check_indices(stats_of, "features.temporal.stats_of")
        unknown = [s for s in stats if s not in STATS]
        if unknown:
            raise ConfigError(f"features.temporal.stats: unknown statistic {unknown[0]!r} (known: {', '.join(STATS)})")
        if fill not in FILLS:
            raise ConfigError(f"features.temporal.fill: one of {', '.join(FILLS)}, got {fill!r}")
        bad = [p for p in percentiles if not 0 <= float(p) <= 100]
        if bad:
            raise ConfigError(f"features.temporal.percentiles: values in 0..100, got {bad[0]!r}")
        self.bands = None if bands is None else [str(b) for b in bands]
        self.per_date, self.fill = bool(per_date), str(fill)
        self.stats = [str(s) for s in stats]
        self.percentiles = [float(p) for p in percentiles]
        self.savi_l = float(savi_l)
        if not (self.per_date and (self.bands is None or self.bands or self.indices)) and not (
            self.stats_of and (self.stats or self.percentiles)
        ):
            raise ConfigError("features.temporal: per_date=false and no statistics leave no features")

    def _bands(self, base: Sequence[str]) -> list[str]:
        if self.bands is None:
            return list(base)
        missing = [b for b in self.bands if b not in base]
        if missing:
            raise ConfigError(
                f"features.temporal.bands: the scene has no {missing[0]!r} band (bands: {', '.join(base)})"
            )
        return list(self.bands)

    def _check_indices(self, base: Sequence[str]) -> None:
        check_index_bands(self.indices, base, "features.temporal.indices")
        check_index_bands(self.stats_of, base, "features.temporal.stats_of")

    def _date_indices(self, bands: Sequence[str]) -> list[str]:
        """The per-date indices that are not already per-date bands (an index stored as a band, e.g. an
        NDVI-only stack, appears once)."""
        return [i for i in self.indices if i not in bands]

    def _stat_names(self) -> list[str]:
        pct = [f"p{p:g}" for p in self.percentiles]
        return [f"{i}_{s}" for i in self.stats_of for s in [*self.stats, *pct]]

    def names(self, band_names: Sequence[str]) -> list[str]:
        dates, base = split_stack_names(band_names)
        bands = self._bands(base)
        self._check_indices(base)
        out: list[str] = []
        if self.per_date:
            for d in dates:
                out += [f"{b}@{d}" for b in bands] + [f"{i}@{d}" for i in self._date_indices(bands)]
            if self.fill == "none":
                out += [f"valid@{d}" for d in dates]
        return out + self._stat_names()

    def compute(
        self, reflectance: np.ndarray, band_names: Sequence[str], date_valid: np.ndarray | None = None
    ) -> np.ndarray:
        """The features of ``reflectance`` ``(dates x bands, rows, ...)``, computed in strips of rows of at
        most :data:`STRIP_PIXEL_DATES` pixel-dates: every feature is a pixel's own, so the result is the same,
        and the temporaries of gap filling and statistics (tens of bytes per pixel, date and feature) stay
        bounded however many dates a block holds."""
        t = len(split_stack_names(band_names)[0])
        shape = reflectance.shape[1:]
        rows = max(1, STRIP_PIXEL_DATES // max(1, t * int(np.prod(shape[1:], dtype=np.int64))))
        if not shape or shape[0] <= rows:
            return self._compute(reflectance, band_names, date_valid)
        out: np.ndarray | None = None
        for r0 in range(0, shape[0], rows):
            dv = None if date_valid is None else date_valid[:, r0 : r0 + rows]
            part = self._compute(reflectance[:, r0 : r0 + rows], band_names, dv)
            if out is None:
                out = np.empty((part.shape[0], *shape), np.float32)
            out[:, r0 : r0 + rows] = part
        assert out is not None
        return out

    def _compute(
        self, reflectance: np.ndarray, band_names: Sequence[str], date_valid: np.ndarray | None = None
    ) -> np.ndarray:
        dates, base = split_stack_names(band_names)
        bands = self._bands(base)
        t, nb = len(dates), len(base)
        shape = reflectance.shape[1:]
        refl = reflectance.reshape(t, nb, *shape)
        if date_valid is None:  # pixel rows (a served model): a date is a gap where all its bands are 0
            date_valid = np.any(refl != 0, axis=1)
        days = np.array([date.fromisoformat(d).toordinal() for d in dates], dtype=np.float64)
        out: list[np.ndarray] = []
        need = list(dict.fromkeys([*self.indices, *self.stats_of]))
        idx = (
            np.stack(
                [compute_indices(refl[k], base, need, savi_l=self.savi_l, option="features.temporal") for k in range(t)]
            )
            if need
            else np.zeros((t, 0, *shape), np.float32)
        )  # (t, len(need), h, w)
        if self.per_date:
            sel = [base.index(b) for b in bands]
            date_idx = [need.index(i) for i in self._date_indices(bands)]
            series = np.concatenate([refl[:, sel], idx[:, date_idx]], axis=1)
            if self.fill != "none":
                series = fill_gaps(series, date_valid, days, self.fill)
            out.append(series.reshape(-1, *shape))
            if self.fill == "none":
                out.append(date_valid.astype(np.float32))
        for i in self.stats_of:
            out.append(series_stats(idx[:, need.index(i)], date_valid, days, self.stats, self.percentiles))
        res = np.concatenate(out, axis=0) if out else np.zeros((0, *shape), np.float32)
        return res.astype(np.float32, copy=False)


def fill_gaps(series: np.ndarray, valid: np.ndarray, days: np.ndarray, how: str) -> np.ndarray:
    """``series`` ``(t, f, ...)`` with each pixel's invalid dates (``valid`` ``(t, ...)``) filled in time
    from its valid dates (``linear`` between the neighbours, constant beyond the ends; or ``nearest``)."""
    t = series.shape[0]
    steps = np.arange(t).reshape(-1, *([1] * (valid.ndim - 1)))
    prev = np.maximum.accumulate(np.where(valid, steps, -1), axis=0)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(valid, steps, t), axis=0), axis=0), axis=0)
    has_prev, has_next = prev >= 0, nxt < t
    p, n = np.clip(prev, 0, t - 1), np.clip(nxt, 0, t - 1)
    dp, dn, dt = days[p], days[n], days[steps.reshape(-1)].reshape(steps.shape)
    if how == "nearest":
        w_next = np.where(has_prev & has_next, (dn - dt) < (dt - dp), ~has_prev).astype(np.float32)
    else:
        span = np.where(dn > dp, dn - dp, 1.0)
        w_next = np.where(has_prev & has_next, (dt - dp) / span, np.where(has_prev, 0.0, 1.0)).astype(np.float32)
    take_p = np.take_along_axis(series, p[:, None], axis=0)
    take_n = np.take_along_axis(series, n[:, None], axis=0)
    filled = take_p * (1 - w_next[:, None]) + take_n * w_next[:, None]
    return np.where(valid[:, None], series, filled).astype(np.float32)


def series_stats(
    values: np.ndarray, valid: np.ndarray, days: np.ndarray, stats: Sequence[str], percentiles: Sequence[float]
) -> np.ndarray:
    """Statistics over time of ``values`` ``(t, ...)`` at each pixel, over its valid dates only (0 where
    a pixel has none): ``(len(stats) + len(percentiles), ...)``."""
    v = np.where(valid, values.astype(np.float64), np.nan)
    any_valid = valid.any(axis=0)
    doy = np.array([date.fromordinal(int(d)).timetuple().tm_yday for d in days], dtype=np.float64)
    safe = np.where(any_valid[None], v, 0.0)
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in stats:
            if s == "min":
                r = np.nanmin(np.where(valid, v, np.inf), axis=0)
            elif s == "max":
                r = np.nanmax(np.where(valid, v, -np.inf), axis=0)
            elif s == "mean":
                r = np.nansum(safe, axis=0) / np.maximum(valid.sum(axis=0), 1)
            elif s == "std":
                mean = np.nansum(safe, axis=0) / np.maximum(valid.sum(axis=0), 1)
                r = np.sqrt(np.nansum(np.where(valid, (v - mean) ** 2, 0.0), axis=0) / np.maximum(valid.sum(axis=0), 1))
            elif s == "amplitude":
                r = np.max(np.where(valid, v, -np.inf), axis=0) - np.min(np.where(valid, v, np.inf), axis=0)
            elif s == "doymax":
                r = doy[np.argmax(np.where(valid, v, -np.inf), axis=0)]
            elif s == "doymin":
                r = doy[np.argmin(np.where(valid, v, np.inf), axis=0)]
            else:  # valid_fraction
                r = valid.mean(axis=0)
            out.append(np.where(any_valid, r, 0.0))
        if percentiles:
            out.extend(valid_percentiles(values, valid, percentiles))
    return np.stack(out).astype(np.float32) if out else np.zeros((0, *values.shape[1:]), np.float32)


def valid_percentiles(values: np.ndarray, valid: np.ndarray, percentiles: Sequence[float]) -> list[np.ndarray]:
    """Percentiles over time of ``values`` ``(t, ...)`` at each pixel over its valid dates (numpy's
    ``linear`` method, as ``np.nanpercentile``; 0 where a pixel has no valid date), from one sort along
    time: some 30x faster than ``np.nanpercentile`` on (4, 512, 512) blocks."""
    n = valid.sum(axis=0)
    top = np.maximum(n - 1, 0)
    srt = np.sort(np.where(valid, values.astype(np.float64), np.inf), axis=0)  # gaps sort last
    out = []
    for p in percentiles:
        pos = float(p) / 100.0 * top
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, top)
        a = np.take_along_axis(srt, lo[None], axis=0)[0]
        b = np.take_along_axis(srt, hi[None], axis=0)[0]
        with np.errstate(invalid="ignore"):
            r = a + (b - a) * (pos - lo)
        out.append(np.where(n > 0, r, 0.0))
    return out


@hookimpl
def cropseg_register_features(register):
    register("temporal", TemporalFeatures)
