"""Option schemas: every configured value is type- and range-checked when the config is composed,
before any scene is read, with one line naming the option, the value and what is allowed.

Two sources of schema, one checker:

* a plugin's options: the type annotations of its factory (``def __init__(self, k_grid: Sequence[int] =
  ...)``, and the keys of a ``**kwargs: Unpack[SomeTypedDict]``: :func:`factory_options`), checked
  generically by :func:`check_factory_types` from :meth:`cropseg.plugins.Registry.create` before the
  factory runs (the factory's own range checks run right after, still before any work);
  ``Annotated[int, Range(1, None)]`` adds a range to an annotation;
* the framework's own keys (``block_size``, ``train.*``...): :data:`FRAMEWORK_OPTIONS`, checked by
  :func:`check_framework_options`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .targets import TARGETS


@dataclass(frozen=True)
class Range:
    """Inclusive bounds for a number (``None`` = open), usable as ``Annotated[int, Range(1, None)]``."""

    min: float | None = None
    max: float | None = None

    def check(self, value: Any) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"between {_num(self.min)} and {_num(self.max)}"
        if self.min is not None:
            return f">= {_num(self.min)}"
        return f"<= {_num(self.max)}" if self.max is not None else "any number"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


_NAMES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "booleans"),
    type(None): ("null", "nulls"),
    Path: ("a path", "paths"),
}


def conforms(value: Any, tp: Any) -> bool:
    """Whether a config value (plain Python: None, bool, int, float, str, list, dict) fits annotation ``tp``.
    Annotations it does not understand accept anything (the factory decides)."""
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        base, *meta = args
        if not conforms(value, base):
            return False
        return all(m.check(value) for m in meta if isinstance(m, Range))
    if origin in (typing.Union, _UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:  # a number too: Hydra reads `source.attribute=2015` as an int; the plugin decides
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if tp in (Path, "Path"):
        return isinstance(value, str | Path)
    if origin in (list, tuple, set, frozenset, Sequence, typing.Sequence) or tp in (list, tuple, Sequence):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            # a single item where a sequence is expected: plugins commonly accept and wrap it
            return bool(args) and args[0] is not Any and not _is_sequence_type(args[0]) and conforms(value, args[0])
        if not args or (origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] is Any):
            return True
        item = args[0]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return all(conforms(v, item) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        if len(args) == 2:
            return all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
        return True
    return True  # a class or construct the checker does not know: let the factory decide


def _is_sequence_type(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple)


try:  # the type of ``int | None`` (PEP 604 unions)
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover
    _UnionType = typing.Union  # type: ignore[assignment,misc]


def describe(tp: Any, plural: bool = False) -> str:
    """What an annotation allows, in words: ``Sequence[int]`` -> "a list of integers"."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        base, *meta = args
        ranges = [m.describe() for m in meta if isinstance(m, Range)]
        return describe(base, plural) + (f" {' and '.join(ranges)}" if ranges else "")
    if origin in (typing.Union, _UnionType):
        return " or ".join(dict.fromkeys(describe(a, plural) for a in args))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if tp in _NAMES:
        return _NAMES[tp][1 if plural else 0]
    if origin in (list, tuple, set, frozenset, Sequence, typing.Sequence) or tp in (list, tuple, Sequence):
        item = args[0] if args else Any
        return "lists" if plural else ("a list" if item is Any else f"a list of {describe(item, plural=True)}")
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        return "mappings" if plural else "a mapping"
    return "values" if plural else "a value"


def factory_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The resolved type annotations of a plugin factory's parameters ({} when they cannot be resolved)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable third-party annotations: no type checks, not an error
        return {}
    hints.pop("return", None)
    return hints


