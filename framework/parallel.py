"""The block executor: per-block tasks run in this process or on a Dask distributed cluster.

Raster stages describe their work as a task function plus one item (a window) per block, and a *context*
(the scene, the fitted classifier, the filters...) that every task needs. :meth:`BlockExecutor.map`
returns the results in item order, so the driver writes blocks in order with rasterio whatever ran them.

* ``dask`` (the run config's default): tasks run on a :mod:`dask.distributed` cluster: a ``LocalCluster``
  on this machine, of threads in this process (``processes=false``, the default: no start-up, nothing
  copied; reading windows, the KNN kernel, scikit-learn, OpenCV release the GIL) or of worker processes
  (``processes=true``), or the running scheduler at ``parallel.scheduler`` (``tcp://host:8786``) to scale
  out. The context is sent to the workers once (``Client.scatter(..., broadcast=True)``); workers read
  their own windows from the files (which must be at the same paths on every worker) and return small
  results; at most ``max_in_flight`` blocks are pending at once, so memory stays bounded.
* ``serial``: tasks run one after another in this process (the single-process reference path, and the
  default of :class:`ParallelConfig` for library calls outside a run).

Both backends run the very same task functions on the very same inputs, so their results are identical.
A scene with fewer than ``min_blocks`` blocks runs serially even with the dask backend: starting worker
processes costs more than such a scene takes.

Tasks that run their own thread pools (a KD-tree query, BLAS) ask :func:`task_threads` how many threads
they may use: every core in this process; one on a cluster, where each worker thread runs a task.
"""

from __future__ import annotations

import ast
import contextvars
import logging
import os
import re
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import ClusterError, ConfigError, CropsegError
from .signals import children_ignore_sigint, deferred, on_signal

log = logging.getLogger("cropseg")

BACKENDS = ("serial", "dask")
# without a dashboard the scheduler still serves its health/metrics routes, on port 8787 by default: a
# random loopback port instead, so concurrent runs (sweep jobs) neither collide nor warn
_NO_FIXED_PORT = {"dashboard_address": "127.0.0.1:0"}
_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("cropseg_task_threads", default=None)
_CURRENT: contextvars.ContextVar[BlockExecutor | None] = contextvars.ContextVar("cropseg_executor", default=None)


@dataclass(frozen=True)
class ParallelConfig:
    """The ``parallel`` config section (see conf/config.yaml)."""

    backend: str = "serial"
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    processes: bool = False
    max_in_flight: int | None = None
    min_blocks: int = 1

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"parallel.backend: one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("workers", "max_in_flight"):
            val = getattr(self, name)
            if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 1):
                raise ConfigError(f"parallel.{name}: a positive integer or null, got {val!r}")
        for name in ("threads_per_worker", "min_blocks"):
            val = getattr(self, name)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"parallel.{name}: a positive integer, got {val!r}")
        if not isinstance(self.processes, bool):
            raise ConfigError(f"parallel.processes: true or false, got {self.processes!r}")
        if self.scheduler is not None and (not isinstance(self.scheduler, str) or not self.scheduler.strip()):
            raise ConfigError(
                f"parallel.scheduler: a scheduler address such as tcp://host:8786, got {self.scheduler!r}"
            )

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> ParallelConfig:
        """Build from the ``parallel`` config node (``None`` = serial); unknown keys are an error."""
        if node is None:
            return cls()
        opts = dict(node.items())
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError(f"parallel: unknown option {unknown[0]!r} (valid: {', '.join(sorted(known))})")
        return cls(**opts)


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (what Slurm, taskset or a container's cpuset
    allow) where the platform reports it, else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def task_threads() -> int:
    """Threads the current block task may use for its own thread pools: one on a Dask cluster (each of a
    worker's threads runs a task), every core this process may use otherwise."""
    n = _THREADS.get()
    return n if n is not None else available_cores()


