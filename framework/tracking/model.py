"""The trained pipeline as an MLflow pyfunc model, loading it back, and the Model Registry.

A run logs one model (name ``model``, so ``runs:/<run_id>/model``) whose artifacts are the pipeline spec
(``pipeline.json``: reflectance settings, features and postprocessors by plugin name and options, band
and CRS expectations) and the fitted classifier (``classifier.pkl``). Loading rebuilds the features and
postprocessors through the plugin registry (:class:`cropseg.inference.InferencePipeline`), so the
plugins must be installed where the model is loaded or served (``--env-manager local``).

* ``loaded.predict(df)``: pixel rows (columns: the model's bands by role, ``blue, green, red, nir`` for
  PlanetScope; reflectance) -> classes (0 non-crop, 1 crop), no spatial postprocessing. This is what ``mlflow models serve`` answers.
* ``loaded.unwrap_python_model().predict_scene(image, out_path, metadata=...)``: a whole scene, block
  by block, with the mask filters: the same mask as the run's ``prediction/test_mask.tif``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from ..errors import ModelError, ModelInputError, TrackingError
from ..inference import CLASSIFIER_FILE, SPEC_FILE, InferencePipeline
from ..signals import deferred

log = logging.getLogger(__name__)

MODEL_NAME = "model"
#: run metrics copied onto a registered model version (tags ``cropseg.<metric>`` and the description)
KEY_METRICS = ("test_weighted_avg_f1", "test_crop_precision", "test_crop_recall", "test_crop_f1", "test_iou")
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: the pyfunc model's code (MLflow "models from code": no pickled Python object in the model)
MODEL_CODE = Path(__file__).with_name("pyfunc_code.py")


@contextmanager
def mlflow_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at ``uri`` for the block and restore it (and the
    ``MLFLOW_TRACKING_URI`` variable MLflow rewrites) afterwards: MLflow's model APIs (``log_model``,
    ``load_model`` of ``runs:/`` and ``models:/`` URIs) read only the global URI."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = {k: os.environ.get(k) for k in (*_URI_ENV, _PROGRESS_ENV)}
    os.environ.setdefault(_PROGRESS_ENV, "false")  # no download progress bars among cropseg's output
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: most pixel rows one ``predict`` call (one served request) accepts; larger requests are refused with a
#: 400 asking for batches (environment variable CROPSEG_SERVE_MAX_ROWS overrides it)
MAX_ROWS = 100_000
#: rows classified per chunk; between chunks a served request checks MLflow's request timeout
CHUNK_ROWS = 20_000
_F32_MAX = float(np.finfo(np.float32).max)


class ServingInputError(ModelInputError, mlflow.exceptions.MlflowException):
    """Pixel rows a served model refuses: ``mlflow models serve`` answers HTTP 400 with exactly this one-line
    message (a :class:`cropseg.errors.ModelInputError` for callers in Python)."""

    def __init__(self, message: str):
        from mlflow.protos.databricks_pb2 import BAD_REQUEST

        self._reason = message
        mlflow.exceptions.MlflowException.__init__(self, message, error_code=BAD_REQUEST)

    @property
    def message(self) -> str:
        """The one-line reason. MLflow's scoring server rewrites ``message`` to put the whole request in
        front of it; the reason is kept as it is."""
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        pass

    def __str__(self) -> str:
        return self._reason


def check_rows(df: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The band columns of ``df`` as a float64 array; a :class:`ServingInputError` naming the column and
    row of the first value that is missing (null), not a number, not finite, or beyond float32 range
    (reflectance is computed in float32, so 1e308 would become infinity)."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ServingInputError(f"pixel rows: missing column(s) {', '.join(missing)} (expected {', '.join(names)})")
    limit = int(os.environ.get("CROPSEG_SERVE_MAX_ROWS", MAX_ROWS))
    if len(df) > limit:
        raise ServingInputError(
            f"pixel rows: {len(df):,} rows in one request, at most {limit:,}; send the rows "
            f"in batches of up to {limit:,}"
        )
    cols = []
    for name in names:
        col = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(col) | (np.abs(col) > _F32_MAX)
        if bad.any():
            i = int(np.argmax(bad))
            raw, val = df[name].iloc[i], col[i]
            what = (
                "is null or NaN"
                if pd.isna(raw)
                else f"{raw!r} is not a number"
                if np.isnan(val)
                else f"{val:g} is not finite"
                if not np.isfinite(val)
                else f"{val:g} is beyond float32 range"
            )
            raise ServingInputError(
                f"pixel rows: column {name!r}, row {i}: {what}; reflectance values must be "
                f"finite numbers (drop nodata pixels before sending)"
            )
        cols.append(col)
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))


#: deepest JSON nesting a served request may have (a pandas-split request of pixel rows has 3-4 levels)
MAX_JSON_DEPTH = 32


def _json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded JSON) nests containers deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        items = v.values() if isinstance(v, dict) else v
        stack.extend((c, d + 1) for c in items if isinstance(c, (list, dict)))
    return False


def guard_scoring_server() -> None:
    """In ``mlflow models serve`` (its scoring server module is loaded when the model is): a request whose
    JSON nests deeper than :data:`MAX_JSON_DEPTH` (or so deep that Python's parser gives up with a
    ``RecursionError``, which MLflow answers with HTTP 500) is refused with HTTP 400 saying so. Outside a
    server, nothing."""
    import sys

    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    decode = getattr(server, "_decode_json_input", None)
    if server is None or decode is None or getattr(decode, "_cropseg_guard", False):
        return
    from mlflow.utils.proto_json_utils import MlflowInvalidInputException

    def guarded(json_input: Any) -> Any:
        try:
            out = decode(json_input)
        except RecursionError:
            out = None
        if out is None or _json_depth_exceeds(out, MAX_JSON_DEPTH):
            raise MlflowInvalidInputException(
                f"request JSON nested deeper than {MAX_JSON_DEPTH} levels: send pixel rows as "
                "{'dataframe_split': {'columns': [...], 'data': [[...], ...]}}"
            )
        return out

    guarded._cropseg_guard = True  # type: ignore[attr-defined]
    guarded.__wrapped__ = decode  # type: ignore[attr-defined]
    setattr(server, "_decode_json_input", guarded)  # noqa: B010 - replacing a module function


class CropsegPipelineModel(PythonModel):
    """The pyfunc face of :class:`cropseg.inference.InferencePipeline`."""

    pipeline: InferencePipeline

    def load_context(self, context):  # noqa: ANN001, ANN201 - MLflow's PythonModel API
        self.pipeline = InferencePipeline.load(
            Path(context.artifacts["pipeline"]), Path(context.artifacts["classifier"])
        )
        guard_scoring_server()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:  # noqa: ANN001
        """Pixel rows (a DataFrame with the band columns) -> int64 classes (0 non-crop, 1 crop)."""
        names = list(self.pipeline.spec.band_names)
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(np.asarray(model_input, dtype=np.float64), columns=names)
        X = check_rows(model_input, names)
        # in a server, stop once MLflow's request timeout has passed (its 504 does not stop the computation)
        timeout = float(os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT") or "inf")
        t0 = time.monotonic()
        out = []
        for i in range(0, max(len(X), 1), CHUNK_ROWS):
            if time.monotonic() - t0 > timeout:
                raise ServingInputError(
                    f"pixel rows: {len(X):,} rows took longer than the server's request "
                    f"timeout of {timeout:.0f} s; send smaller batches"
                )
            try:
                out.append(self.pipeline.predict_rows(X[i : i + CHUNK_ROWS]))
            except ModelInputError as exc:  # e.g. a model whose features need neighbours: a 400 with this reason
                raise ServingInputError(str(exc)) from None
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def predict_scene(
        self,
        image: Path | str,
        out_path: Path | str,
        *,
        metadata: Path | str | None = None,
        scale: float | None = None,
        aoi: Path | str | None = None,
        udm: Path | str | None = None,
        nodata: float | None = None,
        block: int = 512,
    ) -> Path:
        """Classify a whole scene GeoTIFF block by block and apply the mask filters (see
        :meth:`cropseg.inference.InferencePipeline.scene` for the options); returns ``out_path``."""
        scene = self.pipeline.scene(image, metadata=metadata, scale=scale, aoi=aoi, udm=udm, nodata=nodata)
        return self.pipeline.predict_scene(scene, Path(out_path), block=block)


def _requirements(pipeline: InferencePipeline) -> list[str]:
    from importlib import metadata as md

    reqs = {}
    # a classifier may name the distributions it needs at load time (e.g. the U-Net: torch, smp)
    extra = tuple(str(d) for d in getattr(pipeline.classifier, "requirements", ()) or ())
    for dist in ("cropseg", "mlflow", "scikit-learn", "numpy", "pandas", "rasterio", *extra):
        try:
            reqs[dist] = f"{dist}=={md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    for origin in pipeline.spec.plugins.values():
        parts = origin.split(" ")
        if len(parts) == 2:
            reqs.setdefault(parts[0], f"{parts[0]}=={parts[1]}")
    return sorted(reqs.values())


@deferred()  # a signal waits for the store calls to finish (see cropseg.tracking.SignalSafeClient)
def log_pipeline_model(
    tracking_uri: str, run_id: str, pipeline: InferencePipeline, example: np.ndarray, work_dir: Path
) -> tuple[str, str]:
    """Log ``pipeline`` into run ``run_id`` as the pyfunc model ``model`` with a signature (reflectance
    columns -> class) and ``example`` pixel rows as input example. Returns ``runs:/<run_id>/model`` and the
    logged model's id.

    MLflow links the run's metrics logged so far to the new model, one metric-history request per metric
    (a second per run against a tracking server with a hundred metrics): log the model before the bulk of
    the metrics and those with ``RunLogger.log_metrics(..., model_id=...)`` (one request)."""
    from mlflow.models import Model, ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    spec_path, clf_path = pipeline.save(Path(work_dir))
    example_df = pd.DataFrame(np.asarray(example, dtype=np.float64), columns=list(pipeline.spec.band_names))
    # a model on spatial features refuses pixel rows: its signature still says rows in, one int64 class out
    classes = (
        pipeline.predict_rows(example_df.to_numpy())
        if pipeline.accepts_pixel_rows
        else np.zeros(len(example_df), dtype=np.int64)
    )
    inferred = infer_signature(example_df, classes)
    # the band columns are documented, but marked optional so that MLflow's schema check lets a request
    # without one through to the model, which refuses it with cropseg's one-line reason naming the missing
    # columns (a required column fails earlier, with MLflow's raw schema error)
    signature = ModelSignature(
        Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]), inferred.outputs
    )
    client = mlflow.MlflowClient(tracking_uri)
    # created here so that it lands in the run's experiment (and its artifact location), not the default one
    logged = client.create_logged_model(
        client.get_run(run_id).info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        model_type="cropseg-pipeline",
        tags={
            "cropseg.classifier": pipeline.spec.classifier,
            "cropseg.synthetic": str(pipeline.spec.synthetic).lower(),
        },
    )
    with mlflow_uri(tracking_uri), warnings.catch_warnings():
        if not pipeline.accepts_pixel_rows:  # no example on purpose (below): MLflow's advice to add one is noise
            warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        Model.log(
            None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(MODEL_CODE),
            artifacts={"pipeline": str(spec_path), "classifier": str(clf_path)},
            signature=signature,
            # served as pixel rows only when its features are per-pixel: a spatial model gets no example (MLflow
            # would try to serve it and print the refusal as an error on a successful run)
            input_example=example_df if pipeline.accepts_pixel_rows else None,
            pip_requirements=_requirements(pipeline),
            metadata={"cropseg_classifier": pipeline.spec.classifier, "cropseg_synthetic": pipeline.spec.synthetic},
        )
    return f"runs:/{run_id}/{MODEL_NAME}", logged.model_id


@dataclass
class LoadedModel:
    """A cropseg model loaded from a URI, with where it came from."""

    uri: str
    pyfunc: Any
    pipeline: InferencePipeline
    source_run_id: str | None
    registered_name: str | None = None
    registered_version: str | None = None


@deferred()
def load_pipeline_model(tracking_uri: str, model_uri: str) -> LoadedModel:
    """Load a cropseg model (``runs:/<id>/model``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``)
    from the store at ``tracking_uri``; one clear :class:`ModelError` when it cannot be found or is not a
    cropseg model."""
    from mlflow.exceptions import MlflowException

    with mlflow_uri(tracking_uri):
        try:
            loaded = mlflow.pyfunc.load_model(model_uri)
        except (MlflowException, OSError, ValueError) as exc:
            msg = " ".join(str(getattr(exc, "message", exc)).split())[:300] or type(exc).__name__
            raise ModelError(f"model {model_uri}: cannot be loaded from {tracking_uri}: {msg}") from None
    python_model = loaded.unwrap_python_model() if hasattr(loaded, "unwrap_python_model") else None
    if not isinstance(python_model, CropsegPipelineModel):
        raise ModelError(f"model {model_uri}: not a cropseg pipeline model")
    run_id = getattr(loaded.metadata, "run_id", None) or python_model.pipeline.spec.source_run_id
    name = version = None
    if model_uri.startswith("models:/"):
        name, version = _registered_version(tracking_uri, model_uri)
    return LoadedModel(model_uri, loaded, python_model.pipeline, run_id, name, version)


def _registered_version(tracking_uri: str, model_uri: str) -> tuple[str | None, str | None]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = model_uri[len("models:/") :].strip("/")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            return name, str(client.get_model_version_by_alias(name, alias).version)
        name, _, version = ref.partition("/")
        if version.isdigit():
            return name, version
    except MlflowException:
        pass
    return None, None


def _logged_model_id(client: Any, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelError(f"run {run_id}: not found ({str(exc).splitlines()[0]})") from None
    outputs = getattr(run, "outputs", None)
    for out in reversed(list(getattr(outputs, "model_outputs", None) or [])):
        if client.get_logged_model(out.model_id).name == MODEL_NAME:
            return out.model_id
    raise ModelError(f"run {run_id}: no logged '{MODEL_NAME}' (was it run with tracking.log_model=false?)")


def version_description(run: Any) -> tuple[str, dict[str, str]]:
    """The description and tags of a model version registered from ``run``: its key test metrics and
    whether it was trained on synthetic data."""
    m, t = run.data.metrics, run.data.tags
    synthetic = t.get("cropseg.synthetic", "false") == "true"
    tags = {"cropseg.source_run_id": run.info.run_id, "cropseg.synthetic": str(synthetic).lower()}
    for key in ("classifier", "features", "postprocessor", "source"):
        if f"cropseg.{key}" in t:
            tags[f"cropseg.{key}"] = t[f"cropseg.{key}"]
    for key in KEY_METRICS:
        if key in m:
            tags[f"cropseg.{key}"] = f"{m[key]:.6g}"

    def fmt(key: str) -> str:
        return f"{m[key]:.4f}" if key in m else "n/a"

    text = (
        f"cropseg pipeline from run {run.info.run_id} ({t.get('cropseg.classifier', '?')}; features "
        f"{t.get('cropseg.features', '?')}; postprocessors {t.get('cropseg.postprocessor', '?')}). "
        f"Test scene: weighted F1 {fmt('test_weighted_avg_f1')}, crop precision {fmt('test_crop_precision')}, "
        f"crop recall {fmt('test_crop_recall')}, crop F1 {fmt('test_crop_f1')}, crop IoU {fmt('test_iou')}."
    )
    if synthetic:
        text += " Trained and scored on SYNTHETIC data: the scores say nothing about real imagery."
    return text, tags


@deferred()
def register_run_model(tracking_uri: str, run_id: str, name: str, await_seconds: int = 300) -> str:
    """Register run ``run_id``'s model as a new version of registered model ``name`` (created if needed),
    with the run's key test metrics and synthetic flag as the version's description and tags.
    Returns the version (a string, e.g. ``"1"``): ``models:/<name>/<version>`` loads it."""
    from mlflow import MlflowClient

    if not name or "/" in name or "@" in name:
        raise TrackingError(f"register model: bad model name {name!r} (no '/' or '@')")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    model_id = _logged_model_id(client, run_id)
    description, tags = version_description(client.get_run(run_id))
    # the registry resolves the version's models:/<model_id> source through MLflow's global tracking URI
    with mlflow_uri(tracking_uri):
        return _create_version(client, run_id, name, model_id, description, tags, await_seconds)


def _create_version(
    client: Any, run_id: str, name: str, model_id: str, description: str, tags: dict[str, str], await_seconds: int
) -> str:
    from mlflow.exceptions import MlflowException

    try:
        try:
            client.create_registered_model(name, description="cropseg crop / non-crop segmentation pipeline")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        mv = client.create_model_version(
            name,
            source=f"models:/{model_id}",
            run_id=run_id,
            tags=tags,
            description=description,
            await_creation_for=await_seconds,
            model_id=model_id,
        )
    except MlflowException as exc:
        raise TrackingError(f"register model {name!r} from run {run_id}: {str(exc).splitlines()[0]}") from None
    log.debug("registered %s version %s from run %s", name, mv.version, run_id)
    return str(mv.version)


__all__ = [
    "CLASSIFIER_FILE",
    "MODEL_NAME",
    "SPEC_FILE",
    "CropsegPipelineModel",
    "LoadedModel",
    "load_pipeline_model",
    "log_pipeline_model",
    "mlflow_uri",
    "register_run_model",
    "version_description",
]
