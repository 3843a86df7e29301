"""cropseg: plugin-based model comparison for crop segmentation from PlanetScope imagery.

Plugin authors need only this module's public face::

    from cropseg import hookimpl

    @hookimpl
    def cropseg_register_classifiers(register):
        register("my_model", MyModel)

Notebook users call :func:`cropseg.run` (see :mod:`cropseg.api`).
"""

from __future__ import annotations

from .errors import CropsegError
from .hookspecs import hookimpl, hookspec
from .plugins import get_plugin_manager
from .types import CROP, IGNORE, NONCROP, FitResult, Scene, SceneSet

__version__ = "0.1.0"

__all__ = [
    "CROP",
    "IGNORE",
    "NONCROP",
    "CropsegError",
    "FitResult",
    "Scene",
    "SceneSet",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "run",
]


def run(overrides=None, **kwargs):  # noqa: ANN001, ANN201 - documented in cropseg.api.run
    """Run one segmentation experiment from Python; see :func:`cropseg.api.run`."""
    from .api import run as _run

    return _run(overrides, **kwargs)
