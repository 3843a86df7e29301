"""Good-practice area estimation (Olofsson et al. 2014): the estimators against the paper's worked example,
sample design and estimation on real GeoTIFF / GeoJSON files, coverage of the 95 % CI on a SYNTHETIC map,
bad input, and the protocol simulated in a run and applied by ``cropseg predict``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cropseg.area import AreaEstimate, SampleError, allocate, cochran_sample_size, design_se
from cropseg.area_sample import (
    design_sample,
    estimate_area,
    read_mask,
    simulate_protocol,
    write_sample,
)
from cropseg.cli import main
from cropseg.errors import CRSMismatchError, InputFileError, RasterFormatError

# -- Olofsson et al. 2014, section 5 (worked example) --------------------------------------------------------
# Olofsson, P., Foody, G.M., Herold, M., Stehman, S.V., Woodcock, C.E., Wulder, M.A. (2014). Good practices
# for estimating area and assessing accuracy of land change. Remote Sens. Environ. 148, 42-57.
# The error matrix of sample counts (Table 8: rows map class, columns reference class) and the mapped
# stratum sizes (pixels of 30 m = 0.09 ha) as encoded in the example "table 8 in Olofsson et al. (2014)" of
# the R package mapaccuracy (CRAN, Hugo Costa; file R/olofsson.R), which compares its output with the
# values the paper prints on p. 54 (accuracies with 95 % CI half-widths; areas in ha with 95 % CI).
CLASSES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
MAPPED_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
PIXEL_HA = 30 * 30 / 1e4
# as printed in the paper
AREA_HA = [21_158, 11_686, 285_770, 581_386]
AREA_CI_HA = [6_158, 3_756, 15_510, 16_282]
USERS = [0.88, 0.73, 0.93, 0.96]
USERS_CI = [0.07, 0.10, 0.04, 0.02]
PRODUCERS = [0.75, 0.85, 0.93, 0.96]
PRODUCERS_CI = [0.21, 0.25, 0.03, 0.02]
OVERALL, OVERALL_CI = 0.95, 0.02
# Table 9 (error matrix in estimated area proportions)
PROPORTIONS = [
    [0.0176, 0.0000, 0.0013, 0.0011],
    [0.0000, 0.0110, 0.0016, 0.0024],
    [0.0019, 0.0000, 0.2967, 0.0213],
    [0.0040, 0.0020, 0.0179, 0.6212],
]


def test_olofsson_2014_worked_example():
    est = AreaEstimate(CLASSES, COUNTS, MAPPED_PIXELS, PIXEL_HA)
    assert np.round(est.area_ha()).astype(int).tolist() == AREA_HA
    assert np.round(1.96 * est.area_se_ha()).astype(int).tolist() == AREA_CI_HA
    assert np.round(est.proportions, 4).tolist() == PROPORTIONS
    assert np.round(est.user_accuracy, 2).tolist() == USERS
    assert np.round(1.96 * est.user_accuracy_se, 2).tolist() == USERS_CI
    assert np.round(est.producer_accuracy, 2).tolist() == PRODUCERS
    assert np.round(1.96 * est.producer_accuracy_se, 2).tolist() == PRODUCERS_CI
    assert round(est.overall_accuracy, 2) == OVERALL and round(1.96 * est.overall_accuracy_se, 2) == OVERALL_CI
    assert est.mapped_ha().tolist() == pytest.approx([18_000, 13_500, 288_000, 580_500])
    lo, hi = est.ci(est.area_ha(), est.area_se_ha())
    assert abs(float(lo[0]) - (21_158 - 6_158)) < 1 and abs(float(hi[0]) - (21_158 + 6_158)) < 1
    d = est.to_dict()
    assert d["classes_detail"]["deforestation"]["area_ha"]["ci95"] == pytest.approx([float(lo[0]), float(hi[0])])
    assert "21,157.76" in est.text()


def test_cochran_sample_size_olofsson_example():
    # Olofsson et al. 2014 section 5.1.1 (eq. 13): anticipated user's accuracies 0.70, 0.60, 0.90, 0.95 and a
    # target standard error of 0.01 for overall accuracy give n = 641
    w = np.array(MAPPED_PIXELS) / sum(MAPPED_PIXELS)
    assert cochran_sample_size(w, [0.70, 0.60, 0.90, 0.95], 0.01) == 641
    # a finite population makes it (slightly) smaller, a looser target much smaller
    assert cochran_sample_size(w, [0.70, 0.60, 0.90, 0.95], 0.01, population=20_000) < 641
    assert cochran_sample_size(w, [0.70, 0.60, 0.90, 0.95], 0.02) == 161


def test_allocation():
    sizes = [9_000, 1_000]
    assert allocate(400, sizes, "proportional").tolist() == [360, 40]
    assert allocate(400, sizes, "equal").tolist() == [200, 200]
    assert allocate(400, sizes, "minimum", 100).tolist() == [280, 120]
    assert allocate(10, [100, 3], "equal").tolist() == [7, 3]  # a stratum never gets more than it holds
    assert allocate(100, [100_000, 10], "proportional").tolist() == [98, 2]  # at least 2 per stratum
    with pytest.raises(ValueError, match="allocation"):
        allocate(10, sizes, "optimal")


def test_too_few_points_in_a_stratum_is_named():
    with pytest.raises(SampleError, match="'crop' \\(1 labelled point\\)"):
        AreaEstimate(["non-crop", "crop"], [[50, 3], [0, 1]], [900, 100], 0.01)


# -- SYNTHETIC mask and truth rasters (EPSG:32610, 3 m pixels) -------------------------------------------------
def _write(path: Path, a: np.ndarray, crs: str = "EPSG:32610", count: int = 1) -> Path:
    prof = {
        "driver": "GTiff",
        "width": a.shape[-1],
        "height": a.shape[-2],
        "count": count,
        "dtype": a.dtype.name,
        "crs": crs,
        "transform": from_origin(630_000, 4_240_000, 3, 3),
        "nodata": 255,
    }
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(a if a.ndim == 3 else a[None])
    return path


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A SYNTHETIC 80x80 truth (blocks of crop fields) and a map of it with 25 % of non-crop mapped as crop
    and 8 % of crop missed: mapped crop area is biased high, as on real imagery."""
    d = tmp_path_factory.mktemp("area")
    rng = np.random.default_rng(7)
    h = w = 80
    truth = np.kron(rng.random((10, 10)) < 0.35, np.ones((8, 8), dtype=bool)).astype(np.uint8)
    u = rng.random((h, w))
    mask = truth.copy()
    mask[(truth == 0) & (u < 0.25)] = 1
    mask[(truth == 1) & (u < 0.08)] = 0
    mask[:2, :] = 255  # nodata rows: not part of the population
    truth_path = _write(d / "truth.tif", truth)
    mask_path = _write(d / "mask.tif", mask)
    valid = mask != 255
    return {
        "dir": d,
        "mask": mask_path,
        "truth": truth_path,
        "truth_a": truth,
        "mask_a": mask,
        "true_crop_ha": float(np.count_nonzero(truth[valid] == 1) * 9 / 1e4),
        "mapped_crop_ha": float(np.count_nonzero(mask == 1) * 9 / 1e4),
    }


