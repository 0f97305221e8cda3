"""The building blocks of the config loader: typed, path-naming reads of one YAML mapping.

`Section` wraps one mapping of the document: it rejects unknown keys up front (with a "did you
mean" hint), then hands out checked values. Every error is a `ConfigError` whose message starts
with the full path of the offending field. `StrictLoader` is a YAML SafeLoader that also
rejects a key given twice in one mapping.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Final, TypeVar

import yaml

from watcher.core.annotations import MAX_DURATION_S, did_you_mean, format_duration, parse_duration
from watcher.core.backoff import JITTER_MODES, Jitter
from watcher.core.errors import ConfigError
from watcher.core.redis_url import parse_redis_url
from watcher.core.settings import LOG_LEVELS, LogLevel

MISSING: Final[Any] = object()
_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)


class Section:
    """One mapping of the document: rejects unknown keys up front, then hands out values."""

    def __init__(self, raw: object, path: str, known: Iterable[str], *, what: str = "key") -> None:
        if raw is None or raw is MISSING:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(path, f"must be a mapping, got {describe(raw)}")
        self._path = path
        self._raw: Mapping[Any, object] = raw
        known_list = sorted(known)
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(self.path(str(key)), f"{what}s must be strings")
            if key not in known_list:
                raise ConfigError(
                    self.path(key), f"unknown {what}{did_you_mean(key, known_list, show_all=True)}"
                )

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def get(self, key: str) -> object:
        return self._raw.get(key, MISSING)

    def string(
        self,
        key: str,
        default: str | None,
        *,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str:
        value = self.get(key)
        if value is MISSING:
            if default is None:
                raise ConfigError(self.path(key), "required")
            return default
        return string_value(value, self.path(key), pattern=pattern, hint=hint)

    def optional_string(self, key: str) -> str | None:
        value = self.get(key)
        if value is MISSING or value is None:
            return None
        text = string_value(value, self.path(key))
        if not text.strip():
            raise ConfigError(self.path(key), "must not be empty (leave it out or use null)")
        return text

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key)
        if value is MISSING:
            return default
        if not isinstance(value, list):
            raise ConfigError(self.path(key), f"must be a list of strings, got {describe(value)}")
        items = tuple(string_value(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value))
        for index, item in enumerate(items):
            if not item.strip():
                raise ConfigError(f"{self.path(key)}[{index}]", "must not be empty")
        return items

    def choice(self, key: str, default: _S, choices: tuple[_S, ...]) -> _S:
        value = self.get(key)
        if value is MISSING:
            return default
        for choice in choices:
            if value == choice:
                return choice
        raise ConfigError(
            self.path(key), f"must be one of {', '.join(choices)}, got {describe(value)}"
        )

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.path(key), f"must be true or false, got {describe(value)}")
        return value

    def integer(
        self, key: str, default: int, *, min_value: int = 0, max_value: int | None = None
    ) -> int:
        value = self.get(key)
        if value is MISSING:
            return default
        in_range = max_value is None or (isinstance(value, int) and value <= max_value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < min_value
            or not in_range
        ):
            bounds = (
                f">= {min_value}" if max_value is None else f"between {min_value} and {max_value}"
            )
            raise ConfigError(self.path(key), f"must be an integer {bounds}, got {describe(value)}")
        return value

    def number(self, key: str, default: float, *, min_value: float, max_value: float) -> float:
        value = self.get(key)
        if value is MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not min_value <= value <= max_value
        ):
            raise ConfigError(
                self.path(key),
                f"must be a number between {min_value:g} and {max_value:g}, got {describe(value)}",
            )
        return float(value)

    def duration(
        self,
        key: str,
        default: float,
        *,
        positive: bool = False,
        max_s: float = MAX_DURATION_S,
    ) -> float:
        value = self.get(key)
        if value is MISSING:
            return default
        return duration_value(value, self.path(key), positive=positive, max_s=max_s)

    def optional_duration(self, key: str, default: float | None, *, max_s: float) -> float | None:
        """A positive duration, or null for "none"."""
        value = self.get(key)
        if value is MISSING:
            return default
        if value is None:
            return None
        return duration_value(value, self.path(key), positive=True, max_s=max_s)

    def duration_list(
        self, key: str, default: tuple[float, ...], *, max_s: float
    ) -> tuple[float, ...]:
        """A non-empty list of positive durations."""
        value = self.get(key)
        if value is MISSING:
            return default
        if not isinstance(value, list) or not value:
            raise ConfigError(
                self.path(key), f"must be a non-empty list of durations, got {describe(value)}"
            )
        return tuple(
            duration_value(v, f"{self.path(key)}[{i}]", positive=True, max_s=max_s)
            for i, v in enumerate(value)
        )


def string_value(
    value: object, path: str, *, pattern: re.Pattern[str] | None = None, hint: str = ""
) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {describe(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigError(path, f"must be {hint}, got {value!r}")
    return value


def duration_value(value: object, path: str, *, positive: bool, max_s: float) -> float:
    if isinstance(value, str):
        seconds = checked(parse_duration, value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float, e.g. 400 digits: out of range anyway
            seconds = math.inf
    else:
        raise ConfigError(
            path, f"must be seconds or a duration like 90s, 5m, 1h, got {describe(value)}"
        )
    if not 0 <= seconds <= max_s or (positive and seconds == 0):
        low = "longer than 0s" if positive else "at least 0s"
        limit = format_duration(max_s)
        raise ConfigError(path, f"must be {low} and at most {limit}, got {describe(value)}")
    return seconds


def log_level(value: object, path: str) -> LogLevel:
    if isinstance(value, str):
        cleaned = value.strip().lower()
        for level in LOG_LEVELS:
            if cleaned == level:
                return level
    choices = ", ".join(LOG_LEVELS)
    raise ConfigError(path, f"must be one of {choices}, got {describe(value)}")


def jitter_mode(value: str) -> Jitter:
    for mode in JITTER_MODES:
        if value == mode:
            return mode
    raise AssertionError(value)  # pragma: no cover - choice() only returns JITTER_MODES


def check_redis_url(url: str, path: str) -> None:
    # One grammar for the loader and the client (watcher.core.redis_url); it never echoes the
    # URL, which may carry a password.
    parse_redis_url(url, path)


def checked(parse: Callable[[str], _T], value: str, path: str) -> _T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


def field_names(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (the later would win silently)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor" may be overridden by explicit keys, as YAML intends
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable) or isinstance(key, list | dict):
            # "? [a, b]" is legal YAML but no Python dict key; say so as a YAML error.
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found a {type(key).__name__} as a key",
                key_node.start_mark,
            )
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
