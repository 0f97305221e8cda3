"""The ``retry.require_never_started`` and ``retry.oom_memory`` keys of the config file.

Kept apart from ``load.py`` (which calls them from ``_parse_retry``) so each stays small; the
value syntax is the annotations' (``watcher.core.annotations``, ``watcher.core.memory``), so a
value means the same in the config and on a Job.
"""

from __future__ import annotations

from watcher.app.config.fields import MISSING, Section, checked, describe, field_names
from watcher.core.annotations import MAX_RETRIES_LIMIT, failure_class_named
from watcher.core.errors import ConfigError
from watcher.core.memory import OomMemoryPolicy, parse_cap, parse_factor
from watcher.core.model import FailureClass

__all__ = ["parse_oom_memory_section", "parse_require_never_started"]

_OOM_KEYS = {"factor": "factor", "cap": "cap_bytes", "attempts": "attempts"}


def parse_require_never_started(s: Section, key: str) -> frozenset[FailureClass]:
    """A list of failure classes (``[app_error, oom_killed]``); absent or [] = none."""
    names = s.string_list(key, ())
    return frozenset(
        checked(failure_class_named, name, f"{s.path(key)}[{index}]")
        for index, name in enumerate(names)
    )


def parse_oom_memory_section(raw: object, path: str) -> OomMemoryPolicy | None:
    """``{factor: 1.5, cap: 8Gi, attempts: 2}``, each key optional; absent, null or false = off,
    true = on with the defaults."""
    if raw is MISSING or raw is None or raw is False:
        return None
    if raw is True:
        return OomMemoryPolicy()
    assert set(_OOM_KEYS.values()) == field_names(OomMemoryPolicy)
    s = Section(raw, path, _OOM_KEYS)
    d = OomMemoryPolicy()
    factor = s.get("factor")
    cap = s.get("cap")
    if isinstance(factor, bool) or not (factor is MISSING or isinstance(factor, int | float | str)):
        raise ConfigError(s.path("factor"), f"must be a number such as 1.5, got {describe(factor)}")
    if isinstance(cap, bool) or not (cap is MISSING or isinstance(cap, int | str)):
        raise ConfigError(s.path("cap"), f"must be a quantity such as 8Gi, got {describe(cap)}")
    return OomMemoryPolicy(
        # A YAML float's repr is its shortest exact decimal, so 1.5 stays exactly 3/2.
        factor=d.factor
        if factor is MISSING
        else checked(parse_factor, str(factor), s.path("factor")),
        cap_bytes=d.cap_bytes if cap is MISSING else checked(parse_cap, str(cap), s.path("cap")),
        attempts=s.integer("attempts", d.attempts, max_value=MAX_RETRIES_LIMIT),
    )