def test_design_draws_from_the_right_strata_in_windows(synthetic):
    a = synthetic["mask_a"]
    d1 = design_sample(synthetic["mask"], n=120, allocation="equal", seed=3, block=16)
    assert d1.n_per_stratum.tolist() == [60, 60] and len(d1.rows) == 120
    assert (a[d1.rows, d1.cols] == d1.strata).all()
    assert len({(r, c) for r, c in zip(d1.rows, d1.cols)}) == 120  # without replacement
    d2 = design_sample(synthetic["mask"], n=120, allocation="equal", seed=3, block=16)
    d3 = design_sample(synthetic["mask"], n=120, allocation="equal", seed=4, block=16)
    assert d1.rows.tolist() == d2.rows.tolist() and d1.rows.tolist() != d3.rows.tolist()
    # Cochran: target SE 0.02 with anticipated user's accuracies 0.95 (non-crop) and 0.75 (crop)
    d4 = design_sample(synthetic["mask"], target_se=0.02, user_accuracies=[0.95, 0.75], seed=0)
    assert d4.n == cochran_sample_size(
        d4.mask.counts / d4.mask.counts.sum(), [0.95, 0.75], 0.02, population=int(d4.mask.counts.sum())
    )


def test_coverage_and_bias_of_the_protocol(synthetic):
    """400 repetitions of design + estimate with different seeds: the 95 % CI holds the true crop area in
    93-97 % of them, the error-adjusted estimate is unbiased, the pixel count is not."""
    truth_ha, reps = synthetic["true_crop_ha"], 400
    est, se = np.empty(reps), np.empty(reps)
    for seed in range(reps):
        e = simulate_protocol(synthetic["mask"], synthetic["truth"], 150, allocation="minimum", minimum=50, seed=seed)
        est[seed], se[seed] = e.area_ha()[1], e.area_se_ha()[1]
    covered = np.mean(np.abs(est - truth_ha) <= 1.96 * se)
    assert 0.93 <= covered <= 0.97, covered
    bias, mc_se = est.mean() - truth_ha, est.std(ddof=1) / np.sqrt(reps)
    assert abs(bias) < se.mean() and abs(bias) < 3 * mc_se, (bias, mc_se, se.mean())
    pixel_bias = synthetic["mapped_crop_ha"] - truth_ha
    assert pixel_bias > 3 * se.mean() and pixel_bias > 10 * mc_se, (pixel_bias, se.mean(), mc_se)


