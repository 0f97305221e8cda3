"""Retry or dead-letter: one pure function from a classified failure to a Decision.

Rules, first match wins:

1. the class is not retried by the policy                          -> DEAD_LETTER
2. the Job's own podFailurePolicy failed it, and policy respects it -> DEAD_LETTER
3. the class's retries are used up (``max_attempts``)               -> DEAD_LETTER
4. the infrastructure or application budget is used up              -> DEAD_LETTER
5. the retry would be due after the total time budget               -> DEAD_LETTER
6. otherwise                                                        -> RETRY after a backoff delay

Running out of retries is an outcome, not an error: it is a Decision whose reason names the
limit that was hit. Counts come from ``history``, the earlier failed attempts of the same
logical Job; entries whose attempt number is not below ``attempt`` are ignored, so passing a
history that already contains the current failure does not count it twice.
"""

from __future__ import annotations

import random

from watcher.core.annotations import format_duration
from watcher.core.backoff import compute_delay
from watcher.core.model import Action, AttemptRecord, Classification, Decision
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
) -> Decision:
    """Decide what happens to the Job whose attempt number ``attempt`` (1 = original) failed.

    ``now`` and ``first_failed_at`` are unix seconds; ``first_failed_at`` is when the logical
    Job failed for the first time (equal to the current failure's time on attempt 1). ``rng``
    draws the jitter and is only consumed for a RETRY.
    """
    failure_class = classification.failure_class
    name = failure_class.value
    class_policy = policy.for_class(failure_class)

    def dead_letter(reason: str) -> Decision:
        return Decision(action=Action.DEAD_LETTER, reason=reason, attempt=attempt)

    if not class_policy.retry:
        return dead_letter(f"{name} is not retried by policy")
    if pod_failure_policy_failed and policy.respect_pod_failure_policy:
        return dead_letter("the Job's own podFailurePolicy failed it; not retried")

    earlier = tuple(record for record in history if record.attempt < attempt)
    class_retries = sum(1 for record in earlier if record.failure_class == failure_class)
    if class_retries >= class_policy.max_attempts:
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
            f"in {format_duration(delay)}"
        ),
        attempt=attempt,
        delay_s=delay,
    )
