"""Raw objects and the messages in them: `watcher.core.snapshot`, then `classify`.

The projections return a snapshot or raise `MalformedObject` (no usable name or uid);
`job_uid_of_pod` never raises. Every FailureReport built from what they return classifies to
a Classification. Inputs: arbitrary JSON-ish values, shaped objects whose fields are arbitrary,
and mutations of the real watch events in tests/data/captured, replayed through the correlator
as the pipeline does.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.hostile import (
    COUNTS,
    HOSTILE_SCALARS,
    PARSED_VALUES,
    any_value,
    fuzz_settings,
    load_captured,
    messages,
    mutate,
    run_loop,
)
from tests.support.capture import replay
from watcher.core import snapshot
from watcher.core.classify import classify
from watcher.core.model import (
    Classification,
    EventRecord,
    FailureClass,
    FailureReport,
    JobSnapshot,
    NodeState,
    PodSnapshot,
)

PROJECTIONS = {
    "jobs": snapshot.job_snapshot,
    "pods": snapshot.pod_snapshot,
    "events": snapshot.event_record,
    "nodes": snapshot.node_state,
}


def project(resource: str, raw: Any) -> Any:
    """The snapshot of `raw`, or None when it has no identity (the one documented error)."""
    try:
        return PROJECTIONS[resource](raw)
    except snapshot.MalformedObject:
        return None


def check_all_projections(raw: Any) -> None:
    for resource in PROJECTIONS:
        project(resource, raw)
    uid = snapshot.job_uid_of_pod(raw)
    assert uid is None or isinstance(uid, str)
    COUNTS["snapshot"] += 1


@fuzz_settings(500)
@given(any_value)
def test_arbitrary_values(raw: Any) -> None:
    check_all_projections(raw)


# --- shaped objects: the right keys, arbitrary values --------------------------------------------

names = st.sampled_from(["p-1", "p-2", "j", "n-1"]) | st.text(max_size=5)
leaf = st.sampled_from(HOSTILE_SCALARS) | st.text(max_size=10) | messages()
TIMES = (
    "2026-11-20T10:00:00Z",
    "2026-02-30T10:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "\uff12\uff10\uff12\uff16-11-20T10:00:00Z",  # fullwidth digits: \d matches them
)
EXIT_CODES = (1, 137, "2", " 3 ", "\u0661", 2**70, 1e300, float("nan"))
times = st.sampled_from(TIMES) | leaf
condition = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["Failed", "DisruptionTarget", "Ready", "PodScheduled"]) | leaf,
        "status": st.sampled_from(["True", "False", "Unknown"]) | leaf,
        "reason": st.sampled_from(["TerminationByKubelet", "DeletionByTaintManager"]) | leaf,
        "message": messages() | leaf,
    },
)
terminated = st.fixed_dictionaries(
    {},
    optional={
        "exitCode": st.sampled_from(EXIT_CODES) | leaf,
        "signal": leaf,
        "reason": st.sampled_from(["OOMKilled", "Error", "DeadlineExceeded"]) | leaf,
        "message": messages() | leaf,
    },
)
container = st.fixed_dictionaries(
    {},
    optional={
        "name": names | leaf,
        "state": st.fixed_dictionaries({}, optional={"terminated": terminated | leaf}) | leaf,
        "lastState": st.fixed_dictionaries({}, optional={"terminated": terminated}) | leaf,
        "restartCount": leaf,
    },
)
meta = st.fixed_dictionaries(
    {"name": names, "uid": names},
    optional={
        "namespace": leaf,
        "labels": st.dictionaries(st.text(max_size=8), leaf, max_size=3) | leaf,
        "annotations": st.dictionaries(st.text(max_size=8), leaf, max_size=3) | leaf,
        "ownerReferences": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "controller": leaf,
                    "kind": st.just("Job") | leaf,
                    "apiVersion": st.just("batch/v1") | leaf,
                    "uid": names | leaf,
                },
            )
            | leaf,
            max_size=3,
        )
        | leaf,
        "creationTimestamp": times,
        "deletionTimestamp": times,
    },
)
status = st.fixed_dictionaries(
    {},
    optional={
        "phase": st.sampled_from(["Failed", "Pending", "Unknown"]) | leaf,
        "reason": st.sampled_from(["Evicted", "NodeLost", "DeadlineExceeded"]) | leaf,
        "message": messages() | leaf,
        "conditions": st.lists(condition | leaf, max_size=3) | leaf,
        "containerStatuses": st.lists(container | leaf, max_size=3) | leaf,
        "initContainerStatuses": st.lists(container, max_size=2) | leaf,
        "active": leaf,
        "failed": leaf,
    },
)
kube_object = st.fixed_dictionaries(
    {"metadata": meta},
    optional={
        "status": status | leaf,
        "spec": st.fixed_dictionaries(
            {}, optional={"nodeName": names | leaf, "taints": leaf, "unschedulable": leaf}
        )
        | leaf,
        "involvedObject": st.fixed_dictionaries(
            {}, optional={"kind": st.just("Pod") | leaf, "name": names | leaf}
        )
        | leaf,
        "reason": st.sampled_from(["FailedMount", "Evicted", "NodeNotReady", "Failed"]) | leaf,
        "message": messages() | leaf,
        "type": st.just("Warning") | leaf,
        "count": leaf,
        "series": leaf,
        "lastTimestamp": times,
        "eventTime": times,
    },
)


def check_report(objects: list[Any]) -> None:
    """Snapshot every object as each kind, build one report from what has an identity, and
    classify it: a Classification whatever the evidence."""
    job: JobSnapshot | None = None
    pods: list[PodSnapshot] = []
    events: list[EventRecord] = []
    nodes: list[NodeState] = []
    for raw in objects:
        job = project("jobs", raw) or job
        pod, event, node = project("pods", raw), project("events", raw), project("nodes", raw)
        pods += [pod] if pod else []
        events += [event] if event else []
        nodes += [node] if node else []
        snapshot.job_uid_of_pod(raw)
    if job is None:
        return
    report = FailureReport(job=job, pods=tuple(pods), events=tuple(events), nodes=tuple(nodes))
    verdict = classify(report)
    assert isinstance(verdict, Classification)
    assert isinstance(verdict.failure_class, FailureClass)
    assert verdict.reason
    COUNTS["classify"] += 1


@fuzz_settings(300)
@given(st.lists(kube_object, min_size=1, max_size=4))
def test_shaped_objects_snapshot_and_classify(objects: list[Any]) -> None:
    for raw in objects:
        check_all_projections(raw)
    check_report(objects)


# --- mutations of the captured watch events ----------------------------------------------

RECORDINGS = load_captured()
MUTATED_OBJECTS = 20_000
MUTATED_REPLAYS = 1_000


def test_mutated_captured_objects() -> None:
    entries = [(e["resource"], e["object"]) for r in RECORDINGS for e in r["watch"]]

    def one(rng: random.Random) -> None:
        resource, raw = rng.choice(entries)
        mutated = mutate(raw, rng)
        check_all_projections(mutated)
        project(resource, mutated)

    before = COUNTS["snapshot"]
    run_loop(MUTATED_OBJECTS, 4, one)
    assert COUNTS["snapshot"] - before == MUTATED_OBJECTS


def test_mutated_recordings_replay_and_classify() -> None:
    """Whole recordings with a few objects damaged, through snapshot + correlator + classify.

    `replay` is the pipeline's path; it skips objects without identity as the watch does
    (MalformedObject) and says ValueError when the Job itself lost its identity.
    """

    def one(rng: random.Random) -> None:
        record = rng.choice(RECORDINGS)
        watch = [dict(e) for e in record["watch"]]
        for _ in range(rng.randint(1, 4)):
            entry = rng.choice(watch)
            entry["object"] = mutate(entry["object"], rng, palette=PARSED_VALUES)
        kept = []
        for entry in watch:
            try:
                PROJECTIONS[entry["resource"]](entry["object"])
            except snapshot.MalformedObject:
                continue  # the watch logs and skips these
            kept.append(entry)
        try:
            result = replay({**record, "watch": kept})
        except ValueError as exc:  # the recording's Job is gone: nothing to classify
            assert "no Job" in str(exc) or "captured_at" in str(exc)
            return
        assert isinstance(result.classification, Classification)
        COUNTS["classify"] += 1

    run_loop(MUTATED_REPLAYS, 5, one)
