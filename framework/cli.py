"""The ``cropseg`` command: a Hydra app (``cropseg [overrides]``, ``cropseg --multirun ...``) plus
subcommands (``cropseg plugins``). User errors print one line and exit non-zero."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from .errors import CropsegError

log = logging.getLogger("cropseg")
PROG = "cropseg"
#: Hydra flags after which composing the job config ourselves is not meaningful.
_HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--cfg", "-c", "--resolve",
                     "--shell-completion", "-sc", "--package", "-p", "--config-path", "-cp", "--config-name",
                     "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_FAILURES: list[str] = []


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _task(cfg) -> None:  # noqa: ANN001 - a DictConfig from Hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .pipeline import execute

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = execute(cfg)
    except CropsegError as exc:
        log.error("run failed: %s", exc)
        if not multirun:
            _error(str(exc))
            raise SystemExit(1) from None
        _FAILURES.append(str(exc))
        return None
    print()
    print(result.summary())
    print(f"\nMLflow run {result.run_id} FINISHED (experiment id {result.experiment_id})")
    print(f"outputs: {result.output_dir}")
    print(f"open the MLflow UI: {result.ui_hint}")
    return None


def _validate(args: Sequence[str]) -> None:
    """Compose the job config(s) before Hydra runs, so config mistakes give one line, not a stack."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from .config import compose, hydra_errors
    from .pipeline import build_stages

    overrides = [a for a in args if not a.startswith("-")]
    with hydra_errors():
        parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_sweep_override() and not (o.is_discrete_sweep() or o.is_range_sweep()) for o in parsed):
        return  # e.g. Optuna interval() sweeps: Hydra's sweeper validates them
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    for combo in (batches[0] if batches else [[]])[:64]:
        cfg = compose(combo)
        build_stages(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cropseg`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "plugins":
        from .commands import plugins_command

        return plugins_command(args[1:])
    try:
        if not any(a.split("=")[0] in _HYDRA_INFO_FLAGS for a in args):
            _validate(args)
    except CropsegError as exc:
        _error(str(exc))
        return 2
    import hydra

    from .config import CONFIG_NAME, VERSION_BASE, conf_dir, register_configs

    register_configs()
    app = hydra.main(version_base=VERSION_BASE, config_path=str(conf_dir()), config_name=CONFIG_NAME)(_task)
    _FAILURES.clear()
    saved = sys.argv
    sys.argv = [PROG, *args]
    try:
        app()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = saved
    if _FAILURES:
        _error(f"{len(_FAILURES)} job(s) of the sweep failed; first: {_FAILURES[0]}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
