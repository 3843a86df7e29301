"""The data types stages exchange, and the interfaces plugins implement.

Stages exchange file-backed :class:`Scene` objects, label rasters on disk and per-block arrays, never
whole-scene arrays, so every stage works on scenes larger than memory.

Pixel codes used throughout: ``0`` non-crop, ``1`` crop, ``255`` ignore / nodata (:data:`NONCROP`,
:data:`CROP`, :data:`IGNORE`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.windows import Window

NONCROP: int = 0
CROP: int = 1
IGNORE: int = 255
CLASS_NAMES: tuple[str, str] = ("non-crop", "crop")
BAND_NAMES: tuple[str, str, str, str] = ("blue", "green", "red", "nir")

#: DWR land-use survey CLASS1 codes that are agricultural crops (the seed study's choice).
DWR_CROP_CLASSES: tuple[str, ...] = ("G", "R", "F", "P", "T", "D", "C", "V")


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape (rows = height, columns = width)."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared (m² for projected CRSs)."""
        return abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)

    def window_transform(self, window: Window) -> Affine:
        from rasterio.windows import transform as wtransform

        return wtransform(window, self.transform)

    def profile(self, **extra: Any) -> dict[str, Any]:
        """A GeoTIFF profile for a single-band uint8 mask on this grid (tiled, DEFLATE-compressed)."""
        prof: dict[str, Any] = {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": 1,
            "dtype": "uint8",
            "crs": self.crs,
            "transform": self.transform,
            "nodata": IGNORE,
            "compress": "deflate",
            "predictor": 2,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        prof.update(extra)
        return prof


@dataclass(frozen=True)
class VectorGroundTruth:
    """Ground truth polygons in any vector format GDAL reads, or a bare JSON list of GeoJSON features.

    A polygon is crop when ``attribute`` holds one of ``crop_values``. Pixels covered by no polygon are
    non-crop (``uncovered="noncrop"``, the seed study's reading of the DWR survey) or ignored.
    """

    path: Path
    attribute: str = "CLASS1"
    crop_values: tuple[str, ...] = DWR_CROP_CLASSES
    layer: str | None = None
    uncovered: str = "noncrop"


@dataclass(frozen=True)
class RasterGroundTruth:
    """Ground truth as a class raster (e.g. a Cropland Data Layer clip): values map to crop / non-crop."""

    path: Path
    crop_values: tuple[int, ...]
    ignore_values: tuple[int, ...] = ()
    band: int = 1


GroundTruth = VectorGroundTruth | RasterGroundTruth


@dataclass(frozen=True)
class Block:
    """One window of a scene: reflectance ``(bands, h, w)`` float32 and a ``(h, w)`` valid-data mask."""

    window: Window
    reflectance: np.ndarray
    valid: np.ndarray
    #: time stacks only: ``(dates, h, w)`` valid mask of each date (``valid`` is then "valid on at least
    #: one date"); reflectance of a date where that date is invalid is 0
    date_valid: np.ndarray | None = None


@dataclass(frozen=True)
class Acquisition:
    """One date of a time-stack :class:`Scene`: a file (or the date's bands of a stacked file), its
    DN -> reflectance gains and offsets, nodata and optional usable-data raster, and its date.

    ``date`` is an ISO date ``YYYY-MM-DD``. Files on another grid than the scene's first date are read
    warped onto that grid (rasterio ``WarpedVRT``, window by window; nearest neighbour by default).
    """

    date: str
    path: Path
    gains: tuple[float, ...]
    offsets: tuple[float, ...] = ()
    bands: tuple[int, ...] = (1, 2, 3, 4)
    nodata: float | None = None
    usable_path: Path | None = None
    usable_band: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scene:
    """A file-backed scene of 4 PlanetScope bands or any bands named by ``roles`` (or a time stack of
    several dates); nothing is read until a window is asked for.

    ``window`` restricts the scene to part of the file (e.g. an AOI's bounding box): the scene's grid is
    then that window's grid. Reflectance is ``DN * gains[b] + offsets[b]`` per band (Planet's
    ``reflectanceCoefficient`` as gains, or a constant scale). A pixel is valid where not every band
    equals ``nodata`` (or the file's own mask says valid when there is no nodata value), where the
    optional usable-data raster says clear, and inside the optional ``aoi`` (a shapely geometry in the
    scene CRS).

    A **time stack** lists its dates in ``acquisitions`` (2..N, sorted, unique; built and checked by
    :func:`cropseg.scenes.build_stack`): the scene's own ``path``, ``gains``, ``bands``, ``nodata`` and
    usable raster are those of the first date, whose grid (cut by ``window``) is the scene's grid; the
    other dates are read onto it. A block then holds ``dates x bands`` reflectance (date-major, named
    ``<band>@<date>``), the valid mask of each date (``Block.date_valid``) and ``valid`` = valid on at
    least one date. A single-image scene has no ``acquisitions`` and reads exactly as before.
    """

    name: str
    path: Path
    gains: tuple[float, ...]
    offsets: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    bands: tuple[int, ...] = (1, 2, 3, 4)
    window: Window | None = None
    nodata: float | None = None
    aoi: Any = None
    usable_path: Path | None = None
    usable_band: int = 1
    ground_truth: GroundTruth | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    acquisitions: tuple[Acquisition, ...] = ()
    #: resampling of dates on another grid than the first (a rasterio Resampling name)
    resampling: str = "nearest"
    #: the role of each of ``bands`` (:data:`cropseg.spectral.ROLES`: ``swir1``, ``red_edge``, ``ndvi``...);
    #: ``()`` = PlanetScope's blue, green, red, nir
    roles: tuple[str, ...] = ()

    @property
    def dates(self) -> tuple[str, ...]:
        """The ISO dates of a time stack; ``()`` for a single image."""
        return tuple(a.date for a in self.acquisitions)

    @property
    def n_dates(self) -> int:
        return max(1, len(self.acquisitions))

    @property
    def base_band_names(self) -> tuple[str, ...]:
        """The band names of one date: their roles (``roles``, by default blue, green, red, nir)."""
        return tuple(self.roles) if self.roles else BAND_NAMES[: len(self.bands)]

    @cached_property
    def grid(self) -> Grid:
        import rasterio

        with rasterio.open(self.path) as src:
            if self.window is None:
                return Grid(src.crs, src.transform, src.width, src.height)
            w = self.window
            return Grid(src.crs, src.window_transform(w), int(w.width), int(w.height))

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names; for a time stack ``<band>@<date>``, date-major (every band of date 1, then date 2...)."""
        base = self.base_band_names
        if not self.acquisitions:
            return base
        return tuple(f"{b}@{d}" for d in self.dates for b in base)

    @contextmanager
    def reader(self) -> Iterator[SceneReader]:
        """Open the scene's files once for many window reads."""
        import rasterio

        if self.acquisitions:
            with StackReader.open(self) as stack:
                yield stack
            return
        with rasterio.open(self.path) as src:
            usable = rasterio.open(self.usable_path) if self.usable_path else None
            try:
                yield SceneReader(self, src, usable)
            finally:
                if usable is not None:
                    usable.close()


class SceneReader:
    """Reads windows of a :class:`Scene` (windows are relative to the scene's grid)."""

    def __init__(self, scene: Scene, src: rasterio.DatasetReader, usable: rasterio.DatasetReader | None):
        self.scene = scene
        self.src = src
        self.usable = usable
        self.grid = scene.grid
        self._gains = np.asarray(scene.gains, dtype=np.float32)[:, None, None]
        self._offsets = np.asarray(scene.offsets, dtype=np.float32)[:, None, None]

    def _file_window(self, window: Window) -> Window:
        from rasterio.windows import Window

        if self.scene.window is None:
            return window
        return Window(
            window.col_off + self.scene.window.col_off,
            window.row_off + self.scene.window.row_off,
            window.width,
            window.height,
        )

    def read(self, window: Window) -> Block:
        """Reflectance and valid mask for ``window``; parts outside the file read as invalid, and so do
        NaN and +-inf pixels."""
        s = self.scene
        refl, valid = _read_dn_window(
            self.src,
            self.usable,
            s.path,
            s.bands,
            self._gains,
            self._offsets,
            s.nodata,
            s.usable_band,
            self._file_window(window),
        )
        if s.aoi is not None:
            _apply_aoi(valid, s.aoi, self.grid.window_transform(window))
        refl[:, ~valid] = 0.0
        return Block(window, refl, valid)


class StackReader(SceneReader):
    """Reads windows of a time-stack :class:`Scene`: every date on the first date's grid (dates on
    another grid through a ``WarpedVRT``, windowed), ``dates x bands`` reflectance and per-date masks."""

    def __init__(self, scene: Scene, dates: list[tuple[Acquisition, Any, Any]]):
        self.scene = scene
        self.grid = scene.grid
        self.src = dates[0][1]
        self.usable = dates[0][2]
        self._dates = [
            (
                a,
                src,
                usable,
                np.asarray(a.gains, dtype=np.float32)[:, None, None],
                np.asarray(a.offsets or (0.0,) * len(a.bands), dtype=np.float32)[:, None, None],
            )
            for a, src, usable in dates
        ]

    @classmethod
    @contextmanager
    def open(cls, scene: Scene) -> Iterator[StackReader]:
        from contextlib import ExitStack

        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        resampling = Resampling[scene.resampling]
        with ExitStack() as stack:
            base = stack.enter_context(rasterio.open(scene.acquisitions[0].path))
            opened = []
            for a in scene.acquisitions:
                src = stack.enter_context(rasterio.open(a.path))
                same = (
                    src.crs == base.crs
                    and (src.width, src.height) == (base.width, base.height)
                    and src.transform.almost_equals(base.transform)
                )
                grid = dict(crs=base.crs, transform=base.transform, width=base.width, height=base.height)
                if not same:
                    extra: dict[str, Any] = {"nodata": a.nodata} if a.nodata is not None else {"add_alpha": True}
                    src = stack.enter_context(WarpedVRT(src, resampling=resampling, **grid, **extra))
                usable = None
                if a.usable_path is not None:
                    usable = stack.enter_context(rasterio.open(a.usable_path))
                    if not same:
                        usable = stack.enter_context(WarpedVRT(usable, resampling=Resampling.nearest, nodata=0, **grid))
                opened.append((a, src, usable))
            yield cls(scene, opened)

    def read(self, window: Window) -> Block:
        """``(dates * bands, h, w)`` reflectance (0 where a date is invalid), the per-date valid masks
        ``(dates, h, w)`` and ``valid`` = valid on at least one date (and inside the AOI)."""
        fwin = self._file_window(window)
        h, w = int(window.height), int(window.width)
        nb = len(self.scene.bands)
        refl = np.zeros((len(self._dates) * nb, h, w), dtype=np.float32)
        date_valid = np.zeros((len(self._dates), h, w), dtype=bool)
        for t, (a, src, usable, gains, offsets) in enumerate(self._dates):
            r, v = _read_dn_window(src, usable, a.path, a.bands, gains, offsets, a.nodata, a.usable_band, fwin)
            r[:, ~v] = 0.0
            refl[t * nb : (t + 1) * nb] = r
            date_valid[t] = v
        valid: np.ndarray = np.asarray(date_valid.any(axis=0))
        if self.scene.aoi is not None:
            _apply_aoi(valid, self.scene.aoi, self.grid.window_transform(window))
            date_valid &= valid[None]
        refl[:, ~valid] = 0.0
        return Block(window, refl, valid, date_valid)


def _read_dn_window(
    src: Any,
    usable: Any,
    path: Path,
    bands: Sequence[int],
    gains: np.ndarray,
    offsets: np.ndarray,
    nodata: float | None,
    usable_band: int,
    fwin: Window,
) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance ``(bands, h, w)`` and valid mask of file window ``fwin`` (invalid pixels not zeroed)."""
    import rasterio.errors

    fill = nodata if nodata is not None else 0
    try:
        dn = _boundless(src, list(bands), fwin, fill)
    except rasterio.errors.RasterioError as exc:  # a truncated or corrupt file fails only when read
        from .errors import InputFileError

        raise InputFileError(
            f"{path}: cannot read pixels (truncated or corrupt file?): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    if nodata is not None:
        valid = ~np.all(dn == nodata, axis=0)
    else:
        masks = _boundless(src, list(bands), fwin, 0, masks=True)
        valid = np.all(masks > 0, axis=0)
    # boundless reads outside the file are invalid whatever the fill value
    valid &= _inside_mask(fwin, src.height, src.width)
    if usable is not None:
        clear = _boundless(usable, [usable_band], fwin, 0)[0]
        valid &= clear > 0
    with np.errstate(invalid="ignore", over="ignore"):
        refl = dn.astype(np.float32) * gains + offsets
    if not np.isfinite(refl).all():
        # NaN and +-inf (in a float scene, or DN beyond float32) are nodata, like the nodata value
        valid &= np.isfinite(refl).all(axis=0)
    return refl, valid


def _boundless(src: Any, indexes: list[int], fwin: Window, fill: float, masks: bool = False) -> np.ndarray:
    """``src.read`` (or ``read_masks``) of ``fwin`` with the parts outside the raster set to ``fill``; a
    ``WarpedVRT`` (no boundless reads) reads the part inside and is padded by hand."""
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    if not isinstance(src, WarpedVRT):
        if masks:
            return src.read_masks(indexes, window=fwin, boundless=True)
        return src.read(indexes, window=fwin, boundless=True, fill_value=fill)
    r0, c0, h, w = int(fwin.row_off), int(fwin.col_off), int(fwin.height), int(fwin.width)
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, src.height), min(c0 + w, src.width)
    out = np.full((len(indexes), h, w), fill, dtype="uint8" if masks else src.dtypes[indexes[0] - 1])
    if rr1 > rr0 and cc1 > cc0:
        inner = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        part = src.read_masks(indexes, window=inner) if masks else src.read(indexes, window=inner)
        out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = part
    return out


def _apply_aoi(valid: np.ndarray, aoi: Any, transform: Affine) -> None:
    from rasterio.features import geometry_mask

    h, w = valid.shape
    valid &= geometry_mask([aoi], out_shape=(h, w), transform=transform, invert=True)


def _inside_mask(window: Window, height: int, width: int) -> np.ndarray:
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    rows = np.arange(r0, r0 + h)
    cols = np.arange(c0, c0 + w)
    return ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]


@dataclass(frozen=True)
class SceneSet:
    """What a source provides: a training scene and a held-out test scene."""

    train: Scene
    test: Scene
    synthetic: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelRaster:
    """A uint8 label GeoTIFF on a scene's grid (0 non-crop, 1 crop, 255 ignore) and its pixel counts."""

    path: Path
    grid: Grid
    counts: Mapping[str, int]
    #: what the labeler noticed about the ground truth, logged as metrics (e.g. ``repaired_geometries``)
    notes: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """What a classifier reports about its fit: chosen hyperparameters and CV metrics to log."""

    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: run tags to set (without the ``cropseg.`` prefix), e.g. ``warning.grid_edge`` from tuning
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorResult:
    """Polygons written by a vectorizing postprocessor."""

    path: Path
    n_polygons: int
    area_ha: float
    #: polygons left out (e.g. below a minimum area) and their area
    n_dropped: int = 0
    area_dropped_ha: float = 0.0


# --------------------------------------------------------------------------------------------------
# Interfaces plugins implement (structural: any object with these members works).
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    """Provides the train and test scenes (with their ground truth) of a run.

    A source may also have a ``check(workdir)`` method: cheap input checks (files exist and open, band
    counts, CRS, grids, ground truth overlapping the scenes, sizes that fit) that the pipeline runs
    before any scene is read (see :mod:`cropseg.preflight`); it raises a :class:`~cropseg.CropsegError`.
    """

    synthetic: bool

    def load(self, workdir: Path) -> SceneSet:
        """Return the scenes; ``workdir`` is a cache directory the source may write to."""
        ...


@runtime_checkable
class Labeler(Protocol):
    """Turns a scene's ground truth into a label raster on the scene's grid."""

    def label(self, scene: Scene, out_path: Path) -> LabelRaster:
        """Write ``out_path`` (uint8 0/1/255 GeoTIFF on ``scene.grid``) block by block and describe it."""
        ...


@runtime_checkable
class Features(Protocol):
    """Turns a block of reflectance ``(bands, h, w)`` into features ``(n_features, h, w)`` float32.

    Spatial features (whose value at a pixel depends on its neighbours) also declare ``halo: int``, the
    pixels of context they need per side, and accept ``compute(reflectance, band_names, valid=mask)``: the
    framework then reads every block grown by ``halo`` (pixels outside the scene or invalid marked so in
    ``valid``) and crops the result (:mod:`cropseg.featurize`). Models on them cannot classify pixel rows.
    """

    def names(self, band_names: Sequence[str]) -> list[str]: ...

    def compute(self, reflectance: np.ndarray, band_names: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Classifier(Protocol):
    """A pixel classifier on plain ``(n_pixels, n_features)`` arrays; knows nothing of rasters.

    ``fit`` receives labels 0/1 and optional ``groups`` (spatial block ids, for grouped CV) and returns a
    :class:`FitResult`. ``predict`` returns uint8 0/1 of length ``n_pixels``. The fitted object must be
    picklable (it is logged as the run's model).
    """

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> FitResult: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class MaskFilter(Protocol):
    """A postprocessor mask -> mask that needs ``halo`` neighbouring pixels on each side of a block.

    ``apply`` gets a uint8 0/1 block padded by ``halo`` pixels (edge pixels replicated outside the scene,
    invalid pixels as 0) and returns the filtered block of the same shape; the framework crops the halo,
    so block-wise results equal whole-image results.
    """

    halo: int

    def apply(self, mask: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Vectorizer(Protocol):
    """A postprocessor mask -> polygons: writes GeoJSON (EPSG:4326) from a mask GeoTIFF."""

    def vectorize(self, mask_path: Path, out_path: Path) -> VectorResult: ...


# --------------------------------------------------------------------------------------------------
# Patch models: models that see neighbourhoods (U-Net and relatives), fitted on image patches.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchSet:
    """Training or validation patches drawn by the framework (:mod:`cropseg.patches`).

    ``X`` features ``(n, f, p, p)`` float32 (the run's feature extractor on each patch), ``y`` labels
    ``(n, p, p)`` uint8 with 0 non-crop, 1 crop and 255 ignore (unlabelled or nodata: mask these out of
    the loss and the metrics), ``origins`` the patches' top-left ``(row, col)`` in the scene's grid.
    """

    X: np.ndarray
    y: np.ndarray
    origins: np.ndarray
    feature_names: list[str]

    def __len__(self) -> int:
        return int(self.X.shape[0])


class EpochCallback(Protocol):
    """Called by a patch model after each epoch: ``(epoch, train_loss, val_pred)``.

    ``epoch`` counts from 1; ``val_pred`` is the model's uint8 0/1 prediction of the validation patches
    ``(n, p, p)`` (or None without validation). The framework logs the loss and the validation crop
    F1 / IoU as MLflow step metrics and a progress line, and returns the validation metrics
    (``val_crop_f1``, ``val_iou``...) plus ``target``: the run's target metric (``evaluate.target``,
    :mod:`cropseg.targets`) on the validation patches, which the model should maximise (kept epoch,
    early stopping). Batch-level progress inside an epoch is the model's: :class:`cropseg.patches.TrainingProgress`.
    """

    def __call__(self, epoch: int, train_loss: float, val_pred: np.ndarray | None) -> Mapping[str, float]: ...


@runtime_checkable
class PatchModel(Protocol):
    """A model that learns from image patches and predicts a whole block at once (registered with
    :func:`cropseg.hookspecs.cropseg_register_patch_models`, selected as ``classifier=<name>``).

    * ``patch_size``: side in pixels of the square training patches the framework draws for it.
    * ``halo``: pixels of context it needs on each side of a block when predicting. The framework cuts
      the scene into fixed tiles (the model's optional ``tile_size``, default 512 px, anchored at the
      scene's origin), reads each grown by ``halo`` (pixels outside the scene read as invalid, features
      of zero reflectance), and keeps only the tile's centre, so masks do not depend on ``block_size``.
    * ``prepare(n_features)``: checks the options that need the feature count (weights files, devices)
      before any scene is loaded; raise :class:`cropseg.errors.ConfigError` with one clear line.
    * ``fit_patches(train, validation, on_epoch)``: fit on :class:`PatchSet` patches drawn from the
      training scene only (``validation`` comes from whole spatial blocks of the training scene held out
      from ``train``; never the test scene), call ``on_epoch`` after every epoch and return a
      :class:`FitResult`.
    * ``predict_block(features, valid)``: features ``(f, h, w)`` float32 of a block plus its halo and
      its valid mask ``(h, w)`` -> uint8 0/1 ``(h, w)`` (the framework crops the halo and sets nodata).

    Optional members: ``check_feature_names(names)`` checks the run's feature names once the scenes are
    known, before any pixel is read (raise :class:`cropseg.errors.ConfigError`; ``tempcnn`` refuses
    single-date features); ``predict_rows(features)`` answers pixel rows ``(n, f)`` exactly (a per-pixel
    model; the served pyfunc model uses it instead of predicting each row as a uniform field).

    The fitted object must be picklable (it is logged as the run's model).
    """

    patch_size: int
    halo: int

    def prepare(self, n_features: int) -> None: ...

    def fit_patches(
        self, train: PatchSet, validation: PatchSet | None, on_epoch: EpochCallback | None = None
    ) -> FitResult: ...

    def predict_block(self, features: np.ndarray, valid: np.ndarray) -> np.ndarray: ...
