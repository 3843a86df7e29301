"""Hydra configuration: where configs live, composing them, and turning them into plugin objects.

The primary configs are in the repository's ``conf/`` directory (one group per stage); named studies in
``experiments/`` are registered as the ``experiment`` group, so ``cropseg +experiment=seed_knn`` works, and
configs shipped by installed plugins (hook ``cropseg_config_dirs``) join their groups, so
``cropseg classifier=<third-party name>`` works (:func:`register_configs`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError
from .plugins import Registry
from .signals import deferred

log = logging.getLogger(__name__)
VERSION_BASE = "1.3"
CONFIG_NAME = "config"
#: Override the config directories (mainly for installed, non-editable copies).
CONF_ENV = "CROPSEG_CONF_DIR"
EXPERIMENTS_ENV = "CROPSEG_EXPERIMENTS_DIR"

_ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)


def conf_dir() -> Path:
    d = Path(os.environ.get(CONF_ENV) or _ROOT / "conf")
    if not (d / f"{CONFIG_NAME}.yaml").is_file():
        raise ConfigError(f"{d}: cropseg's Hydra configs not found (set {CONF_ENV} to the conf/ directory)")
    return d


def experiments_dir() -> Path:
    return Path(os.environ.get(EXPERIMENTS_ENV) or _ROOT / "experiments")


_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)


def register_experiments(directory: Path | None = None) -> list[str]:
    """Store every ``experiments/*.yaml`` in Hydra's ConfigStore as group ``experiment`` (honouring each
    file's ``# @package`` header, ``_global_`` by convention). Returns the names registered."""
    from hydra.core.config_store import ConfigStore

    directory = directory or experiments_dir()
    cs = ConfigStore.instance()
    names = []
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        text = path.read_text()
        m = _PACKAGE_HEADER.search(text.split("\n\n", 1)[0])
        node = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
        cs.store(
            group="experiment",
            name=path.stem,
            node=node,
            package=m.group(1) if m else "_global_",
            provider="cropseg-experiments",
        )
        names.append(path.stem)
    return names


@dataclass(frozen=True)
class PluginConfig:
    """A config file shipped by a plugin: ``group/option`` from ``path``, provided by ``provider``."""

    group: str
    option: str
    path: Path
    provider: str


def plugin_config_files(pm: Any = None) -> tuple[list[PluginConfig], list[str]]:
    """The ``<group>/<option>.yaml`` files in every directory the installed plugins return from
    ``cropseg_config_dirs``, minus options cropseg's ``conf/`` (or an earlier plugin) already has.
    Returns (configs, problems): a problem is a one-line warning about a plugin's directory or file."""
    from .plugins import get_plugin_manager

    pm = pm if pm is not None else get_plugin_manager()
    dists = {id(plugin): f"{d.project_name} {d.version}" for plugin, d in pm.list_plugin_distinfo()}
    base = conf_dir()
    taken = {f"{p.parent.relative_to(base).as_posix()}/{p.stem}": "cropseg conf/" for p in base.rglob("*.yaml")}
    taken.update({f"experiment/{p.stem}": "cropseg experiments/" for p in experiments_dir().glob("*.yaml")})
    configs: list[PluginConfig] = []
    problems: list[str] = []
    for impl in pm.hook.cropseg_config_dirs.get_hookimpls():
        provider = dists.get(id(impl.plugin), impl.plugin_name)
        try:
            dirs = list(impl.function() or [])
        except Exception as exc:  # noqa: BLE001 - third-party code; report and go on
            problems.append(f"{provider}: cropseg_config_dirs() failed: {type(exc).__name__}: {exc}")
            continue
        for d in dirs:
            d = Path(str(d))
            if not d.is_dir():
                problems.append(f"{provider}: config directory {d} does not exist")
                continue
            for path in sorted(d.rglob("*.yaml")):
                rel = path.relative_to(d)
                if len(rel.parts) < 2:
                    problems.append(f"{provider}: {path} is not in a group folder (<group>/<option>.yaml)")
                    continue
                key = f"{rel.parent.as_posix()}/{path.stem}"
                if key in taken:
                    problems.append(f"{provider}: {key} skipped, already provided by {taken[key]}")
                    continue
                taken[key] = provider
                configs.append(PluginConfig(rel.parent.as_posix(), path.stem, path, provider))
    return configs, problems


def register_plugin_configs(pm: Any = None) -> list[PluginConfig]:
    """Store the plugins' config files in Hydra's ConfigStore (as :func:`register_experiments` does for
    experiments): group and option from the file's place, package from its ``# @package`` header (default:
    the group; ``_global_`` for the ``experiment`` group). Problems are logged as warnings."""
    from hydra.core.config_store import ConfigStore

    configs, problems = plugin_config_files(pm)
    for p in problems:
        log.warning("plugin config: %s", p)
    cs = ConfigStore.instance()
    stored = []
    for c in configs:
        try:
            text = c.path.read_text()
            node = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
        except Exception as exc:  # noqa: BLE001 - a broken third-party file must not break every run
            log.warning("plugin config: %s: %s skipped: %s", c.provider, c.path, _first_line(exc))
            continue
        m = _PACKAGE_HEADER.search(text.split("\n\n", 1)[0])
        package = m.group(1) if m else ("_global_" if c.group == "experiment" else None)
        cs.store(group=c.group, name=c.option, node=node, package=package, provider=c.provider)
        stored.append(c)
    return stored


def register_configs() -> None:
    """Everything cropseg adds to Hydra's ConfigStore before composing: experiments and plugin configs."""
    register_experiments()
    register_plugin_configs()


@contextmanager
def hydra_context(config_dir: Path | None = None) -> Iterator[None]:
    """Initialise Hydra in-process on cropseg's configs (no working-directory change)."""
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base=VERSION_BASE, job_name="cropseg"):
        yield


def compose(overrides: Sequence[str] = (), config_dir: Path | None = None) -> DictConfig:
    """Compose the run configuration with Hydra, as the CLI would, turning Hydra errors into one line.

    An override of a key the config does not have fails with the same line with or without ``+``: a stage
    option (``classifier.kk=3``, ``+classifier.kk=3``) gets the plugin's list of valid options, any other
    key (``train.foo=1``, ``+train.foo=1``) the keys of its section."""
    from hydra import compose as hcompose

    overrides = list(overrides)
    # a signal raised in the middle of OmegaConf building a node leaves it half made, and OmegaConf's own
    # clean-up then fails with a ConfigKeyError that hides the KeyboardInterrupt: raise it after composing
    with deferred(), hydra_context(config_dir):
        try:
            with hydra_errors():
                cfg = hcompose(config_name=CONFIG_NAME, overrides=overrides)
        except ConfigError as exc:
            m = re.search(r"full_key: (\S+)", str(exc))
            if not (m and "not in struct" in str(exc)):
                raise
            full = m.group(1)
            i = next(
                (
                    j
                    for j, o in enumerate(overrides)
                    if _override_key(o) == full or _override_key(o).startswith(full + ".")
                ),
                None,
            )
            if i is None:
                raise
            key = _override_key(overrides[i])
            plus = [*overrides[:i], "+" + overrides[i].lstrip("+"), *overrides[i + 1 :]]
            with hydra_errors():
                cfg = hcompose(config_name=CONFIG_NAME, overrides=plus)
            _check_added_key(cfg, key, overrides[:i] + overrides[i + 1 :], config_dir, always=True)
            raise  # not reached: _check_added_key raises for a key the config did not have
        for o in overrides:  # (a plugin's options are checked against its signature when stages are built)
            key = _override_key(o)
            if o.startswith("+") and not o.startswith("++") and "." in key and key.split(".")[0] not in PLUGIN_SECTIONS:
                _check_added_key(cfg, key, [x for x in overrides if x is not o], config_dir)
        return cfg


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


#: config sections whose options a plugin defines (checked against the plugin's signature)
PLUGIN_SECTIONS = ("source", "labeler", "features", "classifier", "postprocessor")


def _check_added_key(
    cfg: DictConfig, key: str, others: Sequence[str], config_dir: Path | None, always: bool = False
) -> None:
    """Raise one :class:`ConfigError` line for an override adding ``key`` that the config without it lacks:
    the plugin's option check for a stage option, else the valid keys of its section."""
    from hydra import compose as hcompose

    section, _, rest = key.partition(".")
    if section == "hydra":
        return
    if section in PLUGIN_SECTIONS:
        from .plugins import get_plugin_manager

        block = list(cfg.get("plugins", {}).get("block", []) or [])
        registry = Registry.from_plugin_manager(get_plugin_manager(block=block))
        if section == "postprocessor":
            for name, node in postprocessor_nodes(cfg):
                if rest.split(".")[0] in (name, *[k for k, v in cfg.postprocessor.items() if v is node]):
                    from .plugins import check_options

                    check_options(
                        f"postprocessor.{name}", registry.get("postprocessor", name).factory, plugin_options(node)
                    )
        else:
            from .plugins import check_options

            stage_node = cfg.get(section)
            if stage_node is not None and stage_node.get("name"):
                check_options(
                    f"{section}.{stage_node.get('name')}",
                    registry.get(section, str(stage_node.get("name"))).factory,
                    plugin_options(stage_node),
                )
        if not always:
            return
    with hydra_errors():
        base = hcompose(config_name=CONFIG_NAME, overrides=list(others))
    parts = key.split(".")
    cur: Any = base
    for i, part in enumerate(parts):
        if not isinstance(cur, DictConfig):
            break
        if part not in cur:
            parent = ".".join(parts[:i])
            where = f"{parent} has" if parent else "top-level keys:"
            raise ConfigError(f"{key}: no such key ({where} {', '.join(str(k) for k in cur.keys())})")
        cur = cur.get(part)
    if always:
        raise ConfigError(f"{key}: cannot override this key")


@contextmanager
def hydra_errors() -> Iterator[None]:
    """Turn Hydra/OmegaConf composition errors into :class:`ConfigError` with one clear line."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except MissingConfigException as exc:
        raise ConfigError(_missing_message(exc)) from None
    except OverrideParseException as exc:
        raise ConfigError(f"bad override: {_first_line(exc)}") from None
    except (ConfigCompositionException, HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_first_line(exc.__cause__ or exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split("\n\n")[0].split()) if text else type(exc).__name__


def _missing_message(exc: Any) -> str:
    text = str(exc)
    m = re.search(r"Could not find '([^']+)'", text)
    options = getattr(exc, "options", None)
    if m and "/" in m.group(1):
        group, name = m.group(1).rsplit("/", 1)
        avail = ", ".join(sorted(options)) if options else "none"
        return f"{group}={name}: no such {group} config (available: {avail})"
    return _first_line(exc)


def plugin_options(node: Any) -> dict[str, Any]:
    """A stage config node minus its ``name`` key, as plain Python values."""
    d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else dict(node)
    assert isinstance(d, dict)
    d.pop("name", None)
    return cast(dict[str, Any], d)


def instantiate(registry: Registry, stage: str, node: Any, default_name: str | None = None) -> Any:
    """The one place a stage object is built from config: ``node.name`` picks the registered plugin,
    the other keys are its options (checked against the factory's signature)."""
    if node is None:
        raise ConfigError(f"{stage}: no configuration")
    name = node.get("name", default_name) if isinstance(node, Mapping | DictConfig) else None
    if not name:
        raise ConfigError(f"{stage}: the config has no 'name' naming the plugin")
    return registry.create(stage, str(name), plugin_options(node))


def postprocessor_nodes(cfg: DictConfig) -> list[tuple[str, Any]]:
    """The configured postprocessors in order: ``postprocessor`` maps names to option nodes."""
    node = cfg.get("postprocessor")
    if node is None:
        return []
    if not isinstance(node, DictConfig):
        raise ConfigError("postprocessor: expected a mapping of postprocessor names to options")
    out = []
    for key, sub in node.items():
        if sub is None:
            continue
        sub = sub if isinstance(sub, DictConfig) else OmegaConf.create({})
        out.append((str(sub.get("name", key)), sub))
    return out


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a resolved config into dotted keys, secrets redacted (for MLflow params)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else cfg
    out: dict[str, Any] = {}

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            out[key] = "***" if SECRET_KEY.search(key.rsplit(".", 1)[-1]) else obj

    walk(container, prefix)
    return out


def redact(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict with secret-looking keys redacted (for ``log_dict``)."""
    container = OmegaConf.to_container(cfg, resolve=True)

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: ("***" if SECRET_KEY.search(str(k)) else walk(v)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(container)
