"""The Python entry point: the same run as the ``cropseg`` command, for notebooks and scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import compose
from .pipeline import RunResult, execute


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_render(v)}" for k, v in value.items()) + "}"
    return (
        json.dumps(str(value)).replace("'", "\\'").replace('"', "'")
        if any(ch in str(value) for ch in " ,:[]{}()='\"\\$*")
        else str(value)
    )


def to_overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    """Hydra override strings from a list of strings or a ``{"dotted.key": value}`` mapping."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={_render(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def run(
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    output_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
) -> RunResult:
    """Run one crop-segmentation experiment and return its results.

    ``overrides`` are Hydra overrides, as on the command line (``["classifier=knn", "source.size=300"]``)
    or as a mapping (``{"source.size": 300, "postprocessor.median_blur.kernel": 7}``). The working
    directory is not changed; outputs go to ``output_dir`` (default ``outputs/<date>/<time>-<id>``) and the
    run is tracked in ``tracking.uri`` (default ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).

    Returns a :class:`cropseg.pipeline.RunResult`: ``run_id``, ``metrics`` (e.g.
    ``metrics["test_weighted_avg_f1"]``), ``outputs`` (paths of the mask GeoTIFF, segments GeoJSON,
    previews...), ``output_dir`` and ``summary()``. Bad input raises a :class:`cropseg.CropsegError`.
    """
    cfg = compose(to_overrides(overrides), Path(config_dir) if config_dir else None)
    return execute(cfg, output_dir=Path(output_dir) if output_dir else None)
