"""Data lineage: which files a run trained and tested on, with content digests.

A :class:`DataRef` names one input (a scene or its ground truth), where it came from and a digest of its
content, plus the context it was used in (``training`` / ``testing`` / ``prediction``). The pipeline and
``cropseg predict`` hand them to :meth:`cropseg.tracking.RunLogger.log_datasets`, which records them as
MLflow dataset inputs; ``cropseg compare`` groups runs by the digest of their test data. No MLflow here.

Digests are SHA-256 over the file's bytes, read in 1 MiB chunks (memory stays bounded), plus what selects
the part of the file the run used (band order, window, DN -> reflectance gains); a result is cached per
(path, size, mtime) for the life of the process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAINING, TESTING, PREDICTION = "training", "testing", "prediction"
_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class DataRef:
    """One data input of a run: ``name`` (shown in the MLflow UI), ``source`` (a path or scene id),
    ``digest`` (content, 16 hex characters), ``context`` and ``kind`` (``scene`` or ``ground_truth``)."""

    name: str
    source: str
    digest: str
    context: str
    kind: str


def file_digest(path: Path) -> str:
    """SHA-256 of the bytes of ``path`` (a directory: of its files, in name order)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def _digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def scene_refs(scene: Any, context: str) -> list[DataRef]:
    """The scene's image (with the window, bands and gains the run read) and its ground truth file; a time
    stack gives one ``scene`` input per date (its file, bands, gains, window and date)."""
    meta = getattr(scene, "metadata", {}) or {}
    scene_id = meta.get("scene_id") or Path(scene.path).stem
    window = getattr(scene, "window", None)
    win = (
        ""
        if window is None
        else f"{int(window.col_off)},{int(window.row_off)},{int(window.width)},{int(window.height)}"
    )
    acquisitions = getattr(scene, "acquisitions", ())
    refs = []
    if acquisitions:
        for a in acquisitions:
            a_id = (a.metadata or {}).get("scene_id") or Path(a.path).stem
            digest = _digest(
                file_digest(a.path),
                win,
                tuple(a.bands),
                tuple(round(g, 12) for g in a.gains),
                a.date,
                "" if a.usable_path is None else file_digest(a.usable_path),
            )
            label = f"{a.date} {a_id}" + (f" [{win}]" if win else "")
            refs.append(DataRef(f"{context} scene {label}", str(Path(a.path).resolve()), digest, context, "scene"))
    else:
        digest = _digest(file_digest(scene.path), win, tuple(scene.bands), tuple(round(g, 12) for g in scene.gains))
        label = f"{scene_id}" + (f" [{win}]" if win else "")
        refs.append(DataRef(f"{context} scene {label}", str(Path(scene.path).resolve()), digest, context, "scene"))
    gt = getattr(scene, "ground_truth", None)
    if gt is not None:
        options = {k: v for k, v in vars(gt).items() if k != "path"}
        gt_digest = _digest(file_digest(gt.path), sorted(options.items()))
        refs.append(
            DataRef(
                f"{context} ground truth {Path(gt.path).name}",
                str(Path(gt.path).resolve()),
                gt_digest,
                context,
                "ground_truth",
            )
        )
    return refs


def combined_digest(refs: list[DataRef], context: str) -> str:
    """One digest of every input of ``context``: equal for runs that used the same data that way."""
    return _digest(*sorted(r.digest for r in refs if r.context == context))
