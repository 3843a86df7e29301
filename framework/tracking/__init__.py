"""Everything that talks to MLflow: stores, experiments, runs (with sweep parents), logging, and (in
:mod:`cropseg.tracking.model`) the pipeline as an MLflow model and the Model Registry.

Runs are driven through :class:`mlflow.MlflowClient` with explicit run ids (no fluent global state), so
logging works the same in-process, from a notebook, and from process-based Hydra launchers.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import time
import traceback
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import CropsegError, OutputError, TrackingError, write_failure_reason
from ..signals import deferred, raise_if_received

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM = 6000
TAG_PREFIX = "cropseg."
#: MLflow 3's experiment type: "machine learning" experiments open on their runs table in the UI (untagged
#: ones may be taken for GenAI experiments and open on traces)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
#: learning curves (per-epoch step metrics of patch models) are logged under this prefix, so the MLflow UI
#: groups their charts in one section
EPOCH_PREFIX = "epoch/"
#: where ``mlflow ui`` (and ``make ui``) serves by default
UI_URL = "http://127.0.0.1:5000"


def resolve_uri(uri: str | None) -> str:
    """The tracking URI: explicit config, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().resolve()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with one line, when an HTTP tracking server does not answer (before any work)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:  # noqa: S310
                resp.read()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"tracking server {uri} is unreachable: {reason}") from None
    elif parsed.scheme in ("", "file") or uri.startswith("./") or uri.startswith("/"):
        raise TrackingError(
            f"tracking URI {uri!r}: file stores are not supported; use sqlite:///mlflow.db or an mlflow server"
        )
    elif (db := _sqlite_path(uri)) is not None:
        if not db.parent.is_dir():
            raise TrackingError(f"tracking URI {uri}: directory {db.parent} does not exist")
        _check_sqlite(db, uri)
        try:  # the store's lock file beside the database: a read-only or full folder is one line here
            with open(db.with_name(db.name + ".lock"), "a"):
                pass
        except OSError as exc:
            raise OutputError.from_os_error(f"the tracking store ({uri})", db.parent, exc) from None


