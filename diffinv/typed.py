r"""One typed reader for every option that comes from YAML or ``--set KEY=VALUE``.

Two steps, used by problem presets, ``--set`` overrides and the compare/solve/batch commands alike:

1. :func:`load_yaml` reads text with **YAML 1.2 number rules**: ``5e-2``, ``1E3``, ``.5`` and ``1.`` are
   floats (PyYAML implements YAML 1.1, where ``5e-2`` without a dot is the *string* "5e-2"), ``0x1F`` and
   ``0o17`` are integers; ``yes``/``no``/``on``/``off`` stay strings (only ``true``/``false`` are booleans).
2. :func:`coerce` checks a value against the type annotation of the dataclass field (or constructor
   parameter) it is for, and returns it in that type: an ``int`` field takes an integer or an integral
   float (``1e3`` → 1000), a ``float`` field any number, ``bool`` only ``true``/``false``, ``str`` a string,
   ``Literal[...]`` one of its values, ``X | None`` also ``null``, ``tuple[X, ...]`` a list or a comma
   separated string. A mismatch raises one ``ValueError`` line naming the key and the expected type,
   e.g. ``samplers.dps.zeta: expected a number, got 'abc'``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any, Literal, Union

import yaml

_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                           |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
_INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class _Loader12(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's int / float / bool resolvers."""


_Loader12.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v
                                         if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:int",
                                                        "tag:yaml.org,2002:bool")]
                                     for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader12.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))
_Loader12.add_implicit_resolver("tag:yaml.org,2002:int", _INT_12, list("-+0123456789"))
_Loader12.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 16) if text.startswith("0x") else int(text)


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


_Loader12.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader12.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str) -> Any:
    """Parse YAML text with YAML 1.2 number and boolean rules (module docstring)."""
    return yaml.load(text, Loader=_Loader12)  # noqa: S506 - a SafeLoader subclass


def parse_value(text: str) -> Any:
    """The value of one ``--set KEY=VALUE`` (read as YAML 1.2; an empty value is the empty string)."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    return "" if value is None and text.strip() not in ("null", "~", "Null", "NULL") else value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(_describe(a) for a in args)
        return text + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against (converted to) the annotation ``tp``; one-line ValueError naming ``key``."""
    origin = typing.get_origin(tp)
    bad = ValueError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ValueError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise bad
    if origin in (tuple, list):
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [Any]
        items = [parse_value(v) if isinstance(v, str) and args[0] is not str else v for v in items]
        out = [coerce(v, args[0], key) for v in items]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def parameter_types(func: Any) -> dict[str, Any]:
    """Resolved annotations of a function's parameters (``Any`` where unannotated)."""
    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError):
        hints = {}
    return {name: hints.get(name, Any) for name in inspect.signature(func).parameters}


def coerce_options(types_by_name: dict[str, Any], options: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Every option coerced to its type (unknown names are left to the caller's key check)."""
    return {k: coerce(v, types_by_name[k], f"{prefix}{k}") if k in types_by_name else v
            for k, v in options.items()}
