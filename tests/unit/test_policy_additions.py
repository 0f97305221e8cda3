"""The policy additions: retry oom_killed with more memory, and require never-started.

policy_for reads the two annotations (bad values are PolicyError values, never a crash);
decide turns them into a retry, or a dead letter whose reason names the limit hit.
"""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction

import pytest

from watcher.core.decide import decide
from watcher.core.memory import OomMemoryPolicy, bump_memory
from watcher.core.model import (
    Action,
    AttemptRecord,
    Classification,
    Decision,
    FailureClass,
    JobRef,
    JobSnapshot,
    Started,
)
from watcher.core.policy import RetryPolicy, policy_for

FC = FailureClass
GI = 2**30
NOW = 1_795_000_000.0
OOM = OomMemoryPolicy(factor=Fraction(3, 2), cap_bytes=8 * GI, attempts=2)
BASE = RetryPolicy().with_classes(lambda _, cp: dataclasses.replace(cp, jitter="none"))
OOM_ON = dataclasses.replace(BASE, oom_memory=OOM)


def job(**annotations: str) -> JobSnapshot:
    pairs = tuple((f"kube-dlq.io/{k.replace('_', '-')}", v) for k, v in annotations.items())
    return JobSnapshot(ref=JobRef("batch", "nightly", "uid-1"), annotations=pairs)


# --- policy_for ------------------------------------------------------------------------------


def test_without_the_annotations_the_config_applies() -> None:
    assert policy_for(job(), OOM_ON) == (OOM_ON, ())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("factor=1.5,cap=8Gi,attempts=2", OOM),
        ("attempts=3", dataclasses.replace(OOM, attempts=3)),
        ("off", None),
    ],
)
def test_oom_memory_annotation_refines_the_config(
    value: str, expected: OomMemoryPolicy | None
) -> None:
    policy, errors = policy_for(job(oom_memory=value), OOM_ON)
    assert errors == ()
    assert policy.oom_memory == expected


def test_oom_memory_annotation_opts_a_job_in_without_config() -> None:
    policy, errors = policy_for(job(oom_memory="cap=4Gi"), BASE)
    assert errors == ()
    assert policy.oom_memory == OomMemoryPolicy(cap_bytes=4 * GI)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("oom_memory", "factor=100", "between 1.05 and 4"),
        ("oom_memory", "cap=eight", "not a memory quantity"),
        ("oom_memory", "\x00\xff" * 500, "unknown part"),
        ("require_never_started", "app_eror", "did you mean app_error"),
        ("require_never_started", "", "empty list"),
    ],
)
def test_bad_values_are_policy_errors_and_the_config_value_stays(
    key: str, value: str, message: str
) -> None:
    policy, errors = policy_for(job(**{key: value}), OOM_ON)
    assert policy == OOM_ON
    [error] = errors
    assert error.key == f"kube-dlq.io/{key.replace('_', '-')}"
    assert message in error.message


def test_require_never_started_annotation_replaces_the_config_list() -> None:
    config = dataclasses.replace(BASE, require_never_started=frozenset({FC.IO_TIMEOUT}))
    policy, _ = policy_for(job(require_never_started="app_error, oom-killed"), config)
    assert policy.require_never_started == {FC.APP_ERROR, FC.OOM_KILLED}
    policy, _ = policy_for(job(require_never_started="none"), config)
    assert policy.require_never_started == frozenset()


def test_the_memory_bump_annotation_kube_dlq_writes_is_not_unknown() -> None:
    _, errors = policy_for(job(memory_bump="x1.5: main limits 1Gi -> 1536Mi"), BASE)
    assert errors == ()


# --- decide: require never started -----------------------------------------------------------

APP_ON = BASE.with_classes(
    lambda fc, cp: dataclasses.replace(cp, retry=True) if fc is FC.APP_ERROR else cp
)
NEVER_STARTED = {
    # class, required classes, started, -> action, reason
    "not required: retried whatever": (FC.APP_ERROR, set(), Started.YES, "retry", "retry 1 of 2"),
    "required, never started: retried": (
        FC.APP_ERROR,
        {FC.APP_ERROR},
        Started.NO,
        "retry",
        "retry 1 of 2",
    ),
    "required, started: dead-lettered": (
        FC.APP_ERROR,
        {FC.APP_ERROR},
        Started.YES,
        "dead_letter",
        "app_error is retried only if the workload never started, and it did",
    ),
    "required, unknown: dead-lettered": (
        FC.APP_ERROR,
        {FC.APP_ERROR},
        Started.UNKNOWN,
        "dead_letter",
        "never started, and it may have (unknown)",
    ),
    "another class required: no effect": (
        FC.NODE_LOST,
        {FC.APP_ERROR},
        Started.YES,
        "retry",
        "node_lost: retry 1 of 5",
    ),
    "infrastructure class required, started": (
        FC.NODE_LOST,
        {FC.NODE_LOST},
        Started.YES,
        "dead_letter",
        "node_lost is retried only if the workload never started",
    ),
}