def _check_sqlite(db: Path, uri: str) -> None:
    """An existing sqlite store must be a readable SQLite database (a corrupt or foreign file is one line)."""
    import sqlite3

    if not db.exists():
        return
    if db.is_dir():
        raise TrackingError(f"{db}: the tracking store ({uri}) is a directory, not an SQLite database")
    if db.stat().st_size == 0:
        return  # an empty file: MLflow creates the schema in it
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise TrackingError(f"{db}: the tracking store ({uri}) is not a readable SQLite database: {exc}") from None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first access to a sqlite store across processes: MLflow creates and migrates a fresh
    database on first use, and several processes doing that at once corrupt it."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def git_commit(path: Path | None = None) -> str:
    """The commit of the cropseg source tree (``unknown`` outside a git checkout)."""
    path = path or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class SignalSafeClient:
    """An ``MlflowClient`` whose calls are critical sections (:func:`cropseg.signals.deferred`): SIGTERM or
    Ctrl-C arriving in the middle of a store transaction is raised when the call returns, so the interrupted
    connection never keeps the sqlite database locked and the run can still be ended KILLED."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with deferred():
                return attr(*args, **kwargs)

        return call


class Tracker:
    """A tracking store plus an experiment in it."""

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "cropseg",
        artifact_location: str | None = None,
        create: bool = True,
    ):
        from mlflow import MlflowClient

        # MLflow sets its logger to INFO on import; its store-migration chatter is not cropseg's progress,
        # nor are its per-file download progress bars
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # MLflow logs a failed store transaction with its traceback before raising it; cropseg reports the
        # raised error as one line (a full disk, a read-only store...)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = resolve_uri(uri)
        check_reachable(self.uri)
        # constructing the client opens the store, which creates and migrates a fresh sqlite database:
        # under the store lock, so that any number of processes may start at once on a new store
        with _store_lock(self.uri), deferred():
            self.client = SignalSafeClient(MlflowClient(tracking_uri=self.uri))
        self.experiment_name = experiment
        if create:
            self.experiment_id = self._experiment(experiment, artifact_location)
        else:
            with _store_lock(self.uri):
                exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                raise TrackingError(f"tracking store {self.uri}: no experiment named {experiment!r}")
            self.experiment_id = exp.experiment_id

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        with _store_lock(self.uri):
            return self._get_or_create_experiment(name, artifact_location)

    def _get_or_create_experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older cropseg: mark it now
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return exp.experiment_id
            if artifact_location is None and (db := _sqlite_path(self.uri)) is not None:
                artifact_location = (db.parent / "mlartifacts").as_uri()
            return self.client.create_experiment(
                name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException as exc:
            if "already exists" in str(exc).lower() or getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS":
                exp = self.client.get_experiment_by_name(name)
                if exp is not None:
                    return exp.experiment_id
            if write_failure_reason(exc):
                raise OutputError.from_os_error("the tracking store", self.uri, exc) from None
            raise TrackingError(f"tracking store {self.uri}: {str(exc).splitlines()[0]}") from None

    def runs_url(self) -> str:
        """The MLflow UI's page of this experiment's runs table (on ``mlflow ui``'s default address for a
        sqlite store, else on the tracking server), in the UI's "Model training" view: MLflow 3's UI otherwise
        starts in its GenAI view (traces), whatever the experiment's kind."""
        base = self.uri.rstrip("/") if self.uri.startswith(("http://", "https://")) else UI_URL
        return f"{base}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"

    def ui_hint(self) -> str:
        """How to open the MLflow UI on this experiment's runs, as a command that works as printed: ``make ui``
        in the clone with its own ``.venv`` and the default store, else the running environment's ``mlflow``
        (on PATH or not) on this store."""
        import shlex
        import sys

        url = self.runs_url()
        if not self.uri.startswith("sqlite:"):
            return f"open {url}"
        from ..extras import CLONE

        in_clone = Path.cwd().resolve() == CLONE and (CLONE / "Makefile").is_file()
        if in_clone and self.uri == DEFAULT_URI and Path(sys.prefix).resolve() == (CLONE / ".venv").resolve():
            return f"make ui, then open {url}"

        def shown(path: Path) -> str:  # relative to the working directory when inside it (.venv/bin/mlflow)
            return os.path.relpath(path) if Path.cwd() in path.absolute().parents else str(path)

        mlflow = Path(sys.executable).with_name("mlflow")  # the console script next to this interpreter
        exe = (
            shlex.quote(shown(mlflow)) if mlflow.is_file() else f"{shlex.quote(shown(Path(sys.executable)))} -m mlflow"
        )
        return f"{exe} ui --backend-store-uri {shlex.quote(self.uri)}, then open {url}"

    @contextmanager
    def run(
        self, run_name: str | None = None, tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None
    ) -> Iterator[RunLogger]:
        """Create a run (a child of ``parent_run_id`` when given) and end it FINISHED, or FAILED with the
        error recorded when the body raises (KILLED on Ctrl-C)."""
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        logger = RunLogger(self.client, run.info.run_id, run.info.artifact_uri)
        try:
            yield logger
            raise_if_received()  # a signal whose exception Python dropped still stops the run (cropseg.signals)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through cropseg.signals.Terminated
            self._end(logger, "KILLED", str(exc) or "interrupted by SIGINT (Ctrl-C)")
            raise
        except BaseException as exc:
            user = isinstance(exc, CropsegError)
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            detail = msg if user else "".join(traceback.format_exception(exc))
            self._end(logger, "FAILED", msg, detail)
            raise
        else:
            self.client.set_terminated(logger.run_id, "FINISHED")

    def _end(self, logger: RunLogger, status: str, msg: str, detail: str | None = None) -> None:
        try:
            try:
                self.withdraw_models(logger.run_id)
            finally:
                logger.set_tags({f"{TAG_PREFIX}error": msg[:5000]})
                if detail:
                    logger.log_text(detail, "error.txt")
        finally:
            self.client.set_terminated(logger.run_id, status)

    def withdraw_models(self, run_id: str) -> list[str]:
        """A run ending FAILED or KILLED leaves no model: its logged models (even one MLflow already marked
        READY) are deleted with their local artifacts, so ``runs:/<run_id>/model`` no longer loads, and any
        Model Registry version made from the run is deleted. Returns the deleted model ids. Best effort: a
        store that fails here is logged, the run's own status is still recorded."""
        import shutil
        from urllib.parse import unquote, urlparse

        from mlflow.exceptions import MlflowException

        gone: list[str] = []
        try:
            with deferred():
                models = self.client.search_logged_models(
                    experiment_ids=[self.experiment_id], filter_string=f"source_run_id = '{run_id}'"
                )
                for m in models:
                    self.client.delete_logged_model(m.model_id)
                    gone.append(m.model_id)
                    loc = urlparse(str(m.artifact_location or ""))
                    if loc.scheme in ("", "file") and loc.path and Path(unquote(loc.path)).is_dir():
                        shutil.rmtree(Path(unquote(loc.path)), ignore_errors=True)
                for mv in self.client.search_model_versions(f"run_id = '{run_id}'"):
                    self.client.delete_model_version(mv.name, mv.version)
        except (MlflowException, OSError) as exc:
            log.warning("could not withdraw the models of run %s: %s", run_id, str(exc).splitlines()[0])
        if gone:
            log.info("run %s did not finish: its logged model(s) %s deleted", run_id, ", ".join(gone))
        return gone

    def start_parent(self, run_name: str, tags: Mapping[str, Any]) -> str:
        """Create a sweep's parent run (left RUNNING until :meth:`end_parent`)."""
        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name)
        return run.info.run_id

    def end_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def child_runs(self, parent_run_id: str) -> list[Any]:
        """Every run of the experiment whose parent is ``parent_run_id``."""
        return self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000
        )

    def latest_sweep(self) -> str | None:
        """The id of the most recently started sweep parent run of the experiment."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.{TAG_PREFIX}sweep = 'true'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"tracking store {self.uri}: no run {run_id!r}") from None

    def runs(self, parent_run_id: str | None = None) -> list[Any]:
        """The experiment's runs (not sweep parents), or the children of one sweep."""
        if parent_run_id:
            return self.child_runs(parent_run_id)
        runs = self.client.search_runs([self.experiment_id], max_results=10000)
        return [r for r in runs if r.data.tags.get(f"{TAG_PREFIX}sweep") != "true"]

    @staticmethod
    def dataset_inputs(run: Any, context: str | None = None) -> list[tuple[str, str]]:
        """(name, digest) of the run's dataset inputs, those logged with ``context`` when given."""
        out = []
        for d in getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []:
            ctx = next((t.value for t in d.tags if t.key == "mlflow.data.context"), None)
            if context is None or ctx == context:
                out.append((d.dataset.name, d.dataset.digest))
        return out

    def download(self, run_id: str, artifact_path: str, dst: Path) -> Path | None:
        """Download one artifact of a run; ``None`` when the run does not have it."""
        from mlflow.exceptions import MlflowException

        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, artifact_path, str(dst)))
        except (MlflowException, OSError):
            return None

    def logger(self, run_id: str) -> RunLogger:
        run = self.client.get_run(run_id)
        return RunLogger(self.client, run_id, run.info.artifact_uri)


