"""policy_for: per-Job annotations over the default policy; malformed keys become values."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_ENABLED,
    ANNOTATION_FIRST_FAILED_AT,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    format_duration,
    parse_duration,
)
from watcher.core.errors import PolicyError
from watcher.core.model import FailureClass, JobRef, JobSnapshot
from watcher.core.policy import ClassPolicy, RetryPolicy, policy_for

FC = FailureClass
BASE = RetryPolicy()


def job(**annotations: str) -> JobSnapshot:
    """A Job with ``kube-dlq.io/<key>`` annotations; ``_`` in a key stands for ``-``."""
    pairs = tuple((f"kube-dlq.io/{k.replace('_', '-')}", v) for k, v in annotations.items())
    return JobSnapshot(ref=JobRef("batch", "nightly", "uid-1"), annotations=pairs)


def job_raw(*pairs: tuple[str, str]) -> JobSnapshot:
    return JobSnapshot(ref=JobRef("batch", "nightly", "uid-1"), annotations=pairs)


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure_class", "retried", "max_attempts"),
    [
        pytest.param(FC.NODE_LOST, True, 5, id="node_lost"),
        pytest.param(FC.NODE_SHUTDOWN, True, 5, id="node_shutdown"),
        pytest.param(FC.EVICTED, True, 3, id="evicted"),
        pytest.param(FC.API_EVICTION, True, 5, id="api_eviction"),
        pytest.param(FC.PREEMPTED, True, 5, id="preempted"),
        pytest.param(FC.ADMISSION_REJECTED, True, 3, id="admission_rejected"),
        pytest.param(FC.IO_TIMEOUT, True, 3, id="io_timeout"),
        pytest.param(FC.UNSCHEDULABLE, True, 3, id="unschedulable"),
        pytest.param(FC.OOM_KILLED, False, 2, id="oom_killed"),
        pytest.param(FC.DEADLINE_EXCEEDED, False, 2, id="deadline_exceeded"),
        pytest.param(FC.IMAGE_PULL, False, 2, id="image_pull"),
        pytest.param(FC.CONFIG_ERROR, False, 2, id="config_error"),
        pytest.param(FC.APP_ERROR, False, 2, id="app_error"),
        pytest.param(FC.UNKNOWN, False, 2, id="unknown"),
    ],
)
def test_default_policy_retries_infrastructure_and_dead_letters_application(
    failure_class: FailureClass, retried: bool, max_attempts: int
) -> None:
    policy = BASE.for_class(failure_class)
    assert policy.retry is retried
    assert policy.retry is failure_class.is_infrastructure
    assert policy.max_attempts == max_attempts
    assert (policy.base_s, policy.factor, policy.cap_s, policy.jitter) == (30.0, 2.0, 900.0, "full")


def test_default_budgets() -> None:
    assert (BASE.infra_budget, BASE.app_budget, BASE.total_budget_s) == (10, 3, 86400.0)
    assert (BASE.queue, BASE.avoid_failed_node, BASE.respect_pod_failure_policy) == (
        "default",
        True,
        True,
    )


def test_retry_policy_is_hashable_and_frozen() -> None:
    assert hash(BASE) == hash(RetryPolicy())
    assert {BASE, RetryPolicy()} == {BASE}
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.infra_budget = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "classes",
    [
        pytest.param(BASE.classes[:-1], id="missing-class"),
        pytest.param((*BASE.classes, BASE.classes[0]), id="duplicate-class"),
        pytest.param(tuple(reversed(BASE.classes)), id="wrong-order"),
    ],
)
def test_retry_policy_rejects_incomplete_class_table(
    classes: tuple[tuple[FailureClass, ClassPolicy], ...],
) -> None:
    with pytest.raises(ValueError, match="every FailureClass"):
        RetryPolicy(classes=classes)


# --- annotations that apply ----------------------------------------------------------------------

Check = Callable[[RetryPolicy], object]


def retried(policy: RetryPolicy) -> set[FailureClass]:
    return set(policy.retried_classes())


def attempts(policy: RetryPolicy) -> dict[str, int]:
    return {fc.value: cp.max_attempts for fc, cp in policy.classes}


def backoff_of(fc: FailureClass) -> Check:
    def check(policy: RetryPolicy) -> object:
        cp = policy.for_class(fc)
        return (cp.base_s, cp.factor, cp.cap_s, cp.jitter)

    return check


INFRA = {fc for fc in FailureClass if fc.is_infrastructure}


@pytest.mark.parametrize(
    ("annotations", "check", "expected"),
    [
        pytest.param(
            {"max_retries": "7"},
            lambda p: (
                p.for_class(FC.NODE_LOST).max_attempts,
                p.for_class(FC.EVICTED).max_attempts,
            ),
            (7, 7),
            id="max-retries-sets-every-retried-class",
        ),
        pytest.param(
            {"max_retries": "7"},
            lambda p: p.for_class(FC.OOM_KILLED).max_attempts,
            2,
            id="max-retries-leaves-dead-lettered-classes",
        ),
        pytest.param(
            {"max_retries": "0"},
            lambda p: {cp.max_attempts for fc, cp in p.classes if fc in INFRA},
            {0},
            id="max-retries-zero",
        ),
        pytest.param(
            {"retry_classes": "app_error,node_lost"},
            retried,
            {FC.APP_ERROR, FC.NODE_LOST},
            id="retry-classes-exactly-these",
        ),
        pytest.param(
            {"retry_classes": " Node-Lost , OOM_KILLED ,"},
            retried,
            {FC.NODE_LOST, FC.OOM_KILLED},
            id="retry-classes-case-hyphen-spaces",
        ),
        pytest.param(
            {"no_retry_classes": "preempted,evicted"},
            retried,
            INFRA - {FC.PREEMPTED, FC.EVICTED},
            id="no-retry-classes",
        ),
        pytest.param(
            {"retry_classes": "node_lost,preempted", "no_retry_classes": "preempted"},
            retried,
            {FC.NODE_LOST},
            id="no-retry-wins-over-retry",
        ),
        pytest.param(
            {"max_retries": "4", "retry_classes": "app_error"},
            lambda p: p.for_class(FC.APP_ERROR).max_attempts,
            4,
            id="max-retries-applies-to-classes-turned-on",
        ),
        pytest.param(
            {"backoff": "30s,x2,max=10m"},
            backoff_of(FC.PREEMPTED),
            (30.0, 2.0, 600.0, "full"),
            id="backoff-full-syntax",
        ),
        pytest.param(
            {"backoff": "max=1h, x3 ,jitter=equal, 2m"},
            backoff_of(FC.NODE_LOST),
            (120.0, 3.0, 3600.0, "equal"),
            id="backoff-any-order",
        ),
        pytest.param(
            {"backoff": "1m"}, backoff_of(FC.NODE_LOST), (60.0, 2.0, 900.0, "full"), id="base-only"
        ),
        pytest.param(
            {"backoff": "20m"},
            backoff_of(FC.NODE_LOST),
            (1200.0, 2.0, 1200.0, "full"),
            id="base-above-cap-raises-cap",
        ),
        pytest.param(
            {"backoff": "max=10s"},
            backoff_of(FC.NODE_LOST),
            (10.0, 2.0, 10.0, "full"),
            id="cap-below-base-lowers-base",
        ),
        pytest.param(
            {"backoff": "jitter=none,x1.5"},
            backoff_of(FC.IO_TIMEOUT),
            (30.0, 1.5, 900.0, "none"),
            id="jitter-and-fractional-factor",
        ),
        pytest.param({"budget": "2h"}, lambda p: p.total_budget_s, 7200.0, id="budget-hours"),
        pytest.param({"budget": "1h30m"}, lambda p: p.total_budget_s, 5400.0, id="budget-compound"),
        pytest.param({"infra_budget": "4"}, lambda p: p.infra_budget, 4, id="infra-budget"),
        pytest.param({"app_budget": "0"}, lambda p: p.app_budget, 0, id="app-budget-zero"),
        pytest.param({"queue": "team-a.jobs_1"}, lambda p: p.queue, "team-a.jobs_1", id="queue"),
        pytest.param(
            {"avoid_node": "False"}, lambda p: p.avoid_failed_node, False, id="avoid-node"
        ),
    ],
)
def test_annotation_overrides_default(
    annotations: dict[str, str], check: Check, expected: object
) -> None:
    # Given a Job annotated with valid kube-dlq.io/ keys
    # When its policy is derived from the default
    policy, errors = policy_for(job(**annotations), BASE)
    # Then the override applies and nothing is reported
    assert errors == ()
    assert check(policy) == expected


def test_no_annotations_returns_the_base_policy() -> None:
    custom = dataclasses.replace(BASE, infra_budget=1, queue="q")
    assert policy_for(job(), custom) == (custom, ())


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(k, id=k.removeprefix("kube-dlq.io/"))
        for k in (
            ANNOTATION_ORIGINAL_UID,
            ANNOTATION_ORIGINAL_NAME,
            ANNOTATION_ATTEMPT,
            ANNOTATION_FIRST_FAILED_AT,
            ANNOTATION_ENABLED,
        )
    ],
)
def test_keys_kube_dlq_writes_are_not_typos(key: str) -> None:
    assert policy_for(job_raw((key, "whatever")), BASE) == (BASE, ())


def test_other_prefixes_are_ignored() -> None:
    other = job_raw(("example.com/max-retries", "x"), ("kube-dlq.io.example/queue", "Bad Q"))
    assert policy_for(other, BASE) == (BASE, ())


# --- malformed annotations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "bad_key", "message", "check"),
    [
        pytest.param(
            {"max_retries": "three"},
            "max-retries",
            "must be an integer between 0 and 100",
            lambda p: p.for_class(FC.NODE_LOST).max_attempts == 5,
            id="max-retries-not-a-number",
        ),
        pytest.param(
            {"max_retries": "-1"},
            "max-retries",
            "between 0 and 100",
            lambda p: p.for_class(FC.NODE_LOST).max_attempts == 5,
            id="max-retries-negative",
        ),
        pytest.param(
            {"max_retries": "1000000"},
            "max-retries",
            "between 0 and 100",
            lambda p: p.for_class(FC.NODE_LOST).max_attempts == 5,
            id="max-retries-absurd",
        ),
        pytest.param(
            {"retry_classes": "oom,node_lost"},
            "retry-classes",
            "unknown failure class 'oom' (did you mean oom_killed?)",
            lambda p: retried(p) == INFRA,
            id="retry-classes-typo",
        ),
        pytest.param(
            {"retry_classes": " , "},
            "retry-classes",
            "empty list",
            lambda p: retried(p) == INFRA,
            id="retry-classes-empty",
        ),
        pytest.param(
            {"no_retry_classes": "node_lsot"},
            "no-retry-classes",
            "did you mean node_lost?",
            lambda p: retried(p) == INFRA,
            id="no-retry-classes-typo",
        ),
        pytest.param(
            {"backoff": "30s,x0.5"},
            "backoff",
            "between x1 and x10",
            lambda p: backoff_of(FC.NODE_LOST)(p) == (30.0, 2.0, 900.0, "full"),
            id="backoff-factor-below-1",
        ),
        pytest.param(
            {"backoff": "10s,x2,max=5s"},
            "backoff",
            "max=5s is below the base delay 10s",
            lambda p: backoff_of(FC.NODE_LOST)(p) == (30.0, 2.0, 900.0, "full"),
            id="backoff-cap-below-base",
        ),
        pytest.param(
            {"backoff": "30s,1m"},
            "backoff",
            "the base delay given twice",
            lambda p: p.for_class(FC.NODE_LOST).base_s == 30.0,
            id="backoff-part-twice",
        ),
        pytest.param(
            {"backoff": "fast"},
            "backoff",
            "unknown part 'fast'",
            lambda p: p == BASE,
            id="backoff-unknown-part",
        ),
        pytest.param(
            {"backoff": "30s,,x2"},
            "backoff",
            "empty part",
            lambda p: p == BASE,
            id="backoff-empty-part",
        ),
        pytest.param(
            {"backoff": "jitter=random"},
            "backoff",
            "jitter must be one of full, equal, none",
            lambda p: p == BASE,
            id="backoff-jitter-unknown",
        ),
        pytest.param(
            {"backoff": "30"},
            "backoff",
            "unknown part '30'",
            lambda p: p == BASE,
            id="backoff-duration-without-unit",
        ),
        pytest.param(
            {"budget": "90"},
            "budget",
            "not a duration",
            lambda p: p.total_budget_s == 86400.0,
            id="budget-without-unit",
        ),
        pytest.param(
            {"budget": "0s"},
            "budget",
            "longer than 0s",
            lambda p: p.total_budget_s == 86400.0,
            id="budget-zero",
        ),
        pytest.param(
            {"budget": "400d"},
            "budget",
            "longer than the limit of 30d",
            lambda p: p.total_budget_s == 86400.0,
            id="budget-absurd",
        ),
        pytest.param(
            {"infra_budget": "lots"},
            "infra-budget",
            "integer",
            lambda p: p.infra_budget == 10,
            id="infra-budget",
        ),
        pytest.param(
            {"app_budget": "2.5"},
            "app-budget",
            "integer",
            lambda p: p.app_budget == 3,
            id="app-budget-fraction",
        ),
        pytest.param(
            {"queue": "Team A"},
            "queue",
            "invalid queue name",
            lambda p: p.queue == "default",
            id="queue-invalid-chars",
        ),
        pytest.param(
            {"queue": "q" * 64},
            "queue",
            "invalid queue name",
            lambda p: p.queue == "default",
            id="queue-too-long",
        ),
        pytest.param(
            {"avoid_node": "yes"},
            "avoid-node",
            "must be true or false",
            lambda p: p.avoid_failed_node is True,
            id="avoid-node-yes",
        ),
        pytest.param(
            {"max_retry": "3"},
            "max-retry",
            "unknown kube-dlq.io annotation (did you mean kube-dlq.io/max-retries?)",
            lambda p: p == BASE,
            id="unknown-key-typo",
        ),
        pytest.param(
            {"retries": "3"},
            "retries",
            "unknown kube-dlq.io annotation",
            lambda p: p == BASE,
            id="unknown-key",
        ),
    ],
)
def test_malformed_annotation_is_reported_and_default_applies(
    annotations: dict[str, str], bad_key: str, message: str, check: Callable[[RetryPolicy], bool]
) -> None:
    # Given a Job with one malformed kube-dlq.io/ annotation
    snapshot = job(**annotations)
    # When its policy is derived (this must not raise)
    policy, errors = policy_for(snapshot, BASE)
    # Then exactly that key is reported, with its raw value, and its default still applies
    assert [e.key for e in errors] == [f"kube-dlq.io/{bad_key}"]
    assert errors[0].value == snapshot.annotations[0][1]
    assert message in errors[0].message
    assert check(policy)


def test_one_bad_key_does_not_stop_the_others() -> None:
    # Given a Job with two malformed and three valid annotations
    snapshot = job(
        max_retries="2",
        backoff="30s,x2,max=",
        queue="team-a",
        budget="forever",
        avoid_node="false",
    )
    # When its policy is derived
    policy, errors = policy_for(snapshot, BASE)
    # Then both bad keys are reported and the good ones apply
    assert sorted(e.key for e in errors) == ["kube-dlq.io/backoff", "kube-dlq.io/budget"]
    assert policy.for_class(FC.NODE_LOST).max_attempts == 2
    assert policy.queue == "team-a"
    assert policy.avoid_failed_node is False
    assert policy.total_budget_s == BASE.total_budget_s
    assert backoff_of(FC.NODE_LOST)(policy) == (30.0, 2.0, 900.0, "full")


# Invalid for every key, including queue (hence the capitals and punctuation).
GARBAGE = ["", " ", "\x00", "9" * 400, "-5!", "1E9", "NaN", "Inf", "☃", "true,false", "=,=,="]
KEYS = [
    "max-retries",
    "retry-classes",
    "no-retry-classes",
    "backoff",
    "infra-budget",
    "app-budget",
    "budget",
    "queue",
    "avoid-node",
]


@pytest.mark.parametrize("value", [pytest.param(v, id=repr(v)[:12]) for v in GARBAGE])
def test_garbage_in_every_key_never_raises(value: str) -> None:
    snapshot = job_raw(*((f"kube-dlq.io/{k}", value) for k in KEYS))
    policy, errors = policy_for(snapshot, BASE)
    assert policy == BASE
    assert len(errors) == len(KEYS)
    assert all(isinstance(e, PolicyError) and e.value == value for e in errors)


def test_policy_error_is_a_readable_value() -> None:
    error = PolicyError("kube-dlq.io/max-retries", "three", "must be an integer")
    assert str(error) == "kube-dlq.io/max-retries='three': must be an integer"
    assert not isinstance(error, BaseException)
    assert hash(error) == hash(
        PolicyError("kube-dlq.io/max-retries", "three", "must be an integer")
    )


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("2d", 172800.0, id="days"),
        pytest.param("1.5h", 5400.0, id="fraction"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param(" 10M ", 600.0, id="case-and-space"),
        pytest.param("0s", 0.0, id="zero"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("90", id="no-unit"),
        pytest.param("", id="empty"),
        pytest.param("5 m", id="inner-space"),
        pytest.param("-5m", id="negative"),
        pytest.param("5w", id="unknown-unit"),
        pytest.param("m5", id="unit-first"),
        pytest.param("31d", id="over-limit"),
        pytest.param("1e3s", id="exponent"),
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|limit"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.0, "0s", id="zero"),
        pytest.param(0.5, "0.5s", id="fraction"),
        pytest.param(45.4, "45s", id="seconds"),
        pytest.param(90.0, "1m30s", id="minutes"),
        pytest.param(7200.0, "2h", id="hours"),
        pytest.param(93600.0, "1d2h", id="days"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
