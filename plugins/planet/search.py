"""Searching the Data API for scenes over an AOI and choosing one: filters built with
:mod:`planet.data_filter`, candidates with their AOI coverage, selection rules, a printable table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Any

import numpy as np

from cropseg.errors import ConfigError, SourceError

RULES = ("least_cloud", "most_recent", "best_coverage", "best_usable")


@dataclass(frozen=True)
class Candidate:
    """A scene the search found, and how much of the AOI its footprint covers (0..1)."""

    id: str
    acquired: str
    cloud_cover: float | None
    coverage: float
    item: dict

    @property
    def synthetic(self) -> bool:
        return bool(self.item.get("properties", {}).get("synthetic"))

    @property
    def clear(self) -> float | None:
        """The scene's clear-sky fraction 0..1: the catalog's ``clear_percent`` (from the scene's udm2) when
        it has one, else ``1 - cloud_cover``; ``None`` when the item says neither."""
        props = self.item.get("properties") or {}
        if props.get("clear_percent") is not None:
            return float(props["clear_percent"]) / 100.0
        return None if self.cloud_cover is None else 1.0 - self.cloud_cover

    @property
    def usable(self) -> float:
        """The usable fraction of the AOI: its share the footprint covers times the clear-sky fraction."""
        clear = self.clear
        return self.coverage * (1.0 if clear is None else clear)


def parse_time(value: Any, option: str, *, end: bool = False) -> datetime | None:
    """A UTC datetime from a date or ISO string; a bare date means the start (or, for ``end``, the last
    moment) of that day."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, date):
            dt = datetime.combine(value, time.max if end else time.min)
        else:
            text = str(value).strip()
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if len(text) == 10 and end:
                dt = datetime.combine(dt.date(), time.max)
    except ValueError:
        raise ConfigError(f"source.{option}: not a date or ISO date-time: {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def build_filter(
    aoi_geojson: dict,
    *,
    start: datetime | None,
    end: datetime | None,
    max_cloud_cover: float | None,
    assets: Sequence[str] = (),
    permission: bool = True,
    std_quality: bool = True,
    extra: Sequence[dict] = (),
) -> dict:
    """The Data API search filter: AOI, acquisition dates, cloud cover, orderable asset, quality, extras."""
    from planet import data_filter as df

    parts = [df.geometry_filter(aoi_geojson)]
    if start or end:
        parts.append(df.date_range_filter("acquired", gte=start, lte=end))
    if max_cloud_cover is not None:
        parts.append(df.range_filter("cloud_cover", lte=float(max_cloud_cover)))
    if assets:
        parts.append(df.asset_filter(list(assets)))
    if permission:
        parts.append(df.permission_filter())
    if std_quality:
        parts.append(df.std_quality_filter())
    parts.extend(dict(f) for f in extra)
    return df.and_filter(parts)


def describe_filter(
    start: datetime | None,
    end: datetime | None,
    max_cloud_cover: float | None,
    assets: Sequence[str],
    permission: bool,
    std_quality: bool,
    extra: Sequence[dict],
) -> str:
    bits = [f"acquired {start.isoformat() if start else '...'} to {end.isoformat() if end else '...'}"]
    if max_cloud_cover is not None:
        bits.append(f"cloud_cover <= {max_cloud_cover}")
    if assets:
        bits.append(f"asset {', '.join(assets)}")
    if permission:
        bits.append("downloadable with this key")
    if std_quality:
        bits.append("standard quality")
    bits.extend(f"{f.get('type')} {f.get('field_name', '')} {f.get('config')}".strip() for f in extra)
    return "; ".join(bits)


class AoiCover:
    """Measures how much of an AOI (shapely, EPSG:4326) footprints cover, in the UTM zone of the AOI."""

    def __init__(self, aoi: Any):
        import shapely
        from pyproj import Transformer

        lon, lat = aoi.centroid.x, aoi.centroid.y
        epsg = (32600 if lat >= 0 else 32700) + min(int((lon + 180) // 6) + 1, 60)
        tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        self._project = lambda g: shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        self.aoi = self._project(aoi)

    def __call__(self, item: dict) -> float:
        """Fraction of the AOI the item's footprint (``item["geometry"]``) covers, 0..1."""
        import shapely

        geom = item.get("geometry")
        try:
            footprint = self._project(shapely.make_valid(shapely.geometry.shape(geom)))
        except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
            return 0.0
        area = self.aoi.area
        return float(self.aoi.intersection(footprint).area / area) if area > 0 else 0.0


def candidate(cover: AoiCover, item: dict) -> Candidate:
    props = item.get("properties") or {}
    cc = props.get("cloud_cover")
    return Candidate(
        str(item.get("id")), str(props.get("acquired", "")), None if cc is None else float(cc), cover(item), item
    )


def rank(candidates: Sequence[Candidate], rule: str) -> list[Candidate]:
    """Candidates best first by ``rule`` (ties: more coverage, less cloud, more recent, id)."""
    if rule not in RULES:
        raise ConfigError(f"source.select: one of {', '.join(RULES)}, got {rule!r}")

    def cloud(c: Candidate) -> float:
        return c.cloud_cover if c.cloud_cover is not None else 1.0

    keys = {
        "least_cloud": lambda c: (cloud(c), -c.coverage, _neg_time(c), c.id),
        "most_recent": lambda c: (_neg_time(c), cloud(c), -c.coverage, c.id),
        "best_coverage": lambda c: (-round(c.coverage, 4), cloud(c), _neg_time(c), c.id),
        "best_usable": lambda c: (-round(c.usable, 4), -c.coverage, cloud(c), _neg_time(c), c.id),
    }
    return sorted(candidates, key=keys[rule])


def _neg_time(c: Candidate) -> float:
    try:
        return -datetime.fromisoformat(c.acquired.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def table(candidates: Sequence[Candidate], chosen: str | None = None, limit: int = 20) -> str:
    """A plain-text table of candidates (id, acquired, cloud cover, AOI coverage)."""
    lines = [f"   {'id':<24} {'acquired':<26} {'cloud':>6} {'clear':>6} {'AOI cover':>9} {'usable':>6}"]
    for c in candidates[:limit]:
        mark = "*" if c.id == chosen else " "
        cc = "   n/a" if c.cloud_cover is None else f"{c.cloud_cover:6.2f}"
        clear = "   n/a" if c.clear is None else f"{c.clear:6.2f}"
        lines.append(f" {mark} {c.id:<24} {c.acquired[:26]:<26} {cc} {clear} {c.coverage:9.0%} {c.usable:6.0%}")
    if len(candidates) > limit:
        lines.append(f"   ... and {len(candidates) - limit} more")
    return "\n".join(lines)


def parse_window(value: Any, option: str) -> tuple[datetime, datetime, str]:
    """A time window ``START/END`` (dates or ISO date-times, both inclusive; a bare end date means the end
    of that day) as UTC datetimes and its text."""
    text = str(value).strip()
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"source.{option}: a window START/END such as 2016-05-01/2016-05-31, got {value!r}")
    start = parse_time(parts[0].strip(), option)
    end = parse_time(parts[1].strip(), option, end=True)
    assert start is not None and end is not None
    if start > end:
        raise ConfigError(f"source.{option}: the window {text} starts after it ends")
    return start, end, text


def parse_windows(values: Any, option: str) -> list[tuple[datetime, datetime, str]]:
    """Two or more windows, in time order and not overlapping (one scene, one date, per window)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ConfigError(f"source.{option}: a list of windows START/END, got {values!r}")
    wins = [parse_window(v, f"{option}[{i}]") for i, v in enumerate(values)]
    if len(wins) == 1:
        raise ConfigError(
            f"source.{option}: one window ({wins[0][2]}) makes no time stack; give two or more, or use "
            "source.start / source.end for a single scene"
        )
    for i in range(1, len(wins)):
        if wins[i][0] <= wins[i - 1][1]:
            raise ConfigError(
                f"source.{option}: windows must be in time order and not overlap: {wins[i][2]} "
                f"(window {i}) starts before {wins[i - 1][2]} (window {i - 1}) ends"
            )
    return wins


def choose(candidates: Sequence[Candidate], rule: str, min_coverage: float, filters_text: str, what: str) -> Candidate:
    """The best candidate covering at least ``min_coverage`` of the AOI."""
    if not candidates:
        raise SourceError(
            f"no Planet scenes match for {what} ({filters_text}); widen source.start/end, "
            "source.max_cloud_cover or the AOI"
        )
    ok = [c for c in candidates if c.coverage >= min_coverage]
    if not ok:
        best = max(candidates, key=lambda c: c.coverage)
        raise SourceError(
            f"{len(candidates)} Planet scenes match for {what} but none covers "
            f"{min_coverage:.0%} of the AOI (best: {best.id}, {best.coverage:.0%}); lower "
            "source.min_aoi_coverage or change the AOI"
        )
    return rank(ok, rule)[0]
