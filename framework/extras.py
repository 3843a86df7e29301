"""The exact command that installs one of cropseg's optional extras (``deep``: PyTorch for the U-Net) into the
environment that is running, for the one-line error a plugin gives when its extra is missing."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

#: the clone this module lives in (pkgs/cropseg -> framework/), when it is one
CLONE = Path(__file__).resolve().parents[1]


def _makefile_target(extra: str) -> str | None:
    makefile = CLONE / "Makefile"
    target = f"setup-{extra}"
    try:
        text = makefile.read_text()
    except OSError:
        return None
    return target if f"\n{target}:" in text else None


def install_command(extra: str) -> str:
    """``make setup-EXTRA`` when this is a clone's own ``.venv`` (``make -C CLONE ...`` from elsewhere), else
    ``PYTHON -m pip install -e 'CLONE[EXTRA]'`` for another environment with the clone installed editable, else
    ``PYTHON -m pip install 'cropseg[EXTRA]'``; PYTHON is the interpreter running now, so the command installs
    where it is needed whether or not a virtual environment is activated."""
    is_clone = (CLONE / "pyproject.toml").is_file() and (CLONE / "framework").is_dir()
    target = _makefile_target(extra) if is_clone else None
    if target and Path(sys.prefix).resolve() == (CLONE / ".venv").resolve():
        return f"make {target}" if Path.cwd().resolve() == CLONE else f"make -C {shlex.quote(str(CLONE))} {target}"
    python = shlex.quote(sys.executable)
    if is_clone:
        return f"{python} -m pip install -e {shlex.quote(f'{CLONE}[{extra}]')}"
    return f"{python} -m pip install {shlex.quote(f'cropseg[{extra}]')}"
