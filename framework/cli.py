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
_HYDRA_INFO_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--version",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--resolve",
    "--shell-completion",
    "-sc",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
_FAILURES: list[str] = []


def _plugins():  # noqa: ANN202 - lazy imports keep `cropseg --help` fast
    from .commands import plugins_command

    return plugins_command


def _compare():  # noqa: ANN202
    from .compare import compare_command

    return compare_command


def _predict():  # noqa: ANN202
    from .commands import predict_command

    return predict_command


def _search():  # noqa: ANN202
    from .search import search_command

    return search_command


def _sample_design():  # noqa: ANN202
    from .area_sample import sample_design_command

    return sample_design_command


def _estimate_area():  # noqa: ANN202
    from .area_sample import estimate_area_command

    return estimate_area_command


SUBCOMMANDS = {
    "plugins": _plugins,
    "compare": _compare,
    "predict": _predict,
    "search": _search,
    "sample-design": _sample_design,
    "estimate-area": _estimate_area,
}
#: one line per subcommand for ``cropseg --help`` (a subcommand registered above without one is still listed)
SUBCOMMAND_HELP = {
    "predict": "apply a logged or registered model to a new scene (cropseg predict MODEL_URI IMAGE)",
    "compare": "rank tracked runs by a test-scene metric, grouped by test data (table, CSV, chart)",
    "search": "budgeted Optuna search over classifier, grid, features, balance and blur by spatial CV on the "
    "training scene; the chosen one is tested once",
    "plugins": "list the installed plugins per stage and the configs they ship",
    "sample-design": "draw a stratified random sample of a mask for area estimation (Olofsson et al. 2014)",
    "estimate-area": "error-adjusted crop area with 95% CI from a labelled sample of a mask",
}
COMMON_OVERRIDES = [
    ("source=sample source.size=200", "where the scenes come from (here: a tiny synthetic sample)"),
    ("classifier=random_forest", "one plugin per stage (the names above)"),
    ("classifier.k_grid=[5,7,9]", "a classifier option (an unknown one lists the valid options)"),
    ("postprocessor.median_blur.kernel=7", "a postprocessor option (min_area_ha, simplify for vectorize)"),
    ("train.max_pixels=20000 train.balance=auto|true|false", "training sample size and class balance"),
    ("+experiment=seed_knn", "a named study from experiments/"),
    ("--multirun classifier=knn,mlp", "a sweep, one MLflow child run per combination"),
]


def _stage_lines() -> list[str]:
    """Every installed plugin per stage, from the plugin registry (what ``cropseg plugins`` lists)."""
    from .plugins import STAGES, Registry, get_plugin_manager

    try:
        reg = Registry.from_plugin_manager(get_plugin_manager())
    except CropsegError as exc:  # a broken third-party plugin must not take the help down with it
        return [f"  (the plugin registry did not load: {exc})"]
    width = max(len(s) for s in STAGES)
    lines = [f"  {stage:<{width}}  {', '.join(reg.names(stage))}" for stage in STAGES]
    if reg.failed:
        lines.append(f"  (failed to load: {', '.join(sorted(reg.failed))}; see cropseg plugins)")
    return lines


def usage() -> str:
    """What ``cropseg --help`` prints before Hydra's own help."""
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        "usage: cropseg [OVERRIDES...]          run the pipeline (Hydra app; its help follows below)",
        "       cropseg SUBCOMMAND [--help]",
        "",
        "subcommands:",
    ]
    lines += [f"  {n:<{width}}  {SUBCOMMAND_HELP.get(n, '')}".rstrip() for n in SUBCOMMANDS]
    lines += ["", "plugins per stage (STAGE=NAME; cropseg plugins: where each comes from):", *_stage_lines()]
    width = max(len(o) for o, _ in COMMON_OVERRIDES)
    lines += ["", "most used overrides:"]
    lines += [f"  {o:<{width}}  {h}" for o, h in COMMON_OVERRIDES]
    return "\n".join(lines) + "\n\n" + "-" * 40 + " configuration (Hydra) " + "-" * 40 + "\n"


