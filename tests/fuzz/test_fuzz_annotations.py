"""Job annotations: the ``kube-dlq.io/`` parsers, `policy_for` and the lineage readers.

`policy_for` never raises: a bad value is a `PolicyError` value. Each parser in
`watcher.core.annotations` raises ValueError (its documented error) or returns. The lineage
readers of `watcher.core.manifest` never raise, and what they return is in range.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import COUNTS, HOSTILE_SCALARS, fuzz_settings, json_values, run_loop
from watcher.core import annotations as a
from watcher.core.manifest import (
    MAX_ATTEMPT,
    attempt_of,
    encode_history,
    first_failed_at_of,
    history_from_annotations,
)
from watcher.core.model import AttemptRecord, FailureClass, JobRef, JobSnapshot
from watcher.core.policy import RetryPolicy, policy_for

KEYS = (
    a.ANNOTATION_RETRY_CLASSES,
    a.ANNOTATION_NO_RETRY_CLASSES,
    a.ANNOTATION_MAX_RETRIES,
    a.ANNOTATION_BACKOFF,
    a.ANNOTATION_INFRA_BUDGET,
    a.ANNOTATION_APP_BUDGET,
    a.ANNOTATION_BUDGET,
    a.ANNOTATION_QUEUE,
    a.ANNOTATION_AVOID_NODE,
    a.ANNOTATION_ATTEMPT,
    a.ANNOTATION_FIRST_FAILED_AT,
    a.ANNOTATION_HISTORY,
    a.ANNOTATION_ORIGINAL_NAME,
    a.ANNOTATION_ENABLED,
)
VALID_PIECES = (
    "30s",
    "1h30m",
    "1.5h",
    "2d",
    "31d",
    "x2",
    "x1.5",
    "x11",
    "max=10m",
    "jitter=none",
    "jitter=full",
    "node_lost",
    "NODE-LOST",
    "oom",
    "app_error",
    "5",
    "100",
    "101",
    "true",
    "FALSE",
    "default",
    "a" * 64,
    "99999999999999999999s",
    "9" * 400 + "s",
    "9" * 5000,
    "0.0000001s",
    ",",
    " ",
    "\u0663s",  # an Arabic-Indic digit three: \d matches it
)
BASE = RetryPolicy()


def values() -> st.SearchStrategy[str]:
    pieces = st.lists(st.sampled_from(VALID_PIECES) | st.text(max_size=8), max_size=5)
    return pieces.map(",".join) | pieces.map("".join) | st.text(max_size=40)


def keys() -> st.SearchStrategy[str]:
    return (
        st.sampled_from(KEYS)
        | st.text(max_size=20).map(lambda s: a.ANNOTATION_PREFIX + s)
        | st.text(max_size=20)
    )


def check_policy(annotations: dict[str, str]) -> None:
    pairs = tuple(sorted(annotations.items()))
    job = JobSnapshot(ref=JobRef(namespace="ns", name="j", uid="u"), annotations=pairs)
    policy, errors = policy_for(job, BASE)
    assert isinstance(policy, RetryPolicy)
    for error in errors:
        assert error.key.startswith(a.ANNOTATION_PREFIX)
    for _, class_policy in policy.classes:
        assert 0 <= class_policy.base_s <= class_policy.cap_s <= a.MAX_DURATION_S
        assert 1 <= class_policy.factor <= a.MAX_FACTOR
        assert 0 <= class_policy.max_attempts <= a.MAX_RETRIES_LIMIT
    assert 0 < policy.total_budget_s <= a.MAX_DURATION_S
    COUNTS["annotations"] += 1


@fuzz_settings(500)
@given(st.dictionaries(keys(), values(), max_size=8))
def test_policy_for_never_raises(annotations: dict[str, str]) -> None:
    check_policy(annotations)


PARSERS: tuple[Callable[[str], object], ...] = (
    a.parse_duration,
    a.parse_backoff,
    a.parse_class_list,
    a.parse_count,
    a.parse_bool,
    a.validate_queue,
    a.failure_class_named,
)


@fuzz_settings(2500)
@given(st.sampled_from(PARSERS), values())
def test_each_parser_raises_only_value_error(parse: Callable[[str], object], text: str) -> None:
    try:
        parsed = parse(text)
    except ValueError as exc:
        assert str(exc)  # a message fit to show after the key
    else:
        if isinstance(parsed, float):
            assert math.isfinite(parsed) and 0 <= parsed <= a.MAX_DURATION_S
    COUNTS["annotations"] += 1


MUTATED_PARSER_VALUES = 20_000


def test_each_parser_on_mutated_values() -> None:
    """The bulk for the parsers: valid pieces joined, cut and spliced with hostile text."""

    def one(rng: random.Random) -> None:
        pieces = [rng.choice(VALID_PIECES) for _ in range(rng.randint(1, 4))]
        text = _mutated_value(rng.choice((",", "")).join(pieces), rng)
        parse = rng.choice(PARSERS)
        try:
            parse(text)
        except ValueError as exc:
            assert str(exc)
        COUNTS["annotations"] += 1

    before = COUNTS["annotations"]
    run_loop(MUTATED_PARSER_VALUES, 8, one)
    assert COUNTS["annotations"] - before == MUTATED_PARSER_VALUES


def lineage_values() -> st.SearchStrategy[Any]:
    history = st.lists(json_values, max_size=3).map(
        lambda items: encode_history(()) if not items else str(items)
    )
    return values() | history | json_values | st.sampled_from(HOSTILE_SCALARS)


def check_lineage(annotations: Any) -> None:
    history = history_from_annotations(annotations)
    assert history.malformed == (history.error is not None)
    assert not (history.malformed and len(history))
    assert 1 <= attempt_of(annotations) <= MAX_ATTEMPT
    first = first_failed_at_of(annotations)
    assert first is None or (math.isfinite(first) and first >= 0)
    COUNTS["annotations"] += 1


@fuzz_settings(500)
@given(
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), lineage_values(), max_size=5)
    | st.lists(st.tuples(st.sampled_from(KEYS), lineage_values()), max_size=4)
    | json_values
)
def test_lineage_readers_never_raise(annotations: Any) -> None:
    check_lineage(annotations)


RECORD = AttemptRecord(1, "job", "uid", FailureClass.NODE_LOST, "node gone", 1_700_000_000.0)
SECOND = AttemptRecord(2, "job-r2", "u2", FailureClass.EVICTED, "", 2.0)
GOOD_HISTORY = encode_history((RECORD, SECOND))
GOOD = {
    a.ANNOTATION_RETRY_CLASSES: "node_lost,preempted,app_error",
    a.ANNOTATION_NO_RETRY_CLASSES: "app_error",
    a.ANNOTATION_MAX_RETRIES: "4",
    a.ANNOTATION_BACKOFF: "30s,x2,max=10m,jitter=equal",
    a.ANNOTATION_INFRA_BUDGET: "6",
    a.ANNOTATION_APP_BUDGET: "1",
    a.ANNOTATION_BUDGET: "12h",
    a.ANNOTATION_QUEUE: "batch.nightly",
    a.ANNOTATION_AVOID_NODE: "false",
    a.ANNOTATION_ATTEMPT: "3",
    a.ANNOTATION_FIRST_FAILED_AT: "1700000000.000",
    a.ANNOTATION_HISTORY: GOOD_HISTORY,
}
MUTATED = 12_000


def _mutated_value(value: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(VALID_PIECES)
    if roll < 0.5:
        hostile = rng.choice(HOSTILE_SCALARS)
        return hostile if isinstance(hostile, str) else str(hostile)
    if roll < 0.8 and value:
        at = rng.randrange(len(value))
        return (
            value[:at]
            + rng.choice(("", "9" * 400, "e400", "\\ud800", "[", "}", ","))
            + value[at + 1 :]
        )
    return value + "," + value


def test_mutated_annotations() -> None:
    def one(rng: random.Random) -> None:
        annotations = {
            k: _mutated_value(v, rng) if rng.random() < 0.4 else v for k, v in GOOD.items()
        }
        check_policy(annotations)
        check_lineage(annotations)

    before = COUNTS["annotations"]
    run_loop(MUTATED, 3, one)
    assert COUNTS["annotations"] - before == 2 * MUTATED
