"""Retry or dead-letter: one pure function from a classified failure to a Decision.

Rules, first match wins:

1. the class is not retried by the policy                          -> DEAD_LETTER
2. the Job's own podFailurePolicy failed it, and policy respects it -> DEAD_LETTER
3. the class requires never-started and the workload started (or
   that is unknown)                                                -> DEAD_LETTER
4. the class's retries are used up (``max_attempts``)               -> DEAD_LETTER
5. the infrastructure or application budget is used up              -> DEAD_LETTER
6. OOM policy: no memory to raise, or every value at the cap        -> DEAD_LETTER
7. the retry would be due after the total time budget               -> DEAD_LETTER
8. otherwise                                                        -> RETRY after a backoff delay

With the OOM policy (``policy.oom_memory``), an oom_killed failure is retried whatever its
class policy says, ``oom_memory.attempts`` times; ``memory`` is the bump the caller computed
from the failed Job's manifest (``watcher.core.memory.bump_memory``), and its changes are named
in the RETRY reason.

Running out of retries is an outcome, not an error: it is a Decision whose reason names the
limit that was hit. Counts come from ``history``, the earlier failed attempts of the same
logical Job; entries whose attempt number is not below ``attempt`` are ignored, so passing a
history that already contains the current failure does not count it twice.
"""

from __future__ import annotations

import dataclasses
import random

from watcher.core.annotations import format_duration
from watcher.core.backoff import compute_delay
from watcher.core.memory import MemoryBump, OomMemoryPolicy, format_quantity
from watcher.core.model import (
    Action,
    AttemptRecord,
    Classification,
    Decision,
    FailureClass,
    Started,
)
from watcher.core.policy import RetryPolicy

__all__ = ["decide"]


def decide(
    classification: Classification,
    policy: RetryPolicy,
    history: tuple[AttemptRecord, ...],
    *,
    attempt: int,
    now: float,
    first_failed_at: float,
    pod_failure_policy_failed: bool,
    rng: random.Random,
    memory: MemoryBump | None = None,
) -> Decision:
    """Decide what happens to the Job whose attempt number ``attempt`` (1 = original) failed.

    ``now`` and ``first_failed_at`` are unix seconds; ``first_failed_at`` is when the logical
    Job failed for the first time (equal to the current failure's time on attempt 1). ``rng``
    draws the jitter and is only consumed for a RETRY.
    """
    failure_class = classification.failure_class
    name = failure_class.value
    class_policy = policy.for_class(failure_class)
    oom = policy.oom_memory if failure_class is FailureClass.OOM_KILLED else None
    if oom is not None:
        # The opt-in is the user's say on this class: retried, with its own count.
        class_policy = dataclasses.replace(class_policy, retry=True, max_attempts=oom.attempts)

    def dead_letter(reason: str) -> Decision:
        return Decision(action=Action.DEAD_LETTER, reason=reason, attempt=attempt)

    if not class_policy.retry:
        return dead_letter(f"{name} is not retried by policy")
    if pod_failure_policy_failed and policy.respect_pod_failure_policy:
        return dead_letter("the Job's own podFailurePolicy failed it; not retried")
    if failure_class in policy.require_never_started and classification.started is not Started.NO:
        return dead_letter(
            f"{name} is retried only if the workload never started, and it "
            + ("did" if classification.started is Started.YES else "may have (unknown)")
        )

    earlier = tuple(record for record in history if record.attempt < attempt)
    class_retries = sum(1 for record in earlier if record.failure_class == failure_class)
    if class_retries >= class_policy.max_attempts:
        if oom is not None:
            return dead_letter(
                f"{name}: memory bumps exhausted ({class_retries} of {oom.attempts} used)"
            )
        return dead_letter(
            f"{name} retries exhausted ({class_retries} of {class_policy.max_attempts} used)"
        )

    infra = failure_class.is_infrastructure
    kind, budget = (
        ("infrastructure", policy.infra_budget) if infra else ("application", policy.app_budget)
    )
    kind_retries = sum(1 for record in earlier if record.failure_class.is_infrastructure == infra)
    if kind_retries >= budget:
        return dead_letter(f"{kind} retry budget exhausted ({kind_retries} of {budget} used)")

    with_memory = ""
    if oom is not None:
        refusal = _memory_refusal(oom, memory)
        if refusal:
            return dead_letter(f"{name}: {refusal}")
        with_memory = f" with more memory ({memory.summary})" if memory else ""

    retry_number = class_retries + 1
    delay = compute_delay(
        retry_number,
        base_s=class_policy.base_s,
        factor=class_policy.factor,
        cap_s=class_policy.cap_s,
        jitter=class_policy.jitter,
        rng=rng,
    )
    deadline = first_failed_at + policy.total_budget_s
    if now + delay > deadline:
        return dead_letter(
            f"total time budget of {format_duration(policy.total_budget_s)} exhausted: "
            f"a retry in {format_duration(delay)} would be due after it ends"
        )
    return Decision(
        action=Action.RETRY,
        reason=(
            f"{name}: retry {retry_number} of {class_policy.max_attempts} "
            f"in {format_duration(delay)}{with_memory}"
        ),
        attempt=attempt,
        delay_s=delay,
    )


def _memory_refusal(oom: OomMemoryPolicy, memory: MemoryBump | None) -> str:
    """Why the OOM policy cannot retry with more memory, or "" when it can."""
    if memory is None or memory.found == 0:
        return "the Job sets no memory limit or request to raise"
    if memory.at_cap:
        return f"memory is at the cap of {format_quantity(oom.cap_bytes)}; not retried"
    return ""
