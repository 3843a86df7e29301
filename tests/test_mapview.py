"""The run's interactive map renders in headless Chromium with no network: RGB overlay, ground truth and
predicted segments as toggleable layers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import geopandas as gpd
import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


@pytest.mark.slow
def test_map_renders_layers_in_headless_chromium(tmp_path, tiny_run):
    exe = chromium()
    result = tiny_run.result  # the session's shared run on a tiny synthetic pair
    html_path = result.outputs["map"]
    html = html_path.read_text()
    assert "cdn.jsdelivr" not in html and "L.map(" in html  # Leaflet inlined, no CDN needed
    n_segments = len(gpd.read_file(result.outputs["segments"]))
    dom = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}", "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "leaflet-container" in dom
    assert re.search(r'<img[^>]*class="[^"]*leaflet-image-layer', dom), "RGB overlay not rendered"
    paths = re.findall(r'<path[^>]*class="[^"]*leaflet-interactive', dom)
    assert len(paths) >= 2 + n_segments  # two ground-truth crop fields + the predicted segments
    for label in ("scene RGB", "ground truth (crop)", "predicted crop segments"):
        assert label in dom
    shot = tmp_path / "map.png"
    subprocess.run(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chrome2'}",
            "--window-size=800,600",
            f"--screenshot={shot}",
            html_path.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
