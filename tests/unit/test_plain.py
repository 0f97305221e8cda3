"""watcher.core.plain: records as asdict makes them, and deep copies of parsed JSON, faster.

Both are stand-ins for a library call (``dataclasses.asdict``, ``copy.deepcopy``) on the path
that writes every failure's outcome; each must give the library's answer for any input, and
go through the library itself for whatever its fast path does not cover.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.objects import raw_job, raw_pod, report, terminated
from watcher.core.manifest import replayable_manifest
from watcher.core.model import (
    Action,
    Condition,
    ContainerOutcome,
    Decision,
    EventRecord,
    FailureClass,
    JobRef,
    JobSnapshot,
    NodeState,
    OwnerRef,
    PodSnapshot,
)
from watcher.core.plain import json_copy, plain
from watcher.service.handler import evidence_document

texts = st.text(max_size=12)
optional_floats = st.none() | st.floats(allow_nan=False)
conditions = st.builds(Condition, texts, texts, texts, texts)
containers = st.builds(
    ContainerOutcome,
    name=texts,
    init=st.booleans(),
    exit_code=st.none() | st.integers(),
    signal=st.none() | st.integers(),
    terminated_reason=texts,
    terminated_message=texts,
    waiting_reason=texts,
    waiting_message=texts,
    restart_count=st.integers(),
)
pods = st.builds(
    PodSnapshot,
    name=texts,
    uid=texts,
    phase=texts,
    reason=texts,
    message=texts,
    node_name=texts,
    deleted=st.booleans(),
    conditions=st.lists(conditions, max_size=4).map(tuple),
    containers=st.lists(containers, max_size=3).map(tuple),
    created_at=optional_floats,
    completion_index=texts,
)
events = st.builds(EventRecord, texts, texts, texts, texts, texts, st.integers(), optional_floats)
nodes = st.builds(
    NodeState,
    name=texts,
    exists=st.booleans(),
    ready=texts,
    reason=texts,
    unschedulable=st.booleans(),
    taints=st.lists(texts, max_size=3).map(tuple),
)
jobs = st.builds(
    JobSnapshot,
    ref=st.builds(JobRef, texts, texts, texts),
    owner=st.none() | st.builds(OwnerRef, texts, texts, texts),
    labels=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
    conditions=st.lists(conditions, max_size=3).map(tuple),
    active=st.integers(),
)


# --- plain ----------------------------------------------------------------------------------


def _asdict(value: Any) -> Any:
    """``dataclasses.asdict``, reading the model's msgspec Structs as if they were dataclasses
    (what the evidence document held when they were)."""
    if isinstance(value, msgspec.Struct):
        return {name: _asdict(getattr(value, name)) for name in value.__struct_fields__}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _asdict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if type(value) is tuple:
        return tuple(_asdict(item) for item in value)
    return copy.deepcopy(value)


@given(st.one_of(pods, events, nodes, jobs, conditions, containers))
def test_plain_is_what_asdict_returns(record: Any) -> None:
    out = plain(record)
    assert out == _asdict(record)
    assert list(out) == list(_asdict(record))  # the same key order: the same JSON
    assert json.dumps(out) == json.dumps(_asdict(record))


def test_a_dataclass_holding_projections_is_read_whole() -> None:
    ref = JobRef("n", "j", "u")
    job = JobSnapshot(ref, conditions=(Condition("Failed", "True"),))
    assert plain(Decision(Action.DEAD_LETTER, "r", 1)) == dataclasses.asdict(
        Decision(Action.DEAD_LETTER, "r", 1)
    )
    assert plain(job)["ref"] == {"namespace": "n", "name": "j", "uid": "u"}
    assert plain(job)["conditions"] == (
        {"type": "Failed", "status": "True", "reason": "", "message": ""},
    )


def test_plain_builds_model_records_without_asdict(monkeypatch: pytest.MonkeyPatch) -> None:
    # The point of the module: the records of the evidence never take asdict's walk.
    pod = PodSnapshot(
        "p", "u", conditions=(Condition("Ready", "False"),), containers=(ContainerOutcome("c"),)
    )

    def refuse(_: object) -> None:
        raise AssertionError("asdict called")

    monkeypatch.setattr(dataclasses, "asdict", refuse)
    assert plain(pod)["containers"] == ({**_container_fields("c")},)


def _container_fields(name: str) -> dict[str, Any]:
    return {f: getattr(ContainerOutcome(name), f) for f in ContainerOutcome.__struct_fields__}


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Loose:
    """Not a model record: fields plain does not copy itself."""

    items: Any
    name: str = "x"


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    "value",
    [
        [1, [2]],
        {"a": [1]},
        Colour.RED,
        FailureClass.OOM_KILLED,
        (1, [2, 3]),
        Point([1], 2),
        Loose([1]),
        Loose,
        {1, 2},
    ],
    ids=[
        "list",
        "dict",
        "enum",
        "str-enum",
        "tuple-of-list",
        "namedtuple",
        "nested",
        "type",
        "set",
    ],
)
def test_plain_falls_back_to_asdict_for_anything_else(value: Any) -> None:
    # Given a record whose field holds something other than immutables, tuples and records
    record = Loose(value)
    # Then the answer is asdict's, and it shares nothing mutable with the record
    out = plain(record)
    assert out == dataclasses.asdict(record)
    assert type(out["items"]) is type(dataclasses.asdict(record)["items"])
    if isinstance(value, list):
        assert out["items"] is not value


def test_plain_refuses_what_asdict_refuses() -> None:
    with pytest.raises(TypeError):
        plain(object())


def test_evidence_document_of_a_real_report_is_asdicts() -> None:
    rep = report(
        raw_job(),
        [raw_pod(phase="Failed", containers=[terminated(exit_code=137, reason="OOMKilled")])],
    )
    rep = dataclasses.replace(
        rep,
        events=(EventRecord("Pod", "p", "Killing", "msg", "Warning", 3, 1.5),),
        nodes=(NodeState("n", taints=("a", "b")),),
    )
    doc = evidence_document(rep, Decision(Action.DEAD_LETTER, "why", attempt=1))
    assert doc["pods"] == [_asdict(p) for p in rep.pods]
    assert doc["events"] == [_asdict(e) for e in rep.events]
    assert doc["nodes"] == [_asdict(n) for n in rep.nodes]
    assert doc["job"]["conditions"] == [_asdict(c) for c in rep.job.conditions]


# --- json_copy ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)


@given(json_values)
def test_json_copy_equals_deepcopy_and_shares_no_container(value: Any) -> None:
    out = json_copy(value)
    assert out == copy.deepcopy(value)
    assert json.dumps(out) == json.dumps(value)  # key order kept
    assert not _containers(out) & _containers(value)


def _containers(node: Any) -> set[int]:
    if isinstance(node, dict):
        return {id(node)}.union(*(_containers(v) for v in node.values()))
    if isinstance(node, list):
        return {id(node)}.union(*(_containers(v) for v in node))
    return set()


def test_json_copy_deep_copies_what_is_not_json() -> None:
    inner = [1]
    value: dict[Any, Any] = {
        "tuple": (inner,),
        "ordered": collections.OrderedDict(a=[2]),
        "set": {3},
        "obj": Loose([4]),
        7: "non-str key",
    }
    out = json_copy(value)
    assert out == copy.deepcopy(value)
    assert out["tuple"][0] is not inner
    assert type(out["ordered"]) is collections.OrderedDict
    assert out["ordered"]["a"] is not value["ordered"]["a"]
    assert out["obj"] is not value["obj"] and out["obj"].items is not value["obj"].items


def test_replayable_manifest_copies_json_without_deepcopy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Job from the watch is parsed JSON: cleaning it takes the fast copy, never deepcopy.
    job = raw_job()
    expected = replayable_manifest(job)

    def refuse(_: object, memo: object = None) -> None:
        raise AssertionError("deepcopy called")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    assert replayable_manifest(job) == expected