def _run_task(fn: Callable[[Any, Any], Any], context: Any, item: Any, threads: int | None) -> Any:
    """Run one task with its thread budget (see :func:`task_threads`). Dask's nannies already start
    workers with OMP/MKL/OpenBLAS_NUM_THREADS=1, so BLAS pools stay single-threaded there.

    A cropseg error leaves the task without its chained causes (GDAL's ``CPLE_*`` errors cannot be
    unpickled, and Dask then re-raises the whole error as a plain ``Exception``), so it reaches the
    driver as itself: the same class and one-line message as in a serial run."""
    token = _THREADS.set(threads)
    failed: CropsegError | None = None
    try:
        return fn(context, item)
    except CropsegError as exc:
        failed = exc
    finally:
        _THREADS.reset(token)
    failed.__cause__ = failed.__context__ = None
    raise failed


_REPR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\((['\"])(.*)\2\)$", re.DOTALL)


def _unwrap(exc: BaseException) -> BaseException:
    """A cropseg error that Dask could not unpickle arrives as ``Exception("InputFileError('...')")``:
    the cropseg error again (anything else unchanged)."""
    from . import errors

    if type(exc) is Exception and len(exc.args) == 1 and isinstance(exc.args[0], str):
        m = _REPR.match(exc.args[0].strip())
        cls = getattr(errors, m.group(1), None) if m else None
        if m and isinstance(cls, type) and issubclass(cls, CropsegError):
            try:
                return cls(ast.literal_eval(m.group(2) + m.group(3) + m.group(2)))
            except (ValueError, SyntaxError):
                return cls(m.group(3))
    return exc


class _CropsegTaskErrors(logging.Filter):
    """Drops distributed's "Compute Failed" record (with the task's traceback) for a task that raised a
    cropseg error: the command reports that error itself, as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - never break logging
            return True
        if "Compute Failed" not in msg:
            return True
        from . import errors

        names = [n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, CropsegError)]
        return not any(f"{n}(" in msg for n in names)


logging.getLogger("distributed.worker").addFilter(_CropsegTaskErrors())


#: Dask's loggers, and asyncio's (a Dask coroutine's exception nobody retrieved, "Task exception was never
#: retrieved"); a record of any of them logged while a cluster stops is shutdown noise
_DASK_LOGGERS = ("distributed", "tornado", "asyncio")
#: ``distributed`` worker states (Status names) of a worker that is stopping
_STOPPING = frozenset({"closing", "closing_gracefully", "closed", "failed"})


class _QuietDask(logging.Filter):
    """Keeps a stopping Dask cluster's logs off stderr. Installed on the handlers that Dask's loggers reach
    (``distributed`` installs its own stderr handler; the root's, where they propagate) while a cluster is in
    use: once :meth:`start` is called (the moment the command receives SIGTERM / SIGINT, through
    :func:`cropseg.signals.on_signal`, or when the executor starts closing), or while ``stopping()`` says so,
    every record of Dask's loggers (comms lost, a scatter to a worker just removed, heartbeats failing, with
    tracebacks) becomes at most one DEBUG line in cropseg's log instead. Until then records pass as before: a
    failing task's error still reaches the log. After a signal the filter stays for the rest of the process
    (which is ending): Python logs a coroutine's unretrieved exception when the task is garbage-collected,
    which may be after the cluster has closed."""

    def __init__(self, stopping: Callable[[], bool] | None = None):
        super().__init__()
        self.quiet = False
        self.for_good = False
        self._stopping = stopping
        self._handlers: list[logging.Handler] = []
        self._unregister: Callable[[], None] | None = None
        self._last: logging.LogRecord | None = None

    @classmethod
    def install(cls, stopping: Callable[[], bool] | None = None) -> _QuietDask:
        try:
            import distributed  # noqa: F401 - importing it installs its stderr handler
        except ImportError:  # pragma: no cover - a declared dependency (the client reports its absence)
            pass
        quiet = cls(stopping)
        # logging's last resort (stderr) prints records no handler takes, e.g. asyncio's in a worker process
        last = [logging.lastResort] if logging.lastResort is not None else []
        for logger in (*(logging.getLogger(n) for n in _DASK_LOGGERS), logging.getLogger()):
            for handler in [*logger.handlers, *last]:
                if handler not in quiet._handlers:
                    handler.addFilter(quiet)
                    quiet._handlers.append(handler)
        quiet._unregister = on_signal(lambda signum: quiet.start(for_good=True))
        return quiet

    def start(self, for_good: bool = False) -> None:
        """From now on Dask's records are dropped; ``for_good``: also after :meth:`remove` (a signal). Safe
        inside a signal handler: two assignments."""
        self.for_good = self.for_good or for_good
        self.quiet = True

    def remove(self) -> None:
        """Off the handlers again, unless a signal stopped the command (see the class)."""
        if not self.for_good:
            for handler in self._handlers:
                handler.removeFilter(self)
            self._handlers = []
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in _DASK_LOGGERS:
            return True
        if not (self.quiet or (self._stopping is not None and self._stopping())):
            return True
        if record is not self._last:  # a record reaching several handlers: one line
            self._last = record
            try:
                first = record.getMessage().strip().splitlines()[0]
            except Exception:  # noqa: BLE001 - never break logging
                first = str(record.msg)
            log.debug("dask, while stopping (%s): %s", record.name, first)
        return False


def dask_setup(worker: Any) -> None:
    """Dask preload of the worker processes of cropseg's LocalCluster (``preload=["cropseg.parallel"]``).
    Their logs go straight to the inherited stderr, where cropseg's process cannot filter them: once the
    worker starts to stop (its status), or the process group gets Ctrl-C (the workers ignore SIGINT, see
    :func:`cropseg.signals.children_ignore_sigint`; here it only marks the cluster as stopping), their Dask
    records (heartbeats failing while the scheduler closes, lost comms, with tracebacks) are dropped.
    Until then records pass as before (a task's error still logs "Compute Failed")."""
    quiet = _QuietDask.install(stopping=lambda: getattr(worker.status, "name", "") in _STOPPING)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda signum, frame: quiet.start())


class BlockExecutor:
    """Runs ``fn(context, item)`` for every item and yields the results in item order.

    The Dask client (and a LocalCluster, when no scheduler is given) starts on the first ``map`` that
    needs it and stops on :meth:`close`; use the executor as a context manager.
    """

    def __init__(self, config: ParallelConfig | None = None):
        self.config = config or ParallelConfig()
        self._client: Any = None
        self._cluster: Any = None
        self._restore_log: tuple[logging.Logger, int] | None = None
        self._quiet: _QuietDask | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> BlockExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        quiet, self._quiet = self._quiet, None
        if quiet is not None:
            # closing while blocks are in flight (an error, SIGTERM, Ctrl-C) makes the scheduler log the comms
            # it loses, with tracebacks: shutdown noise, not the run's error
            quiet.start()
        try:
            with deferred():  # SIGTERM / Ctrl-C must not leave the cluster half closed
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
        finally:
            if quiet is not None:
                quiet.remove()
        if self._restore_log is not None:
            logger, level = self._restore_log
            self._restore_log = None
            logger.setLevel(level)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (started on first use)."""
        if self._client is None:
            _quiet_interrupted_sync()
            if self._quiet is None:
                self._quiet = _QuietDask.install()
            with deferred():  # a signal during start-up would leave a half-made cluster and client
                try:
                    self._client = self._connect()
                except BaseException:
                    if self._cluster is not None:
                        self._cluster.close()
                        self._cluster = None
                    raise
        return self._client

    def _connect(self) -> Any:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ClusterError(f"parallel.backend=dask needs dask[distributed]: {exc}") from None
        cfg = self.config
        if cfg.scheduler:
            try:
                _check_reachable(cfg.scheduler)
                client = Client(cfg.scheduler, timeout="20s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"parallel.scheduler: cannot connect to {cfg.scheduler}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from None
            log.info("dask: connected to %s (%d workers)", cfg.scheduler, len(client.scheduler_info()["workers"]))
            return client
        workers = cfg.workers or min(available_cores(), 8)
        # the scheduler runs in this process either way (and, without worker processes, the worker too): it
        # logs every start, comm and stop at INFO into this process's log
        dist_log = logging.getLogger("distributed")
        self._restore_log = (dist_log, dist_log.level)
        dist_log.setLevel(max(logging.WARNING, dist_log.getEffectiveLevel()))
        if cfg.processes:
            with children_ignore_sigint():  # Ctrl-C goes to the process group; this process stops the workers
                self._cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=cfg.threads_per_worker,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.WARNING,
                    scheduler_kwargs=_NO_FIXED_PORT,
                    preload=[__name__],  # dask_setup below: the workers' logs stay quiet while they stop
                )
            log.info("dask: LocalCluster of %d worker processes x %d threads", workers, cfg.threads_per_worker)
        else:  # one in-process worker (in-process comms, no network) with a thread per `workers`
            self._cluster = LocalCluster(
                n_workers=1,
                threads_per_worker=workers * cfg.threads_per_worker,
                processes=False,
                dashboard_address=None,
                silence_logs=logging.WARNING,
                scheduler_kwargs=_NO_FIXED_PORT,
            )
            log.info("dask: in-process LocalCluster of %d threads", workers * cfg.threads_per_worker)
        return Client(self._cluster, set_as_default=False)

    # -- work --------------------------------------------------------------------------------------
    def uses_cluster(self, n_items: int) -> bool:
        return self.config.backend == "dask" and n_items >= self.config.min_blocks

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], context: Any, n_items: int) -> Iterator[Any]:
        """``fn(context, item)`` for each of the ``n_items`` items, results in order. ``fn`` must be a
        module-level function (importable on the workers); ``context`` is sent to each worker once."""
        if not self.uses_cluster(n_items):
            for item in items:
                yield _run_task(fn, context, item, None)
            return
        yield from self._map_dask(fn, items, context)

    def _map_dask(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], context: Any) -> Iterator[Any]:
        client = self.client
        info = client.scheduler_info()["workers"]
        if not info:
            log.warning("dask: the scheduler at %s has no workers yet; blocks wait for one", self.config.scheduler)
        slots = sum(int(w.get("nthreads", 1)) for w in info.values()) or 1
        limit = self.config.max_in_flight or 2 * slots
        ctx = client.scatter(context, broadcast=True, hash=False)
        pending: deque[Any] = deque()
        try:
            for item in items:
                pending.append(client.submit(_run_task, fn, ctx, item, 1, pure=False))
                if len(pending) >= limit:
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            for fut in pending:
                fut.cancel()
            ctx.release()


def _result(future: Any) -> Any:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - re-raised, unwrapped when it is a cropseg error
        clean = _unwrap(exc)
        if clean is exc:
            raise
        raise clean from None


class _InterruptedSyncFilter(logging.Filter):
    """Drops the one log record of a bug in ``distributed.utils.sync``: when Ctrl-C / SIGTERM interrupts a
    client call before the call's future exists, its ``cancel`` callback reads that unbound variable and
    tornado logs the ``NameError`` with a traceback. The interrupt itself propagates and stops the command
    as usual; the record only adds a traceback to its one-line error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, NameError) or "'future'" not in str(exc) or exc.__traceback__ is None:
            return True
        tb = exc.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        where = os.path.normpath(code.co_filename).split(os.sep)[-2:]
        return not (code.co_name == "cancel" and where == ["distributed", "utils.py"])


def _quiet_interrupted_sync() -> None:
    tornado_log = logging.getLogger("tornado.application")
    if not any(isinstance(f, _InterruptedSyncFilter) for f in tornado_log.filters):
        tornado_log.addFilter(_InterruptedSyncFilter())


def check_scheduler(config: ParallelConfig) -> None:
    """Before any work: a configured ``parallel.scheduler`` accepts connections (:class:`ClusterError` if not)."""
    if config.backend != "dask" or not config.scheduler:
        return
    try:
        _check_reachable(config.scheduler)
    except OSError as exc:
        raise ClusterError(
            f"parallel.scheduler: cannot connect to {config.scheduler}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once (instead of after the client's retries) when a ``tcp://`` scheduler refuses connections."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(address if "://" in address else f"tcp://{address}")
    if url.scheme not in ("tcp", "tls") or url.hostname is None or url.port is None:
        return
    with socket.create_connection((url.hostname, url.port), timeout=timeout):
        pass


@contextmanager
def use_executor(executor: BlockExecutor) -> Iterator[BlockExecutor]:
    """Make ``executor`` the one :func:`current_executor` returns inside the ``with`` block."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def current_executor() -> BlockExecutor:
    """The executor set by :func:`use_executor` (a run's ``parallel`` config), else a serial one."""
    ex = _CURRENT.get()
    return ex if ex is not None else BlockExecutor()
