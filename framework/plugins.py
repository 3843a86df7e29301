"""The plugin manager and the per-stage registries built from the contribution hooks."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, DuplicatePluginError, PluginError
from .schema import check_factory_types, factory_options

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cropseg"
#: Comma-separated entry-point names (or plugin names) not to load.
BLOCK_ENV = "CROPSEG_BLOCK_PLUGINS"

STAGES: dict[str, str] = {
    "source": "cropseg_register_sources",
    "labeler": "cropseg_register_labelers",
    "features": "cropseg_register_features",
    "classifier": "cropseg_register_classifiers",
    "postprocessor": "cropseg_register_postprocessors",
}
#: further hooks feeding a stage's registry: patch models share the classifier stage (``classifier=unet``)
EXTRA_HOOKS: dict[str, str] = {"cropseg_register_patch_models": "classifier"}


class CropsegPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers entry points that failed to import instead of dying on them."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.failed: dict[str, str] = {}

    def load_entrypoints_tolerant(self, group: str) -> int:
        """``load_setuptools_entrypoints`` one entry point at a time: a plugin that fails to import is
        recorded in :attr:`failed` (name -> error) and the others stay usable."""
        count = 0
        for ep in metadata.entry_points(group=group):
            if ep.name in self.failed:
                continue
            try:
                count += self.load_setuptools_entrypoints(group, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any import failure of third-party code
                self.failed[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("plugin %r (%s) failed to import: %s", ep.name, ep.value, self.failed[ep.name])
        return count


def get_plugin_manager(block: Iterable[str] = (), extra: Iterable[object] = ()) -> CropsegPluginManager:
    """A fresh plugin manager with every installed ``cropseg`` entry point loaded.

    ``block`` (plus the ``CROPSEG_BLOCK_PLUGINS`` environment variable) names entry points that must not
    load; ``extra`` are plugin objects to register directly (tests, notebooks).
    """
    pm = CropsegPluginManager()
    pm.add_hookspecs(hookspecs)
    blocked = {b.strip() for b in [*block, *os.environ.get(BLOCK_ENV, "").split(",")] if b.strip()}
    for name in blocked:
        pm.set_blocked(name)
    pm.load_entrypoints_tolerant(ENTRY_POINT_GROUP)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


@dataclass(frozen=True)
class PluginInfo:
    """One registered implementation: its stage, name, factory and where it comes from."""

    stage: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str | None
    version: str | None
    #: the contribution hook that registered it (``cropseg_register_patch_models`` for patch models)
    hook: str = ""

    @property
    def origin(self) -> str:
        if self.distribution:
            return f"{self.distribution} {self.version}"
        return self.plugin


@dataclass
class Registry:
    """Named factories per stage, collected from the contribution hooks."""

    stages: dict[str, dict[str, PluginInfo]] = field(default_factory=lambda: {s: {} for s in STAGES})
    failed: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager) -> Registry:
        dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        reg = cls(failed=dict(getattr(pm, "failed", {})))
        for hook_name, stage in [*((h, s) for s, h in STAGES.items()), *EXTRA_HOOKS.items()]:
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                dist = dists.get(id(impl.plugin))
                reg._collect(stage, impl, dist, hook_name)
        return reg

    def _collect(self, stage: str, impl: pluggy.HookImpl, dist: Any, hook: str = "") -> None:
        def register(name: str, factory: Callable[..., Any]) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {impl.plugin_name!r} registered a {stage} with an empty name")
            existing = self.stages[stage].get(name)
            if existing is not None:
                raise DuplicatePluginError(
                    f"{stage} {name!r} is registered twice: by {existing.origin} and by "
                    f"{dist.project_name + ' ' + dist.version if dist else impl.plugin_name}"
                )
            self.stages[stage][name] = PluginInfo(
                stage=stage,
                name=name,
                factory=factory,
                plugin=impl.plugin_name,
                distribution=dist.project_name if dist else None,
                version=dist.version if dist else None,
                hook=hook,
            )

        impl.function(register=register)

    def names(self, stage: str) -> list[str]:
        return sorted(self.stages[stage])

    def get(self, stage: str, name: str) -> PluginInfo:
        try:
            return self.stages[stage][name]
        except KeyError:
            avail = ", ".join(self.names(stage)) or "none"
            hint = ""
            if self.failed:
                hint = "; failed to load: " + ", ".join(f"{k} ({v})" for k, v in sorted(self.failed.items()))
            raise PluginError(f"{stage}={name}: no such {stage} plugin (available: {avail}){hint}") from None

    def create(self, stage: str, name: str, options: Mapping[str, Any]) -> Any:
        """Build a stage object from its config options: the one place plugin factories are called.

        Unknown options raise :class:`ConfigError` naming the option and listing the valid ones.
        """
        info = self.get(stage, name)
        check_options(f"{stage}.{name}", info.factory, options)
        check_factory_types(
            lambda key: f"{stage}.{name}.{key}" if stage == "postprocessor" else f"{stage}.{key}", info.factory, options
        )
        return info.factory(**dict(options))


#: ground-truth kinds: polygons in a vector file, or a class raster
GROUND_TRUTH_KINDS = ("vector", "raster")


def ground_truth_kind_of(path: Any) -> str:
    """``raster`` for a class raster file (.tif/.tiff/.img/.vrt), else ``vector``."""
    from pathlib import Path as _Path

    return "raster" if _Path(str(path)).suffix.lower() in {".tif", ".tiff", ".img", ".vrt"} else "vector"


def check_labeler_fits(registry: Registry, labeler: str, kind: str | None, what: str) -> None:
    """Raise one :class:`ConfigError` line when labeler ``labeler`` cannot read ``kind`` ground truth
    (a labeler lists what it reads in a ``ground_truth_kinds`` class attribute; default: both), naming the
    labelers that can. ``what`` names the ground truth (option and file) in the message."""
    if kind is None:
        return
    accepts = getattr(registry.get("labeler", labeler).factory, "ground_truth_kinds", GROUND_TRUTH_KINDS)
    if kind in accepts:
        return
    fits = [
        n
        for n in registry.names("labeler")
        if kind in getattr(registry.get("labeler", n).factory, "ground_truth_kinds", GROUND_TRUTH_KINDS)
    ]
    needs = " or ".join("polygons (a vector file)" if k == "vector" else "a class raster" for k in accepts)
    use = " or ".join(f"labeler={n}" for n in fits) or "a labeler that reads it"
    raise ConfigError(f"labeler={labeler} needs {needs}, but {what} is a {kind} file: use {use}")


def check_options(where: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``options`` holds a key ``factory`` does not accept (its named
    parameters and the keys of a ``**kwargs: Unpack[SomeTypedDict]``: :func:`cropseg.schema.factory_options`)."""
    accepted = factory_options(factory)
    if accepted is None:  # no signature (builtins) or a bare **kwargs: let the call decide
        return
    params = inspect.signature(factory).parameters
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{where}: unknown option {key!r} (valid: {', '.join(accepted) or 'none'})")
    missing = [
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and n not in options
    ]
    if missing:
        raise ConfigError(f"{where}: missing required option(s): {', '.join(missing)}")
