"""``cropseg --help`` names the subcommands first and every installed plugin from the registry; a closed pipe
ends help quietly; unknown keys get one line with or without ``+``; a labeler that cannot read the source's
ground truth fails before any scene is loaded (issues 12, 20)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropseg.cli import SUBCOMMANDS, main
from cropseg.plugins import STAGES, Registry, get_plugin_manager
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


def test_help_lists_every_registered_plugin_per_stage(inproc, capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    ours = out[: out.index("Powered by Hydra")]
    reg = Registry.from_plugin_manager(get_plugin_manager())
    assert "context" in reg.names("features") and "unet" in reg.names("classifier")
    for stage in STAGES:
        line = next(ln for ln in ours.splitlines() if ln.startswith(f"  {stage} "))
        assert line.split(None, 1)[1].split(", ") == reg.names(stage), line


def test_help_shows_the_config_groups_and_the_composed_config(inproc, capsys):
    """What Hydra's app help shows (its groups and the config composed with the overrides), made by cropseg
    from the config folders: Hydra's own listing copies its config repository once per group (seconds)."""
    from cropseg.config import conf_dir, experiments_dir

    assert main(["classifier=mlp", "--help"]) == 0
    out = capsys.readouterr().out
    groups = out[out.index("== Configuration groups ==") : out.index("== Config ==")]
    for group in ("classifier", "features", "labeler", "postprocessor", "source"):
        options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        assert f"\n{group}: {', '.join(options)}\n" in groups, group
    assert f"\nexperiment: {', '.join(sorted(p.stem for p in experiments_dir().glob('*.yaml')))}\n" in groups
    assert "hydra/launcher" not in groups  # Hydra's groups: cropseg --hydra-help
    config = out[out.index("== Config ==") :]
    assert "\nclassifier:\n  name: mlp\n" in config and "Use --hydra-help" in config


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["compare", "--help"], ["estimate-area", "--help"]])
def test_help_into_a_closed_pipe_ends_quietly(args, inproc):
    """``cropseg --help | head -1``: the reader has gone before cropseg writes (the pipe's read end is closed
    first, so every write fails with EPIPE); no BrokenPipeError traceback (exit 141, as for
    SIGPIPE, or 0 where argparse already ignores the failed write)."""

    read_end, write_end = os.pipe()
    os.close(read_end)
    code = "import sys; from cropseg.cli import main; sys.exit(main())"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], stdout=write_end, stderr=subprocess.PIPE, cwd=inproc, timeout=120
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("sub", sorted(SUBCOMMANDS))
def test_subcommand_help_has_no_doubled_percent(sub, inproc, capsys):
    with pytest.raises(SystemExit) as exc:
        main([sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: cropseg" in out and "%%" not in out and "%(" not in out


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