def _config_groups() -> dict[str, list[str]]:
    """Config group -> options: conf/ (Hydra's own groups under hydra/ left out), experiments/ and the configs
    plugins ship; read from the folders, as Hydra would list them."""
    from .config import conf_dir, experiments_dir, plugin_config_files

    groups: dict[str, set[str]] = {}
    base = conf_dir()
    for path in base.rglob("*.yaml"):
        group = path.parent.relative_to(base).as_posix()
        if group != "." and group != "hydra" and not group.startswith("hydra/"):
            groups.setdefault(group, set()).add(path.stem)
    for path in experiments_dir().glob("*.yaml"):
        groups.setdefault("experiment", set()).add(path.stem)
    for c in plugin_config_files()[0]:
        if not c.group.startswith("hydra"):
            groups.setdefault(c.group, set()).add(c.option)
    return {g: sorted(options) for g, options in sorted(groups.items())}


def help_text(args: Sequence[str]) -> str:
    """``cropseg [OVERRIDES] --help``: :func:`usage`, then what Hydra's app help shows (the config groups and
    the configuration composed with the overrides), without its cost: Hydra lists the groups by copying its
    whole config repository once per group, seconds for cropseg's configs."""
    from omegaconf import OmegaConf

    from .config import compose

    overrides = [a for a in args if not a.startswith("-")]
    lines = ["== Configuration groups ==", "Compose your configuration from those groups (group=option)", ""]
    lines += [f"{group}: {', '.join(options)}" for group, options in _config_groups().items()]
    lines += ["", "== Config ==", "Override anything in the config (foo.bar=value)", ""]
    try:
        lines.append(OmegaConf.to_yaml(compose(overrides)))
    except CropsegError as exc:
        lines += [f"(not composed with {' '.join(overrides)}: {exc})", ""]
    lines += ["Powered by Hydra (https://hydra.cc)", "Use --hydra-help to view Hydra specific help"]
    return usage() + "\n" + "\n".join(lines)


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _write_failure(exc: BaseException, where: object = None, store: object = None) -> str | None:
    """The one line for an error that is a write failure (no space left, read-only, permission denied,
    name too long...) raised as an ``OSError`` or by GDAL, pyogrio, SQLite or MLflow in its words; ``None``
    for any other error (a bug keeps its traceback). ``where``: the command's output folder; ``store``:
    its tracking URI (named when SQLite or MLflow raised the error)."""
    from .errors import as_output_error, write_failure_path
    from .tracking import resolve_uri

    err = as_output_error(
        exc, "an output", where or write_failure_path(exc) or "the output folder", store or resolve_uri(None)
    )
    return None if err is None else str(err)


