"""Retry policy: built-in defaults per failure class, and per-Job overrides from annotations.

Pure: ``policy_for`` never raises. A malformed ``kube-dlq.io/`` annotation becomes a
``PolicyError`` value, that one key keeps the base policy's value, and every other key applies.
The keys, the syntax of their values and the order they are applied in are documented in
``watcher.core.annotations``, which also parses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from watcher.core.annotations import (
    ANNOTATION_APP_BUDGET,
    ANNOTATION_ATTEMPT,
    ANNOTATION_AVOID_NODE,
    ANNOTATION_BACKOFF,
    ANNOTATION_BUDGET,
    ANNOTATION_CREATE_TOKEN,
    ANNOTATION_ENABLED,
    ANNOTATION_FIRST_FAILED_AT,
    ANNOTATION_HISTORY,
    ANNOTATION_INFRA_BUDGET,
    ANNOTATION_MAX_RETRIES,
    ANNOTATION_MEMORY_BUMP,
    ANNOTATION_NO_RETRY_CLASSES,
    ANNOTATION_OOM_MEMORY,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    ANNOTATION_PREFIX,
    ANNOTATION_QUEUE,
    ANNOTATION_REDRIVE_OF,
    ANNOTATION_REDRIVE_TOKEN,
    ANNOTATION_REQUIRE_NEVER_STARTED,
    ANNOTATION_RETRY_CLASSES,
    ANNOTATION_RETRY_OF,
    BackoffSpec,
    did_you_mean,
    parse_backoff,
    parse_bool,
    parse_class_list,
    parse_count,
    parse_duration,
    validate_queue,
)
from watcher.core.backoff import (
    DEFAULT_BASE_S,
    DEFAULT_CAP_S,
    DEFAULT_FACTOR,
    DEFAULT_JITTER,
    Jitter,
)
from watcher.core.errors import PolicyError
from watcher.core.memory import OomMemoryPolicy, parse_oom_memory
from watcher.core.model import CAPACITY_LOSS_CLASSES, FailureClass, JobSnapshot

__all__ = [
    "DEFAULT_APP_BUDGET",
    "DEFAULT_INFRA_BUDGET",
    "DEFAULT_QUEUE",
    "DEFAULT_TOTAL_BUDGET_S",
    "ClassPolicy",
    "RetryPolicy",
    "default_class_policy",
    "policy_for",
]

_IGNORED_KEYS: Final = frozenset(
    {
        ANNOTATION_ORIGINAL_UID,
        ANNOTATION_ORIGINAL_NAME,
        ANNOTATION_ATTEMPT,
        ANNOTATION_FIRST_FAILED_AT,
        ANNOTATION_HISTORY,
        ANNOTATION_ENABLED,
        ANNOTATION_RETRY_OF,
        ANNOTATION_CREATE_TOKEN,
        ANNOTATION_MEMORY_BUMP,
        ANNOTATION_REDRIVE_OF,
        ANNOTATION_REDRIVE_TOKEN,
    }
)

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
    require_never_started: frozenset[FailureClass] = frozenset()
    """Classes retried only when the workload never started (``Classification.started`` is
    "no"): a retry of one that ran may repeat its side effects (Airflow's rule)."""
    oom_memory: OomMemoryPolicy | None = None
    """Opt-in: retry oom_killed with more memory (``watcher.core.memory``); None = off, and
    oom_killed follows its class policy like any other class."""

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


# --- applying annotations ------------------------------------------------------------------------


def _with_backoff(spec: BackoffSpec, policy: ClassPolicy) -> ClassPolicy:
    """``policy`` with the parts ``spec`` gives; None parts keep the class's value."""
    base_s = policy.base_s if spec.base_s is None else spec.base_s
    cap_s = policy.cap_s if spec.cap_s is None else spec.cap_s
    if base_s > cap_s:
        # Only one side was given: the given side wins (validated together otherwise).
        if spec.cap_s is None:
            cap_s = base_s
        else:
            base_s = cap_s
    return dataclasses.replace(
        policy,
        base_s=base_s,
        cap_s=cap_s,
        factor=policy.factor if spec.factor is None else spec.factor,
        jitter=policy.jitter if spec.jitter is None else spec.jitter,
    )


def _set_retry_classes(policy: RetryPolicy, value: str) -> RetryPolicy:
    chosen = parse_class_list(value)
    return policy.with_classes(lambda fc, cp: dataclasses.replace(cp, retry=fc in chosen))


def _set_no_retry_classes(policy: RetryPolicy, value: str) -> RetryPolicy:
    excluded = parse_class_list(value)
    return policy.with_classes(
        lambda fc, cp: dataclasses.replace(cp, retry=False) if fc in excluded else cp
    )


def _set_max_retries(policy: RetryPolicy, value: str) -> RetryPolicy:
    count = parse_count(value)
    return policy.with_classes(
        lambda _, cp: dataclasses.replace(cp, max_attempts=count) if cp.retry else cp
    )


def _set_backoff(policy: RetryPolicy, value: str) -> RetryPolicy:
    spec = parse_backoff(value)
    return policy.with_classes(lambda _, cp: _with_backoff(spec, cp))


def _set_infra_budget(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, infra_budget=parse_count(value))


def _set_app_budget(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, app_budget=parse_count(value))


def _set_budget(policy: RetryPolicy, value: str) -> RetryPolicy:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return dataclasses.replace(policy, total_budget_s=seconds)


def _set_queue(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, queue=validate_queue(value.strip()))


def _set_avoid_node(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, avoid_failed_node=parse_bool(value))


def _set_require_never_started(policy: RetryPolicy, value: str) -> RetryPolicy:
    chosen = frozenset() if value.strip().lower() == "none" else parse_class_list(value)
    return dataclasses.replace(policy, require_never_started=chosen)


def _set_oom_memory(policy: RetryPolicy, value: str) -> RetryPolicy:
    return dataclasses.replace(policy, oom_memory=parse_oom_memory(value, policy.oom_memory))


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
    (ANNOTATION_REQUIRE_NEVER_STARTED, _set_require_never_started),
    (ANNOTATION_OOM_MEMORY, _set_oom_memory),
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