def run(
    cls: Classification,
    policy: RetryPolicy,
    earlier: tuple[AttemptRecord, ...] = (),
    memory_manifest: dict[str, object] | None = None,
) -> Decision:
    oom = policy.oom_memory
    memory = bump_memory(memory_manifest, oom) if memory_manifest is not None and oom else None
    return decide(
        cls,
        policy,
        earlier,
        attempt=len(earlier) + 1,
        now=NOW,
        first_failed_at=NOW - 60,
        pod_failure_policy_failed=False,
        rng=random.Random(0),
        memory=memory,
    )


@pytest.mark.parametrize(
    ("fc", "required", "started", "action", "says"),
    NEVER_STARTED.values(),
    ids=list(NEVER_STARTED),
)
def test_require_never_started(
    fc: FailureClass, required: set[FailureClass], started: Started, action: str, says: str
) -> None:
    policy = dataclasses.replace(APP_ON, require_never_started=frozenset(required))
    decision = run(Classification(fc, "test", started=started), policy)
    assert decision.action.value == action
    assert says in decision.reason


# --- decide: OOM with more memory ------------------------------------------------------------


def manifest(limit: str) -> dict[str, object]:
    resources = {"limits": {"memory": limit}}
    containers = [{"name": "main", "image": "x", "resources": resources}]
    return {"spec": {"template": {"spec": {"containers": containers}}}}


def ooms(n: int) -> tuple[AttemptRecord, ...]:
    return tuple(
        AttemptRecord(i + 1, f"j-{i}", f"u-{i}", FC.OOM_KILLED, "oom", NOW - 100 + i)
        for i in range(n)
    )


OOM_KILLED = Classification(FC.OOM_KILLED, "container main was OOM-killed", started=Started.YES)


def test_without_the_opt_in_oom_killed_is_dead_lettered_as_before() -> None:
    decision = run(OOM_KILLED, BASE, memory_manifest=manifest("1Gi"))
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason == "oom_killed is not retried by policy"


OOM_CASES = {
    # earlier OOM attempts, current limit, -> action, reason
    "first OOM: retried with x1.5": (
        0,
        "4Gi",
        Action.RETRY,
        "oom_killed: retry 1 of 2 in 30s with more memory (x1.5: main limits 4Gi -> 6Gi)",
    ),
    "second OOM: held to the cap": (
        1,
        "6Gi",
        Action.RETRY,
        "oom_killed: retry 2 of 2 in 1m with more memory (x1.5: main limits 6Gi -> 8Gi)",
    ),
    "at the cap: dead-lettered": (
        1,
        "8Gi",
        Action.DEAD_LETTER,
        "oom_killed: memory is at the cap of 8Gi; not retried",
    ),
    "after the attempts: dead-lettered": (
        2,
        "2Gi",
        Action.DEAD_LETTER,
        "oom_killed: memory bumps exhausted (2 of 2 used)",
    ),
}


@pytest.mark.parametrize(
    ("earlier", "limit", "action", "reason"), OOM_CASES.values(), ids=list(OOM_CASES)
)
def test_oom_policy_retries_with_more_memory_up_to_the_cap_and_attempts(
    earlier: int, limit: str, action: Action, reason: str
) -> None:
    decision = run(OOM_KILLED, OOM_ON, ooms(earlier), memory_manifest=manifest(limit))
    assert (decision.action, decision.reason) == (action, reason)


def test_oom_policy_with_no_memory_to_raise_dead_letters_saying_so() -> None:
    bare = {"spec": {"template": {"spec": {"containers": [{"name": "main"}]}}}}
    decision = run(OOM_KILLED, OOM_ON, memory_manifest=bare)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason == "oom_killed: the Job sets no memory limit or request to raise"


def test_oom_policy_still_counts_against_the_application_budget() -> None:
    policy = dataclasses.replace(OOM_ON, app_budget=1)
    decision = run(OOM_KILLED, policy, ooms(1), memory_manifest=manifest("1Gi"))
    assert decision.action is Action.DEAD_LETTER
    assert "application retry budget exhausted" in decision.reason


def test_oom_policy_and_never_started_combine() -> None:
    policy = dataclasses.replace(OOM_ON, require_never_started=frozenset({FC.OOM_KILLED}))
    decision = run(OOM_KILLED, policy, memory_manifest=manifest("1Gi"))
    assert decision.action is Action.DEAD_LETTER
    assert "never started" in decision.reason
