"""The ``kube-dlq.io/`` annotation keys, and the parsers of annotation and config value text.

Pure and shared: ``watcher.core.policy`` applies the annotations to a retry policy, and
``watcher.app.config`` reads the same value syntax (durations, class lists, queue names, limits)
in the config file. Each parser raises ValueError with a message fit to show the user after the
key or field path.

Job annotations (all optional, prefix ``kube-dlq.io/``; ``policy_for`` applies them in this
order whatever the order on the Job)::

    retry-classes     comma list of failure classes; exactly these are retried, e.g.
                      "node_lost,preempted,app_error" (case and - vs _ do not matter)
    no-retry-classes  comma list of failure classes never retried; wins over retry-classes
    max-retries       integer 0..100: retries allowed per class, for every retried class
    backoff           comma list of parts, each optional, any order:
                        <duration>        first delay (base), e.g. 30s
                        x<factor>         multiplier per retry, 1..10, e.g. x2 or x1.5
                        max=<duration>    longest single delay (cap), e.g. max=10m
                        jitter=<mode>     full | equal | none
                      e.g. "30s,x2,max=10m" or "jitter=none"; parts left out keep each
                      class's value (a base above a class's cap raises that cap, a max below
                      a class's base lowers that base)
    infra-budget      integer 0..100: retries allowed in total over all infrastructure classes
    app-budget        integer 0..100: the same over all application classes
    budget            duration: how long after the first failure retries may still happen
    queue             dead-letter queue name, [a-z0-9._-]{1,63}
    avoid-node        true | false: re-create the Job away from the node its pod failed on
    require-never-started
                      comma list of failure classes retried only when the workload never
                      started (see watcher.core.classify.started), or "none"; replaces the
                      config's retry.require_never_started
    oom-memory        retry oom_killed with more memory: "factor=1.5,cap=8Gi,attempts=2"
                      (parts optional, over the config's retry.oom_memory), "on" or "off";
                      the syntax is in watcher.core.memory

Durations are a number with a unit s, m, h or d, or several such (90s, 5m, 1.5h, 1h30m, 2d);
a bare number is rejected because its unit would be a guess. Keys kube-dlq writes itself
(``original-uid``, ``original-name``, ``attempt``, ``first-failed-at``, ``history``,
``retry-of``, ``create-token``, ``memory-bump``, ``redrive-of``, ``redrive-token``) and the
scope switch ``enabled`` are accepted and ignored by ``policy_for``; any other
``kube-dlq.io/`` key is reported as unknown.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from watcher.core.backoff import JITTER_MODES, Jitter
from watcher.core.model import FailureClass

__all__ = [
    "ANNOTATION_APP_BUDGET",
    "ANNOTATION_ATTEMPT",
    "ANNOTATION_AVOID_NODE",
    "ANNOTATION_BACKOFF",
    "ANNOTATION_BUDGET",
    "ANNOTATION_CREATE_TOKEN",
    "ANNOTATION_ENABLED",
    "ANNOTATION_FIRST_FAILED_AT",
    "ANNOTATION_HISTORY",
    "ANNOTATION_INFRA_BUDGET",
    "ANNOTATION_MAX_RETRIES",
    "ANNOTATION_MEMORY_BUMP",
    "ANNOTATION_NO_RETRY_CLASSES",
    "ANNOTATION_OOM_MEMORY",
    "ANNOTATION_ORIGINAL_NAME",
    "ANNOTATION_ORIGINAL_UID",
    "ANNOTATION_PREFIX",
    "ANNOTATION_QUEUE",
    "ANNOTATION_REDRIVE_OF",
    "ANNOTATION_REDRIVE_TOKEN",
    "ANNOTATION_REQUIRE_NEVER_STARTED",
    "ANNOTATION_RETRY_CLASSES",
    "ANNOTATION_RETRY_OF",
    "FINALIZER_REDRIVE_ACK",
    "FINALIZER_RETRY_ACK",
    "MAX_DURATION_S",
    "MAX_FACTOR",
    "MAX_RETRIES_LIMIT",
    "QUEUE_NAME_RE",
    "BackoffSpec",
    "did_you_mean",
    "failure_class_named",
    "format_duration",
    "parse_backoff",
    "parse_bool",
    "parse_class_list",
    "parse_count",
    "parse_duration",
    "validate_queue",
]

ANNOTATION_PREFIX: Final = "kube-dlq.io/"

# Written by kube-dlq on the Jobs it re-creates (lineage); read back to rebuild the history.
ANNOTATION_ORIGINAL_UID: Final = ANNOTATION_PREFIX + "original-uid"
ANNOTATION_ORIGINAL_NAME: Final = ANNOTATION_PREFIX + "original-name"
ANNOTATION_ATTEMPT: Final = ANNOTATION_PREFIX + "attempt"
ANNOTATION_FIRST_FAILED_AT: Final = ANNOTATION_PREFIX + "first-failed-at"
ANNOTATION_HISTORY: Final = ANNOTATION_PREFIX + "history"
"""Earlier failed attempts of a re-created Job, as compact JSON (see ``watcher.core.manifest``)."""
ANNOTATION_RETRY_OF: Final = ANNOTATION_PREFIX + "retry-of"
"""The ticket id a retry Job was created from: a pointer to kube-dlq's create record."""
ANNOTATION_CREATE_TOKEN: Final = ANNOTATION_PREFIX + "create-token"
"""The random token of that create record: tells kube-dlq's Job from anyone else's of the
same name (``watcher.core.lineage``)."""
ANNOTATION_REDRIVE_OF: Final = ANNOTATION_PREFIX + "redrive-of"
"""``<queue>/<stream-id>``: the dead letter a ``dlq redrive`` Job re-runs (watcher.service.redrive);
a pointer only, checked against kube-dlq's redriving record (namespace, name, uid or token)."""
ANNOTATION_REDRIVE_TOKEN: Final = ANNOTATION_PREFIX + "redrive-token"
"""The random token of that redriving record, for a Job whose uid is not recorded yet."""
FINALIZER_REDRIVE_ACK: Final = ANNOTATION_PREFIX + "redrive-ack"
"""Finalizer on every redriven Job until the daemon has settled its entry (archived or back on
the queue): a Job deleted by its TTL before that would be created again by a second run."""
FINALIZER_RETRY_ACK: Final = ANNOTATION_PREFIX + "retry-ack"
"""Finalizer on every retry Job until kube-dlq has recorded it (docs/exactly-once.md): the Job
cannot vanish, and free its name, before a second firing of its ticket would collide with it."""
ANNOTATION_ENABLED: Final = ANNOTATION_PREFIX + "enabled"
"""Scope switch (label or annotation): "true" opts a Job in, "false" opts it out."""