def _task(cfg):  # noqa: ANN001, ANN201 - a DictConfig from Hydra; returns the sweep objective
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .pipeline import execute
    from .sweep import parent_run_id

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    parent = parent_run_id(cfg) if multirun else None
    try:
        result = execute(cfg, parent_run_id=parent, run_name_suffix=f"#{hc.job.num}" if multirun else "")
    except CropsegError as exc:
        log.error("run failed: %s", exc)
        if not multirun:
            _error(str(exc))
            raise SystemExit(1) from None
        _FAILURES.append(str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - in a sweep one broken job must not stop the others
        line = _write_failure(exc, cfg.get("output_dir"), (cfg.get("tracking") or {}).get("uri"))
        if line is not None:
            log.error("run failed: %s", line)
            if not multirun:
                _error(line)
                raise SystemExit(1) from None
            _FAILURES.append(line)
            return None
        if not multirun:
            raise
        log.exception("job %s failed", hc.job.num)
        _FAILURES.append(f"job {hc.job.num} crashed (see its log)")
        return None
    print()
    print(result.summary())
    print(f"\nMLflow run {result.run_id} FINISHED (experiment id {result.experiment_id})")
    print(f"outputs: {result.output_dir}")
    print(f"open the MLflow UI: {result.ui_hint}")
    objective = cfg.get("sweep", {}).get("objective")
    value = result.metrics.get(objective) if objective else None
    return float(value) if value is not None else None


def _validate(args: Sequence[str]) -> None:
    """Compose the job config(s) before Hydra runs, so config mistakes give one line, not a stack."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import compose, hydra_errors
    from .pipeline import build_stages

    overrides = [a for a in args if not a.startswith("-")]
    with hydra_errors():
        parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.is_sweep_override() and not (o.is_discrete_sweep() or o.is_range_sweep()) for o in parsed):
        return  # e.g. Optuna interval() sweeps: Hydra's sweeper validates them
    from .tracking import check_reachable, resolve_uri

    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    uris = set()
    for combo in (batches[0] if batches else [[]])[:64]:
        cfg = compose(combo)
        build_stages(cfg)
        uris.add(resolve_uri(cfg.get("tracking", {}).get("uri")))
    for uri in uris:  # an unreachable tracking server is reported before any work starts
        check_reachable(uri)


def _check_hydra_dir(args: Sequence[str]) -> None:
    """Hydra writes its run folder (``outputs/<date>/<time>``, ``multirun/...`` for sweeps, or
    ``hydra.run.dir`` / ``hydra.sweep.dir``) under the working directory before the job starts: a folder
    that cannot take it is one line here, not Hydra's traceback."""
    from pathlib import Path

    from .preflight import check_output_dir

    multirun = any(a in ("-m", "--multirun") for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    root = (given[-1] if given else ("multirun" if multirun else "outputs")).split("${", 1)[0]
    check_output_dir(Path(root or "."), key, create=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cropseg`` console script. SIGTERM and SIGINT (Ctrl-C) stop any command the same
    way: its MLflow run ends KILLED, partial outputs are removed, one line on stderr, exit 143 / 130."""
    from .signals import handle_signals, report

    try:
        with handle_signals():
            return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `cropseg --help | head -1`: the reader left; end quietly, as `yes | head` does
        _quiet_stdout()
        return 141
    except KeyboardInterrupt as exc:  # also cropseg.signals.Terminated (SIGTERM)
        from .sweep import abort_sweep

        try:
            killed = abort_sweep()
        except Exception as err:  # noqa: BLE001 - the store went away too: still one line and the exit code
            killed = None
            log.warning("could not end the sweep's runs: %s", str(err).splitlines()[0] if str(err) else err)
        return report(
            PROG,
            exc,
            f"sweep parent run {killed} and its unfinished jobs marked KILLED"
            if killed
            else "stopped cleanly (an MLflow run in progress is marked KILLED)",
        )


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe raises nothing."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by something without a file descriptor (tests)
        pass


def _main(args: list[str]) -> int:
    if args and args[0] in SUBCOMMANDS:
        try:
            return SUBCOMMANDS[args[0]]()(args[1:])
        except CropsegError as exc:
            _error(str(exc))
            return 2
        except Exception as exc:
            line = _write_failure(exc)
            if line is None:
                raise
            _error(line)
            return 1
    if any(a in ("--help", "-h") for a in args):
        print(help_text(args))
        return 0
    try:
        if not any(a.split("=")[0] in _HYDRA_INFO_FLAGS for a in args):
            _validate(args)
            _check_hydra_dir(args)
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
    except Exception as exc:  # Hydra's own writes (its run folder, .hydra/) in the working directory
        line = _write_failure(exc)
        if line is None:
            raise
        _error(line)
        return 1
    finally:
        sys.argv = saved
    from .sweep import SweepState

    failures = SweepState.failed or _FAILURES
    SweepState.failed = []
    if failures:
        _error(f"{len(failures)} job(s) of the sweep failed; first: {failures[0]}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
