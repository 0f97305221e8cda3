"""watcher.core.snapshot's interning: equal inputs give the same frozen value, shared; the
tables never change a projection, stay bounded, and never keep long text."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz.hostile import load_captured, mutate
from watcher.core import snapshot
from watcher.core.snapshot import (
    INTERN_MAX,
    INTERN_MAX_CHARS,
    event_record,
    job_snapshot,
    node_state,
    parse_time,
    pod_snapshot,
)

PROJECT = {
    "jobs": job_snapshot,
    "pods": pod_snapshot,
    "events": event_record,
    "nodes": node_state,
}


@pytest.fixture(autouse=True)
def cold_tables() -> Iterator[None]:
    _clear()
    yield
    _clear()


def _clear() -> None:
    snapshot._CONDITIONS.clear()
    snapshot._CONTAINERS.clear()
    snapshot._TIMES.clear()


def _pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "status": status}


READY = {"type": "Ready", "status": "True", "reason": "", "message": ""}
CRASHED = {
    "name": "main",
    "restartCount": 0,
    "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "boom"}},
}


def test_equal_conditions_and_containers_of_two_pods_are_one_value() -> None:
    a = pod_snapshot(
        _pod("a", conditions=[dict(READY)], containerStatuses=[copy.deepcopy(CRASHED)])
    )
    b = pod_snapshot(
        _pod("b", conditions=[dict(READY)], containerStatuses=[copy.deepcopy(CRASHED)])
    )
    assert a.conditions[0] is b.conditions[0]
    assert a.containers[0] is b.containers[0]
    assert a.containers[0].exit_code == 1 and a.containers[0].terminated_message == "boom"


@pytest.mark.parametrize(
    ("odd", "expected_status"),
    [
        pytest.param({"status": True}, "", id="bool-status"),
        pytest.param({"status": None}, "", id="null-status"),
        pytest.param({"status": ["True"]}, "", id="unhashable-status"),
        pytest.param({"status": {"a": 1}}, "", id="object-status"),
        pytest.param({"reason": 1}, "True", id="number-reason"),
    ],
)
def test_a_condition_of_odd_types_is_read_as_before_not_from_the_table(
    odd: dict[str, Any], expected_status: str
) -> None:
    pod_snapshot(_pod("warm", conditions=[dict(READY)]))  # the table holds the str version
    condition = pod_snapshot(_pod("odd", conditions=[{**READY, **odd}])).conditions[0]
    assert (condition.type, condition.status, condition.reason) == ("Ready", expected_status, "")


def test_long_text_is_built_every_time_not_kept() -> None:
    long = {**READY, "message": "m" * (INTERN_MAX_CHARS + 1)}
    a = pod_snapshot(_pod("a", conditions=[dict(long)])).conditions[0]
    b = pod_snapshot(_pod("b", conditions=[dict(long)])).conditions[0]
    assert a == b and a is not b
    assert snapshot._CONDITIONS == {}


def test_the_tables_are_bounded() -> None:
    for i in range(INTERN_MAX + 10):
        pod_snapshot(
            _pod(
                "p",
                conditions=[{**READY, "reason": f"r{i}"}],
                containerStatuses=[{"name": f"c{i}"}],
            )
        )
        parse_time(f"2026-11-20T10:00:{i % 60:02d}.{i}Z")
    assert 0 < len(snapshot._CONDITIONS) <= INTERN_MAX
    assert 0 < len(snapshot._CONTAINERS) <= INTERN_MAX
    assert 0 < len(snapshot._TIMES) <= INTERN_MAX


def test_parse_time_answers_the_same_from_the_table() -> None:
    for text in (
        "2026-11-20T10:00:00Z",
        "2026-02-30T10:00:00Z",
        "yesterday",
        " 2026-11-20T10:00:00Z ",
    ):
        first = parse_time(text)
        assert text in snapshot._TIMES
        assert parse_time(text) == first


def test_warm_tables_never_change_a_projection_of_hostile_objects() -> None:
    # The captured watch events, mutated (wrong types, missing and hostile values), each
    # projected with the tables warm from everything before it and again with them empty.
    rng = random.Random(7)
    captured = load_captured()
    for _ in range(3000):
        resource, raw = _pick(rng, captured)
        warm = _project(resource, raw)
        tables = [dict(t) for t in (snapshot._CONDITIONS, snapshot._CONTAINERS, snapshot._TIMES)]
        _clear()
        cold = _project(resource, raw)
        for table, kept in zip(
            (snapshot._CONDITIONS, snapshot._CONTAINERS, snapshot._TIMES), tables, strict=True
        ):
            table.clear()
            table.update(kept)  # type: ignore[attr-defined]
        assert warm == cold
        assert repr(warm) == repr(cold)  # the same types too (True is not 1, 1.0 is not 1)


def _pick(rng: random.Random, captured: Any) -> tuple[str, Any]:
    scenario = rng.choice(captured)
    event = rng.choice(scenario["watch"])
    raw = event["object"] if rng.random() < 0.2 else mutate(event["object"], rng)
    return event["resource"], raw


def _project(resource: str, raw: Any) -> Any:
    try:
        return PROJECT[resource](raw)
    except snapshot.MalformedObject:
        return None
