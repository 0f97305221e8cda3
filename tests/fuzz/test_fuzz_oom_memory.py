"""The OOM policy's parsers and the memory bump on hostile input.

`parse_oom_memory` and `parse_quantity` raise ValueError (with a message) or return a value in
range; `policy_for` with the new keys never raises; `bump_memory` never raises on any manifest
shape, never lowers a value and never exceeds the cap; quantities round-trip exactly.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import COUNTS, HOSTILE_SCALARS, fuzz_settings, json_values, run_loop
from watcher.core import annotations as a
from watcher.core.memory import (
    MAX_CAP_BYTES,
    MAX_FACTOR,
    MIB,
    MIN_CAP_BYTES,
    MIN_FACTOR,
    OomMemoryPolicy,
    bump_memory,
    format_quantity,
    parse_oom_memory,
    parse_quantity,
)
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.policy import RetryPolicy, policy_for

PIECES = (
    "factor=1.5",
    "factor=4",
    "factor=4.001",
    "factor=1.049",
    "factor=",
    "cap=8Gi",
    "cap=16Mi",
    "cap=16Ti",
    "cap=1e2",
    "cap=1e99",
    "cap=0.5Gi",
    "cap=8G",
    "cap=9" + "9" * 60,
    "attempts=2",
    "attempts=101",
    "attempts=-1",
    "on",
    "off",
    "true",
    "=",
    ",",
    " ",
    "\u0663",  # an Arabic-Indic digit: \d matches it
    "\x00",
)
QUANTITY_PIECES = ("1", "1.5", ".5", "Gi", "Mi", "Ki", "m", "G", "e", "e9", "-", "+", "\u0663", " ")


def texts(pieces: tuple[str, ...]) -> st.SearchStrategy[str]:
    joined = st.lists(st.sampled_from(pieces) | st.text(max_size=6), max_size=5)
    return joined.map(",".join) | joined.map("".join) | st.text(max_size=40)


def check_policy(policy: OomMemoryPolicy | None) -> None:
    if policy is None:
        return
    assert MIN_FACTOR <= policy.factor <= MAX_FACTOR
    assert MIN_CAP_BYTES <= policy.cap_bytes <= MAX_CAP_BYTES
    assert 0 <= policy.attempts <= a.MAX_RETRIES_LIMIT


def check_annotation(text: str) -> None:
    try:
        check_policy(parse_oom_memory(text, None))
    except ValueError as exc:
        assert str(exc) and len(str(exc)) < 300
    COUNTS["oom-memory"] += 1


@fuzz_settings(1500)
@given(texts(PIECES))
def test_oom_memory_annotation_raises_only_value_error(text: str) -> None:
    check_annotation(text)


@fuzz_settings(1500)
@given(texts(QUANTITY_PIECES))
def test_parse_quantity_raises_only_value_error(text: str) -> None:
    try:
        n_bytes = parse_quantity(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert n_bytes >= 0
    COUNTS["oom-memory"] += 1


@fuzz_settings(1000)
@given(st.integers(min_value=0, max_value=2**63))
def test_quantities_round_trip_exactly(n_bytes: int) -> None:
    assert parse_quantity(format_quantity(n_bytes)) == n_bytes
    COUNTS["oom-memory"] += 1


MUTATED = 15_000


def test_mutated_oom_memory_annotations() -> None:
    def one(rng: random.Random) -> None:
        text = ",".join(rng.choice(PIECES) for _ in range(rng.randint(1, 4)))
        roll = rng.random()
        if roll < 0.3 and text:
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(("", "9" * 400, "e400", "=", ",", "Gi")) + text[at:]
        elif roll < 0.4:
            hostile = rng.choice(HOSTILE_SCALARS)
            text = hostile if isinstance(hostile, str) else str(hostile)
        check_annotation(text)

    before = COUNTS["oom-memory"]
    run_loop(MUTATED, 11, one)
    assert COUNTS["oom-memory"] - before == MUTATED


@fuzz_settings(500)
@given(texts(PIECES), texts(("app_error", "oom_killed", "none", "node-lost", ",")))
def test_policy_for_with_the_new_keys_never_raises(oom: str, never_started: str) -> None:
    pairs = ((a.ANNOTATION_OOM_MEMORY, oom), (a.ANNOTATION_REQUIRE_NEVER_STARTED, never_started))
    job = JobSnapshot(ref=JobRef("ns", "j", "u"), annotations=pairs)
    policy, errors = policy_for(job, RetryPolicy())
    check_policy(policy.oom_memory)
    assert all(e.key in dict(pairs) for e in errors)
    COUNTS["oom-memory"] += 1


def resources() -> st.SearchStrategy[Any]:
    quantity = st.sampled_from(("1Gi", "512Mi", "8Gi", "100M", "7", "lots", "")) | json_values
    block = st.fixed_dictionaries({}, optional={"memory": quantity, "cpu": quantity})
    return st.fixed_dictionaries({}, optional={"limits": block, "requests": block}) | json_values


def manifests() -> st.SearchStrategy[Any]:
    container = st.fixed_dictionaries(
        {}, optional={"name": st.text(max_size=5) | json_values, "resources": resources()}
    )
    pod = st.fixed_dictionaries(
        {},
        optional={
            "containers": st.lists(container | json_values, max_size=3) | json_values,
            "initContainers": st.lists(container, max_size=2),
            "resources": resources(),
        },
    )
    spec = st.fixed_dictionaries({"template": st.fixed_dictionaries({"spec": pod}) | json_values})
    return st.fixed_dictionaries(
        {"spec": spec | json_values},
        optional={"metadata": st.fixed_dictionaries({}, optional={"annotations": json_values})},
    )


@fuzz_settings(1500)
@given(manifests(), st.sampled_from((Fraction(3, 2), Fraction(105, 100), Fraction(4))))
def test_bump_never_raises_never_lowers_and_holds_the_cap(manifest: Any, factor: Fraction) -> None:
    policy = OomMemoryPolicy(factor=factor, cap_bytes=2**33)
    bump = bump_memory(manifest, policy)
    for change in bump.changes:
        assert change.old < change.new <= policy.cap_bytes
        assert change.new % MIB == 0
    assert len(bump.changes) <= bump.found
    COUNTS["oom-memory"] += 1