# Set by users on their Jobs to override the policy.
ANNOTATION_RETRY_CLASSES: Final = ANNOTATION_PREFIX + "retry-classes"
ANNOTATION_NO_RETRY_CLASSES: Final = ANNOTATION_PREFIX + "no-retry-classes"
ANNOTATION_MAX_RETRIES: Final = ANNOTATION_PREFIX + "max-retries"
ANNOTATION_BACKOFF: Final = ANNOTATION_PREFIX + "backoff"
ANNOTATION_INFRA_BUDGET: Final = ANNOTATION_PREFIX + "infra-budget"
ANNOTATION_APP_BUDGET: Final = ANNOTATION_PREFIX + "app-budget"
ANNOTATION_BUDGET: Final = ANNOTATION_PREFIX + "budget"
ANNOTATION_QUEUE: Final = ANNOTATION_PREFIX + "queue"
ANNOTATION_AVOID_NODE: Final = ANNOTATION_PREFIX + "avoid-node"
ANNOTATION_REQUIRE_NEVER_STARTED: Final = ANNOTATION_PREFIX + "require-never-started"
ANNOTATION_OOM_MEMORY: Final = ANNOTATION_PREFIX + "oom-memory"
"""The OOM policy for this Job; its syntax is parsed in ``watcher.core.memory``."""
ANNOTATION_MEMORY_BUMP: Final = ANNOTATION_PREFIX + "memory-bump"
"""Written by kube-dlq on a retry Job whose memory it raised: what changed, old -> new."""

MAX_RETRIES_LIMIT: Final = 100
"""Upper bound for any retry count or budget, from config or annotation: a Job that failed a
hundred times will not be fixed by the hundred-and-first try, and a typo such as 1000000 must
not turn into an endless retry loop."""

MAX_FACTOR: Final = 10.0
"""Upper bound for the backoff factor; beyond x10 the cap is reached on the second retry."""

MAX_DURATION_S: Final = 30 * 86400.0
"""Upper bound for any duration (delays, budgets): 30 days. Longer values are typos."""

