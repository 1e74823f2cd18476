"""Build keyword-only dataclasses from plain YAML data, with errors a user can act on.

Stays free of torch and ray: a broken config must fail in a fraction of a second, before
either is imported. Every error names the dotted key, the value and what is allowed, and
suggests the nearest valid key for typos.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union

# numbers written as strings: PyYAML reads 1e-4 (no dot) as a string, and users quote numbers
# ("0.001", "32"); both kinds are read as the number they spell, never half of them
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_INT_TEXT = re.compile(r"[-+]?\d+")


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message says which and why."""


def nearest(name: object, options) -> str:
    """' (did you mean 'x'?)' for a typo, else ''."""
    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking keys and types field by field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of fields, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"{_join(where, key)}: unknown key{nearest(key, fields)}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where or 'config'}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}.{err}" if where else str(err)) from None


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints widen to floats, numbers written as
    strings ("0.001", "1e-3", "32") are read as numbers."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_name(tp)}"
        )
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{where}: {value!r} is not allowed{nearest(value, allowed)}; "
                f"choose one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: coerce(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_name(tp)}, got {value!r} ({type(value).__name__})")


def check(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Range check for ``__post_init__``: ``check(x > 0, 'steps', x, 'an integer > 0')``."""
    if not condition:
        raise ConfigError(f"{field}: {value!r} is invalid; must be {allowed}")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain YAML-able data (the inverse of ``build``)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
