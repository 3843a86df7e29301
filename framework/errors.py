"""Errors raised by cropseg and its plugins.

Every error a user can cause derives from :class:`CropsegError` and also from the matching built-in
exception (as rasterio does), so ``except ValueError`` keeps working for callers who do not know cropseg.
The CLI prints a :class:`CropsegError` as one line and exits non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


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


class StackError(CropsegError, ValueError):
    """A time stack of images that cannot be read as one scene (dates, band counts, overlap, coverage)."""