# -- files and commands -----------------------------------------------------------------------------------------
def _label(sample: Path, truth: np.ndarray, out: Path, **edits) -> Path:
    """Fill ``reference`` as a person would, from the SYNTHETIC truth at each point's pixel."""
    g = gpd.read_file(io.BytesIO(Path(sample).read_bytes()))  # names with ';' too, which GDAL would cut
    g["reference"] = [str(int(truth[r, c])) for r, c in zip(g["pixel_row"], g["pixel_col"])]
    for k, v in edits.items():
        g[k] = v(g) if callable(v) else v
    g.to_file(out, driver="GeoJSON")
    return out


@pytest.fixture(scope="session")
def labelled(synthetic) -> dict:
    d = synthetic["dir"]
    design = design_sample(synthetic["mask"], n=200, allocation="minimum", seed=1)
    write_sample(design, d / "sample.geojson", d / "sample.csv")
    return {
        "sample": d / "sample.geojson",
        "csv": d / "sample.csv",
        "labelled": _label(d / "sample.geojson", synthetic["truth_a"], d / "labelled.geojson"),
    }


def test_sample_files(synthetic, labelled):
    g = gpd.read_file(labelled["sample"])
    assert g.crs.to_epsg() == 4326 and len(g) == 200
    assert set(g.columns) >= {"stratum", "pixel_row", "pixel_col", "reference", "mask_crs"}
    assert g["reference"].isna().all() and (g["mask_crs"] == "EPSG:32610").all()
    back = g.to_crs("EPSG:32610")
    with rasterio.open(synthetic["mask"]) as src:
        rows, cols = rasterio.transform.rowcol(src.transform, back.geometry.x, back.geometry.y)
    assert list(rows) == g["pixel_row"].tolist() and list(cols) == g["pixel_col"].tolist()
    assert (synthetic["mask_a"][g["pixel_row"], g["pixel_col"]] == g["stratum"]).all()
    header = labelled["csv"].read_text().splitlines()[0]
    assert header.split(",")[-1] == "reference" and len(labelled["csv"].read_text().splitlines()) == 201


def test_estimate_area_reprojects_and_excludes(synthetic, labelled, tmp_path):
    est = estimate_area(synthetic["mask"], labelled["labelled"])
    assert est.counts.sum() == 200 and est.excluded == {}
    # the same sample in the mask's CRS gives the same estimate (declared CRS -> reprojected)
    g = gpd.read_file(labelled["labelled"]).to_crs("EPSG:32610")
    g.to_file(tmp_path / "utm.gpkg")
    assert estimate_area(synthetic["mask"], tmp_path / "utm.gpkg").area_ha() == pytest.approx(est.area_ha())
    # unlabelled, other codes, nodata and outside points are reported and left out
    g = gpd.read_file(labelled["labelled"])
    g.loc[0, "reference"] = None
    g.loc[1:2, "reference"] = "cloud"
    g.loc[3, "geometry"] = gpd.points_from_xy([-121.0], [38.0])[0]  # far outside the mask
    g.loc[4, "stratum"] = None
    g.loc[4, "geometry"] = gpd.GeoSeries.from_xy([630_010.5], [4_239_998.5], crs="EPSG:32610").to_crs(4326)[0]
    g.to_file(tmp_path / "edited.geojson", driver="GeoJSON")
    e2 = estimate_area(synthetic["mask"], tmp_path / "edited.geojson")
    assert e2.excluded == {"unlabelled": 1, "other reference codes": 2, "outside the mask": 1, "on nodata": 1}
    assert e2.other_codes == {"cloud": 2} and e2.counts.sum() == 195
    assert "other reference codes 2" in e2.text() and "(codes: 'cloud' x2)" in e2.text()


