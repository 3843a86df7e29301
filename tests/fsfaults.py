"""Real file-system faults for the fault suite: a command runs in a subprocess in its own mount namespace
(``unshare -m``; ``unshare -Urm`` when not root) where a folder is a small tmpfs, read-only or filled to the
last byte. The mounts vanish with the process: nothing to clean up, nothing left mounted if a test dies."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_on(
    argv: Sequence[str],
    *,
    full: Sequence[Path] = (),
    read_only: Sequence[Path] = (),
    seed: Mapping[Path, Path] | None = None,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with each folder of ``full`` a small tmpfs (256 KiB plus the ``seed`` files,
    ``{destination: source}``, copied in first) filled to the last byte, and each folder of ``read_only``
    a read-only tmpfs."""
    script = ["set -e"]
    for d in [*full, *read_only]:
        Path(d).mkdir(parents=True, exist_ok=True)
    for d in full:
        q = shlex.quote(str(d))
        seeded = {dst: src for dst, src in (seed or {}).items() if Path(dst).parent == Path(d)}
        size_k = 256 + sum(Path(src).stat().st_size // 1024 + 8 for src in seeded.values())
        script.append(f"mount -t tmpfs -o size={size_k}k tmpfs {q}")
        for dst, src in seeded.items():
            script.append(f"cp {shlex.quote(str(src))} {shlex.quote(str(dst))}")
        script.append(f"dd if=/dev/zero of={q}/.filler bs=4k 2>/dev/null || true")
        script.append(f"dd if=/dev/zero of={q}/.filler2 bs=1 2>/dev/null || true")
    for d in read_only:
        script.append(f"mount -t tmpfs -o ro,size=64k tmpfs {shlex.quote(str(d))}")
    script.append('exec "$@"')
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    return subprocess.run(
        [*unshare, "sh", "-c", "\n".join(script), "sh", *argv],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cropseg(*args: str) -> list[str]:
    """The ``cropseg`` command of this interpreter."""
    return [sys.executable, "-m", "cropseg.cli", *args]
