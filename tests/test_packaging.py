"""Packaging and the working tree: the editable install is not shadowed by a folder named like the package,
a wheel builds without warnings and ships the static files and the license, and .gitignore and `make clean`
cover everything a run writes into the working directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what runs write into the working directory: Hydra's run and sweep folders (conf/config.yaml), the cache
# (cache_dir), `cropseg compare`'s folder, the default sqlite MLflow store with its lock file and artifacts
RUN_DIRS = ["outputs", "multirun", ".cache", "compare", "mlartifacts", "mlruns"]
RUN_FILES = ["mlflow.db", "mlflow.db.lock"]


def test_import_from_a_folder_holding_folders_named_like_the_packages(tmp_path):
    """From the clone's parent folder (or any folder holding a `cropseg/` folder), `import cropseg` still
    finds the installed package, not a namespace package made of that folder."""
    for name in ("cropseg", "cropseg_plugins"):
        (tmp_path / name / "data").mkdir(parents=True)
    code = (
        "import cropseg, cropseg_plugins.knn; cropseg.run; from cropseg.cli import main; "
        "print(cropseg.__file__, cropseg.__path__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(tmp_path) not in proc.stdout and "__init__.py" in proc.stdout


def test_the_package_links_point_at_the_source_folders():
    """pkgs/ (the install's package directory) holds relative links named like the import packages."""
    assert (REPO / "pkgs" / "cropseg").is_symlink() and (REPO / "pkgs" / "cropseg_plugins").is_symlink()
    assert (REPO / "pkgs" / "cropseg").resolve() == (REPO / "framework").resolve()
    assert (REPO / "pkgs" / "cropseg_plugins").resolve() == (REPO / "plugins").resolve()
    # besides the metadata the editable install writes there (cropseg.egg-info, git-ignored)
    assert sorted(p.name for p in (REPO / "pkgs").iterdir() if not p.name.endswith(".egg-info")) == [
        "cropseg",
        "cropseg_plugins",
    ]


def test_gitignore_and_make_clean_cover_what_runs_write():
    conf = (REPO / "conf" / "config.yaml").read_text()
    assert "dir: outputs/" in conf and "dir: multirun/" in conf and "CROPSEG_CACHE_DIR,.cache/cropseg}" in conf
    assert 'Path("compare")' in (REPO / "framework" / "compare.py").read_text()
    assert '".lock"' in (REPO / "framework" / "tracking" / "__init__.py").read_text()
    # paths that need not exist: a file in each folder, and the files
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *RUN_FILES, *(f"{d}/x" for d in RUN_DIRS)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    unmatched = [ln.split("\t")[-1] for ln in ignored.stdout.splitlines() if ln.startswith("::")]
    assert not unmatched, f".gitignore misses {unmatched}"
    clean = re.search(r"^clean:\n\trm -rf (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert clean and set(RUN_DIRS + RUN_FILES) <= set(clean.group(1).split())


def test_wheel_builds_without_warnings_and_ships_static_files_and_license(tmp_path):
    """setuptools builds cropseg (in a copy of the source: the build writes build/ and *.egg-info) with no
    warning about the project's configuration (license format, package data)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for name in ("framework", "plugins"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "pkgs", src / "pkgs", symlinks=True)  # the relative links now point into the copy
    code = "from setuptools import build_meta as b; print(b.build_wheel(r'%s'))" % (tmp_path / "dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # else distutils says so
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], cwd=src, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not re.search(r"warning|deprecat|absent", proc.stderr, re.I), proc.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "dist" / proc.stdout.split()[-1]) as wheel:
        names = set(wheel.namelist())
        meta = wheel.read("cropseg-0.1.0.dist-info/METADATA").decode()
    assert {
        "cropseg/static/leaflet-1.9.4/leaflet.js",
        "cropseg/static/leaflet-1.9.4/leaflet.css",
        "cropseg/py.typed",
        "cropseg_plugins/planet/bundles_spec.json",
    } <= names
    assert "cropseg-0.1.0.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in meta
