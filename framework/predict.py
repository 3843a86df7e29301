"""Apply a trained cropseg model to a new scene: ``cropseg predict`` and :func:`predict`.

The model comes from MLflow (``runs:/<id>/model``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``);
the scene is a local 4-band GeoTIFF (optional Planet metadata XML, AOI, usable-data raster). The mask is
written block by block on the scene's grid, then filtered and vectorised as in training; optional
ground truth (a vector file or a class raster, as the local source reads them) gives a classification
report; it is labelled before anything is predicted, so a bad file fails at once. Every prediction is its own MLflow run, tagged with
the model URI and the run that trained the model, ending FINISHED or FAILED. Blocks run in parallel as in
a run (an in-process Dask LocalCluster by default; serially, or on a scheduler's cluster on request).
Outputs are assembled in a hidden staging folder and moved into place only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from . import __version__
from .errors import ConfigError, InputFileError, ModelInputError, as_output_error
from .evaluate import classification_report, confusion_from_rasters, iou, report_metrics
from .lineage import PREDICTION, scene_refs
from .parallel import BlockExecutor, ParallelConfig, use_executor
from .preflight import check_output_dir
from .raster import DEFAULT_BLOCK, atomic_path, iter_windows
from .scenes import make_ground_truth
from .signals import raise_if_received
from .tracking import TAG_PREFIX, Tracker, check_reachable, git_commit, resolve_uri
from .types import CROP, DWR_CROP_CLASSES, NONCROP

log = logging.getLogger("cropseg")

DEFAULT_EXPERIMENT = "cropseg-predict"


@dataclass
class PredictResult:
    """What a prediction returns: its MLflow run, the model it used, the summary and output paths."""

    run_id: str
    experiment_name: str
    tracking_uri: str
    model_uri: str
    source_run_id: str | None
    output_dir: Path
    summary: dict[str, Any]
    metrics: dict[str, float]
    outputs: dict[str, Path] = field(default_factory=dict)
    report_text: str | None = None

    def text(self) -> str:
        """The crop-area summary (and classification report) as printed by ``cropseg predict``."""
        s = self.summary
        lines = [f"prediction of {s['scene']} with {self.model_uri} (trained in run {self.source_run_id})"]
        if s.get("scene_synthetic"):
            lines.append(
                "NOTE: the scene is SYNTHETIC (its GeoTIFF says so); scores on it say nothing about real imagery"
            )
        if s.get("model_synthetic"):
            lines.append("NOTE: the model was trained on SYNTHETIC data; its output says little about real imagery")
        lines += [
            f"pixels classified    {s['pixels_classified']:,}",
            f"crop pixels          {s['crop_pixels']:,} ({100 * s['crop_fraction']:.1f}%)",
        ]
        if s.get("crop_area_ha_pixels") is not None:
            lines.append(f"crop area (pixels)   {s['crop_area_ha_pixels']:,.2f} ha")
        if s.get("crop_area_ha_polygons") is not None:
            lines.append(f"crop area (polygons) {s['crop_area_ha_polygons']:,.2f} ha in {s['n_polygons']:,} polygons")
        if s.get("area_estimate"):
            crop = s["area_estimate"]["classes_detail"]["crop"]
            a, ua = crop["area_ha"], crop["user_accuracy"]
            ua_text = (
                f"{ua['estimate']:.3f} (95% CI {ua['ci95'][0]:.3f} - {ua['ci95'][1]:.3f})"
                if ua["estimate"] is not None
                else "undefined (no crop mapped)"
            )
            lines.append(
                f"crop area (error-adjusted, {s['area_estimate']['sample_size']} reference points) "
                f"{a['estimate']:,.2f} ha, SE {a['se']:,.2f} ha (95% CI "
                f"{a['ci95'][0]:,.2f} - {a['ci95'][1]:,.2f}); user's accuracy {ua_text}"
            )
        if self.report_text:
            lines += ["", f"classification report against {s['ground_truth']}:", self.report_text.rstrip()]
        return "\n".join(lines)


def predict(
    model_uri: str,
    image: str | Path | Sequence[str | Path],
    *,
    metadata: str | Path | Sequence[str | Path] | None = None,
    scale: float | None = None,
    aoi: str | Path | None = None,
    udm: str | Path | Sequence[str | Path] | None = None,
    dates: Sequence[str] | None = None,
    nodata: float | None = None,
    bands: Sequence[str] | None = None,
    ground_truth: str | Path | None = None,
    attribute: str = "CLASS1",
    crop_values: Sequence[Any] = DWR_CROP_CLASSES,
    layer: str | None = None,
    uncovered: str = "noncrop",
    ignore_values: Sequence[int] = (),
    labeler: str | None = None,
    output_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    block: int = DEFAULT_BLOCK,
    parallel: ParallelConfig | None = None,
    reference_sample: str | Path | None = None,
) -> PredictResult:
    """Predict crop / non-crop on ``image`` with the model at ``model_uri``; see the module docstring.

    A model trained on a time stack takes a list of images (one per date, in time order; ``metadata`` and
    ``udm`` then lists of as many, ``dates`` optional); the number of dates is checked before the run.

    ``reference_sample``: a labelled stratified sample of this scene's mask (``cropseg sample-design``,
    field ``reference``: 1 crop, 0 non-crop) for the error-adjusted crop area (:mod:`cropseg.area`).

    ``parallel`` says how blocks run (:class:`cropseg.parallel.ParallelConfig`); default: as a run's
    default config, on an in-process Dask LocalCluster of one thread per core.

    Bad input raises a :class:`cropseg.CropsegError` (the model URI before any run exists; the scene,
    AOI and ground truth inside the prediction run, which then ends FAILED) and leaves no outputs but a
    ``FAILED.txt`` in ``output_dir``.
    """
    from .tracking.model import load_pipeline_model

    t_start = time.perf_counter()
    if uncovered not in ("noncrop", "ignore"):
        raise ConfigError(f"uncovered: 'noncrop' or 'ignore', got {uncovered!r}")
    if block < 16:
        raise ConfigError(f"block size: at least 16 pixels, got {block}")
    if reference_sample is not None and not Path(reference_sample).expanduser().is_file():
        raise InputFileError(f"{reference_sample}: reference sample file not found")
    parallel = parallel or ParallelConfig(backend="dask")
    uri = resolve_uri(tracking_uri)
    out = Path(output_dir or _default_output_dir()).expanduser().resolve()
    check_output_dir(out, "--output-dir", create=False)
    check_reachable(uri)
    tracker = Tracker(uri, experiment)
    model = load_pipeline_model(uri, model_uri)
    pipe = model.pipeline
    images = (
        [Path(p).expanduser() for p in image] if isinstance(image, list | tuple) else [Path(image).expanduser()]  # type: ignore[arg-type]
    )
    pipe.check_stack_length(len(images), images[0])
    if bands is not None:
        pipe.check_bands(bands, images[0])
    image = images[0]
    one_meta: Any = metadata
    one_udm: Any = udm
    if not pipe.spec.dates:  # one image: one metadata XML and one udm at most
        for opt, value in (("--metadata", metadata), ("--udm", udm)):
            if isinstance(value, list | tuple) and len(value) != 1:
                raise ModelInputError(f"{opt}: one file for one image, got {len(value)}")
        one_meta = metadata[0] if isinstance(metadata, list | tuple) else metadata
        one_udm = udm[0] if isinstance(udm, list | tuple) else udm
    tags = {
        f"{TAG_PREFIX}kind": "prediction",
        f"{TAG_PREFIX}model_uri": model_uri,
        f"{TAG_PREFIX}source_run_id": model.source_run_id or "unknown",
        f"{TAG_PREFIX}model_synthetic": str(pipe.spec.synthetic).lower(),
        f"{TAG_PREFIX}classifier": pipe.spec.classifier,
        f"{TAG_PREFIX}features": pipe.spec.features["name"],
        f"{TAG_PREFIX}postprocessor": ",".join(p["name"] for p in pipe.spec.filters + pipe.spec.vectorizers) or "none",
        f"{TAG_PREFIX}version": __version__,
        f"{TAG_PREFIX}git_commit": git_commit(),
    }
    if model.registered_name:
        tags[f"{TAG_PREFIX}registered_model"] = f"{model.registered_name}/{model.registered_version}"
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    with tracker.run(run_name or f"predict-{image.stem}", tags) as rl:
        log.info(
            "prediction run %s in %s (experiment %r), model %s from run %s",
            rl.run_id,
            uri,
            experiment,
            model_uri,
            model.source_run_id,
        )
        try:
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
            gt = None
            if ground_truth is not None:
                gt_path = Path(ground_truth).expanduser()
                if not gt_path.exists():
                    raise InputFileError(f"{gt_path}: ground truth file not found")
                # as the local source reads it: a vector file or a class raster (crop and ignored values)
                gt = make_ground_truth(
                    gt_path,
                    attribute=attribute,
                    crop_values=crop_values,
                    ignore_values=ignore_values,
                    uncovered=uncovered,
                    layer=layer,
                    option="--ground-truth",
                )
            if pipe.spec.dates:
                as_list = lambda v: None if v is None else (list(v) if isinstance(v, list | tuple) else [v])  # noqa: E731
                scene = pipe.stack_scene(
                    images,
                    metadata=as_list(metadata),
                    udm=as_list(udm),
                    dates=dates,
                    scale=scale,
                    aoi=aoi,
                    nodata=nodata,
                    ground_truth=gt,
                    bands=bands,
                )
            else:
                scene = pipe.scene(
                    image,
                    metadata=one_meta,
                    scale=scale,
                    aoi=aoi,
                    udm=one_udm,
                    nodata=nodata,
                    ground_truth=gt,
                    bands=bands,
                )
            rl.log_params(
                {
                    "model_uri": model_uri,
                    "image": ",".join(str(p) for p in images),
                    "metadata": metadata,
                    "scale": scale,
                    "aoi": aoi,
                    "udm": udm,
                    "nodata": scene.nodata,
                    "band_roles": ",".join(scene.base_band_names),
                    "ground_truth": ground_truth,
                    "attribute": attribute if gt else None,
                    "crop_values": ",".join(map(str, crop_values)) if gt else None,
                    "block_size": block,
                    "reflectance": scene.metadata.get("reflectance"),
                    "parallel.backend": parallel.backend,
                    "parallel.scheduler": parallel.scheduler,
                    "parallel.workers": parallel.workers,
                }
            )
            rl.set_tags(
                {
                    f"{TAG_PREFIX}scene_id": scene.metadata.get("scene_id", image.stem),
                    f"{TAG_PREFIX}synthetic": str(scene.metadata["synthetic"]).lower(),
                }
            )
            rl.log_datasets(scene_refs(scene, PREDICTION))
            with BlockExecutor(parallel) as executor, use_executor(executor):
                summary, metrics, files, report_text = _predict_into(pipe, scene, stage, block, labeler)
            if reference_sample is not None:
                _area_estimate(Path(reference_sample).expanduser(), files, summary, metrics, stage)
            summary.update(
                model_uri=model_uri,
                source_run_id=model.source_run_id,
                registered_model=tags.get(f"{TAG_PREFIX}registered_model"),
                model_synthetic=pipe.spec.synthetic,
            )
            metrics["total_seconds"] = time.perf_counter() - t_start
            summary["outputs"] = {k: str(Path(v).relative_to(stage)) for k, v in files.items()}
            files["summary"] = stage / "summary.json"
            with atomic_path(files["summary"]) as tmp:
                tmp.write_text(json.dumps(summary, indent=2, default=str))
            rl.log_metrics({k: v for k, v in metrics.items() if v is not None and np.isfinite(v)})
            for path in files.values():
                rl.log_artifact(path, str(path.parent.relative_to(stage)) if path.parent != stage else None)
            raise_if_received()  # a signal whose exception Python dropped (cropseg.signals) publishes nothing
            final = _publish(stage, out)
        except BaseException as exc:
            shutil.rmtree(stage, ignore_errors=True)
            err = as_output_error(exc, "the prediction", out, uri)
            try:  # best effort: on a full or read-only disk the reason is the run's error and the one line
                out.mkdir(parents=True, exist_ok=True)
                (out / "FAILED.txt").write_text(f"{type(err or exc).__name__}: {err or exc}\n")
            except OSError as why:
                log.warning("could not write %s: %s", out / "FAILED.txt", why)
            if err is not None:
                raise err from None
            raise
    outputs = {k: final / Path(v).relative_to(stage) for k, v in files.items()}
    return PredictResult(
        rl.run_id, experiment, uri, model_uri, model.source_run_id, final, summary, metrics, outputs, report_text
    )


def _predict_into(
    pipe: Any, scene: Any, stage: Path, block: int, labeler_name: str | None
) -> tuple[dict[str, Any], dict[str, float], dict[str, Path], str | None]:
    stem = scene.metadata.get("scene_id") or scene.path.stem
    files: dict[str, Path] = {}
    labels = None
    if scene.ground_truth is not None:  # labels first: a bad ground truth fails before any prediction
        lab = _labeler(pipe, labeler_name, scene.ground_truth)
        t = time.perf_counter()
        labels = lab.label(scene, stage / "labels" / f"{stem}_labels.tif")
        files["labels"] = labels.path
        log.info(
            "ground truth %s: %d crop, %d non-crop, %d ignored pixels (%.1f s)",
            scene.ground_truth.path,
            labels.counts["crop"],
            labels.counts["noncrop"],
            labels.counts["ignore"],
            time.perf_counter() - t,
        )
    t = time.perf_counter()
    files["mask"] = pipe.predict_scene(scene, stage / "prediction" / f"{stem}_mask.tif", block=block)
    predict_s = time.perf_counter() - t
    grid = scene.grid
    counts = np.zeros(2, dtype=np.int64)
    with rasterio.open(files["mask"]) as src:
        for w in iter_windows(src.height, src.width, 1024):
            m = src.read(1, window=w)
            counts += [np.count_nonzero(m == NONCROP), np.count_nonzero(m == CROP)]
    n_px = int(counts.sum())
    px_ha = grid.pixel_area * _metres_per_unit(grid.crs) ** 2 / 1e4  # nan for geographic CRSs
    summary: dict[str, Any] = {
        "scene": str(scene.path),
        "scene_id": scene.metadata.get("scene_id"),
        "scene_synthetic": bool(scene.metadata.get("synthetic")),
        "crs": grid.crs.to_string(),
        "width": grid.width,
        "height": grid.height,
        "pixel_size": abs(grid.transform.a),
        "reflectance": scene.metadata.get("reflectance"),
        "pixels_classified": n_px,
        "noncrop_pixels": int(counts[0]),
        "crop_pixels": int(counts[1]),
        "crop_fraction": float(counts[1] / n_px) if n_px else 0.0,
        "crop_area_ha_pixels": float(counts[1] * px_ha) if np.isfinite(px_ha) else None,
        "crop_area_ha_polygons": None,
        "n_polygons": None,
        "ground_truth": None,
        "evaluation": None,
    }
    metrics = {
        "predict_seconds": predict_s,
        "pixels_classified": float(n_px),
        "crop_pixels": float(counts[1]),
        "crop_fraction": summary["crop_fraction"],
        "crop_area_pixels_ha": float(counts[1] * px_ha),
        "predict_pixels_per_second": n_px / max(predict_s, 1e-9),
    }
    res = pipe.vectorize(files["mask"], stage / "segments" / f"{stem}_segments.geojson")
    if res is not None:
        files["segments"] = res.path
        summary.update(crop_area_ha_polygons=float(res.area_ha), n_polygons=int(res.n_polygons))
        metrics.update(crop_area_ha=float(res.area_ha), n_polygons=float(res.n_polygons))
    log.info("%s: %d crop of %d classified pixels", stem, counts[1], n_px)
    report_text = None
    if labels is not None:
        cm = confusion_from_rasters(labels.path, files["mask"])
        rep, report_text = classification_report(cm)
        metrics.update(report_metrics(rep, "eval"))
        metrics["eval_iou"] = iou(cm)
        files["report_txt"] = stage / "reports" / "classification_report.txt"
        files["report_json"] = stage / "reports" / "classification_report.json"
        files["confusion"] = stage / "reports" / "confusion_matrix.json"
        for key, text in (
            ("report_txt", report_text),
            ("report_json", json.dumps(rep, indent=2)),
            ("confusion", json.dumps(cm.tolist())),
        ):
            with atomic_path(files[key]) as tmp:
                tmp.write_text(text)
        summary.update(
            ground_truth=str(scene.ground_truth.path),
            evaluation={
                "report": rep,
                "confusion_matrix": cm.tolist(),
                "crop_iou": iou(cm),
                "label_counts": dict(labels.counts),
            },
        )
    return summary, metrics, files, report_text


def _area_estimate(
    sample: Path, files: dict[str, Path], summary: dict[str, Any], metrics: dict[str, float], stage: Path
) -> None:
    from .area_sample import estimate_area, estimate_metrics

    est = estimate_area(files["mask"], sample)
    summary["area_estimate"] = {**est.to_dict(), "sample": str(sample)}
    metrics.update({f"area_{k}": v for k, v in estimate_metrics(est).items()})
    files["area_txt"] = stage / "reports" / "area_estimate.txt"
    with atomic_path(files["area_txt"]) as tmp:
        tmp.write_text(est.text() + "\n")
    log.info(
        "error-adjusted crop area %.2f ha (SE %.2f) from %d reference points",
        est.area_ha()[1],
        est.area_se_ha()[1],
        int(est.counts.sum()),
    )


def _labeler(pipe: Any, name: str | None, gt: Any) -> Any:
    """The labeler for the ground truth: ``name``, else the model's; one that cannot read this kind of
    ground truth fails naming those that can."""
    from .plugins import Registry, check_labeler_fits, get_plugin_manager, ground_truth_kind_of

    registry = pipe.registry or Registry.from_plugin_manager(get_plugin_manager())
    spec = pipe.spec.labeler or {"name": "rasterize", "options": {}}
    chosen = name or spec["name"]
    check_labeler_fits(registry, chosen, ground_truth_kind_of(gt.path), f"--ground-truth {gt.path}")
    if chosen != spec["name"]:
        return registry.create("labeler", chosen, {})
    return registry.create("labeler", spec["name"], spec.get("options", {}))


def _metres_per_unit(crs: Any) -> float:
    from pyproj import CRS as PyCRS

    try:
        axis = PyCRS.from_user_input(crs.to_wkt()).axis_info[0]
        return float(axis.unit_conversion_factor) if axis.unit_name != "degree" else float("nan")
    except Exception:  # noqa: BLE001 - odd CRSs: report no area rather than a wrong one
        return float("nan")


def _publish(stage: Path, out: Path) -> Path:
    """Move the finished outputs from the staging folder into ``out`` (replacing earlier ones)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "FAILED.txt").unlink(missing_ok=True)
    for entry in sorted(stage.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)
    stage.rmdir()
    return out


def _default_output_dir() -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    return Path("outputs") / "predict" / f"{stamp}-{uuid.uuid4().hex[:6]}"


__all__ = ["DEFAULT_EXPERIMENT", "PredictResult", "predict"]
