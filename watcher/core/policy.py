"""Retry policy: built-in defaults per failure class, and per-Job overrides from annotations.

Pure: ``policy_for`` never raises. A malformed ``kube-dlq.io/`` annotation becomes a
``PolicyError`` value, that one key keeps the base policy's value, and every other key applies.

Job annotations (all optional, prefix ``kube-dlq.io/``; applied in this order whatever the
order on the Job)::

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

Durations are a number with a unit s, m, h or d, or several such (90s, 5m, 1.5h, 1h30m, 2d);
a bare number is rejected because its unit would be a guess. Keys kube-dlq writes itself
(``original-uid``, ``original-name``, ``attempt``, ``first-failed-at``, ``history``) and the
scope switch ``enabled`` are accepted and ignored here; any other ``kube-dlq.io/`` key is
reported as unknown.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from watcher.core.backoff import (
    DEFAULT_BASE_S,
    DEFAULT_CAP_S,
    DEFAULT_FACTOR,
    DEFAULT_JITTER,
    JITTER_MODES,
    Jitter,
)
from watcher.core.errors import PolicyError
from watcher.core.model import CAPACITY_LOSS_CLASSES, FailureClass, JobSnapshot

__all__ = [
    "ANNOTATION_APP_BUDGET",
    "ANNOTATION_ATTEMPT",
    "ANNOTATION_AVOID_NODE",
    "ANNOTATION_BACKOFF",
    "ANNOTATION_BUDGET",
    "ANNOTATION_ENABLED",
    "ANNOTATION_FIRST_FAILED_AT",
    "ANNOTATION_HISTORY",
    "ANNOTATION_INFRA_BUDGET",
    "ANNOTATION_MAX_RETRIES",
    "ANNOTATION_NO_RETRY_CLASSES",
    "ANNOTATION_ORIGINAL_NAME",
    "ANNOTATION_ORIGINAL_UID",
    "ANNOTATION_PREFIX",
    "ANNOTATION_QUEUE",
    "ANNOTATION_RETRY_CLASSES",
    "DEFAULT_APP_BUDGET",
    "DEFAULT_INFRA_BUDGET",
    "DEFAULT_QUEUE",
    "DEFAULT_TOTAL_BUDGET_S",
    "MAX_DURATION_S",
    "MAX_FACTOR",
    "MAX_RETRIES_LIMIT",
    "BackoffSpec",
    "ClassPolicy",
    "RetryPolicy",
    "default_class_policy",
    "did_you_mean",
    "failure_class_named",
    "format_duration",
    "parse_backoff",
    "parse_class_list",
    "parse_duration",
    "policy_for",
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

_IGNORED_KEYS: Final = frozenset(
    {
        ANNOTATION_ORIGINAL_UID,
        ANNOTATION_ORIGINAL_NAME,
        ANNOTATION_ATTEMPT,
        ANNOTATION_FIRST_FAILED_AT,
        ANNOTATION_HISTORY,
        ANNOTATION_ENABLED,
    }
)

MAX_RETRIES_LIMIT: Final = 100
"""Upper bound for any retry count or budget, from config or annotation: a Job that failed a
hundred times will not be fixed by the hundred-and-first try, and a typo such as 1000000 must
not turn into an endless retry loop."""

MAX_FACTOR: Final = 10.0
"""Upper bound for the backoff factor; beyond x10 the cap is reached on the second retry."""

MAX_DURATION_S: Final = 30 * 86400.0
"""Upper bound for any duration (delays, budgets): 30 days. Longer values are typos."""

DEFAULT_QUEUE: Final = "default"
"""Dead-letter queue used when neither the config nor the Job names one."""

DEFAULT_INFRA_BUDGET: Final = 10
"""Retries over all infrastructure classes together. Twice the largest per-class default, so a
Job hit by a node loss and then a preemption still gets its retries, but a Job that keeps
landing on broken capacity stops after ten."""

DEFAULT_APP_BUDGET: Final = 3
"""Retries over all application classes together. Application classes are not retried by
default; this bounds what a Job that opts in (``retry-classes``) can get."""

DEFAULT_TOTAL_BUDGET_S: Final = 24 * 3600.0
"""A Job stops being retried one day after its first failure: a result that late is rarely
still wanted, and the evidence in the dead letter is still fresh enough to act on."""

QUEUE_NAME_RE: Final = re.compile(r"[a-z0-9._-]{1,63}")
_DURATION_RE: Final = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_DURATION_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FACTOR_RE: Final = re.compile(r"x(\d+(?:\.\d+)?)")
_INT_RE: Final = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    """What to do with a Job that failed with one failure class."""

    retry: bool
    """Re-create the Job (True) or dead-letter it at once (False)."""
    max_attempts: int
    """How many times a Job may be re-created for this class (0 = never). Kept for classes
    with ``retry=False`` too: it applies when a config or annotation turns retries on."""
    base_s: float = DEFAULT_BASE_S
    """Delay before the first retry for this class, before jitter."""
    factor: float = DEFAULT_FACTOR
    """Each further retry of this class waits ``factor`` times longer."""
    cap_s: float = DEFAULT_CAP_S
    """Longest single delay."""
    jitter: Jitter = DEFAULT_JITTER
    """How the delay is randomised (see ``watcher.core.backoff``)."""


_CAPACITY_LOSS_MAX_ATTEMPTS: Final = 5
"""Retries of a class in CAPACITY_LOSS_CLASSES: a new pod elsewhere usually succeeds."""

_INFRA_MAX_ATTEMPTS: Final = 3
"""Retries of the other infrastructure classes: pressure, admission and network trouble can be
about the Job itself, so fewer tries."""

_APP_MAX_ATTEMPTS: Final = 2
"""Retries of an application class once a config or annotation enables them."""


def default_class_policy(failure_class: FailureClass) -> ClassPolicy:
    """The built-in policy of one class: infrastructure retries, application dead-letters."""
    if failure_class.is_infrastructure:
        lost = failure_class in CAPACITY_LOSS_CLASSES
        return ClassPolicy(
            retry=True, max_attempts=_CAPACITY_LOSS_MAX_ATTEMPTS if lost else _INFRA_MAX_ATTEMPTS
        )
    return ClassPolicy(retry=False, max_attempts=_APP_MAX_ATTEMPTS)


def _default_classes() -> tuple[tuple[FailureClass, ClassPolicy], ...]:
    return tuple((fc, default_class_policy(fc)) for fc in FailureClass)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The complete retry policy for one Job. Hashable; build variants with ``replace``."""

    classes: tuple[tuple[FailureClass, ClassPolicy], ...] = field(default_factory=_default_classes)
    """One entry per FailureClass, in enum order (checked on construction)."""
    infra_budget: int = DEFAULT_INFRA_BUDGET
    """Retries allowed over all infrastructure classes together."""
    app_budget: int = DEFAULT_APP_BUDGET
    """Retries allowed over all application classes together."""
    total_budget_s: float = DEFAULT_TOTAL_BUDGET_S
    """No retry may be due later than this long after the Job's first failure."""
    queue: str = DEFAULT_QUEUE
    """Dead-letter queue for this Job."""
    avoid_failed_node: bool = True
    """Re-create the Job with anti-affinity to the node its failed pod ran on."""
    respect_pod_failure_policy: bool = True
    """When the Job's own ``podFailurePolicy`` failed it (reason PodFailurePolicy), the owner
    has said this failure is final: dead-letter without retrying."""

    def __post_init__(self) -> None:
        found = tuple(fc for fc, _ in self.classes)
        if found != tuple(FailureClass):
            raise ValueError("RetryPolicy.classes must list every FailureClass once, in order")

    def for_class(self, failure_class: FailureClass) -> ClassPolicy:
        return self.classes[_CLASS_INDEX[failure_class]][1]

    def with_classes(
        self, change: Callable[[FailureClass, ClassPolicy], ClassPolicy]
    ) -> RetryPolicy:
        """A copy with ``change(class, policy)`` applied to every class."""
        return dataclasses.replace(
            self, classes=tuple((fc, change(fc, cp)) for fc, cp in self.classes)
        )

    def retried_classes(self) -> tuple[FailureClass, ...]:
        return tuple(fc for fc, cp in self.classes if cp.retry)


