"""Plain values, built faster than the generic library walks build them.

`plain`: a frozen record as ``dataclasses.asdict`` returns it, built without its walk (for
the model's msgspec Structs too: the dict ``asdict`` would give were they dataclasses).

``dataclasses.asdict`` recurses into every field of every record and deep-copies each leaf:
for the evidence of one failed Job (a dozen pod, container, condition and Event records) that
was the largest single cost of writing its outcome. The records of `watcher.core.model` are
flat frozen dataclasses whose fields are str, int, float, bool, None, or tuples of those or of
records, so `plain` reads each field once and copies nothing that is immutable.

The result equals ``dataclasses.asdict(record)`` (same keys in the same order, tuples kept as
tuples), for any dataclass: a field holding anything else (a list, a dict, an enum, an object)
sends that record through ``dataclasses.asdict`` itself, so the answer never differs, only the
time it takes.

`json_copy`: a deep copy of parsed JSON (a Job manifest), as ``copy.deepcopy`` makes it,
without its memo and dispatch per node.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Final

import msgspec

__all__ = ["json_copy", "plain"]

_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
"""Field names per dataclass or Struct type, in declaration order (what asdict iterates)."""


class _NotPlain(Exception):
    """A value the fast path does not copy itself; the caller falls back to asdict."""


def plain(record: Any) -> dict[str, Any]:
    """``dataclasses.asdict(record)``, for a dataclass or msgspec Struct instance ``record``."""
    try:
        return _record(record)
    except _NotPlain:
        if isinstance(record, msgspec.Struct):
            return {name: _asdict(getattr(record, name)) for name in record.__struct_fields__}
        return dataclasses.asdict(record)


def _asdict(value: Any) -> Any:
    """What ``dataclasses.asdict`` makes of a field's value, Structs read as records."""
    if isinstance(value, msgspec.Struct) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return plain(value)
    if type(value) in (list, tuple):
        return type(value)(_asdict(item) for item in value)
    if type(value) is dict:
        return {_asdict(k): _asdict(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _record(record: Any) -> dict[str, Any]:
    kind = type(record)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        if isinstance(record, msgspec.Struct):
            names = _FIELD_NAMES[kind] = record.__struct_fields__
        elif dataclasses.is_dataclass(record) and not isinstance(record, type):
            names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(record))
        else:
            raise _NotPlain
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if type(value) in _IMMUTABLE:
            out[name] = value
        elif type(value) is tuple:
            out[name] = tuple(_item(item) for item in value)
        else:
            out[name] = _record(value)
    return out


def _item(value: Any) -> Any:
    if type(value) in _IMMUTABLE:
        return value
    if type(value) is tuple:
        return tuple(_item(item) for item in value)
    return _record(value)


def json_copy(value: Any) -> Any:
    """A deep copy of `value`, equal to ``copy.deepcopy(value)``, made faster for parsed JSON.

    Plain dicts and lists are rebuilt and str, int, float, bool and None (immutable) shared;
    anything else (a tuple, a Mapping that is not a dict, any object) goes through
    ``copy.deepcopy``, so the copy shares nothing mutable with `value` whatever it holds.
    """
    kind = type(value)
    if kind is dict:
        return {
            (k if type(k) is str else copy.deepcopy(k)): (
                v if type(v) in _IMMUTABLE else json_copy(v)
            )
            for k, v in value.items()
        }
    if kind is list:
        return [v if type(v) in _IMMUTABLE else json_copy(v) for v in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)