QUEUE_NAME_RE: Final = re.compile(r"[a-z0-9._-]{1,63}")
_DURATION_RE: Final = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_DURATION_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FACTOR_RE: Final = re.compile(r"x(\d+(?:\.\d+)?)")
_INT_RE: Final = re.compile(r"\d+")


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90s``, ``5m``, ``1.5h``, ``1h30m`` or ``2d``."""
    cleaned = text.strip().lower()
    if not _DURATION_RE.fullmatch(cleaned):
        raise ValueError(
            f"not a duration: {text!r} (use a number with a unit s, m, h or d: 90s, 5m, 1h30m)"
        )
    seconds = sum(float(num) * _UNIT_S[unit] for num, unit in _DURATION_PART_RE.findall(cleaned))
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than the limit of {format_duration(MAX_DURATION_S)}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``0.5s``, ``45s``, ``1m30s``, ``2h``, ``1d2h``."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 10:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def failure_class_named(name: str) -> FailureClass:
    """The FailureClass called ``name`` (case-insensitive, ``-`` and ``_`` alike)."""
    cleaned = name.strip().lower().replace("-", "_")
    try:
        return FailureClass(cleaned)
    except ValueError:
        raise ValueError(
            f"unknown failure class {name.strip()!r}"
            + did_you_mean(cleaned, [fc.value for fc in FailureClass], show_all=True)
        ) from None


def parse_class_list(text: str) -> frozenset[FailureClass]:
    """The classes in a comma list such as ``node_lost, preempted``; empty items are skipped."""
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if not names:
        raise ValueError("empty list of failure classes")
    return frozenset(failure_class_named(name) for name in names)


def validate_queue(name: str) -> str:
    """``name`` if it is a valid dead-letter queue name."""
    if not QUEUE_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid queue name {name!r}: use 1 to 63 of a-z, 0-9, '.', '_' and '-'")
    return name


def parse_count(text: str) -> int:
    """A retry count or budget: an integer from 0 to MAX_RETRIES_LIMIT."""
    cleaned = text.strip()
    if not _INT_RE.fullmatch(cleaned) or int(cleaned) > MAX_RETRIES_LIMIT:
        raise ValueError(f"must be an integer between 0 and {MAX_RETRIES_LIMIT}")
    return int(cleaned)


def parse_bool(text: str) -> bool:
    """``true`` or ``false``, in any case."""
    cleaned = text.strip().lower()
    if cleaned not in ("true", "false"):
        raise ValueError("must be true or false")
    return cleaned == "true"


@dataclass(frozen=True, slots=True)
class BackoffSpec:
    """The parts of a ``backoff`` annotation; None = keep the class's value."""

    base_s: float | None = None
    factor: float | None = None
    cap_s: float | None = None
    jitter: Jitter | None = None


def parse_backoff(text: str) -> BackoffSpec:
    """Parse ``30s,x2,max=10m,jitter=equal`` (every part optional, any order)."""
    spec = BackoffSpec()
    for raw in text.split(","):
        part = _backoff_part(raw.strip().lower())
        for name, label in _BACKOFF_PART_NAMES.items():
            value = getattr(part, name)
            if value is None:
                continue
            if getattr(spec, name) is not None:
                raise ValueError(f"{label} given twice")
            spec = dataclasses.replace(spec, **{name: value})
    if spec.base_s is not None and spec.cap_s is not None and spec.cap_s < spec.base_s:
        raise ValueError(
            f"max={format_duration(spec.cap_s)} is below the base delay "
            f"{format_duration(spec.base_s)}"
        )
    return spec


_BACKOFF_PART_NAMES: Final = {
    "base_s": "the base delay",
    "factor": "the factor (x...)",
    "cap_s": "max=",
    "jitter": "jitter=",
}


def _backoff_part(part: str) -> BackoffSpec:
    if not part:
        raise ValueError("empty part (expected e.g. 30s,x2,max=10m)")
    if part.startswith("max="):
        return BackoffSpec(cap_s=parse_duration(part.removeprefix("max=")))
    if part.startswith("jitter="):
        mode = part.removeprefix("jitter=")
        for known in JITTER_MODES:
            if mode == known:
                return BackoffSpec(jitter=known)
        raise ValueError(f"jitter must be one of {', '.join(JITTER_MODES)}, got {mode!r}")
    factor_match = _FACTOR_RE.fullmatch(part)
    if factor_match:
        factor = float(factor_match.group(1))
        if not 1.0 <= factor <= MAX_FACTOR:
            raise ValueError(f"factor {part!r} must be between x1 and x{MAX_FACTOR:g}")
        return BackoffSpec(factor=factor)
    try:
        return BackoffSpec(base_s=parse_duration(part))
    except ValueError:
        raise ValueError(
            f"unknown part {part!r} (expected <duration>, x<factor>, max=<duration> "
            "or jitter=full|equal|none)"
        ) from None


def did_you_mean(word: str, choices: Iterable[str], *, show_all: bool = False) -> str:
    """`` (did you mean X?)`` for the closest choice, or ``""``; the choices if ``show_all``.

    Close means a similar spelling, or a unique choice that starts with ``word`` (``oom``).
    """
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close and word:
        prefixed = [option for option in options if option.startswith(word)]
        close = prefixed if len(prefixed) == 1 else []
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (known: {', '.join(options)})" if show_all else ""
