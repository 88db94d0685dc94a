"""Check ``model`` and ``trainer`` config values against the constructors' signatures, before any data is read.

A wrong key or a value of the wrong type (``trainer.max_epochs=abc``, ``model.num_ui_layers=two``,
``trainer.max_epochs=2.5``) otherwise fails late — after loading and kNN graphs — with an error that
names no key. :func:`check_config` raises :class:`ConfigError` naming the key, the value, what was
expected and where it is declared.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config key is unknown to its target, or its value has the wrong type."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Whether a resolved config value fits the annotation ``tp`` (ints are accepted for floats)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        args = typing.get_args(tp)
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if isinstance(value, dict) and "_target_" in value:
        return True  # a nested object, checked on its own
    if callable(tp) and isinstance(tp, type):
        return isinstance(value, tp) or isinstance(value, dict)
    return True  # an annotation this check does not understand: leave it to the constructor


def check_node(node: DictConfig, path: str) -> None:
    """Check every key of the config node ``path`` (with a ``_target_``) against its target's ``__init__``."""
    target = node.get("_target_")
    if target is None:
        return
    cls = get_class(target)
    sig = inspect.signature(cls.__init__ if isinstance(cls, type) else cls)
    try:
        hints = typing.get_type_hints(cls.__init__ if isinstance(cls, type) else cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: check names only
        hints = {}
    params = {k: p for k, p in sig.parameters.items() if k != "self"}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    where = f"{cls.__module__}.{cls.__qualname__}"
    for key in node:
        if str(key).startswith("_") and str(key).endswith("_"):
            continue
        full = f"{path}.{key}"
        if key not in params:
            if takes_any:
                continue
            names = ", ".join(sorted(params))
            raise ConfigError(f"{full}: {where} has no argument {key!r} (its arguments: {names})")
        value = node[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, dict) and "_target_" in value:
            check_node(node[key], full)
            continue
        tp = hints.get(key, params[key].annotation)
        if not _matches(value, tp):
            raise ConfigError(f"{full}={value!r}: expected {_type_name(tp)} ({where} argument {key!r}); "
                              f"fix it on the command line or in the config, e.g. {full}=<{_type_name(tp)}>")


def check_config(cfg: DictConfig) -> None:
    """Check ``cfg.model`` and ``cfg.trainer`` (and their nested targets) before anything is loaded."""
    for section in ("model", "trainer"):
        if section in cfg and isinstance(cfg[section], DictConfig):
            check_node(cfg[section], section)


__all__ = ["ConfigError", "check_config", "check_node"]
