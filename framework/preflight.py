"""Checks before any work: what can be checked cheaply is checked before the MLflow run starts and
before any scene is read, so bad input gives one line and leaves nothing behind.

:func:`cropseg.pipeline.execute` runs them after the stages are built (option values are already type-
and range-checked by then, see :mod:`cropseg.schema`): :func:`check_destinations` before the MLflow run
exists (the output directory is writable, the tracking store readable), :func:`check_inputs` as the run's
first step (the Dask scheduler answers; the source's optional ``check(workdir)``: files exist and open,
band counts, CRS, grids, ground truth overlapping the scenes, sizes that fit on disk), so an input error
ends a FAILED run that records it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputFileError, OutputError, write_failure_reason


def check_output_dir(path: Path, option: str = "output_dir", create: bool = True) -> Path:
    """Create ``path`` (and parents) and make sure a file can be written in it; one clear
    :class:`InputFileError` when it is a file or lies under a file, :class:`OutputError` when it is
    read-only, not writable, full or its name too long.
    With ``create=False`` nothing is created: the nearest existing folder must take a new file."""
    path = Path(path)
    existing = path
    for parent in [path, *path.parents]:
        try:
            found = parent.exists()
        except OSError as exc:  # e.g. a name too long for the file system
            raise OutputError.from_os_error(f"the output directory ({option})", path, exc) from None
        if found:
            if not parent.is_dir():
                where = "is a file" if parent == path else f"lies under {parent}, which is a file"
                raise InputFileError(f"{path}: the output directory ({option}) {where}")
            existing = parent
            break
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            existing = path
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".cropseg-write-check-"):
            pass
    except OSError as exc:
        reason = write_failure_reason(exc) or (os.strerror(exc.errno).lower() if exc.errno else str(exc))
        raise OutputError(f"the output directory ({option}) could not be written to {path}: {reason}") from None
    return path


def check_destinations(out: Path, cache: Path, tracking_uri: str | None) -> None:
    """Before the MLflow run exists: where the run writes (output and cache directories) is writable and
    the tracking store is reachable and readable (neither could record a failure otherwise)."""
    from .tracking import check_reachable, resolve_uri

    check_output_dir(out)
    check_output_dir(cache, "cache_dir")
    check_reachable(resolve_uri(tracking_uri))


def check_inputs(stages: Any, cache: Path) -> None:
    """First thing in a run, before any scene is read: the Dask scheduler answers and the source's own
    cheap input checks pass (its optional ``check(workdir)``)."""
    from .parallel import check_scheduler

    check_scheduler(stages.parallel)
    check = getattr(stages.source, "check", None)
    if callable(check):
        check(cache)