def factory_options(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The options (keyword arguments) a plugin factory takes, by name, with their resolved annotations:
    its named parameters and, for ``**kwargs: Unpack[SomeTypedDict]`` (PEP 692, e.g.
    ``**tuning: Unpack[cropseg.tuning.TuningOptions]``), the TypedDict's keys, each with its default from
    the first base class whose ``__init__`` names it. ``None`` when any keyword goes (a bare ``**kwargs``,
    or annotations that cannot be resolved) or the factory has no signature."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    hints = factory_hints(factory)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    out = {n: p.replace(annotation=hints.get(n, p.annotation)) for n, p in params.items() if p.kind in named}
    var = next((p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    if var is None:
        return out
    packed = _unpacked_typeddict(hints.get(var.name))
    if packed is None:
        return None
    defaults = _inherited_defaults(factory)
    for name, tp in typing.get_type_hints(packed, include_extras=True).items():
        if name not in out:
            default = defaults.get(name, inspect.Parameter.empty)
            out[name] = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp)
    return out


def _unpacked_typeddict(tp: Any) -> type | None:
    """``SomeTypedDict`` of an ``Unpack[SomeTypedDict]`` annotation, else None."""
    if tp is None or getattr(typing.get_origin(tp), "__name__", None) != "Unpack":
        return None
    (inner,) = typing.get_args(tp)
    return inner if typing.is_typeddict(inner) else None


def _inherited_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """For a class: parameter name -> default of its base classes' ``__init__`` (nearest base first)."""
    out: dict[str, Any] = {}
    for base in factory.__mro__[1:] if inspect.isclass(factory) else ():
        init = vars(base).get("__init__")
        try:
            params = inspect.signature(init).parameters if init is not None else {}
        except (TypeError, ValueError):
            continue
        for name, p in params.items():
            if p.default is not inspect.Parameter.empty:
                out.setdefault(name, p.default)
    return out


def check_factory_types(
    option_path: Callable[[str], str], factory: Callable[..., Any], options: Mapping[str, Any]
) -> None:
    """Raise :class:`ConfigError` for the first option whose value does not fit the factory's annotation
    (:func:`factory_options`: the options an ``Unpack``-ed TypedDict declares included). A value equal to
    the parameter's default is always accepted (``max_depth: int = None`` style)."""
    if not factory_hints(factory):
        return
    params = factory_options(factory) or {}
    for key, value in options.items():
        p = params.get(key)
        tp = None if p is None or isinstance(p.annotation, str) else p.annotation
        if tp is None or tp is inspect.Parameter.empty:
            continue
        if p is not None and p.default is not inspect.Parameter.empty and _same(value, p.default):
            continue
        if not conforms(value, tp):
            raise ConfigError(f"{option_path(key)}={_show(value)}: expected {describe(tp)}")


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(b, tuple) and isinstance(a, list):
            return list(b) == a
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001
        return False


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the framework's own keys ---------------------------------------------------------------------------

PositiveInt = typing.Annotated[int, Range(1, None)]

#: dotted key -> annotation (with ranges). Keys absent from the config are skipped.
FRAMEWORK_OPTIONS: dict[str, Any] = {
    "seed": int,
    # blocks below 16 px only add overhead; above 16384 px a block of 4 float32 bands passes 4 GiB
    "block_size": typing.Annotated[int, Range(16, 16384)],
    "train.max_pixels": PositiveInt | typing.Literal["all"] | None,
    "train.max_per_class": PositiveInt | typing.Literal["all"] | None,
    "train.balance": bool | typing.Literal["auto"],
    "train.seed": int,
    "train.spatial_block": PositiveInt,
    "output_dir": str | None,
    "cache_dir": str,
    "tracking.experiment": str,
    "tracking.run_name": str | None,
    "tracking.log_model": bool,
    "sweep.objective": str | None,
    "evaluate.target": typing.Literal[tuple(TARGETS)],
    "evaluate.crop_share_margin": typing.Annotated[float, Range(0, 1)],
    "preview.max_side": typing.Annotated[int, Range(16, 65536)],
}


def check_framework_options(cfg: Any) -> None:
    """Type- and range-check the framework's own keys of a composed config (see :data:`FRAMEWORK_OPTIONS`)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as exc:  # e.g. ${oc.env:UNSET}
        full_key = getattr(exc, "full_key", None)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{full_key}: {text}" if full_key else text) from None
    for key, tp in FRAMEWORK_OPTIONS.items():
        node: Any = container
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = _MISSING
                break
            node = node[part]
        if node is _MISSING:
            continue
        if not conforms(node, tp):
            raise ConfigError(f"{key}={_show(node)}: expected {describe(tp)}")


_MISSING = object()
