"""One crop-segmentation run: the stages in order, block by block, tracked in MLflow.

Only :mod:`cropseg.tracking` talks to MLflow; plugins arrive through the registry, never by import.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from omegaconf import DictConfig

from . import __version__
from .area_sample import area_metrics, check_area_config
from .config import flatten, instantiate, plugin_options, postprocessor_nodes, redact
from .errors import ConfigError, LabelError, PluginError, StackError, as_output_error
from .evaluate import classification_report, confusion_from_rasters, iou, report_metrics
from .featurize import probe_features
from .lineage import TESTING, TRAINING, scene_refs
from .naming import chosen_label, run_label
from .parallel import BlockExecutor, ParallelConfig, use_executor
from .plugins import Registry, check_labeler_fits, get_plugin_manager
from .preflight import check_destinations, check_inputs
from .raster import DEFAULT_BLOCK, iter_windows
from .sampling import sample_training_pixels
from .scene_ops import apply_filters, predict_scene
from .schema import check_framework_options
from .signals import raise_if_received
from .targets import TARGETS, Target, at_crop_share, target_from_config
from .tracking import TAG_PREFIX, Tracker, git_commit
from .tuning import accepts
from .types import (
    BAND_NAMES,
    Classifier,
    Features,
    Labeler,
    MaskFilter,
    PatchModel,
    Scene,
    SceneSet,
    Source,
    Vectorizer,
)

log = logging.getLogger("cropseg")


@dataclass
class RunResult:
    """What a run returns: its MLflow identity, metrics and the paths of its outputs."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    output_dir: Path
    metrics: dict[str, float]
    outputs: dict[str, Path]
    params: dict[str, Any] = field(default_factory=dict)
    ui_hint: str = ""
    #: the run's MLflow model (``runs:/<run_id>/model``) and its Model Registry version, when logged/registered
    model_uri: str | None = None
    model_version: str | None = None

    def summary(self) -> str:
        """A plain-text table of the key test metrics."""
        m = self.metrics
        rows = [
            ("test crop precision", m.get("test_crop_precision")),
            ("test crop recall", m.get("test_crop_recall")),
            ("test crop F1", m.get("test_crop_f1")),
            ("test weighted F1", m.get("test_weighted_avg_f1")),
            ("test accuracy", m.get("test_accuracy")),
            ("test crop IoU", m.get("test_iou")),
            ("test weighted F1 (before postprocessing)", m.get("test_raw_weighted_avg_f1")),
            ("train weighted F1", m.get("train_weighted_avg_f1")),
            ("crop area, all crop pixels (ha)", m.get("crop_area_pixels_ha")),
            ("crop area, kept polygons (ha)", m.get("crop_area_ha")),
            ("crop polygons kept", m.get("n_polygons")),
            ("crop polygons dropped (small)", m.get("n_polygons_dropped")),
            ("mapped crop area (ha, labelled pixels)", m.get("area_mapped_crop_ha")),
            ("reference crop area (ha)", m.get("area_reference_crop_ha")),
            ("mapped - reference (ha)", m.get("area_difference_ha")),
            (f"error-adjusted crop area (ha, n={m.get('area_sample_size', 0):.0f})", m.get("area_adjusted_crop_ha")),
            ("  95% CI low (ha)", m.get("area_adjusted_crop_ci_low_ha")),
            ("  95% CI high (ha)", m.get("area_adjusted_crop_ci_high_ha")),
            ("fit seconds", m.get("fit_seconds")),
            ("predict pixels / second", m.get("predict_pixels_per_second")),
            ("total seconds", m.get("total_seconds")),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ----------"]
        for name, val in rows:
            if val is None:
                continue
            if name.startswith("crop polygons"):
                txt = f"{val:,.0f}"
            elif "(ha" in name or "seconds" in name:
                txt = f"{val:,.2f}"
            elif "pixels / second" in name:
                txt = f"{val:,.0f}"
            else:
                txt = f"{val:.4f}"
            lines.append(f"{name:<{width}}  {txt}")
        return "\n".join(lines)


@dataclass
class Stages:
    """The plugin objects of a run, built and validated before any work starts."""

    source: Source
    labeler: Labeler
    features: Features
    #: a pixel classifier or a patch model (:class:`cropseg.types.PatchModel`)
    classifier: Classifier | PatchModel
    filters: list[tuple[str, MaskFilter]]
    vectorizers: list[tuple[str, Vectorizer]]
    registry: Registry
    names: dict[str, str]
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


def build_stages(cfg: DictConfig, registry: Registry | None = None) -> Stages:
    """Instantiate every configured plugin through the registry (unknown names/options fail here)."""
    check_framework_options(cfg)
    if registry is None:
        block = list(cfg.get("plugins", {}).get("block", []) or [])
        registry = Registry.from_plugin_manager(get_plugin_manager(block=block))
    names = {s: str(cfg[s].get("name")) for s in ("source", "labeler", "features", "classifier") if cfg.get(s)}
    source = instantiate(registry, "source", cfg.get("source"))
    labeler = instantiate(registry, "labeler", cfg.get("labeler"))
    features = instantiate(registry, "features", cfg.get("features") or {"name": "bands"})
    classifier = instantiate(registry, "classifier", cfg.get("classifier"))
    filters: list[tuple[str, MaskFilter]] = []
    vectorizers: list[tuple[str, Vectorizer]] = []
    for name, node in postprocessor_nodes(cfg):
        obj = registry.create("postprocessor", name, plugin_options(node))
        if isinstance(obj, MaskFilter):
            if vectorizers:
                raise ConfigError(f"postprocessor.{name}: mask filters must come before vectorizers")
            filters.append((name, obj))
        elif isinstance(obj, Vectorizer):
            vectorizers.append((name, obj))
        else:
            raise PluginError(f"postprocessor {name!r} is neither a mask filter (halo, apply) nor a vectorizer")
    names["postprocessor"] = ",".join(n for n, _ in [*filters, *vectorizers]) or "none"
    for stage, obj, proto in (
        ("source", source, Source),
        ("labeler", labeler, Labeler),
        ("features", features, Features),
        ("classifier", classifier, Classifier),
    ):
        if not isinstance(obj, proto) and not (stage == "classifier" and isinstance(obj, PatchModel)):
            raise PluginError(
                f"{stage} {names.get(stage)!r} does not implement cropseg.types.{proto.__name__}"
                + (" or PatchModel" if stage == "classifier" else "")
            )
    kinds = getattr(source, "ground_truth_kinds", None)
    for what, kind in (kinds() if callable(kinds) else {}).items():  # before any scene is loaded
        check_labeler_fits(registry, names["labeler"], kind, what)
    _check_sample_size(cfg, classifier)
    # the features on the band roles the source declares (PlanetScope's four unless it says otherwise): a
    # band or index they need and the scene will not have is one line now, before any run exists;
    # temporal features are probed on a two-date stack of those bands
    roles_of = getattr(source, "band_roles", None)
    probe: tuple[str, ...] = tuple(roles_of()) if callable(roles_of) else BAND_NAMES
    n_probe = 1
    if getattr(features, "temporal", False):
        probe, n_probe = tuple(f"{b}@{d}" for d in ("2000-01-01", "2000-07-01") for b in probe), 2
    n_features = len(probe_features(features, probe, n_probe))
    if isinstance(classifier, PatchModel):
        from .patches import PatchOptions, check_patch_model

        PatchOptions.from_config(cfg.get("train", {}).get("patches"))
        # the real channel count (dates x features of a time stack) is set again once the scenes are known
        # (_check_time_stacks)
        check_patch_model(classifier, n_features)
    parallel = ParallelConfig.from_config(cfg.get("parallel"))
    check_area_config(cfg.get("evaluate"))
    return Stages(source, labeler, features, classifier, filters, vectorizers, registry, names, parallel)


def _check_time_stacks(st: Stages, scenes: SceneSet) -> None:
    """Before any pixel is read: train and test have the same number of dates and the same bands (roles);
    features that need a time stack (``temporal``) get one; the feature names (bands and indices the
    scene must have) resolve; a patch model learns its input channel count (dates x features), and one
    with ``check_feature_names`` (``tempcnn``) checks the feature names (e.g. refuses single-date features)."""
    train, test = scenes.train, scenes.test
    if train.n_dates != test.n_dates or len(train.bands) != len(test.bands):
        raise StackError(
            f"source: the train scene has {train.n_dates} date(s) of {len(train.bands)} bands, the test scene "
            f"{test.n_dates} of {len(test.bands)}; a model needs the same dates x bands in both"
        )
    if train.base_band_names != test.base_band_names:
        raise StackError(
            f"source: the train scene's bands are {', '.join(train.base_band_names)}, the test scene's "
            f"{', '.join(test.base_band_names)}; a model needs the same bands in both"
        )
    if getattr(st.features, "temporal", False) and train.n_dates < 2:
        raise ConfigError(
            f"features={st.names.get('features')}: needs time stacks of two or more dates (source.dates=N for the "
            "sample, a list of images per scene for source=local); the scenes are single images"
        )
    # features made for single images (indices, context) find the bands they need only when computing:
    # compute them on one pixel of zeros now, so a missing band is one line before any pixel is read
    try:
        names = probe_features(st.features, train.band_names, train.n_dates)
    except ConfigError as exc:
        if not train.acquisitions:
            raise
        raise ConfigError(f"features={st.names.get('features')} on time stacks: {exc}") from None
    check_names = getattr(st.classifier, "check_feature_names", None)
    if isinstance(st.classifier, PatchModel) and callable(check_names):  # e.g. tempcnn: time series only
        check_names(list(names))
    if isinstance(st.classifier, PatchModel):
        st.classifier.prepare(len(names))


def _check_sample_size(cfg: DictConfig, classifier: Any) -> None:
    """Refuse up front a classifier that needs more training pixels (its optional ``min_training_pixels()``,
    e.g. KNN's largest k) than ``train.max_pixels`` / ``train.max_per_class`` can ever draw (two classes)."""
    need = getattr(classifier, "min_training_pixels", None)
    if not callable(need):
        return
    train = cfg.get("train", {})
    caps = []
    for key, factor in (("max_pixels", 1), ("max_per_class", 2)):
        cap = train.get(key)
        if isinstance(cap, int) and not isinstance(cap, bool):
            caps.append((factor * cap, f"train.{key}={cap}"))
    if not caps:
        return
    most, which = min(caps)
    n = int(need())
    if n > most:
        raise ConfigError(
            f"{which} draws at most {most} training pixels; the classifier "
            f"{cfg.classifier.get('name')} needs at least {n} (e.g. KNN's largest k in every CV fold)"
        )


def _default_output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        pass
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    return Path("outputs") / f"{stamp}-{uuid.uuid4().hex[:6]}"


def execute(
    cfg: DictConfig,
    *,
    output_dir: Path | None = None,
    parent_run_id: str | None = None,
    registry: Registry | None = None,
    run_name_suffix: str = "",
) -> RunResult:
    """Run the configured pipeline once and record it in MLflow; see :func:`cropseg.api.run`."""
    t_start = time.perf_counter()
    stages = build_stages(cfg, registry)
    tcfg = cfg.get("tracking", {})
    _check_registration(tcfg)
    out = Path(output_dir or cfg.get("output_dir") or _default_output_dir()).resolve()
    check_destinations(out, _cache_dir(cfg, stages), tcfg.get("uri"))
    tracker = Tracker(tcfg.get("uri"), tcfg.get("experiment", "cropseg"), tcfg.get("artifact_location"))
    parent_run_id = parent_run_id or tcfg.get("parent_run_id")
    tags = {**_tags(stages), f"{TAG_PREFIX}output_dir": str(out)}
    run_name = (
        tcfg.get("run_name") + run_name_suffix
        if tcfg.get("run_name")
        else " ".join(
            p for p in (run_label(stages.names["classifier"], "", stages.names["features"]), run_name_suffix) if p
        )
    )
    with tracker.run(run_name, tags, parent_run_id) as rl:
        rl.name_suffix = run_name_suffix
        log.info("MLflow run %s in %s (experiment %r)", rl.run_id, tracker.uri, tracker.experiment_name)
        try:
            with BlockExecutor(stages.parallel) as executor, use_executor(executor):
                result = _run_stages(cfg, stages, rl, out, t_start)
            raise_if_received()  # before the run can end FINISHED (see cropseg.signals)
        except BaseException as exc:
            err = as_output_error(exc, "the run's outputs", out, tracker.uri)
            discard_results(out, f"{type(err or exc).__name__}: {err or exc}")
            if err is not None:  # a full or read-only disk, a name too long: one line, recorded as such
                raise err from None
            raise
    result.run_id = rl.run_id
    result.experiment_id = tracker.experiment_id
    result.tracking_uri = tracker.uri
    result.ui_hint = tracker.ui_hint()
    return result


def _cache_dir(cfg: DictConfig, stages: Stages) -> Path:
    return Path(cfg.get("cache_dir") or ".cache/cropseg").expanduser().resolve() / stages.names["source"]


#: what a run writes into its output folder; removed when the run fails or is stopped, so nothing there
#: looks like a result (Hydra's .hydra/ and the job log stay, beside FAILED.txt)
RESULT_ENTRIES = (
    "labels",
    "prediction",
    "train_prediction",
    "segments",
    "reports",
    "previews",
    "map",
    "model",
    "metrics.json",
)


def discard_results(out: Path, reason: str | None = None) -> None:
    """Remove what a run wrote into ``out`` (see :data:`RESULT_ENTRIES`); with ``reason``, write it to
    ``out/FAILED.txt``."""
    import shutil

    for name in RESULT_ENTRIES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if reason is not None and out.is_dir():
        try:  # best effort: on a full disk the run's error says why, and it is recorded in MLflow
            (out / "FAILED.txt").write_text(reason + "\n")
        except OSError as exc:
            log.warning("could not write %s: %s", out / "FAILED.txt", exc)


def _tags(stages: Stages) -> dict[str, str]:
    tags = {
        f"{TAG_PREFIX}version": __version__,
        f"{TAG_PREFIX}git_commit": git_commit(),
        "mlflow.source.git.commit": git_commit(),
    }
    for stage, name in stages.names.items():
        tags[f"{TAG_PREFIX}{stage}"] = name
        for n in name.split(","):
            info = stages.registry.stages[stage].get(n)
            if info is not None:
                tags[f"{TAG_PREFIX}{stage}.{n}.version"] = info.origin
    tags[f"{TAG_PREFIX}synthetic"] = str(bool(getattr(stages.source, "synthetic", False))).lower()
    return tags


def tcfg_run_name(cfg: DictConfig) -> str | None:
    return (cfg.get("tracking") or {}).get("run_name")


def _run_stages(cfg: DictConfig, st: Stages, rl: Any, out: Path, t_start: float) -> RunResult:
    block = int(cfg.get("block_size", DEFAULT_BLOCK))
    rl.log_params(flatten(cfg))
    rl.log_dict(redact(cfg), "config/resolved_config.yaml")
    metrics: dict[str, float] = {}
    outputs: dict[str, Path] = {}

    # -- source ------------------------------------------------------------------------------------
    cache = _cache_dir(cfg, st)
    check_inputs(st, cache)
    t = time.perf_counter()
    scenes = st.source.load(cache)
    log.info(
        "source %s: train %s (%dx%d px), test %s (%dx%d px)%s",
        st.names["source"],
        scenes.train.metadata.get("scene_id", scenes.train.name),
        scenes.train.grid.width,
        scenes.train.grid.height,
        scenes.test.metadata.get("scene_id", scenes.test.name),
        scenes.test.grid.width,
        scenes.test.grid.height,
        " [SYNTHETIC]" if scenes.synthetic else "",
    )
    rl.set_tags(
        {
            f"{TAG_PREFIX}synthetic": str(scenes.synthetic).lower(),
            **{
                f"{TAG_PREFIX}{role}.{k}": v
                for role, sc in (("train", scenes.train), ("test", scenes.test))
                for k, v in sc.metadata.items()
                if v is not None
            },
            **{f"{TAG_PREFIX}source.{k}": v for k, v in scenes.metadata.items() if v is not None},
        }
    )
    metrics["source_seconds"] = time.perf_counter() - t
    _check_time_stacks(st, scenes)
    rl.log_params({"band_roles": ",".join(scenes.train.base_band_names)})
    if scenes.train.acquisitions:
        rl.log_params(
            {f"{role}.dates": ",".join(sc.dates) for role, sc in (("train", scenes.train), ("test", scenes.test))}
        )
    rl.log_datasets([*scene_refs(scenes.train, TRAINING), *scene_refs(scenes.test, TESTING)])
    if _same_scene(scenes.train, scenes.test):
        log.warning("the test scene is the training scene (%s): test metrics are not held-out scores", scenes.test.path)
        rl.set_tags({f"{TAG_PREFIX}warning.test_is_train": "true"})
    if isinstance(st.classifier, PatchModel):
        from .patches import check_scene_size

        for role, scene in (("training", scenes.train), ("test", scenes.test)):
            check_scene_size(st.classifier, scene, role)

    # -- labels ------------------------------------------------------------------------------------
    labels = {}
    for role, scene in (("train", scenes.train), ("test", scenes.test)):
        t = time.perf_counter()
        labels[role] = st.labeler.label(scene, out / "labels" / f"{role}_labels.tif")
        c = labels[role].counts
        log.info(
            "labels %s: %d crop, %d non-crop, %d ignored pixels (%.1f s)",
            role,
            c["crop"],
            c["noncrop"],
            c["ignore"],
            time.perf_counter() - t,
        )
        metrics.update({f"{role}_label_{k}_pixels": float(v) for k, v in c.items()})
        for k, v in labels[role].notes.items():
            metrics[f"{role}_ground_truth_{k}"] = float(v)
            if k == "repaired_geometries" and v:
                log.warning(
                    "%s ground truth %s: %d invalid (e.g. self-intersecting) polygon(s) repaired",
                    role,
                    getattr(scene.ground_truth, "path", ""),
                    int(v),
                )
            rl.set_tags({f"{TAG_PREFIX}{role}.ground_truth.{k}": str(int(v)) if float(v).is_integer() else str(v)})
        _check_labelled(role, scene, c)
    outputs["test_labels"] = labels["test"].path

    # -- training sample and fit -------------------------------------------------------------------
    if isinstance(st.classifier, PatchModel):
        fit = _fit_patch_model(cfg, st, scenes, labels, rl, out, metrics)
    else:
        fit = _fit_pixel_model(cfg, st, scenes, labels, rl, metrics, block)
    if fit is not None:
        rl.log_params({f"fit.{k}": v for k, v in fit.params.items()})
        fit_tags = dict(getattr(fit, "tags", {}))
        rl.set_tags({f"{TAG_PREFIX}{k}": v for k, v in fit_tags.items()})
        if not tcfg_run_name(cfg):  # the name now says what the fit chose: knn k=9 | bands
            chosen = fit_tags["chosen"] if "chosen" in fit_tags else chosen_label(dict(fit.params))
            rl.rename(
                " ".join(
                    p for p in (run_label(st.names["classifier"], chosen, st.names["features"]), rl.name_suffix) if p
                )
            )
        metrics.update({k: float(v) for k, v in fit.metrics.items()})

    # -- predict, postprocess, evaluate --------------------------------------------------------------
    reports: dict[str, tuple[dict, str, np.ndarray]] = {}
    for role, scene in (("test", scenes.test), ("train", scenes.train)):
        folder = out / ("prediction" if role == "test" else "train_prediction")
        raw = folder / f"{role}_mask_raw.tif"
        n_px, secs = predict_scene(scene, st.features, st.classifier, raw, block)
        if role == "test":
            metrics.update(
                predict_seconds=secs, predict_pixels=float(n_px), predict_pixels_per_second=n_px / max(secs, 1e-9)
            )
        final = apply_filters(raw, st.filters, folder / f"{role}_mask.tif", block)
        for stage_name, path in (("raw", raw), ("post", final)):
            cm = confusion_from_rasters(labels[role].path, path)
            rep, text = classification_report(cm)
            key = f"{role}_raw" if stage_name == "raw" else role
            reports[key] = (rep, text, cm)
            metrics.update(report_metrics(rep, key))
            metrics[f"{key}_iou"] = iou(cm)
            metrics[f"{key}_balanced_accuracy"] = TARGETS["balanced_accuracy"].score(cm)
        if role == "test":
            outputs.update(test_mask_raw=raw, test_mask=final)
    log.info(
        "test: crop precision %.3f recall %.3f F1 %.3f, weighted F1 %.3f",
        metrics["test_crop_precision"],
        metrics["test_crop_recall"],
        metrics["test_crop_f1"],
        metrics["test_weighted_avg_f1"],
    )
    rl.set_tags(shift_diagnostics(cfg, labels, reports["test"][2], metrics, fit))

    # -- vectorize -----------------------------------------------------------------------------------
    grid = scenes.test.grid
    with rasterio.open(outputs["test_mask"]) as src:
        crop_px = sum(
            int(np.count_nonzero(src.read(1, window=w) == 1)) for w in iter_windows(src.height, src.width, 1024)
        )
    metrics["crop_area_pixels_ha"] = crop_px * grid.pixel_area / 1e4 if not grid.crs.is_geographic else float("nan")
    for name, vec in st.vectorizers:
        t = time.perf_counter()
        res = vec.vectorize(outputs["test_mask"], out / "segments" / "test_segments.geojson")
        outputs["segments"] = res.path
        dropped = int(getattr(res, "n_dropped", 0))
        metrics.update(
            crop_area_ha=res.area_ha,
            n_polygons=float(res.n_polygons),
            n_polygons_dropped=float(dropped),
            vectorize_seconds=time.perf_counter() - t,
        )
        log.info(
            "%s: %d polygons, %.2f ha of crop (%d smaller polygons dropped, %.2f ha)",
            name,
            res.n_polygons,
            res.area_ha,
            dropped,
            float(getattr(res, "area_dropped_ha", 0.0)),
        )

    # -- crop area: mapped vs reference, and the good-practice protocol simulated on the test scene ----
    ecfg = cfg.get("evaluate") or {}
    metrics.update(
        area_metrics(
            outputs["test_mask"],
            labels["test"].path,
            ecfg.get("area_sample_size"),
            allocation=str(ecfg.get("area_allocation", "minimum")),
            seed=int(cfg.get("seed", 0)),
            report_dir=out / "reports",
        )
    )

    # -- record ----------------------------------------------------------------------------------------
    metrics["total_seconds"] = time.perf_counter() - t_start
    metrics = {k: v for k, v in metrics.items() if v is not None and np.isfinite(v)}
    model_info = _log_results(rl, st, scenes, labels, reports, outputs, out, metrics, cfg)
    return RunResult(
        run_id=rl.run_id,
        experiment_id="",
        tracking_uri="",
        output_dir=out,
        metrics=metrics,
        outputs=outputs,
        params=dict(fit.params) if fit else {},
        **model_info,
    )


def shift_diagnostics(
    cfg: DictConfig, labels: dict, test_cm: np.ndarray, metrics: dict[str, float], fit: Any
) -> dict[str, str]:
    """Crop shares and the CV-vs-test gap, added to ``metrics``; returns the warning tags to set.

    Metrics: ``train_labelled_crop_fraction`` / ``test_labelled_crop_fraction`` (the labelled pixels' crop
    share of each scene), ``test_predicted_crop_fraction`` (the share of the test scene's labelled pixels
    predicted crop, after postprocessing), ``crop_share_difference`` (predicted minus reference) and
    ``cv_test_gap`` (the tuning CV's value of ``evaluate.target`` minus its test value; positive: CV was
    optimistic). With the CV's class rates (``cv_<kind>_tpr`` / ``_fpr``) also ``cv_at_test_share`` (the CV's
    target had its held-out pixels had the test scene's labelled crop share) and ``cv_test_gap_at_test_share``
    (that minus the test target: the part of the gap a different crop share does not explain, i.e. the
    scenes' pixels differ). A predicted share off the reference by more than ``evaluate.crop_share_margin`` of it
    (relative: 0.1 = 10 %, the mapped crop area off by as much) warns (log, and the tag
    ``cropseg.warning.crop_share_shift``)."""
    shares = {}
    for role in ("train", "test"):
        c = labels[role].counts
        n = int(c["crop"]) + int(c["noncrop"])
        shares[role] = int(c["crop"]) / n if n else float("nan")
    metrics.setdefault("train_labelled_crop_fraction", shares["train"])
    metrics["test_labelled_crop_fraction"] = shares["test"]
    cm = np.asarray(test_cm, dtype=np.float64)
    predicted = float(cm[:, 1].sum() / cm.sum()) if cm.sum() else float("nan")
    metrics["test_predicted_crop_fraction"] = predicted
    metrics["crop_share_difference"] = predicted - shares["test"]
    target = target_from_config(cfg)
    kind = str(getattr(fit, "params", {}).get("cv", "")) if fit is not None else ""
    cv_value = metrics.get(f"cv_{kind}_{target.name}")
    gap = ""
    if cv_value is not None and target.test_metric in metrics:
        metrics["cv_test_gap"] = cv_value - metrics[target.test_metric]
        gap = f"; {kind} CV {target.name} minus test: {metrics['cv_test_gap']:+.3f}"
        at_share = cv_at_share(metrics, kind, target, shares["test"])
        if at_share is not None:
            metrics["cv_at_test_share"] = at_share
            metrics["cv_test_gap_at_test_share"] = at_share - metrics[target.test_metric]
            gap += (
                f" (CV at the test scene's crop share: {at_share:.3f}, minus test "
                f"{metrics['cv_test_gap_at_test_share']:+.3f}: the part a crop share difference does not explain)"
            )
    log.info(
        "crop share: train %.1f%% labelled, test %.1f%% labelled, %.1f%% predicted%s",
        100 * shares["train"],
        100 * shares["test"],
        100 * predicted,
        gap,
    )
    margin = float((cfg.get("evaluate") or {}).get("crop_share_margin", 0.1))
    if shares["test"] > 0 and abs(predicted / shares["test"] - 1) > margin:
        text = (
            f"predicted crop share of the test scene {100 * predicted:.1f}% vs {100 * shares['test']:.1f}% in its "
            f"reference ({100 * (predicted / shares['test'] - 1):+.0f}%, margin {100 * margin:.0f}%; "
            f"training scene {100 * shares['train']:.1f}%)"
        )
        log.warning("%s", text)
        return {f"{TAG_PREFIX}warning.crop_share_shift": text}
    return {}


def cv_at_share(metrics: Mapping[str, float], kind: str, target: Target, share: float) -> float | None:
    """The tuning CV's target on a scene with crop share ``share`` (its pooled class rates ``cv_<kind>_tpr``
    and ``cv_<kind>_fpr`` kept: :func:`cropseg.targets.at_crop_share`); ``None`` without them."""
    tpr, fpr = metrics.get(f"cv_{kind}_tpr"), metrics.get(f"cv_{kind}_fpr")
    if tpr is None or fpr is None or not 0.0 <= share <= 1.0:
        return None
    return target.score(at_crop_share(np.array([[1.0 - fpr, fpr], [1.0 - tpr, tpr]]), share))


#: fewest labelled valid pixels a test scene may have (the model's input example takes five)
MIN_TEST_PIXELS = 5


def _check_labelled(role: str, scene: Scene, counts: Any) -> None:
    """Refuse, before any fitting, a scene with no labelled valid pixel (train) or fewer than
    :data:`MIN_TEST_PIXELS` (test), naming the input file."""
    n = int(counts["crop"]) + int(counts["noncrop"])
    if n == 0:
        raise LabelError(
            f"{scene.path}: the {role} scene has no valid labelled pixel (all nodata, NaN, outside the AOI or unusable)"
        )
    if role == "test" and n < MIN_TEST_PIXELS:
        raise LabelError(f"{scene.path}: the test scene has {n} valid labelled pixel(s), fewer than {MIN_TEST_PIXELS}")


def _same_scene(a: Scene, b: Scene) -> bool:
    """Whether two scenes read the same pixels (same file, and overlapping windows)."""
    try:
        if Path(a.path).resolve() != Path(b.path).resolve():
            return False
    except OSError:
        return False
    if a.window is None or b.window is None:
        return True
    from rasterio.windows import intersect

    return bool(intersect(a.window, b.window))


def _fit_pixel_model(
    cfg: DictConfig, st: Stages, scenes: Any, labels: dict, rl: Any, metrics: dict[str, float], block: int
) -> Any:
    """Draw the training pixels (one stratified cap keeping the class shares, or balanced) and fit the pixel
    classifier on them."""
    tcfg = cfg.get("train", {})
    caps = {k: None if tcfg.get(k) in (None, "all") else int(tcfg.get(k)) for k in ("max_pixels", "max_per_class")}
    ts = sample_training_pixels(
        scenes.train,
        labels["train"],
        st.features,
        **caps,
        seed=int(tcfg.get("seed", cfg.get("seed", 0))),
        spatial_block=int(tcfg.get("spatial_block", 128)),
        block=block,
        balance=tcfg.get("balance", "auto") is True,
    )
    n_train = len(ts.y)
    log.info(
        "training sample: %d pixels (%d crop) of %d labelled, features %s",
        n_train,
        int(ts.y.sum()),
        sum(ts.available.values()),
        ts.feature_names,
    )
    rl.log_params({"features.names": ",".join(ts.feature_names), "train.n_pixels": n_train})
    fractions = ts.crop_fractions()
    metrics.update(fractions)
    log.info(
        "crop share: %.1f%% of the labelled training pixels, %.1f%% of the sample",
        100 * fractions["train_labelled_crop_fraction"],
        100 * fractions["train_sample_crop_fraction"],
    )
    t = time.perf_counter()
    assert isinstance(st.classifier, Classifier)
    if tcfg.get("balance", "auto") == "auto" and accepts(st.classifier.fit, "balance"):
        fit = st.classifier.fit(ts.X, ts.y, ts.groups, balance="auto")  # type: ignore[call-arg]
    else:
        if tcfg.get("balance", "auto") == "auto":
            log.info("train.balance=auto: classifier %s takes no balance choice; proportional", st.names["classifier"])
        fit = st.classifier.fit(ts.X, ts.y, ts.groups)
    fit_s = time.perf_counter() - t
    log.info("fit %s in %.1f s %s", st.names["classifier"], fit_s, dict(fit.params) if fit else "")
    metrics.update(fit_seconds=fit_s, fit_pixels_per_second=n_train / max(fit_s, 1e-9), train_pixels=float(n_train))
    del ts
    return fit


def _fit_patch_model(
    cfg: DictConfig, st: Stages, scenes: Any, labels: dict, rl: Any, out: Path, metrics: dict[str, float]
) -> Any:
    """Draw patches from the training scene (validation from its held-out blocks), fit the patch model
    with per-epoch step metrics, and log its kept weights."""
    from .patches import PatchOptions, draw_patches, epoch_callback
    from .targets import target_from_config

    model = st.classifier
    assert isinstance(model, PatchModel)
    tcfg = cfg.get("train", {})
    t = time.perf_counter()
    sample = draw_patches(
        scenes.train,
        labels["train"],
        st.features,
        int(model.patch_size),
        PatchOptions.from_config(tcfg.get("patches")),
        seed=int(tcfg.get("seed", cfg.get("seed", 0))),
        spatial_block=int(tcfg.get("spatial_block", 128)),
    )
    log.info(
        "training patches: %d of %dx%d px (%d with crop), %d validation patches from %d held-out blocks "
        "(%.1f s), features %s",
        len(sample.train),
        model.patch_size,
        model.patch_size,
        int(sample.info["train_patches_with_crop"]),
        int(sample.info["val_patches"]),
        int(sample.info["val_blocks"]),
        time.perf_counter() - t,
        sample.train.feature_names,
    )
    rl.log_params(
        {
            "features.names": ",".join(sample.train.feature_names),
            "train.n_patches": len(sample.train),
            "train.n_val_patches": int(sample.info["val_patches"]),
        }
    )
    n_train = int(np.count_nonzero(sample.train.y != 255))
    metrics.update(sample.info)
    if sample.warnings:
        rl.set_tags({f"{TAG_PREFIX}warning.validation": "; ".join(sample.warnings)})
    on_epoch = epoch_callback(
        sample.validation,
        rl.log_learning_curve,
        st.names["classifier"],
        target_from_config(cfg),
    )
    t = time.perf_counter()
    fit = model.fit_patches(sample.train, sample.validation, on_epoch)
    fit_s = time.perf_counter() - t
    log.info("fit %s in %.1f s %s", st.names["classifier"], fit_s, dict(fit.params) if fit else "")
    metrics.update(fit_seconds=fit_s, fit_pixels_per_second=n_train / max(fit_s, 1e-9), train_pixels=float(n_train))
    save = getattr(model, "save_weights", None)
    if callable(save):  # the kept epoch's weights, reusable as a starting point (classifier.weights=...)
        (out / "model_weights").mkdir(parents=True, exist_ok=True)
        rl.log_artifact(save(out / "model_weights" / f"{st.names['classifier']}_weights.pt"), "model_weights")
    del sample
    return fit


def _log_results(
    rl: Any,
    st: Stages,
    scenes: Any,
    labels: dict,
    reports: dict,
    outputs: dict,
    out: Path,
    metrics: dict[str, float],
    cfg: DictConfig,
) -> dict[str, str]:
    from . import previews

    # the model before the metrics: they are logged once, as the run's and the model's (see log_pipeline_model)
    model_info: dict[str, str] = {}
    model_id = None
    if cfg.get("tracking", {}).get("log_model", True):
        model_info, model_id = _log_model(rl, st, scenes, out / "model", cfg)
        outputs["model"] = out / "model"
    rl.log_metrics(metrics, model_id=model_id)
    if model_id is not None:
        model_info.update(_register_model(rl, cfg, model_info["model_uri"]))  # its version carries the metrics
    rep_dir = out / "reports"
    rep_dir.mkdir(parents=True, exist_ok=True)
    table: dict[str, list[Any]] = {"report": [], "class": [], "precision": [], "recall": [], "f1": [], "support": []}
    for key, (rep, text, cm) in reports.items():
        (rep_dir / f"{key}_classification_report.txt").write_text(text)
        (rep_dir / f"{key}_classification_report.json").write_text(json.dumps(rep, indent=2))
        (rep_dir / f"{key}_confusion_matrix.json").write_text(json.dumps(cm.tolist()))
        for cls, vals in rep.items():
            if isinstance(vals, dict):
                table["report"].append(key)
                table["class"].append(cls)
                for col, src in (
                    ("precision", "precision"),
                    ("recall", "recall"),
                    ("f1", "f1-score"),
                    ("support", "support"),
                ):
                    table[col].append(int(vals[src]) if col == "support" else float(vals[src]))
    for f in sorted(rep_dir.iterdir()):
        rl.log_artifact(f, "reports")
    rl.log_table(table, "reports/classification_reports.json")
    rl.log_figure(previews.confusion_figure(reports["test"][2], reports["test_raw"][2]), "reports/confusion_matrix.png")
    for f in (outputs["test_mask"], outputs["test_mask_raw"]):
        rl.log_artifact(f, "prediction")
    rl.log_artifact(outputs["test_labels"], "labels")
    if "segments" in outputs:
        rl.log_artifact(outputs["segments"], "segments")
    prev_dir = out / "previews"
    for path in previews.write_previews(
        scenes.test,
        outputs["test_labels"],
        outputs["test_mask"],
        prev_dir,
        int(cfg.get("preview", {}).get("max_side", 1024)),
    ):
        rl.log_artifact(path, "previews")
        outputs[f"preview_{path.stem}"] = path
    from .mapview import write_map

    title = f"{st.names['classifier']} on {scenes.test.metadata.get('scene_id', 'test scene')}"
    map_path = write_map(
        scenes.test,
        outputs["test_labels"],
        outputs.get("segments"),
        out / "map" / "map.html",
        int(cfg.get("preview", {}).get("max_side", 1024)),
        title,
    )
    rl.log_artifact(map_path, "map")
    outputs["map"] = map_path
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    outputs["metrics"] = out / "metrics.json"
    return model_info


def _check_registration(tcfg: Any) -> None:
    name = tcfg.get("register_model")
    if name in (None, ""):
        return
    if not tcfg.get("log_model", True):
        raise ConfigError("tracking.register_model: needs tracking.log_model=true (there is no model to register)")
    if not isinstance(name, str) or "/" in name or "@" in name or not name.strip():
        raise ConfigError(f"tracking.register_model: a model name without '/' or '@', got {name!r}")


def _log_model(rl: Any, st: Stages, scenes: Any, model_dir: Path, cfg: DictConfig) -> tuple[dict[str, str], str]:
    """Log the whole inference pipeline as the run's MLflow model (``runs:/<run_id>/model``); returns
    ``{"model_uri": ...}`` and the logged model's id."""
    from .inference import InferencePipeline, pipeline_spec
    from .tracking.model import log_pipeline_model

    log.info("logging the pipeline as the run's MLflow model")
    spec = pipeline_spec(cfg, st, scenes.train, synthetic=scenes.synthetic, run_id=rl.run_id)
    pipe = InferencePipeline(spec, st.classifier, st.features, st.filters, st.vectorizers, st.registry)
    uri, model_id = log_pipeline_model(
        rl.client.tracking_uri, rl.run_id, pipe, pipe.example_rows(scenes.test), model_dir
    )
    log.info("model logged as %s", uri)
    return {"model_uri": uri}, model_id


def _register_model(rl: Any, cfg: DictConfig, uri: str) -> dict[str, str]:
    """Register the run's model when ``tracking.register_model`` names a registered model (after the run's
    metrics are logged: the version's tags and description quote them)."""
    from .tracking.model import register_run_model

    name = cfg.get("tracking", {}).get("register_model")
    if not name:
        return {}
    version = register_run_model(rl.client.tracking_uri, rl.run_id, str(name))
    rl.set_tags({f"{TAG_PREFIX}registered_model": f"models:/{name}/{version}"})
    log.info("model %s registered as models:/%s/%s", uri, name, version)
    return {"model_version": version}
