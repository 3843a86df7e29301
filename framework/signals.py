"""SIGTERM and SIGINT end every cropseg command the same way.

:func:`handle_signals` turns SIGTERM (what ``timeout``, Slurm, Kubernetes and ``docker stop`` send) into a
:class:`Terminated` exception raised in the main thread, as Python already does for SIGINT
(:class:`KeyboardInterrupt`). :class:`Terminated` *is* a ``KeyboardInterrupt``, so every cleanup path
that handles Ctrl-C (``finally`` blocks, context managers closing Dask clusters, the MLflow run ending
KILLED, staging folders removed, ``FAILED.txt`` written) runs for SIGTERM too. After the first signal
further SIGTERM / SIGINT are ignored so that the cleanup can finish; the command then prints one line
and exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Layers above that must act the moment
a signal arrives (the block executor quieting Dask's logs) register a callback with :func:`on_signal`.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""

    signum = int(signal.SIGTERM)

    def __str__(self) -> str:
        return "terminated by SIGTERM"


#: depth of nested critical sections; a signal waiting for them to end; the first signal received inside
#: handle_signals (kept until the block ends, see :func:`raise_if_received`)
_state: dict[str, Any] = {"depth": 0, "pending": None, "received": None}
#: called with the signal number the moment a signal is received (see :func:`on_signal`)
_callbacks: list[Callable[[int], None]] = []


def _ignore_further() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _ignore_further()
    _state["received"] = signum
    for callback in list(_callbacks):
        callback(signum)
    if _state["depth"]:
        _state["pending"] = signum  # raised when the critical section ends
        return
    raise _exception(signum)


def on_signal(callback: Callable[[int], None]) -> Callable[[], None]:
    """Call ``callback(signum)`` the moment SIGTERM / SIGINT is received inside :func:`handle_signals`, before
    the exception is raised (or held by :func:`deferred`): for a layer above that must change state at once,
    e.g. the block executor quieting Dask's logs, whose shutdown noise would otherwise reach stderr while the
    exception unwinds. The callback runs inside the signal handler: it must be quick, take no locks and raise
    nothing. Returns the function that removes it."""
    _callbacks.append(callback)

    def remove() -> None:
        if callback in _callbacks:
            _callbacks.remove(callback)

    return remove


@contextmanager
def deferred() -> Iterator[None]:
    """A critical section: a signal arriving inside it is raised when it ends, not in the middle (e.g.
    while a Dask cluster starts or stops, which an exception would leave half made)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise _exception(signum)


def _unraisable(hook: Any) -> Any:
    """A ``sys.unraisablehook`` that keeps quiet about this module's own exceptions (Python could not raise them
    where the signal arrived, see :func:`raise_if_received`, which raises them again) and passes anything else
    on to ``hook``."""

    def quiet(info: Any) -> None:
        if _state["received"] is not None and isinstance(info.exc_value, KeyboardInterrupt):
            return
        hook(info)

    return quiet


def raise_if_received() -> None:
    """Raise the exception of a signal received inside :func:`handle_signals`. Called where a command is about
    to commit a result (a run about to end FINISHED, a prediction about to move its files into place): Python
    drops an exception raised by a signal handler while a garbage-collector callback or a ``__del__`` runs
    (printing "Exception ignored in ..."; Dask's GC diagnostics install such a callback), and the signal must
    still stop the command. Once the exception has propagated, nothing calls this before the command ends."""
    if _state["received"] is not None and not _state["depth"]:
        raise _exception(_state["received"])


@contextmanager
def handle_signals() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt`` in the main
    thread (once; later signals are ignored while the cleanup runs). The previous handlers come back on exit.
    Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _state["received"] = None
    saved_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(saved_hook)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        yield
    finally:
        _state["received"] = None
        sys.unraisablehook = saved_hook
        for s, h in saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started inside the block ignore SIGINT (an ignored signal stays ignored across exec, and
    Python then installs no KeyboardInterrupt handler): Ctrl-C reaches the whole process group, and worker
    processes (Dask's) must leave the shutdown to this process instead of dying with tracebacks. SIGINT to
    this process is ignored meanwhile too, so keep the block short (starting the processes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def exit_code(exc: BaseException) -> int:
    """128 + the signal number: 143 for SIGTERM, 130 for SIGINT (Ctrl-C)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))


def report(prog: str, exc: BaseException, detail: str = "") -> int:
    """Print the one line for a command stopped by a signal and return its exit code."""
    what = "terminated by SIGTERM" if isinstance(exc, Terminated) else "interrupted by SIGINT (Ctrl-C)"
    print(f"{prog}: error: {what}{'; ' + detail if detail else ''}", file=sys.stderr)
    return exit_code(exc)


__all__ = [
    "Terminated",
    "children_ignore_sigint",
    "deferred",
    "exit_code",
    "handle_signals",
    "on_signal",
    "raise_if_received",
    "report",
]