class RunLogger:
    """Logging into one run, by id."""

    def __init__(self, client: Any, run_id: str, artifact_uri: str):
        self.client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        #: appended to the name by :meth:`rename` callers (a sweep job's ``#N``)
        self.name_suffix = ""

    def rename(self, name: str) -> None:
        self.client.update_run(self.run_id, name=name[:250])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _clip(v, MAX_PARAM)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None) -> None:
        """Log ``metrics`` at ``step`` (in batches); with ``model_id`` they are that logged model's metrics too."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, step, run_id=self.run_id, model_id=model_id)
            for k, v in metrics.items()
            if v is not None
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_learning_curve(self, metrics: Mapping[str, float], step: int) -> None:
        """Per-epoch metrics of a patch model at step ``step`` (the epoch), named ``epoch/<metric>``
        (:data:`EPOCH_PREFIX`) so the MLflow UI shows the learning curves together, apart from the run's
        final metrics."""
        self.log_metrics({f"{EPOCH_PREFIX}{k}": v for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _clip(v, 8000)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, data: Any, artifact_file: str) -> None:
        self.client.log_table(self.run_id, data, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_datasets(self, refs: Sequence[Any]) -> None:
        """Record data inputs (:class:`cropseg.lineage.DataRef`) as MLflow dataset inputs: name, source
        (the file), digest, and the context (``training``/``testing``/``prediction``) as the
        ``mlflow.data.context`` input tag, as ``mlflow.log_input`` does; plus a ``cropseg.data.<context>``
        tag holding the combined digest of each context's inputs."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        from ..lineage import combined_digest

        inputs = []
        for ref in refs:
            with warnings.catch_warnings():  # file:// matches two equivalent local-artifact source types
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(Path(ref.source).as_uri())
            ds = MetaDataset(source, name=ref.name, digest=ref.digest)  # type: ignore[abstract]
            inputs.append(
                DatasetInput(
                    ds._to_mlflow_entity(),
                    tags=[InputTag("mlflow.data.context", ref.context), InputTag(f"{TAG_PREFIX}kind", ref.kind)],
                )
            )
        if inputs:
            _log_inputs_retrying(self.client, self.run_id, inputs)
        self.set_tags(
            {f"{TAG_PREFIX}data.{c}": combined_digest(list(refs), c) for c in sorted({r.context for r in refs})}
        )


