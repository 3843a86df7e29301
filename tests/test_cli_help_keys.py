"""``cropseg --help`` names the subcommands first; unknown keys get one line with or without ``+``; a
labeler that cannot read the source's ground truth fails before any scene is loaded (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropseg.cli import SUBCOMMANDS, main
from cropseg.testing import local_overrides, write_tiny_scene


@pytest.fixture
def inproc(monkeypatch, tmp_path, fresh_tracking_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_tracking_uri)
    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _error_line(capfd, code: int) -> str:
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cropseg: error:")]
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_help_lists_subcommands_and_common_overrides_before_hydras_help(inproc, capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    hydra_part = out.index("Powered by Hydra")
    assert {"predict", "compare", "plugins"} <= set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in out[:hydra_part], name
    for override in ("classifier=", "source.size=200", "+experiment=seed_knn", "--multirun"):
        assert out.index(override) < hydra_part, override


@pytest.mark.parametrize(
    "key, valid",
    [
        ("classifier.kk", "k_grid"),
        ("train.foo", "max_pixels"),
        ("postprocessor.median_blur.kernell", "kernel"),
        ("nonsense.key", "train"),
    ],
)
def test_unknown_key_gives_the_same_line_with_or_without_plus(inproc, capfd, key, valid):
    plain = _error_line(capfd, main([f"{key}=3"]))
    plus = _error_line(capfd, main([f"+{key}=3"]))
    assert plain == plus
    assert key.split(".")[-1] in plain and valid in plain and "not in struct" not in plain


def test_contours_labeler_with_a_raster_ground_truth_fails_before_loading_scenes(inproc, capfd, fresh_tracking_uri):
    train, test = (
        write_tiny_scene(inproc / "d", name="train", seed=1),
        write_tiny_scene(inproc / "d", name="test", seed=2),
    )
    classes = inproc / "classes.tif"
    with rasterio.open(train.image) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=0)
    with rasterio.open(classes, "w", **profile) as dst:
        dst.write(np.full((1, profile["height"], profile["width"]), 5, dtype=np.uint8))
    overrides = [o for o in local_overrides(train, test) if "ground_truth" not in o]
    line = _error_line(
        capfd, main([*overrides, f"source.ground_truth={classes}", "source.crop_values=[5]", "+experiment=seed_knn"])
    )
    assert "labeler=contours needs polygons" in line and "use labeler=rasterize" in line and "classes.tif" in line
    assert not (inproc / "cache").exists()  # no scene was loaded
    assert not Path(fresh_tracking_uri.removeprefix("sqlite:///")).exists()  # no run was even started