_CLASS_INDEX: Final = {fc: i for i, fc in enumerate(FailureClass)}


# --- value parsers, shared with watcher.app.config ----------------------------------------
# Each raises ValueError with a message fit to show the user after the key or field path.


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


def _parse_count(text: str) -> int:
    cleaned = text.strip()
    if not _INT_RE.fullmatch(cleaned) or int(cleaned) > MAX_RETRIES_LIMIT:
        raise ValueError(f"must be an integer between 0 and {MAX_RETRIES_LIMIT}")
    return int(cleaned)


def _parse_bool(text: str) -> bool:
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

    def apply(self, policy: ClassPolicy) -> ClassPolicy:
        base_s = policy.base_s if self.base_s is None else self.base_s
        cap_s = policy.cap_s if self.cap_s is None else self.cap_s
        if base_s > cap_s:
            # Only one side was given: the given side wins (validated together otherwise).
            if self.cap_s is None:
                cap_s = base_s
            else:
                base_s = cap_s
        return dataclasses.replace(
            policy,
            base_s=base_s,
            cap_s=cap_s,
            factor=policy.factor if self.factor is None else self.factor,
            jitter=policy.jitter if self.jitter is None else self.jitter,
        )


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


# --- applying annotations ------------------------------------------------------------------------


def _set_retry_classes(policy: RetryPolicy, value: str) -> RetryPolicy:
    chosen = parse_class_list(value)
    return policy.with_classes(lambda fc, cp: dataclasses.replace(cp, retry=fc in chosen))


