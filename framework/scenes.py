"""Building :class:`~cropseg.types.Scene` objects from files: shared by every source plugin.

Sources (``local``, ``planet``...) hand these helpers the files they found or downloaded: an image
(PlanetScope's four bands, or bands named by their roles, :mod:`cropseg.spectral`), its Planet metadata XML (DN -> TOA reflectance) or a constant scale (e.g. surface reflectance
x 10000), an optional AOI that restricts the scene to a window, an optional usable-data raster (udm2) and
the ground truth (vector file or class raster).

Time stacks (several dates of the same place, :attr:`cropseg.types.Scene.acquisitions`) are built by
:func:`build_stack`, which refuses, each in one line before any pixel is read: duplicated or unsorted
dates, dates whose files have different band counts, and dates that do not overlap the first date;
:func:`check_stack_coverage` (a decimated read of the masks, run by the sources' ``check``) refuses a
date with no valid pixel in the scene. Dates come from the explicit list, the Planet metadata XML
(``acquired``) or the file name (:data:`DATE_PATTERN`).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputFileError, RasterFormatError, StackError
from .planet_metadata import parse_metadata
from .raster import check_scene_raster, open_raster
from .types import Acquisition, Grid, GroundTruth, RasterGroundTruth, Scene, VectorGroundTruth

#: the default file-name date pattern: the first ``YYYYMMDD`` or ``YYYY-MM-DD`` in the name (Planet item
#: ids start with it: ``20160510_183512_0e26_3B_AnalyticMS.tif``); a custom pattern names its groups
#: ``year``, ``month``, ``day`` (or one group ``date`` holding an ISO or ``YYYYMMDD`` date)
DATE_PATTERN = r"(?P<year>(?:19|20)\d{2})-?(?P<month>[01]\d)-?(?P<day>[0-3]\d)"
RESAMPLING = ("nearest", "bilinear", "cubic", "average")

RASTER_SUFFIXES = {".tif", ".tiff", ".img", ".vrt"}
UNCOVERED = ("noncrop", "ignore")


def existing_path(value: Any, option: str) -> Path | None:
    """``value`` as a path that exists (``None`` when unset); a missing file names the option."""
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    if not p.exists():
        raise InputFileError(f"{p}: file not found (source.{option})")
    return p


def make_ground_truth(
    path: Path,
    *,
    attribute: str = "CLASS1",
    crop_values: Sequence[Any] = (),
    ignore_values: Sequence[int] = (),
    uncovered: str = "noncrop",
    layer: str | None = None,
    option: str = "ground_truth",
) -> GroundTruth:
    """A class raster (``.tif``/``.img``/``.vrt``: pixel values in ``crop_values`` are crop) or a vector file
    (``attribute`` values in ``crop_values`` are crop)."""
    if uncovered not in UNCOVERED:
        raise ConfigError(f"source.uncovered: 'noncrop' or 'ignore', got {uncovered!r}")
    if path.suffix.lower() in RASTER_SUFFIXES:
        try:
            crop = tuple(int(v) for v in crop_values)
        except (TypeError, ValueError):
            raise ConfigError(
                f"source.crop_values: a class raster ({option}) needs integer values, got {list(crop_values)}"
            ) from None
        return RasterGroundTruth(path, crop, tuple(int(v) for v in ignore_values))
    return VectorGroundTruth(path, attribute, tuple(str(v) for v in crop_values), layer, uncovered)


def toa_gains(metadata_xml: Path, bands: Sequence[int]) -> tuple[tuple[float, ...], dict[str, Any]]:
    """DN -> TOA reflectance gains for ``bands`` from a Planet metadata XML, and provenance metadata."""
    meta = parse_metadata(metadata_xml)
    meta.gains(max(int(b) for b in bands))  # every selected band has a coefficient
    gains = tuple(meta.reflectance_coefficients[int(b)] for b in bands)
    return gains, {
        "scene_id": meta.scene_id,
        "acquired": meta.acquired.isoformat() if meta.acquired else None,
        "reflectance": "toa_xml",
    }


def aoi_window(grid: Grid, aoi: Any, *, image: Path, what: Any) -> tuple[Any, Any]:
    """The window of ``grid`` covering ``aoi`` (a shapely geometry in the grid's CRS), and the AOI clipped
    to the grid; :class:`InputFileError` naming ``what`` when they do not overlap."""
    import shapely
    from rasterio.windows import from_bounds

    west, south, east, north = grid.bounds
    clipped = aoi.intersection(shapely.box(west, south, east, north))
    if clipped.is_empty or clipped.area == 0:
        raise InputFileError(f"{what}: the AOI does not overlap {image}")
    window = from_bounds(*clipped.bounds, transform=grid.transform).round_offsets().round_lengths()
    window = window.intersection(
        from_bounds(west, south, east, north, transform=grid.transform).round_offsets().round_lengths()
    )
    return window, clipped


def aoi_geometry(value: Any, crs: Any, *, option: str) -> Any:
    """An AOI given as a vector file path or inline GeoJSON (geometry, Feature or FeatureCollection, in
    EPSG:4326), as one shapely geometry in ``crs``."""
    import geopandas as gpd
    import shapely

    from .vector import WGS84, read_aoi, to_crs

    if isinstance(value, Mapping):
        try:
            if value.get("type") == "FeatureCollection":
                gdf = gpd.GeoDataFrame.from_features(list(value.get("features") or []), crs=WGS84)
            elif value.get("type") == "Feature":
                gdf = gpd.GeoDataFrame.from_features([dict(value)], crs=WGS84)
            else:
                gdf = gpd.GeoDataFrame(geometry=[shapely.geometry.shape(dict(value))], crs=WGS84)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, shapely.errors.GEOSException) as exc:
            raise ConfigError(f"source.{option}: not a GeoJSON geometry, Feature or FeatureCollection: {exc}") from None
        gdf = to_crs(gdf, crs, what=f"source.{option}")
        polys = gdf.geometry[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
        if polys.empty:
            raise ConfigError(f"source.{option}: the AOI holds no polygon")
        return shapely.make_valid(polys.union_all())
    path = existing_path(value, option)
    if path is None:
        raise ConfigError(f"source.{option}: required (a GeoJSON/vector file or an inline GeoJSON geometry)")
    return read_aoi(path, crs)


def build_scene(
    role: str,
    image: Path,
    *,
    gains: Sequence[float],
    bands: Sequence[int],
    nodata: float | None,
    ground_truth: GroundTruth | None,
    metadata: Mapping[str, Any],
    aoi: Any = None,
    aoi_what: Any = None,
    usable: Path | None = None,
    usable_band: int = 1,
    expected_bands: int = 4,
    roles: Sequence[str] = (),
    offsets: Sequence[float] | None = None,
) -> Scene:
    """A file-backed scene: ``image`` checked (band count, georeferencing), restricted to the window of
    ``aoi`` (shapely, in the image CRS) when given."""
    grid = check_scene_raster(image, bands=expected_bands, indexes=bands)
    window = None
    if aoi is not None:
        window, aoi = aoi_window(grid, aoi, image=image, what=aoi_what or f"{role} AOI")
    if usable is not None:
        with open_raster(usable, what="usable-data (udm2)") as src:
            if src.count < usable_band:
                raise RasterFormatError(f"{usable}: usable-data band {usable_band} missing ({src.count} bands)")
            if (src.width, src.height) != (grid.width, grid.height) or not src.transform.almost_equals(grid.transform):
                raise RasterFormatError(
                    f"{usable}: the usable-data raster's grid ({src.width}x{src.height} px) does "
                    f"not match the scene {image} ({grid.width}x{grid.height} px); grids must match"
                )
            if src.crs is not None and src.crs != grid.crs:
                raise RasterFormatError(
                    f"{usable}: the usable-data raster's CRS {src.crs} differs from the scene's {grid.crs}"
                )
    return Scene(
        name=role,
        path=image,
        gains=tuple(float(g) for g in gains),
        offsets=tuple(float(o) for o in offsets) if offsets is not None else (0.0,) * len(bands),
        bands=tuple(int(b) for b in bands),
        window=window,
        nodata=nodata,
        aoi=aoi,
        usable_path=usable,
        usable_band=usable_band,
        ground_truth=ground_truth,
        metadata=dict(metadata),
        roles=tuple(roles),
    )


def check_ground_truth(scene: Scene) -> None:
    """Cheap ground-truth checks for a scene before any pixel is read: a vector file is readable, its CRS
    known and crop polygons overlap the scene (:func:`cropseg.vector.ground_truth_for_grid` names what is
    wrong); a class raster opens, has a CRS and overlaps the scene."""
    from .errors import CRSMismatchError, GroundTruthError
    from .vector import ground_truth_for_grid

    gt = scene.ground_truth
    if isinstance(gt, VectorGroundTruth):
        ground_truth_for_grid(gt, scene.grid)
    elif isinstance(gt, RasterGroundTruth):
        from rasterio.warp import transform_bounds

        with open_raster(gt.path, what="ground-truth raster") as src:
            if src.crs is None:
                raise CRSMismatchError(f"{gt.path}: the ground-truth raster has no CRS")
            try:
                w, s, e, n = transform_bounds(src.crs, scene.grid.crs, *src.bounds, densify_pts=21)
            except Exception as exc:  # noqa: BLE001 - PROJ/GDAL errors for impossible transforms
                raise CRSMismatchError(
                    f"{gt.path}: cannot transform {src.crs} to the scene CRS {scene.grid.crs}: {exc}"
                ) from None
            west, south, east, north = scene.grid.bounds
            if e <= west or w >= east or n <= south or s >= north:
                raise GroundTruthError(
                    f"{gt.path}: the ground-truth raster does not overlap the {scene.name} scene {scene.path}"
                )


def parse_date(value: Any, option: str) -> str:
    """An ISO date ``YYYY-MM-DD`` from a date, datetime, ``YYYY-MM-DD[...]`` or ``YYYYMMDD`` string."""
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    text = str(value).strip()
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})(?:[T ].*)?", text)
    try:
        if m is None:
            raise ValueError
        return _dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        raise ConfigError(f"source.{option}: {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from None


def date_from_name(path: Path, pattern: str, option: str) -> str | None:
    """The date in ``path``'s file name by ``pattern`` (:data:`DATE_PATTERN` by default), or None."""
    try:
        m = re.search(pattern, Path(path).name)
    except re.error as exc:
        raise ConfigError(f"source.date_pattern: not a regular expression: {exc}") from None
    if m is None:
        return None
    groups = m.groupdict()
    if "date" in groups:
        return parse_date(groups["date"], option)
    if not {"year", "month", "day"} <= groups.keys():
        raise ConfigError("source.date_pattern: name the groups year, month and day (or one group date)")
    return parse_date(f"{groups['year']}-{groups['month']}-{groups['day']}", option)


def check_dates(dates: Sequence[str], files: Sequence[Path], option: str) -> None:
    """Dates of a stack strictly increasing: one line naming the duplicated or out-of-order date."""
    for i in range(1, len(dates)):
        if dates[i] == dates[i - 1]:
            raise StackError(
                f"source.{option}: the date {dates[i]} is given twice ({files[i - 1]} and {files[i]}); "
                "one image per date (mosaic same-day scenes first)"
            )
        if dates[i] < dates[i - 1]:
            raise StackError(
                f"source.{option}: dates must be in time order, {dates[i]} ({files[i]}) comes after "
                f"{dates[i - 1]} ({files[i - 1]})"
            )


def build_stack(
    role: str,
    acquisitions: Sequence[Acquisition],
    *,
    ground_truth: GroundTruth | None,
    metadata: Mapping[str, Any],
    option: str,
    aoi: Any = None,
    aoi_what: Any = None,
    resampling: str = "nearest",
    roles: Sequence[str] = (),
) -> Scene:
    """A time-stack scene of ``acquisitions`` (two or more dates, sorted, unique). The first date's grid
    (cut to ``aoi``'s window) is the scene's grid; every date must have the first date's band count and
    overlap it (in any CRS: other grids are warped onto the first). Nothing is read but headers."""
    from rasterio.warp import transform_bounds

    if resampling not in RESAMPLING:
        raise ConfigError(f"source.resampling: one of {', '.join(RESAMPLING)}, got {resampling!r}")
    acqs = list(acquisitions)
    if len(acqs) < 2:
        raise StackError(f"source.{option}: a time stack needs at least two dates, got {len(acqs)}")
    check_dates([a.date for a in acqs], [a.path for a in acqs], option)
    first = acqs[0]
    base = build_scene(
        role,
        first.path,
        gains=first.gains,
        bands=first.bands,
        nodata=first.nodata,
        ground_truth=ground_truth,
        metadata=metadata,
        aoi=aoi,
        aoi_what=aoi_what,
        usable=first.usable_path,
        usable_band=first.usable_band,
        expected_bands=len(first.bands),
        roles=roles,
    )
    west, south, east, north = base.grid.bounds
    with open_raster(first.path, what="scene") as src:
        n_first = src.count
    for a in acqs[1:]:
        if len(a.bands) != len(first.bands):
            raise StackError(
                f"{a.path}: date {a.date} has {len(a.bands)} bands selected, date {first.date} "
                f"({first.path}) {len(first.bands)}; every date needs the same bands"
            )
        grid = check_scene_raster(a.path, bands=len(a.bands), indexes=a.bands)
        with open_raster(a.path, what="scene") as src:
            count = src.count
        if a.path != first.path and count != n_first:
            raise StackError(
                f"{a.path}: date {a.date} has {count} bands, date {first.date} ({first.path}) has "
                f"{n_first}; every date of a stack needs the same bands"
            )
        try:
            w, s_, e, n = transform_bounds(grid.crs, base.grid.crs, *grid.bounds, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - PROJ errors for impossible transforms
            raise StackError(f"{a.path}: cannot transform {grid.crs} to {base.grid.crs}: {exc}") from None
        if e <= west or w >= east or n <= south or s_ >= north:
            raise StackError(
                f"{a.path}: date {a.date} does not overlap the {role} scene's first date {first.date} "
                f"({first.path}); every date must cover the same place"
            )
        if a.usable_path is not None:
            with open_raster(a.usable_path, what="usable-data (udm2)") as src:
                if src.count < a.usable_band:
                    raise RasterFormatError(
                        f"{a.usable_path}: usable-data band {a.usable_band} missing ({src.count} bands)"
                    )
    return Scene(
        name=base.name,
        path=base.path,
        gains=base.gains,
        offsets=first.offsets or (0.0,) * len(first.bands),
        bands=base.bands,
        window=base.window,
        nodata=base.nodata,
        aoi=base.aoi,
        usable_path=base.usable_path,
        usable_band=base.usable_band,
        ground_truth=base.ground_truth,
        metadata={**dict(metadata), "dates": [a.date for a in acqs]},
        acquisitions=tuple(acqs),
        resampling=resampling,
        roles=base.roles,
    )


def check_stack_coverage(scene: Scene, max_side: int = 512) -> None:
    """Refuse, in one line, a date of a time stack with no valid pixel in the scene (nodata, the
    usable-data mask, outside its footprint), read decimated to at most ``max_side`` pixels per side (so
    a date whose few valid pixels all fall between the decimated samples is refused too)."""
    import numpy as np
    from rasterio.enums import Resampling

    if not scene.acquisitions:
        return
    grid = scene.grid
    f = max(1.0, max(grid.height, grid.width) / max_side)
    shape = (max(1, round(grid.height / f)), max(1, round(grid.width / f)))
    from rasterio.windows import Window

    with scene.reader() as reader:
        fwin = reader._file_window(Window(0, 0, grid.width, grid.height))
        for a, src, usable, *_ in reader._dates:  # type: ignore[attr-defined]
            nb = len(a.bands)
            dn = src.read(list(a.bands), window=fwin, out_shape=(nb, *shape), resampling=Resampling.nearest)
            if a.nodata is not None:
                valid = ~np.all(dn == a.nodata, axis=0)
            else:
                masks = src.read_masks(list(a.bands), window=fwin, out_shape=(nb, *shape))
                valid = np.all(masks > 0, axis=0)
            if usable is not None:
                clear = usable.read(a.usable_band, window=fwin, out_shape=shape, resampling=Resampling.nearest)
                valid &= clear > 0
            if not valid.any():
                raise StackError(
                    f"{a.path}: date {a.date} has no valid pixel in the {scene.name} scene (nodata or "
                    "cloud-masked everywhere); leave the date out"
                )
