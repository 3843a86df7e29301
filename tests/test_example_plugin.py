"""The example third-party plugin (examples/cropseg-nearest-centroid), pip-installed into a throwaway folder
(never the test environment): discovered with its distribution and version, selectable as
``classifier=nearest_centroid`` through the config it ships, and its own test suite (cropseg's conformance
suite) passes; the environment the tests run in is left without it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
from mlflow import MlflowClient

from cropseg.plugins import Registry, get_plugin_manager
from cropseg.testing import local_overrides

DIST, VERSION = "cropseg-nearest-centroid", "0.1.0"


def cropseg_cli(args, cwd, env):
    return subprocess.run(
        [sys.executable, "-m", "cropseg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_installed_and_registered_with_its_distribution(example_plugin):
    assert metadata.version(DIST) == VERSION
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="cropseg")}
    assert eps["nearest_centroid"] == "cropseg_nearest_centroid"
    info = Registry.from_plugin_manager(get_plugin_manager()).get("classifier", "nearest_centroid")
    assert (info.distribution, info.version) == (DIST, VERSION)


def test_cropseg_plugins_lists_it(example_plugin, tmp_path, cli_env):
    proc = cropseg_cli(["plugins"], tmp_path, example_plugin.env(cli_env))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    stages = [ln.rstrip(":") for ln in lines if ln and not ln.startswith(" ")]
    assert stages[:5] == ["source", "labeler", "features", "classifier", "postprocessor"]
    entry = next(ln for ln in lines if ln.split() and ln.split()[0] == "nearest_centroid")
    assert f"{DIST} {VERSION}" in entry
    assert any("indices" in ln and "cropseg 0.1.0" in ln for ln in lines)
    assert any(ln.split()[:2] == ["classifier/nearest_centroid", DIST] for ln in lines if ln.split())


@pytest.mark.slow
def test_cli_runs_it_by_name(example_plugin, tmp_path, tiny_pair, tracking_uri, monkeypatch, capfd):
    """``cropseg classifier=nearest_centroid`` (the command's main, in this process, which sees the plugin
    through sys.path; in a subprocess it runs in tests/test_sweeps.py's sweep)."""
    from cropseg.cli import main

    train, test = tiny_pair
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("CROPSEG_CACHE_DIR", str(tmp_path / "cache"))
    assert main(local_overrides(train, test, classifier="nearest_centroid")) == 0, capfd.readouterr().err[-3000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["cropseg.classifier"] == "nearest_centroid"
    assert run.data.tags["cropseg.classifier.nearest_centroid.version"] == f"{DIST} {VERSION}"
    assert run.data.params["classifier.metric"] == "euclidean"  # from the config the package ships
    assert run.data.params["fit.cv"] == "spatial"
    assert run.data.params["fit.cv_scoring"] == "crop_f1"  # the run's target (evaluate.target), not weighted F1
    m = run.data.metrics
    assert {"cv_score", "cv_spatial_f1_weighted", "cv_random_f1_weighted"} <= set(m)
    assert m["test_crop_f1"] > 0.9


@pytest.mark.slow
def test_its_own_conformance_suite_passes(example_plugin, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example_plugin.source / "tests")],
        cwd=tmp_path,
        env=example_plugin.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "8 passed" in proc.stdout


def test_it_builds_without_warnings_and_leaves_nothing_in_the_clone(example_plugin_site):
    """pip install ./examples/cropseg-nearest-centroid (the README's command): no build/ or *.egg-info beside
    the source, no packaging warnings (setuptools printed one per config folder)."""
    assert example_plugin_site.left_in_source == frozenset()
    assert "warning" not in example_plugin_site.build_output.lower(), example_plugin_site.build_output
    assert (
        example_plugin_site.site / "cropseg_nearest_centroid" / "conf" / "classifier" / "nearest_centroid.yaml"
    ).is_file()


def test_the_test_environment_is_left_without_it(example_plugin_site, tmp_path, cli_env):
    """The install went to a temporary folder: the environment's own ``cropseg plugins`` and package metadata
    do not know the plugin (the session fixture has installed it by now)."""
    assert (example_plugin_site.site / "cropseg_nearest_centroid").is_dir()
    proc = cropseg_cli(["plugins"], tmp_path, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "nearest_centroid" not in proc.stdout and "knn" in proc.stdout
    code = f"from importlib import metadata; metadata.version({DIST!r})"
    probe = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "PackageNotFoundError" in probe.stderr
