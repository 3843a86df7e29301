"""Sweeps: one MLflow parent run per ``cropseg --multirun``, every job a child run under it.

:class:`SweepCallback` (a Hydra callback, configured in conf/config.yaml) runs in the launching process:
before any job starts it initialises the tracking store (a fresh sqlite store is created and migrated
once, not by every parallel job at once) and creates the parent run; its id reaches the jobs through the
environment (inherited by process-based launchers such as joblib) and a file in the sweep directory (for
launchers that do not pass the environment on). Jobs never rely on nested fluent MLflow runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .tracking import TAG_PREFIX, Tracker

log = logging.getLogger("cropseg")

PARENT_ENV = "CROPSEG_PARENT_RUN_ID"
PARENT_FILE = ".cropseg_parent_run_id"


class SweepState:
    """What the launching process learns about the sweep (read by the CLI for its exit code)."""

    parent_run_id: str | None = None
    failed: list[str] = []
    finished: int = 0
    #: the tracking node of the sweep's config (to end the parent run when a signal stops the sweep)
    tracking: dict[str, Any] | None = None


def parent_run_id(cfg: DictConfig | None = None) -> str | None:
    """The current sweep's parent run id, from the environment or the sweep directory."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            f = Path(HydraConfig.get().sweep.dir) / PARENT_FILE
            if f.is_file():
                return f.read_text().strip() or None
    except (ImportError, ValueError, AttributeError):
        pass
    return None


def _tracker(config: DictConfig) -> Tracker:
    t = config.get("tracking", {})
    return Tracker(t.get("uri"), t.get("experiment", "cropseg"), t.get("artifact_location"))


class SweepCallback(Callback):
    """Creates the sweep's parent run before jobs launch and closes it when they are done."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tracker = _tracker(config)
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir", default="multirun"))).resolve()
        launcher = OmegaConf.select(config, "hydra.launcher._target_", default="") or ""
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default="") or ""
        name = config.get("tracking", {}).get("sweep_name") or f"sweep {sweep_dir.parent.name} {sweep_dir.name}"
        run_id = tracker.start_parent(
            name,
            {
                f"{TAG_PREFIX}sweep": "true",
                f"{TAG_PREFIX}sweep.dir": str(sweep_dir),
                f"{TAG_PREFIX}sweep.overrides": " ".join(overrides)[:5000],
                f"{TAG_PREFIX}sweep.launcher": launcher.rsplit(".", 1)[-1],
                f"{TAG_PREFIX}sweep.sweeper": sweeper.rsplit(".", 1)[-1],
            },
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(run_id)
        os.environ[PARENT_ENV] = run_id
        SweepState.parent_run_id, SweepState.failed, SweepState.finished = run_id, [], 0
        SweepState.tracking = OmegaConf.to_container(config.get("tracking", {}), resolve=True)  # type: ignore[assignment]
        log.info("sweep parent run %s in %s", run_id, tracker.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        run_id = os.environ.pop(PARENT_ENV, None) or SweepState.parent_run_id
        SweepState.parent_run_id = None
        if not run_id:
            return
        tracker = _tracker(config)
        children = tracker.child_runs(run_id)
        failed = [r for r in children if r.info.status != "FINISHED"]
        SweepState.failed = [
            f"{r.info.run_name}: {r.data.tags.get(TAG_PREFIX + 'error', r.info.status)}" for r in failed
        ]
        SweepState.finished = len(children) - len(failed)
        logger = tracker.logger(run_id)
        logger.set_tags(
            {
                f"{TAG_PREFIX}sweep.children": len(children),
                f"{TAG_PREFIX}sweep.finished": SweepState.finished,
                f"{TAG_PREFIX}sweep.failed": len(failed),
            }
        )
        tracker.end_parent(run_id, "FINISHED" if children and len(failed) < len(children) else "FAILED")
        log.info("sweep parent run %s: %d child runs finished, %d failed", run_id, SweepState.finished, len(failed))


def abort_sweep(status: str = "KILLED") -> str | None:
    """End the sweep this process launched (when a signal stopped it): the parent run and every child run
    still RUNNING (jobs of killed worker processes) end ``status``. Returns the parent run id, or ``None``
    when no sweep was running."""
    run_id = SweepState.parent_run_id
    SweepState.parent_run_id = None
    if not run_id or SweepState.tracking is None:
        return None
    os.environ.pop(PARENT_ENV, None)
    t = SweepState.tracking
    tracker = Tracker(t.get("uri"), t.get("experiment", "cropseg"), t.get("artifact_location"))
    from .pipeline import discard_results

    for r in tracker.child_runs(run_id):
        if r.info.status == "RUNNING":  # a job in a worker process the launcher killed
            tracker.logger(r.info.run_id).set_tags({f"{TAG_PREFIX}error": "the sweep was stopped by a signal"})
            tracker.end_parent(r.info.run_id, status)
            if out := r.data.tags.get(f"{TAG_PREFIX}output_dir"):
                discard_results(Path(out), f"{status}: the sweep was stopped by a signal")
    tracker.logger(run_id).set_tags({f"{TAG_PREFIX}error": "the sweep was stopped by a signal"})
    tracker.end_parent(run_id, status)
    log.info("sweep parent run %s ended %s", run_id, status)
    return run_id
