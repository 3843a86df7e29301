"""The Python entry point: ``cropseg.run(overrides)`` returns results without changing directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

import cropseg
from cropseg.api import to_overrides
from cropseg.errors import CropsegError
from cropseg.testing import local_overrides


@pytest.mark.slow
def test_run_from_python(tiny_run):
    """cropseg.run (the session's shared run, started in its own working directory) keeps the directory."""
    result, tracking_uri = tiny_run.result, tiny_run.tracking_uri
    assert Path(tiny_run.cwd_after).resolve() == tiny_run.workdir.resolve()
    assert result.output_dir == (tiny_run.workdir / "out").resolve()
    assert result.outputs["test_mask"].is_file() and result.outputs["segments"].is_file()
    assert result.metrics["test_crop_f1"] > 0.95
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_crop_f1"] == pytest.approx(result.metrics["test_crop_f1"])
    assert "test crop F1" in result.summary()


@pytest.mark.slow
def test_mapping_overrides_and_errors(tmp_path, tiny_pair, tracking_uri):
    train, test = tiny_pair
    overrides = dict(o.split("=", 1) for o in local_overrides(train, test))
    overrides.update({"classifier.k_grid": [3], "postprocessor.median_blur.kernel": 3, "tracking.uri": tracking_uri})
    assert "classifier.k_grid=[3]" in to_overrides(overrides)
    result = cropseg.run(overrides, output_dir=tmp_path / "o2")
    assert result.params["k"] == 3
    with pytest.raises(CropsegError, match="classifier=nope"):
        cropseg.run(["classifier=nope"])


def test_render_quotes_odd_strings():
    assert to_overrides({"source.image": "/a b/c.tif"}) == ["source.image='/a b/c.tif'"]
    assert to_overrides({"x": None, "y": True, "z": [1, "a"]}) == ["x=null", "y=true", "z=[1,a]"]