def test_estimate_area_command_and_mlflow(synthetic, labelled, tmp_path, capsys, tracking_uri):
    from mlflow import MlflowClient

    uri = tracking_uri
    rc = main(
        [
            "estimate-area",
            str(synthetic["mask"]),
            str(labelled["labelled"]),
            "--output-dir",
            str(tmp_path / "out"),
            "--tracking-uri",
            uri,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "error-adjusted ha" in out and "overall accuracy" in out
    data = json.loads((tmp_path / "out" / "area_estimate.json").read_text())
    crop = data["classes_detail"]["crop"]["area_ha"]
    assert crop["ci95"][0] < crop["estimate"] < crop["ci95"][1]
    run_id = out.split("MLflow run ")[1].split()[0]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["crop_area_ha"] == pytest.approx(crop["estimate"])
    assert run.inputs.dataset_inputs[0].dataset.name == "labelled.geojson"
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "area")}
    assert {"area/estimates.json", "area/error_matrix_proportions.json", "area/area_estimate.txt"} <= arts


def _bad(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and err.startswith("cropseg: error: "), err
    return err


def test_bad_input_is_one_line(synthetic, labelled, tmp_path, capsys):
    mask, d = str(synthetic["mask"]), tmp_path
    common = ["--output-dir", str(d / "out"), "--tracking-uri", f"sqlite:///{d / 'mlflow.db'}"]
    # no reference values at all
    assert "no 'reference' values" in _bad(["estimate-area", mask, str(labelled["sample"]), *common], capsys)
    # reference codes that are neither crop nor non-crop
    g = gpd.read_file(labelled["labelled"])
    g["reference"] = np.where(g["reference"] == "1", "maize", "fallow")
    g.to_file(d / "codes.geojson", driver="GeoJSON")
    assert "neither crop" in _bad(["estimate-area", mask, str(d / "codes.geojson"), *common], capsys)
    # projected coordinates in a file that declares EPSG:4326 (GeoJSON's CRS): no point falls on the mask
    u = gpd.read_file(labelled["labelled"]).to_crs("EPSG:32610").set_crs("EPSG:4326", allow_override=True)
    u.to_file(d / "utm_as_wgs84.geojson", driver="GeoJSON")
    assert "wrong CRS" in _bad(["estimate-area", mask, str(d / "utm_as_wgs84.geojson"), *common], capsys)
    # a mask that is not 0/1/255
    bad = _write(d / "classes.tif", np.full((40, 40), 3, dtype=np.uint8))
    assert "not a 0/1/255 crop mask" in _bad(["estimate-area", str(bad), str(labelled["labelled"]), *common], capsys)
    assert "not a 0/1/255" in _bad(["sample-design", str(bad)], capsys)
    rgb = _write(d / "rgb.tif", np.zeros((3, 40, 40), dtype=np.uint8), count=3)
    assert "one integer band" in _bad(["sample-design", str(rgb)], capsys)
    # one labelled crop point
    g = gpd.read_file(labelled["labelled"])
    crop = np.flatnonzero(g["stratum"] == 1)
    g.loc[crop[1:], "reference"] = None
    g.to_file(d / "thin.geojson", driver="GeoJSON")
    assert "stratum 'crop' (1 labelled point)" in _bad(
        ["estimate-area", mask, str(d / "thin.geojson"), *common], capsys
    )
    # a sample drawn from another map
    g = gpd.read_file(labelled["labelled"])
    g["stratum"] = 1 - g["stratum"]
    g.to_file(d / "other_map.geojson", driver="GeoJSON")
    assert "drawn from another map" in _bad(["estimate-area", mask, str(d / "other_map.geojson"), *common], capsys)
    assert "sample file not found" in _bad(["estimate-area", mask, str(d / "nope.geojson"), *common], capsys)
    assert "--sample-size" in _bad(["sample-design", mask, "--sample-size", "0"], capsys)
    assert "reference sample file not found" in _bad(
        ["predict", "runs:/0/model", mask, "--reference-sample", str(d / "nope.geojson"), *common], capsys
    )
    # nothing that looks like a result was written
    assert not (d / "out").exists() and not (d / "mlflow.db").exists()
    assert not list(Path(synthetic["dir"]).glob("classes_sample*"))


def test_area_config_is_checked_before_a_run(capsys):
    assert "evaluate.area_sample_size" in _bad(["evaluate.area_sample_size=1"], capsys)
    assert "evaluate.area_allocation" in _bad(["evaluate.area_allocation=optimal"], capsys)


def test_library_errors(synthetic, labelled, tmp_path):
    with pytest.raises(RasterFormatError, match="geographic"):
        read_mask(_write(tmp_path / "geo.tif", np.zeros((8, 8), dtype=np.uint8), crs="EPSG:4326"))
    # a CRS PROJ cannot place on the Earth (GDAL's LOCAL_CS for an unknown code) is refused with its text
    with pytest.raises(RasterFormatError, match=r"unknown CRS 'LOCAL_CS\["):
        read_mask(
            _write(tmp_path / "local.tif", np.zeros((8, 8), dtype=np.uint8), crs='LOCAL_CS["unknown",UNIT["metre",1]]')
        )
    with pytest.raises(InputFileError, match="no field 'label'"):
        estimate_area(synthetic["mask"], synthetic["dir"] / "labelled.geojson", reference_field="label")
    g = gpd.read_file(synthetic["dir"] / "labelled.geojson").set_crs(None, allow_override=True)
    g.to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(CRSMismatchError, match="declares no CRS"):
        estimate_area(synthetic["mask"], tmp_path / "nocrs.gpkg")


# -- the protocol in a run and in cropseg predict ----------------------------------------------------------------
@pytest.mark.slow
def test_run_reports_area_and_predict_uses_a_reference_sample(tmp_path, tiny_pair, tracking_uri, capsys):
    """A tiny SYNTHETIC run with evaluate.area_sample_size reports mapped, reference and error-adjusted crop
    area; cropseg predict with --reference-sample reports the error-adjusted area of a new scene."""
    import cropseg
    from cropseg.testing import local_overrides

    train, test = tiny_pair
    result = cropseg.run(
        [
            *local_overrides(train, test),
            f"tracking.uri={tracking_uri}",
            "evaluate.area_sample_size=120",
            "postprocessor=[median_blur]",
            "classifier.k_grid=[3]",
        ],
        output_dir=tmp_path / "run",
    )
    m = result.metrics
    assert m["area_mapped_crop_ha"] - m["area_reference_crop_ha"] == pytest.approx(m["area_difference_ha"])
    assert m["area_sample_size"] == 120
    assert m["area_adjusted_crop_ci_low_ha"] <= m["area_adjusted_crop_ha"] <= m["area_adjusted_crop_ci_high_ha"]
    for k in ("area_crop_user_accuracy_se", "area_crop_producer_accuracy_se", "area_overall_accuracy_se"):
        assert 0 <= m[k] < 0.5, k  # accuracies are logged with their SEs
    assert "error-adjusted crop area (ha, n=120)" in result.summary()
    report = json.loads((result.output_dir / "reports" / "area_estimate.json").read_text())
    assert report["simulated"] and report["sample_size"] == 120
    # the run's test mask, sampled and labelled from the test scene's label raster, then predict again
    d = design_sample(result.outputs["test_mask"], n=80, allocation="equal", seed=2)
    write_sample(d, tmp_path / "s.geojson", None)
    with rasterio.open(result.outputs["test_labels"]) as src:
        labels = src.read(1)
    g = gpd.read_file(tmp_path / "s.geojson")
    g["reference"] = [
        ("1" if labels[r, c] == 1 else "0") if labels[r, c] != 255 else None
        for r, c in zip(g["pixel_row"], g["pixel_col"])
    ]
    g.to_file(tmp_path / "s_labelled.geojson", driver="GeoJSON")
    capsys.readouterr()
    rc = main(
        [
            "predict",
            result.model_uri,
            str(test.image),
            "--metadata",
            str(test.metadata),
            "--serial",
            "--reference-sample",
            str(tmp_path / "s_labelled.geojson"),
            "--output-dir",
            str(tmp_path / "pred"),
            "--tracking-uri",
            tracking_uri,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "crop area (error-adjusted, " in out
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    expected = estimate_area(result.outputs["test_mask"], tmp_path / "s_labelled.geojson")
    assert summary["area_estimate"]["classes_detail"]["crop"]["area_ha"]["estimate"] == pytest.approx(
        float(expected.area_ha()[1])
    )


# -- issue 21: Neyman allocation, the saved design, undefined quantities, zero-error strata, --within ------------
def test_neyman_allocation_reaches_the_target_se_of_eq_13():
    """Olofsson et al. (2014) example: eq. 13 gives n = 641 for SE 0.01; allocated by Neyman (n_i ~ W_i S_i) the
    design's SE is the target (up to rounding of n_i); proportional and equal allocations of the same n miss it."""
    w = np.array(MAPPED_PIXELS) / sum(MAPPED_PIXELS)
    ua = [0.70, 0.60, 0.90, 0.95]
    n = cochran_sample_size(w, ua, 0.01)
    per = allocate(n, MAPPED_PIXELS, "neyman", user_accuracies=ua)
    ws = w * np.sqrt(np.array(ua) * (1 - np.array(ua)))
    assert per.sum() == 641 and np.abs(per - 641 * ws / ws.sum()).max() < 1
    assert design_se(w, ua, per) == pytest.approx(0.01, rel=0.005)
    for other in ("proportional", "equal"):
        assert design_se(w, ua, allocate(n, MAPPED_PIXELS, other)) > 0.0101
    with pytest.raises(ValueError, match="neyman"):
        allocate(n, MAPPED_PIXELS, "neyman")


def test_zero_error_stratum_is_named_and_intervals_are_clipped():
    # every one of 50 points in the crop stratum agrees with the map: SE 0, a too narrow interval
    est = AreaEstimate(["non-crop", "crop"], [[49, 1], [0, 50]], [27_000, 3_000], 0.09)
    notes = est.warnings()
    assert len(notes) == 1 and "stratum 'crop'" in notes[0] and "too narrow" in notes[0]
    assert "warning: stratum 'crop'" in est.text()
    assert est.to_dict()["warnings"] == notes
    d = est.to_dict()["classes_detail"]
    for c in ("crop", "non-crop"):
        for k in ("user_accuracy", "producer_accuracy"):
            lo, hi = d[c][k]["ci95"]
            assert 0.0 <= lo <= d[c][k]["estimate"] <= hi <= 1.0
    # unclipped, the non-crop user's accuracy interval (0.98 +- 0.039) would pass 1
    ua, se = est.user_accuracy[0], est.user_accuracy_se[0]
    assert ua + 1.96 * se > 1.0 and d["non-crop"]["user_accuracy"]["ci95"][1] == 1.0


def test_an_unmapped_class_has_an_undefined_users_accuracy():
    est = AreaEstimate(["non-crop", "crop"], [[48, 2], [0, 0]], [1_000, 0], 0.09)
    assert np.isnan(est.user_accuracy[1]) and np.isfinite(est.overall_accuracy_se)
    d = est.to_dict()["classes_detail"]["crop"]["user_accuracy"]
    assert d["estimate"] is None and d["note"].startswith("undefined")
    assert "undefined" in est.text()
    from cropseg.area_sample import estimate_metrics

    assert "crop_user_accuracy" not in estimate_metrics(est) and "noncrop_user_accuracy" in estimate_metrics(est)


def test_design_file_round_trips_and_is_logged_with_the_estimate(synthetic, tmp_path, capsys, tracking_uri):
    from mlflow import MlflowClient

    from cropseg.area_sample import design_path, read_design

    # the labelled extent: the truth with its right quarter unlabelled (255), and the same as a polygon
    lab = synthetic["truth_a"].copy()
    lab[:, 60:] = 255
    within = _write(tmp_path / "labels.tif", lab)
    out = tmp_path / "s;ample.geojson"  # taken literally
    argv = ["sample-design", str(synthetic["mask"]), "--target-se", "0.03", "--user-accuracy", "0.95,0.75"]
    argv += ["--allocation", "neyman", "--within", str(within), "--seed", "5", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "expected standard error" in printed and "(target 0.03)" in printed
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mlflow.db") == [
        "labels.tif",
        "s;ample.csv",
        "s;ample.geojson",
        "s;ample_design.json",
    ]  # no temporary file left
    design = read_design(design_path(out))
    assert design["allocation"] == "neyman" and design["seed"] == 5 and design["target_se"] == 0.03
    assert design["expected_se"] == pytest.approx(0.03, rel=0.02)
    # round trip: the saved parameters draw the very same sample
    again = design_sample(
        synthetic["mask"],
        target_se=design["target_se"],
        user_accuracies=list(design["anticipated_user_accuracy"].values()),
        allocation=design["allocation"],
        seed=design["seed"],
        within=design["within"],
    )
    assert again.summary() == {k: v for k, v in design.items() if k != "sample"}
    sample = gpd.read_file(io.BytesIO(out.read_bytes()))  # GDAL cuts the name at ';': read the bytes
    assert list(zip(again.rows, again.cols)) == list(zip(sample["pixel_row"], sample["pixel_col"]))
    assert (lab[sample["pixel_row"], sample["pixel_col"]] != 255).all()  # inside the labelled extent only
    assert sum(design["mapped_pixels"].values()) == int(np.count_nonzero((synthetic["mask_a"] != 255) & (lab != 255)))
    # labelled and estimated: the design is found beside the sample, logged, and its target SE compared
    labelled = _label(out, synthetic["truth_a"], tmp_path / "lab.geojson")
    design_path(labelled).write_text(design_path(out).read_text())
    common = ["--output-dir", str(tmp_path / "est"), "--tracking-uri", tracking_uri]
    rc = main(["estimate-area", str(synthetic["mask"]), str(labelled), *common])
    printed = capsys.readouterr().out
    assert rc == 0 and "achieved, target 0.03" in printed
    run_id = printed.split("MLflow run ")[1].split()[0]
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.params["design_allocation"] == "neyman" and run.data.metrics["design_target_se"] == 0.03
    for k in ("overall_accuracy_se", "crop_user_accuracy_se", "crop_producer_accuracy_se", "crop_area_proportion_se"):
        assert k in run.data.metrics
    arts = {a.path for a in MlflowClient(tracking_uri).list_artifacts(run_id, "area")}
    assert "area/sample_design.json" in arts
    # a design of another mask is refused
    other = _write(tmp_path / "other.tif", synthetic["mask_a"][::-1].copy())
    assert "drawn from another mask" in _bad(["estimate-area", str(other), str(labelled), *common], capsys)


def test_within_a_polygon_and_an_unknown_sample_crs(synthetic, labelled, tmp_path, capsys):
    import shapely

    box = shapely.box(630_000, 4_240_000 - 120, 630_120, 4_240_000)  # the top-left 40x40 pixels
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:32610").to_file(tmp_path / "aoi.gpkg")
    d = design_sample(synthetic["mask"], n=60, allocation="equal", seed=2, within=tmp_path / "aoi.gpkg")
    assert (d.rows < 40).all() and (d.cols < 40).all()
    assert d.mask.counts.sum() == np.count_nonzero(synthetic["mask_a"][:40, :40] != 255)
    # a sample declaring a CRS PROJ does not know is refused, naming the CRS (GDAL would read it as EPSG:4326)
    text = labelled["labelled"].read_text()
    bad = tmp_path / "unknown_crs.geojson"
    assert "OGC:1.3:CRS84" in text
    bad.write_text(text.replace("urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:999999"))
    common = ["--output-dir", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert "EPSG:999999" in _bad(["estimate-area", str(synthetic["mask"]), str(bad), *common], capsys)
