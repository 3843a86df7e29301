"""Errors raised by cropseg and its plugins.

Every error a user can cause derives from :class:`CropsegError` and also from the matching built-in
exception (as rasterio does), so ``except ValueError`` keeps working for callers who do not know cropseg.
The CLI prints a :class:`CropsegError` as one line and exits non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno


class CropsegError(Exception):
    """Root of every error cropseg reports to the user as one line."""


class ConfigError(CropsegError, ValueError):
    """An option in the configuration is missing, unknown or has a bad value."""


class PluginError(CropsegError, LookupError):
    """A plugin is unknown, registered twice or failed to load."""


class DuplicatePluginError(PluginError):
    """Two plugins registered the same name for the same stage."""


class InputFileError(CropsegError, OSError):
    """An input file is missing, unreadable or not what it should be."""


class RasterFormatError(InputFileError):
    """A raster has the wrong band count, data type or georeferencing."""


class GroundTruthError(CropsegError, ValueError):
    """Ground truth is unusable: no crop polygons, no overlap with the scene, unknown attribute..."""


class CRSMismatchError(CropsegError, ValueError):
    """A coordinate reference system is missing or cannot be transformed to the scene's."""


class LabelError(CropsegError, ValueError):
    """Training labels are unusable, e.g. a single class."""


class TrackingError(CropsegError, RuntimeError):
    """The MLflow tracking store cannot be reached or used."""


class SourceError(CropsegError, RuntimeError):
    """A scene source failed to provide scenes (search, order or download problems)."""


class ModelError(CropsegError, LookupError):
    """A logged or registered model cannot be found or loaded."""


class ModelInputError(CropsegError, ValueError):
    """Data given to a trained model does not fit it (pixel rows, scenes)."""


class ClusterError(CropsegError, RuntimeError):
    """The Dask cluster for parallel block processing cannot be reached or started."""


class OutputError(CropsegError, OSError):
    """An output (file, folder, tracking store, artifact) could not be written: no space left, read-only,
    permission denied, a name too long... Printed as ``<what> could not be written to <path>: <reason>``."""

    @classmethod
    def from_os_error(cls, what: str, path: object, exc: BaseException) -> OutputError:
        """The one-line error for ``exc`` (an ``OSError``, or any error whose chain or message shows a
        write failure) while writing ``what`` to ``path``."""
        reason = write_failure_reason(exc) or _probe_folder(path) or _first_line(exc)
        return cls(f"{what} could not be written to {path}: {reason}")


def _probe_folder(path: object) -> str | None:
    """Why the folder of ``path`` takes no file, for writers whose own message does not say (pyogrio's
    "Cannot write feature"): it is full, or mounted read-only."""
    import os
    from pathlib import Path

    p = Path(str(path))
    for d in [p, *p.parents]:
        if d.is_dir():
            try:
                st = os.statvfs(d)
            except OSError:
                return None
            if st.f_flag & os.ST_RDONLY:
                return _WRITE_ERRNOS[errno.EROFS]
            if st.f_bavail * st.f_frsize < 64 * 1024:
                return _WRITE_ERRNOS[errno.ENOSPC]
            return None
    return None


#: errno -> the reason as the one-line message gives it
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large",
}
#: texts that GDAL, pyogrio and SQLite put in their messages for the same failures
_WRITE_TEXTS = (
    ("no space left on device", "no space left on device"),
    ("database or disk is full", "no space left on device (the database or disk is full)"),
    ("disk i/o error", "disk I/O error (full or failing disk?)"),
    ("read-only file system", "read-only file system"),
    ("attempt to write a readonly database", "read-only database (the store's file or folder is not writable)"),
    ("file name too long", "file name too long"),
    ("permission denied", "permission denied"),
    ("file too large", "file too large"),
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_failure_reason(exc: BaseException) -> str | None:
    """The reason of a write failure anywhere in ``exc``'s chain (``__cause__`` / ``__context__``): an
    ``OSError`` errno (ENOSPC, EROFS, EACCES, ENAMETOOLONG, ...) or the same failure as GDAL, pyogrio or
    SQLite word it; ``None`` when ``exc`` is not a write failure."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            return _WRITE_ERRNOS[e.errno]
        text = str(e).lower()
        for needle, reason in _WRITE_TEXTS:
            if needle in text:
                return reason
        e = e.__cause__ or e.__context__
    return None


def write_failure_path(exc: BaseException) -> str | None:
    """The file an ``OSError`` in ``exc``'s chain names, if any."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
        e = e.__cause__ or e.__context__
    return None


def as_output_error(exc: BaseException, what: str, path: object, store: object = None) -> OutputError | None:
    """``exc`` as the one-line :class:`OutputError` when it is a write failure (see
    :func:`write_failure_reason`) that is not already a cropseg error, else ``None``. A failure of SQLite or
    MLflow names the tracking ``store`` (when given), anything else ``what`` and ``path``."""
    if isinstance(exc, CropsegError) or not isinstance(exc, Exception):
        return None
    reason = write_failure_reason(exc)
    if reason is None:
        return None
    if store is not None and (
        "database" in reason or type(exc).__module__.split(".")[0] in ("mlflow", "sqlalchemy", "sqlite3")
    ):
        return OutputError.from_os_error("the tracking store", store, exc)
    return OutputError.from_os_error(what, path, exc)


class StackError(CropsegError, ValueError):
    """A time stack of images that cannot be read as one scene (dates, band counts, overlap, coverage)."""
