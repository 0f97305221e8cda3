"""decide: which limit stops a retry, and the delay of the retries that go ahead."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from watcher.core.backoff import compute_delay
from watcher.core.decide import decide
from watcher.core.model import Action, AttemptRecord, Classification, Decision, FailureClass
from watcher.core.policy import ClassPolicy, RetryPolicy

FC = FailureClass
NOW = 1_800_000_000.0

# Jitter off, so delays in the tables are exact: 30 s, 60 s, 120 s, ... capped at 900 s.
EXACT = RetryPolicy().with_classes(lambda _, cp: dataclasses.replace(cp, jitter="none"))


def with_class(policy: RetryPolicy, fc: FailureClass, **changes: Any) -> RetryPolicy:
    return policy.with_classes(
        lambda other, cp: dataclasses.replace(cp, **changes) if other is fc else cp
    )


def history(*classes: FailureClass) -> tuple[AttemptRecord, ...]:
    """Earlier failures, attempts 1..n, one minute apart, ending a minute before NOW."""
    n = len(classes)
    return tuple(
        AttemptRecord(
            attempt=i + 1,
            job_name=f"nightly-{i + 1}",
            job_uid=f"uid-{i + 1}",
            failure_class=fc,
            reason="earlier failure",
            failed_at=NOW - 60.0 * (n - i),
        )
        for i, fc in enumerate(classes)
    )


def run(
    failure_class: FailureClass,
    *,
    policy: RetryPolicy = EXACT,
    earlier: tuple[AttemptRecord, ...] = (),
    attempt: int | None = None,
    first_failed_at: float | None = None,
    pod_failure_policy_failed: bool = False,
    seed: int = 0,
) -> Decision:
    return decide(
        Classification(failure_class, reason="test"),
        policy,
        earlier,
        attempt=len(earlier) + 1 if attempt is None else attempt,
        now=NOW,
        first_failed_at=(earlier[0].failed_at if earlier else NOW)
        if first_failed_at is None
        else first_failed_at,
        pod_failure_policy_failed=pod_failure_policy_failed,
        rng=random.Random(seed),
    )


OOM_RETRIED = with_class(EXACT, FC.OOM_KILLED, retry=True)
APP_ON = EXACT.with_classes(
    lambda fc, cp: cp if fc.is_infrastructure else dataclasses.replace(cp, retry=True)
)


@pytest.mark.parametrize(
    ("kwargs", "action", "reason", "delay_s"),
    [
        pytest.param(
            {"failure_class": FC.OOM_KILLED},
            Action.DEAD_LETTER,
            "oom_killed is not retried by policy",
            0.0,
            id="application-class-dead-letters",
        ),
        pytest.param(
            {"failure_class": FC.PREEMPTED, "policy": with_class(EXACT, FC.PREEMPTED, retry=False)},
            Action.DEAD_LETTER,
            "preempted is not retried by policy",
            0.0,
            id="infra-class-turned-off",
        ),
        pytest.param(
            {"failure_class": FC.NODE_LOST},
            Action.RETRY,
            "node_lost: retry 1 of 5 in 30s",
            30.0,
            id="first-infra-failure-retries",
        ),
        pytest.param(
            {"failure_class": FC.NODE_LOST, "pod_failure_policy_failed": True},
            Action.DEAD_LETTER,
            "the Job's own podFailurePolicy failed it; not retried",
            0.0,
            id="pod-failure-policy-respected",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "pod_failure_policy_failed": True,
                "policy": dataclasses.replace(EXACT, respect_pod_failure_policy=False),
            },
            Action.RETRY,
            "node_lost: retry 1 of 5 in 30s",
            30.0,
            id="pod-failure-policy-overridden",
        ),
        pytest.param(
            {"failure_class": FC.OOM_KILLED, "pod_failure_policy_failed": True},
            Action.DEAD_LETTER,
            "oom_killed is not retried by policy",
            0.0,
            id="class-rule-comes-first",
        ),
        pytest.param(
            {"failure_class": FC.EVICTED, "earlier": history(FC.EVICTED, FC.EVICTED)},
            Action.RETRY,
            "evicted: retry 3 of 3 in 2m",
            120.0,
            id="last-class-retry-allowed",
        ),
        pytest.param(
            {"failure_class": FC.EVICTED, "earlier": history(FC.EVICTED, FC.EVICTED, FC.EVICTED)},
            Action.DEAD_LETTER,
            "evicted retries exhausted (3 of 3 used)",
            0.0,
            id="class-retries-exhausted",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "policy": with_class(EXACT, FC.NODE_LOST, max_attempts=0),
            },
            Action.DEAD_LETTER,
            "node_lost retries exhausted (0 of 0 used)",
            0.0,
            id="zero-attempts-allowed",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "earlier": history(FC.PREEMPTED, FC.EVICTED, FC.PREEMPTED),
            },
            Action.RETRY,
            "node_lost: retry 1 of 5 in 30s",
            30.0,
            id="other-classes-do-not-count-per-class",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "earlier": history(FC.PREEMPTED, FC.EVICTED, FC.PREEMPTED),
                "policy": dataclasses.replace(EXACT, infra_budget=3),
            },
            Action.DEAD_LETTER,
            "infrastructure retry budget exhausted (3 of 3 used)",
            0.0,
            id="infra-budget-exhausted",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "earlier": history(FC.APP_ERROR, FC.OOM_KILLED, FC.APP_ERROR),
                "policy": dataclasses.replace(APP_ON, infra_budget=1),
            },
            Action.RETRY,
            "node_lost: retry 1 of 5 in 30s",
            30.0,
            id="app-failures-do-not-use-infra-budget",
        ),
        pytest.param(
            {
                "failure_class": FC.APP_ERROR,
                "earlier": history(FC.OOM_KILLED, FC.NODE_LOST, FC.APP_ERROR),
                "policy": dataclasses.replace(APP_ON, app_budget=2),
            },
            Action.DEAD_LETTER,
            "application retry budget exhausted (2 of 2 used)",
            0.0,
            id="app-budget-exhausted",
        ),
        pytest.param(
            {
                "failure_class": FC.OOM_KILLED,
                "earlier": history(FC.NODE_LOST, FC.NODE_LOST, FC.NODE_LOST),
                "policy": dataclasses.replace(OOM_RETRIED, app_budget=1),
            },
            Action.RETRY,
            "oom_killed: retry 1 of 2 in 30s",
            30.0,
            id="infra-failures-do-not-use-app-budget",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "policy": dataclasses.replace(EXACT, total_budget_s=3600.0),
                "first_failed_at": NOW - 3580.0,
            },
            Action.DEAD_LETTER,
            "total time budget of 1h exhausted: a retry in 30s would be due after it ends",
            0.0,
            id="time-budget-exhausted-by-the-delay",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "policy": dataclasses.replace(EXACT, total_budget_s=3600.0),
                "first_failed_at": NOW - 3570.0,
            },
            Action.RETRY,
            "node_lost: retry 1 of 5 in 30s",
            30.0,
            id="time-budget-exactly-enough",
        ),
        pytest.param(
            {
                "failure_class": FC.NODE_LOST,
                "policy": dataclasses.replace(EXACT, total_budget_s=3600.0),
                "first_failed_at": NOW - 7200.0,
            },
            Action.DEAD_LETTER,
            "total time budget of 1h exhausted: a retry in 30s would be due after it ends",
            0.0,
            id="time-budget-long-gone",
        ),
    ],
)
def test_decision_table(
    kwargs: dict[str, Any], action: Action, reason: str, delay_s: float
) -> None:
    decision = run(**kwargs)
    assert (decision.action, decision.reason, decision.delay_s) == (action, reason, delay_s)


@pytest.mark.parametrize(
    ("earlier", "expected_delay"),
    [
        pytest.param((), 30.0, id="first-retry-base"),
        pytest.param((FC.NODE_LOST,), 60.0, id="second-retry-doubles"),
        pytest.param((FC.NODE_LOST,) * 3, 240.0, id="fourth-retry-8x"),
        pytest.param((FC.PREEMPTED,) * 4, 30.0, id="other-class-history-keeps-base"),
        pytest.param((FC.NODE_LOST, FC.PREEMPTED, FC.NODE_LOST), 120.0, id="mixed-history"),
    ],
)
def test_delay_grows_with_retries_of_the_same_class(
    earlier: tuple[FailureClass, ...], expected_delay: float
) -> None:
    decision = run(FC.NODE_LOST, earlier=history(*earlier))
    assert decision.action is Action.RETRY
    assert decision.delay_s == expected_delay


def test_delay_is_capped_per_class() -> None:
    policy = with_class(EXACT, FC.NODE_LOST, max_attempts=20, cap_s=100.0)
    decision = run(FC.NODE_LOST, policy=policy, earlier=history(*([FC.NODE_LOST] * 8)))
    assert decision.delay_s == 100.0


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(5)])
def test_jittered_delay_uses_the_class_settings_and_the_given_rng(seed: int) -> None:
    policy = with_class(RetryPolicy(), FC.PREEMPTED, base_s=10.0, factor=3.0, jitter="equal")
    decision = run(FC.PREEMPTED, policy=policy, earlier=history(FC.PREEMPTED), seed=seed)
    expected = compute_delay(
        2, base_s=10.0, factor=3.0, cap_s=900.0, jitter="equal", rng=random.Random(seed)
    )
    assert decision.delay_s == expected
    assert 15.0 <= decision.delay_s <= 30.0


def test_history_entries_at_or_after_the_current_attempt_are_ignored() -> None:
    # Given a history that (by mistake) already contains the current failure, attempt 3
    earlier = history(FC.EVICTED, FC.EVICTED, FC.EVICTED)
    # When attempt 3 is decided
    decision = run(FC.EVICTED, earlier=earlier, attempt=3)
    # Then only attempts 1 and 2 count: this is the 3rd and last evicted retry
    assert decision.action is Action.RETRY
    assert decision.reason == "evicted: retry 3 of 3 in 2m"


def test_decision_carries_the_failed_attempt() -> None:
    retry = run(FC.NODE_LOST, earlier=history(FC.NODE_LOST))
    dead = run(FC.OOM_KILLED, earlier=history(FC.NODE_LOST, FC.NODE_LOST))
    assert (retry.attempt, dead.attempt) == (2, 3)


def test_exhaustion_with_a_huge_history_is_a_value_not_an_exception() -> None:
    earlier = history(*([FC.NODE_LOST] * 1000))
    decision = run(FC.NODE_LOST, earlier=earlier)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason == "node_lost retries exhausted (1000 of 5 used)"


def test_dead_letter_does_not_consume_randomness() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    decide(
        Classification(FC.OOM_KILLED, reason="test"),
        RetryPolicy(),
        (),
        attempt=1,
        now=NOW,
        first_failed_at=NOW,
        pod_failure_policy_failed=False,
        rng=rng,
    )
    assert rng.getstate() == state


def test_unbounded_class_policy_is_still_stopped_by_budget() -> None:
    # Given a class allowed the maximum of 100 retries but an infrastructure budget of 10
    policy = with_class(RetryPolicy(), FC.PREEMPTED, max_attempts=100)
    assert policy.for_class(FC.PREEMPTED) == ClassPolicy(retry=True, max_attempts=100)
    # When the eleventh preemption comes in
    decision = run(FC.PREEMPTED, policy=policy, earlier=history(*([FC.PREEMPTED] * 10)))
    # Then the budget, not the class limit, ends it
    assert decision.reason == "infrastructure retry budget exhausted (10 of 10 used)"
