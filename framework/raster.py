"""Block-wise raster I/O: windows, halos, atomic block writers and decimated previews."""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from .errors import InputFileError, RasterFormatError
from .types import Grid

DEFAULT_BLOCK = 512


def iter_windows(height: int, width: int, block: int = DEFAULT_BLOCK) -> Iterator[Window]:
    """Row-major windows of at most ``block`` x ``block`` pixels covering a ``height`` x ``width`` grid."""
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield Window(c, r, min(block, width - c), min(block, height - r))


def n_windows(height: int, width: int, block: int = DEFAULT_BLOCK) -> int:
    return (-(-height // block)) * (-(-width // block))


def read_with_halo(src: rasterio.DatasetReader, window: Window, halo: int, band: int = 1) -> np.ndarray:
    """Read ``window`` grown by ``halo`` pixels per side; outside the raster, edge pixels are replicated
    (OpenCV's BORDER_REPLICATE), so a filter applied per block equals the filter on the whole image."""
    r0, c0 = int(window.row_off) - halo, int(window.col_off) - halo
    r1, c1 = int(window.row_off + window.height) + halo, int(window.col_off + window.width) + halo
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r1, src.height), min(c1, src.width)
    data = src.read(band, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    pad = ((rr0 - r0, r1 - rr1), (cc0 - c0, c1 - cc1))
    if any(p for pair in pad for p in pair):
        data = np.pad(data, pad, mode="edge")
    return data


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name is made of safe characters only and kept short, whatever ``path`` is called: GDAL
    cuts names at characters such as ``;``, and a name near the file-system limit would not take a suffix.
    ``path`` itself is taken literally. The temporary file is removed whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[:64]
    tmp = path.with_name(f".{safe}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def block_writer(path: Path, grid: Grid, **profile: Any) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a tiled, compressed single-band GeoTIFF on ``grid`` for block writes; the file appears under
    ``path`` only once every block is written (no half-written outputs)."""
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **grid.profile(**profile)) as dst:
            yield dst
        check_written(tmp, path)


def check_written(tmp: Path, path: Path) -> None:
    """GDAL's GeoTIFF writer does not always raise when the disk fills (libtiff prints
    ``_tiffWriteProc: No space left on device`` and the file is left truncated): a file system with no free
    block left after the write means the write was cut short, and ``path`` is not published."""
    try:
        st = os.statvfs(tmp.parent)
    except OSError:
        return
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    if free == 0:
        from .errors import OutputError

        raise OutputError.from_os_error(path.name, path.parent, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))


def open_raster(path: Path | str, *, what: str = "raster") -> rasterio.DatasetReader:
    """Open a raster, turning any failure into one clear :class:`InputFileError` naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: {what} file not found")
    try:
        return rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{p}: cannot read {what}: {str(exc).splitlines()[0]}") from None


def check_known_crs(crs: Any, path: Path | str, what: str = "raster") -> None:
    """A raster's CRS must be one PROJ can place on the Earth: an engineering / local CRS (what GDAL makes of
    an unknown EPSG code or a custom definition) or one with no transformation to lon/lat is refused with
    its text, rather than guessed."""
    from pyproj import CRS as PyCRS
    from pyproj import Transformer
    from pyproj.exceptions import CRSError, ProjError

    text = crs.to_string() if hasattr(crs, "to_string") else str(crs)
    try:
        pcrs = PyCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        if pcrs.is_engineering:
            raise CRSError("an engineering (local) CRS")
        Transformer.from_crs(pcrs, "EPSG:4326", always_xy=True)
    except (CRSError, ProjError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RasterFormatError(f"{path}: the {what} has an unknown CRS {text[:300]!r} ({reason[:200]})") from None


def check_scene_raster(path: Path | str, bands: int = 4, indexes: Sequence[int] | None = None) -> Grid:
    """Validate a multispectral scene GeoTIFF (band count, the configured band ``indexes`` exist,
    georeferencing) and return its grid."""
    with open_raster(path, what="scene") as src:
        if src.count < bands:
            what = " (blue, green, red, NIR)" if bands == 4 else ""
            raise RasterFormatError(f"{path}: expected {bands} bands{what}, found {src.count}")
        wrong = [int(b) for b in indexes or () if not 1 <= int(b) <= src.count]
        if wrong:
            raise RasterFormatError(
                f"source.bands={[int(b) for b in indexes or ()]}: {path} has {src.count} bands "
                f"(1..{src.count}); no band {wrong[0]}"
            )
        if src.crs is None:
            raise RasterFormatError(f"{path}: the raster has no CRS")
        check_known_crs(src.crs, path, "scene")
        if src.transform.is_identity:
            raise RasterFormatError(f"{path}: the raster has no georeferencing (identity transform)")
        return Grid(src.crs, src.transform, src.width, src.height)


def decimated_read(
    src: rasterio.DatasetReader,
    max_side: int,
    bands: list[int] | int = 1,
    resampling: str = "nearest",
    window: Window | None = None,
) -> np.ndarray:
    """Read a whole raster (or window) decimated so its longer side is at most ``max_side`` pixels:
    GDAL reads only what is needed, so memory stays bounded for previews."""
    from rasterio.enums import Resampling

    h = int(window.height) if window is not None else src.height
    w = int(window.width) if window is not None else src.width
    f = max(1.0, max(h, w) / max_side)
    shape = (max(1, int(round(h / f))), max(1, int(round(w / f))))
    idx = bands if isinstance(bands, list) else [bands]
    out = src.read(idx, window=window, out_shape=(len(idx), *shape), resampling=getattr(Resampling, resampling))
    return out if isinstance(bands, list) else out[0]
