"""Building :class:`~cropseg.types.Scene` objects from files: shared by every source plugin.

Sources (``local``, ``planet``...) hand these helpers the files they found or downloaded: a 4-band
image, its Planet metadata XML (DN -> TOA reflectance) or a constant scale (e.g. surface reflectance
x 10000), an optional AOI that restricts the scene to a window, an optional usable-data raster (udm2) and
the ground truth (vector file or class raster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputFileError, RasterFormatError
from .planet_metadata import parse_metadata
from .raster import check_scene_raster, open_raster
from .types import Grid, GroundTruth, RasterGroundTruth, Scene, VectorGroundTruth

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
        bands=tuple(int(b) for b in bands),
        window=window,
        nodata=nodata,
        aoi=aoi,
        usable_path=usable,
        usable_band=usable_band,
        ground_truth=ground_truth,
        metadata=dict(metadata),
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
