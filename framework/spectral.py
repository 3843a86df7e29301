"""Band roles and spectral indices, shared by the sources, the feature plugins (``indices``, ``context``,
``temporal``) and the deployed model.

**Band roles.** A scene's bands are named by their role, in file order: PlanetScope's four (``blue``,
``green``, ``red``, ``nir``, the default everywhere) or any of :data:`SPECTRAL_ROLES` (Sentinel-2 /
Landsat: ``coastal``, ``red_edge`` (S2 B5), ``red_edge2`` (B6), ``red_edge3`` (B7), ``nir_narrow``
(B8A), ``swir1`` (~1.6 um), ``swir2`` (~2.2 um)), or an index stored as a band (``ndvi``... of
:data:`INDICES`: index-only stacks, one NDVI band per date). Feature names carry the roles.

**Indices.** An index the scene holds as a band is that band; otherwise it is computed from the bands
it needs; a scene with neither is refused in one line naming the option and the missing band
(:func:`check_index_bands`, run before any pixel is read).

=======  ==========================================  ===============================================
name     formula                                     what it shows
=======  ==========================================  ===============================================
ndvi     (nir - red) / (nir + red)                   green vegetation (Rouse et al. 1974)
ndwi     (green - nir) / (green + nir)               open water (McFeeters 1996)
savi     (1 + L)(nir - red) / (nir + red + L)        vegetation with a soil-brightness correction L
                                                     (Huete 1988)
sr       nir / red                                   simple ratio
evi      2.5 (nir - red) / (nir + 6 red - 7.5 blue   vegetation, less saturated than NDVI
         + 1)                                        (Huete et al. 2002)
ndre     (nir - red_edge) / (nir + red_edge)         chlorophyll (red-edge NDVI; Gitelson & Merzlyak
                                                     1994)
ndmi     (nir - swir1) / (nir + swir1)               leaf water (Gao's 1996 NDWI; Landsat's NDMI)
mndwi    (green - swir1) / (green + swir1)           open water, less confused with built-up land
                                                     (Xu 2006)
nbr      (nir - swir2) / (nir + swir2)               burn / bare soil vs vegetation (Key & Benson 2006)
nbr2     (swir1 - swir2) / (swir1 + swir2)           residue and tillage, dry vs wet soil
=======  ==========================================  ===============================================

Where a denominator is 0 (e.g. nodata pixels, whose reflectance is 0) the index is 0, never inf or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

#: the PlanetScope analytic product's four bands, the default roles of a scene
PLANETSCOPE_ROLES: tuple[str, str, str, str] = ("blue", "green", "red", "nir")

#: reflectance band roles a scene may have (file order is given by the source)
SPECTRAL_ROLES: tuple[str, ...] = (
    "coastal",
    "blue",
    "green",
    "red",
    "red_edge",
    "red_edge2",
    "red_edge3",
    "nir",
    "nir_narrow",
    "swir1",
    "swir2",
)

#: roles a Planet metadata XML has DN -> TOA reflectance coefficients for (PlanetScope 4- and 8-band)
PLANET_XML_ROLES: frozenset[str] = frozenset({"coastal", "blue", "green", "red", "red_edge", "nir"})

#: index name -> the bands it needs
INDICES: dict[str, tuple[str, ...]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),
    "savi": ("nir", "red"),
    "sr": ("nir", "red"),
    "evi": ("nir", "red", "blue"),
    "ndre": ("nir", "red_edge"),
    "ndmi": ("nir", "swir1"),
    "mndwi": ("green", "swir1"),
    "nbr": ("nir", "swir2"),
    "nbr2": ("swir1", "swir2"),
}

#: every role a band may have: a reflectance band or an index stored as a band
ROLES: tuple[str, ...] = (*SPECTRAL_ROLES, *INDICES)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float32, 0 where ``den`` is 0 or the result is not finite."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(num, den, out=out, where=den != 0)
    out[~np.isfinite(out)] = 0.0
    return out


def check_roles(roles: Sequence[str], option: str) -> tuple[str, ...]:
    """Lower-cased band roles; one :class:`ConfigError` naming ``option`` for an unknown or repeated one."""
    names = tuple(str(r).strip().lower() for r in roles)
    unknown = [r for r in names if r not in ROLES]
    if unknown:
        raise ConfigError(
            f"{option}: unknown band role {unknown[0]!r} (bands: {', '.join(SPECTRAL_ROLES)}; "
            f"or an index stored as a band: {', '.join(INDICES)})"
        )
    dup = sorted({r for r in names if names.count(r) > 1})
    if dup:
        raise ConfigError(f"{option}: the band role {dup[0]!r} is given twice: {list(names)}")
    if not names:
        raise ConfigError(f"{option}: at least one band")
    return names


def parse_band_roles(
    value: object, option: str = "source.bands"
) -> tuple[tuple[int, ...], tuple[str, ...], int | None]:
    """``(file band indexes, their roles, the file's band count or None)`` of a ``bands`` option:

    * four band indexes (``[1, 2, 3, 4]``, the default): PlanetScope's blue, green, red, nir (the file
      holds at least the largest index; count ``None``);
    * the roles of the file's bands in file order (``[blue, green, red, nir, swir1, swir2]``), ``null``
      for a band left out (``[coastal, blue, green, red, null, null, swir1, swir2]``): the file (or one
      date of a stacked file) holds exactly that many bands (the count returned).
    """
    items = [value] if isinstance(value, str | int) else list(value or [])  # type: ignore[call-overload]
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        if len(items) != 4:
            raise ConfigError(
                f"{option}: four band indexes (blue, green, red, NIR), got {items}; other bands are named "
                "by role in file order, e.g. [blue, green, red, nir, swir1, swir2]"
            )
        idx = tuple(int(v) for v in items)
        if min(idx) < 1 or len(set(idx)) != 4:
            raise ConfigError(f"{option}: four different band indexes from 1, got {items}")
        return idx, PLANETSCOPE_ROLES, None
    if not all(v is None or isinstance(v, str) for v in items):
        raise ConfigError(
            f"{option}: four band indexes, or the roles of the file's bands in order (null for a band left out), "
            f"got {items!r}"
        )
    roles = check_roles([str(v) for v in items if v is not None], option)
    return tuple(i + 1 for i, v in enumerate(items) if v is not None), roles, len(items)


def check_indices(indices: Sequence[str] | str, option: str) -> list[str]:
    """Lower-cased index names; one :class:`ConfigError` naming ``option`` for an unknown or repeated one."""
    names = [str(indices).lower()] if isinstance(indices, str) else [str(i).lower() for i in indices]
    unknown = [i for i in names if i not in INDICES]
    if unknown:
        raise ConfigError(f"{option}: unknown index {unknown[0]!r} (known: {', '.join(INDICES)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"{option}: an index is listed twice: {names!r}")
    return names


def check_index_bands(indices: Sequence[str], band_names: Sequence[str], option: str) -> None:
    """Every index is a band of the scene or computable from its bands; else one :class:`ConfigError`
    naming ``option``, the index and the missing band."""
    have = list(band_names)
    for i in indices:
        if i in have:
            continue
        missing = [b for b in INDICES[i] if b not in have]
        if missing:
            raise ConfigError(
                f"{option}: the index {i} needs the {missing[0]!r} band, which the scene does not have "
                f"(bands: {', '.join(have)})"
            )


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
    """The ``indices`` of ``reflectance`` ``(bands, h, w)`` as float32 ``(len(indices), h, w)``; an index
    the scene holds as a band is that band."""
    check_index_bands(indices, band_names, option)
    names = list(band_names)
    computed = [i for i in indices if i not in names]
    b = {n: band(reflectance, names, n, option) for i in computed for n in INDICES[i]}
    out = np.empty((len(indices), *reflectance.shape[1:]), dtype=np.float32)
    for k, i in enumerate(indices):
        if i in names:
            out[k] = reflectance[names.index(i)]
        elif i == "ndvi":
            out[k] = safe_ratio(b["nir"] - b["red"], b["nir"] + b["red"])
        elif i == "ndwi":
            out[k] = safe_ratio(b["green"] - b["nir"], b["green"] + b["nir"])
        elif i == "savi":
            out[k] = (1.0 + savi_l) * safe_ratio(b["nir"] - b["red"], b["nir"] + b["red"] + savi_l)
        elif i == "sr":
            out[k] = safe_ratio(b["nir"], b["red"])
        elif i == "evi":
            out[k] = 2.5 * safe_ratio(b["nir"] - b["red"], b["nir"] + 6.0 * b["red"] - 7.5 * b["blue"] + 1.0)
        else:  # normalised differences of two bands
            x, y = INDICES[i]
            out[k] = safe_ratio(b[x] - b[y], b[x] + b[y])
    return out
