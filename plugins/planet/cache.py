"""The download cache: one folder per (item type, scene, bundle, clip AOI), checked against the order's
``manifest.json`` digests.

Layout: ``<workdir>/<item_type>/<scene_id>/<bundle>-<clip key>/`` holding ``order.json`` (the order id
and request, written as soon as the order exists so an interrupted run resumes it), ``manifest.json``
(the order's, with md5/sha256 per file) and the delivered files at their manifest paths
(``PSScene/<file>``). A file is used only when its digest matches the manifest; downloads go to a
temporary name and are renamed into place once verified, so a truncated file is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def request_key(item_type: str, scene_id: str, bundle: str, clip: dict | None) -> str:
    """A short stable key for what was ordered (the clip geometry rounded to ~1 cm)."""

    def rnd(obj: Any) -> Any:
        if isinstance(obj, float):
            return round(obj, 7)
        if isinstance(obj, list | tuple):
            return [rnd(v) for v in obj]
        if isinstance(obj, dict):
            return {k: rnd(v) for k, v in sorted(obj.items())}
        return obj

    text = json.dumps({"item_type": item_type, "scene": scene_id, "bundle": bundle, "clip": rnd(clip)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks (memory stays bounded for large scenes)."""
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    """One delivered file: its path relative to the order folder, digests and Planet annotations."""

    path: str
    digests: dict[str, str]
    annotations: dict[str, Any]
    size: int | None = None

    @property
    def asset_type(self) -> str:
        return str(self.annotations.get("planet/asset_type", ""))

    def algorithm(self) -> tuple[str, str] | None:
        for alg in ("sha256", "md5"):
            if self.digests.get(alg):
                return alg, str(self.digests[alg]).lower()
        return None


def parse_manifest(path: Path) -> list[ManifestEntry] | None:
    """The entries of an order's ``manifest.json``; ``None`` when missing, truncated or malformed."""
    try:
        data = json.loads(path.read_text())
        entries = [
            ManifestEntry(str(f["path"]), dict(f.get("digests") or {}), dict(f.get("annotations") or {}), f.get("size"))
            for f in data["files"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not entries or any(
        e.algorithm() is None or Path(e.path).is_absolute() or ".." in Path(e.path).parts for e in entries
    ):
        return None
    return entries


class SceneCache:
    """The cache folder of one ordered scene."""

    def __init__(self, root: Path, item_type: str, scene_id: str, bundle: str, clip: dict | None):
        self.key = request_key(item_type, scene_id, bundle, clip)
        suffix = f"clip-{self.key}" if clip else f"full-{self.key}"
        self.dir = Path(root) / item_type / scene_id / f"{bundle}-{suffix}"
        self.order_file = self.dir / "order.json"
        self.manifest_file = self.dir / "manifest.json"

    # -- order record --------------------------------------------------------------------------------
    def order_id(self) -> str | None:
        try:
            return str(json.loads(self.order_file.read_text())["order_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_order(self, order_id: str, request: dict) -> None:
        write_atomic(self.order_file, json.dumps({"order_id": order_id, "request": request}, indent=1).encode())

    def forget_order(self) -> None:
        self.order_file.unlink(missing_ok=True)

    # -- files ---------------------------------------------------------------------------------------
    def manifest(self) -> list[ManifestEntry] | None:
        return parse_manifest(self.manifest_file)

    def path(self, entry: ManifestEntry) -> Path:
        return self.dir / entry.path

    def is_valid(self, entry: ManifestEntry, path: Path | None = None) -> bool:
        path = path or self.path(entry)
        if not path.is_file():
            return False
        alg, expected = entry.algorithm()  # type: ignore[misc]
        if entry.size is not None and path.stat().st_size != int(entry.size):
            return False
        return file_digest(path, alg) == expected

    def invalid(self, entries: list[ManifestEntry]) -> list[ManifestEntry]:
        """Entries whose file is missing or does not match its digest (those files are deleted)."""
        bad = []
        for e in entries:
            if not self.is_valid(e):
                self.path(e).unlink(missing_ok=True)
                bad.append(e)
        return bad

    def verified(self) -> list[ManifestEntry] | None:
        """The manifest entries when every file is present and matches its digest, else ``None``."""
        entries = self.manifest()
        if entries is None or self.invalid(entries):
            return None
        return entries

    def temp_path(self, name: str) -> Path:
        return self.dir / ".partial" / f"{os.getpid()}-{Path(name).name}"

    def install(self, entry: ManifestEntry, tmp: Path) -> bool:
        """Move a downloaded file into place if it matches the manifest; a bad one is deleted."""
        if not self.is_valid(entry, tmp):
            tmp.unlink(missing_ok=True)
            return False
        dest = self.path(entry)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return True

    def install_manifest(self, tmp: Path) -> list[ManifestEntry] | None:
        entries = parse_manifest(tmp)
        if entries is None:
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, self.manifest_file)
        return entries

    def clean_partials(self) -> None:
        folder = self.dir / ".partial"
        if folder.is_dir():
            for p in folder.glob(f"{os.getpid()}-*"):
                p.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