def _log_inputs_retrying(client: Any, run_id: str, inputs: list[Any], attempts: int = 5) -> None:
    """``client.log_inputs``, retried when another run registered the same dataset at the same moment: the
    store checks for an existing dataset row, then inserts one, so two concurrent runs logging the same scene
    into one experiment can both insert and one fails on the unique (experiment, name, digest) key. On the
    retry the row exists and is reused."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            msg = str(exc)
            duplicate = "datasets" in msg and any(
                t in msg for t in ("UNIQUE constraint", "Duplicate entry", "duplicate key")
            )
            if attempt == attempts - 1 or not duplicate:
                raise
            time.sleep(0.2 * (attempt + 1))


def _clip(value: Any, n: int) -> str:
    s = "None" if value is None else str(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def register_run_model(tracking_uri: str, run_id: str, name: str) -> str:
    """Register run ``run_id``'s logged model as a new version of ``name`` in the Model Registry of
    ``tracking_uri`` (key test metrics as description and tags); returns the version. See
    :func:`cropseg.tracking.model.register_run_model`."""
    from .model import register_run_model as _register

    return _register(tracking_uri, run_id, name)


def log_area_estimate(
    tracker: Tracker,
    run_name: str,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tables: Mapping[str, Any],
    files: list[Path],
    sample: Any,
    sample_source: str,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Record an area estimate from a labelled reference sample as one run of ``tracker``'s experiment:
    params, metrics, the tables (``log_table``), report files, and the sample as an input dataset
    (context ``reference_sample``). Returns the run id; the run ends FINISHED, or FAILED on error."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    all_tags = {f"{TAG_PREFIX}kind": "area_estimate", f"{TAG_PREFIX}git_commit": git_commit(), **(tags or {})}
    with tracker.run(run_name, all_tags) as rl:
        rl.log_params(params)
        rl.log_metrics(metrics)
        for name, table in tables.items():
            rl.log_table(table, name)
        for f in files:
            rl.log_artifact(f, "area")
        frame = sample.drop(columns="geometry").assign(
            lon=sample.geometry.to_crs("EPSG:4326").x, lat=sample.geometry.to_crs("EPSG:4326").y
        )
        with warnings.catch_warnings():  # MLflow registers the local-file source twice and says so
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                frame.astype(str), source=sample_source, name=Path(sample_source).name
            )
        rl.client.log_inputs(
            rl.run_id,
            [DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "reference_sample")])],
        )
        return rl.run_id