def _set_no_retry_classes(policy: RetryPolicy, value: str) -> RetryPolicy:
    excluded = parse_class_list(value)
    return policy.with_classes(
        lambda fc, cp: dataclasses.replace(cp, retry=False) if fc in excluded else cp
    )


def _set_max_retries(policy: RetryPolicy, value: str) -> RetryPolicy:
    count = _parse_count(value)
    return policy.with_classes(
        lambda _, cp: dataclasses.replace(cp, max_attempts=count) if cp.retry else cp
    )


def _set_backoff(policy: RetryPolicy, value: str) -> RetryPolicy:
    spec = parse_backoff(value)
    return policy.with_classes(lambda _, cp: spec.apply(cp))


def _set_infra_budget(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, infra_budget=_parse_count(value))


def _set_app_budget(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, app_budget=_parse_count(value))


def _set_budget(policy: RetryPolicy, value: str) -> RetryPolicy:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return dataclasses.replace(policy, total_budget_s=seconds)


def _set_queue(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, queue=validate_queue(value.strip()))


def _set_avoid_node(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, avoid_failed_node=_parse_bool(value))


_APPLY_ORDER: Final[tuple[tuple[str, Callable[[RetryPolicy, str], RetryPolicy]], ...]] = (
    # Class selection first, so that max-retries and backoff see the final set of classes.
    (ANNOTATION_RETRY_CLASSES, _set_retry_classes),
    (ANNOTATION_NO_RETRY_CLASSES, _set_no_retry_classes),
    (ANNOTATION_MAX_RETRIES, _set_max_retries),
    (ANNOTATION_BACKOFF, _set_backoff),
    (ANNOTATION_INFRA_BUDGET, _set_infra_budget),
    (ANNOTATION_APP_BUDGET, _set_app_budget),
    (ANNOTATION_BUDGET, _set_budget),
    (ANNOTATION_QUEUE, _set_queue),
    (ANNOTATION_AVOID_NODE, _set_avoid_node),
)
_POLICY_KEYS: Final = tuple(key for key, _ in _APPLY_ORDER)


def policy_for(job: JobSnapshot, base: RetryPolicy) -> tuple[RetryPolicy, tuple[PolicyError, ...]]:
    """``base`` with the Job's ``kube-dlq.io/`` annotations applied, and what was wrong with them.

    Never raises: every malformed or unknown key yields one PolicyError and is skipped.
    """
    errors: list[PolicyError] = []
    policy = base
    for key, apply in _APPLY_ORDER:
        value = job.annotation(key)
        if value is None:
            continue
        try:
            policy = apply(policy, value)
        except ValueError as exc:
            errors.append(PolicyError(key=key, value=value, message=str(exc)))
    for key, value in job.annotations:
        known = key in _POLICY_KEYS or key in _IGNORED_KEYS
        if key.startswith(ANNOTATION_PREFIX) and not known:
            hint = did_you_mean(key, (*_POLICY_KEYS, *_IGNORED_KEYS))
            errors.append(PolicyError(key, value, "unknown kube-dlq.io annotation" + hint))
    return policy, tuple(errors)
