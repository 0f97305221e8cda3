"""watcher.core.snapshot: raw apiserver JSON -> model projections, total on malformed input."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import objects as o
from tests.support.objects import Raw, put
from watcher.core.annotations import ANNOTATION_ENABLED
from watcher.core.model import (
    Condition,
    ContainerOutcome,
    EventRecord,
    JobRef,
    JobSnapshot,
    NodeState,
    OwnerRef,
    PodSnapshot,
)
from watcher.core.snapshot import (
    MAX_MESSAGE_CHARS,
    MalformedObject,
    event_record,
    job_snapshot,
    job_uid_of_pod,
    node_state,
    parse_time,
    pod_snapshot,
)

# --- parse_time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-11-20T10:00:00Z", o.T0_UNIX, id="utc"),
        pytest.param("2026-11-20T10:00:00.250000Z", o.T0_UNIX + 0.25, id="microtime"),
        pytest.param("2026-11-20T10:00:00.123456789Z", o.T0_UNIX + 0.123456, id="nanos-cut"),
        pytest.param("2026-11-20T12:00:00+02:00", o.T0_UNIX, id="offset"),
        pytest.param("2026-11-20t10:00:00z", o.T0_UNIX, id="lowercase"),
        pytest.param("2026-11-20T10:00:00", o.T0_UNIX, id="no-zone-is-utc"),
        pytest.param(" 2026-11-20T10:00:00Z ", o.T0_UNIX, id="padded"),
        pytest.param("2026-02-30T10:00:00Z", None, id="impossible-date"),
        pytest.param("2026-11-20", None, id="date-only"),
        pytest.param("yesterday", None, id="text"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param(1795168800, None, id="number"),
        pytest.param(["2026-11-20T10:00:00Z"], None, id="list"),
    ],
)
def test_parse_time(text: object, expected: float | None) -> None:
    parsed = parse_time(text)
    if expected is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(expected, abs=1e-6)


# --- Jobs ----------------------------------------------------------------------------------


def test_job_snapshot_projects_a_failed_cronjob_job() -> None:
    snap = job_snapshot(o.raw_job(failed_reason="BackoffLimitExceeded", failed=7))

    assert snap == JobSnapshot(
        ref=JobRef(namespace="batch", name="report-nightly", uid=o.JOB_UID),
        owner=OwnerRef(kind="CronJob", name="report", uid=o.CRONJOB_UID),
        labels=(),  # app and controller-uid: read by nothing, so not kept
        annotations=(("retry.kube-dlq.io/max-attempts", "3"),),
        conditions=(
            Condition(
                "FailureTarget",
                "True",
                "BackoffLimitExceeded",
                o.JOB_MESSAGES["BackoffLimitExceeded"],
            ),
            Condition(
                "Failed", "True", "BackoffLimitExceeded", o.JOB_MESSAGES["BackoffLimitExceeded"]
            ),
        ),
        active=0,
        failed=7,
        succeeded=0,
        has_pod_failure_policy=False,
        created_at=o.T0_UNIX,
    )


def _job(path: str, value: Any, **kwargs: Any) -> Raw:
    return put(o.raw_job(**kwargs), path, value)


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        pytest.param(o.raw_job(pod_failure_policy=True), "has_pod_failure_policy", True, id="pfp"),
        pytest.param(
            _job("spec.podFailurePolicy", None), "has_pod_failure_policy", False, id="pfp-null"
        ),
        pytest.param(o.raw_job(owner=False), "owner", None, id="no-owner"),
        pytest.param(
            _job("metadata.ownerReferences.0.controller", False),
            "owner",
            None,
            id="owner-not-controller",
        ),
        pytest.param(_job("metadata.ownerReferences", None), "owner", None, id="owners-null"),
        pytest.param(_job("status", None), "conditions", (), id="status-null"),
        pytest.param(_job("status", "Failed"), "failed", 0, id="status-string"),
        pytest.param(
            _job("status.conditions", [None, "x", {"status": "True"}]),
            "conditions",
            (),
            id="conditions-junk",
        ),
        pytest.param(_job("status.failed", "3"), "failed", 3, id="failed-numeric-text"),
        pytest.param(_job("status.failed", -2), "failed", 0, id="failed-negative"),
        pytest.param(_job("status.failed", True), "failed", 0, id="failed-bool"),
        pytest.param(_job("status.active", 2.0), "active", 2, id="active-float"),
        pytest.param(
            _job("metadata.annotations", {"ok": "1", "n": 2, "none": None}),
            "annotations",
            (("ok", "1"),),
            id="annotations-non-string-dropped",
        ),
        pytest.param(
            _job("metadata.labels", {ANNOTATION_ENABLED: "false", "job-name": "x", "app": "y"}),
            "labels",
            ((ANNOTATION_ENABLED, "false"),),
            id="labels-only-the-enabled-flag-kept",
        ),
        pytest.param(_job("metadata.annotations", ["a"]), "annotations", (), id="annotations-list"),
        pytest.param(
            _job("metadata.creationTimestamp", "soon"), "created_at", None, id="bad-timestamp"
        ),
        pytest.param(
            _job("metadata.namespace", None),
            "ref",
            JobRef("", "report-nightly", o.JOB_UID),
            id="no-namespace",
        ),
    ],
)
def test_job_snapshot_tolerates_odd_fields(raw: Raw, field: str, expected: object) -> None:
    assert getattr(job_snapshot(raw), field) == expected


# --- identity --------------------------------------------------------------------------------

PROJECTIONS: dict[str, tuple[Callable[[Any], object], Callable[[], Raw]]] = {
    "job": (job_snapshot, o.raw_job),
    "pod": (pod_snapshot, o.kwok_failed_pod),
    "event": (event_record, lambda: o.raw_event("Pod", "p-1", "Evicted")),
    "node": (node_state, o.raw_node),
}


@pytest.mark.parametrize("kind", sorted(PROJECTIONS))
@pytest.mark.parametrize(
    "break_identity",
    [
        pytest.param(lambda raw: raw.pop("metadata"), id="no-metadata"),
        pytest.param(lambda raw: put(raw, "metadata", None), id="metadata-null"),
        pytest.param(lambda raw: put(raw, "metadata", "x"), id="metadata-string"),
        pytest.param(lambda raw: raw["metadata"].pop("uid"), id="no-uid"),
        pytest.param(lambda raw: raw["metadata"].pop("name"), id="no-name"),
        pytest.param(lambda raw: put(raw, "metadata.uid", 42), id="uid-int"),
        pytest.param(lambda raw: put(raw, "metadata.name", ""), id="name-empty"),
    ],
)
def test_object_without_identity_is_malformed(
    kind: str, break_identity: Callable[[Raw], object]
) -> None:
    project, build = PROJECTIONS[kind]
    raw = build()
    break_identity(raw)

    with pytest.raises(MalformedObject, match=r"metadata\.name or metadata\.uid"):
        project(raw)


@pytest.mark.parametrize("kind", sorted(PROJECTIONS))
@pytest.mark.parametrize("raw", [None, "pod", 7, [], {}], ids=repr)
def test_non_object_is_malformed_and_a_value_error(kind: str, raw: object) -> None:
    project, _ = PROJECTIONS[kind]

    with pytest.raises(ValueError) as caught:
        project(raw)
    assert isinstance(caught.value, MalformedObject)


# --- Pods ----------------------------------------------------------------------------------


def test_pod_snapshot_projects_a_kwok_failed_pod() -> None:
    raw = o.kwok_failed_pod(exit_code=137, reason="OOMKilled", message="simulated OOM")

    assert pod_snapshot(raw) == PodSnapshot(
        name="report-nightly-abcde",
        uid="uid-report-nightly-abcde",
        phase="Failed",
        node_name="kwok-node-0",
        conditions=(
            Condition("Initialized", "True"),
            Condition("Ready", "False"),
            Condition("ContainersReady", "False"),
            Condition("PodScheduled", "True"),
        ),
        containers=(
            ContainerOutcome(
                name="main",
                exit_code=137,
                terminated_reason="OOMKilled",
                terminated_message="simulated OOM",
            ),
        ),
        created_at=o.T0_UNIX,
    )


def test_pod_snapshot_reads_init_containers_first_and_flags_them() -> None:
    raw = o.raw_pod(
        init_containers=[o.terminated("setup", 2, "Error", "migration failed")],
        containers=[o.waiting("main", "PodInitializing")],
    )

    containers = pod_snapshot(raw).containers

    assert [(c.name, c.init, c.exit_code, c.waiting_reason) for c in containers] == [
        ("setup", True, 2, ""),
        ("main", False, None, "PodInitializing"),
    ]


def test_pod_snapshot_takes_the_crash_from_last_state_of_a_restarted_container() -> None:
    last = o.terminated("main", 137, "OOMKilled")
    raw = o.raw_pod(phase="Running", containers=[o.crash_looping("main", last, restarts=4)])

    (main,) = pod_snapshot(raw).containers

    assert (main.exit_code, main.terminated_reason, main.waiting_reason, main.restart_count) == (
        137,
        "OOMKilled",
        "CrashLoopBackOff",
        4,
    )


def test_pod_snapshot_keeps_signal_and_status_reason() -> None:
    raw = o.raw_pod(
        reason="Evicted",
        message="The node was low on resource: memory.",
        containers=[o.terminated("main", 137, "Error", signal=9)],
    )

    snap = pod_snapshot(raw)

    assert (snap.reason, snap.message, snap.containers[0].signal) == (
        "Evicted",
        "The node was low on resource: memory.",
        9,
    )


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [
        pytest.param(137, 137, id="int"),
        pytest.param("137", 137, id="numeric-text"),
        pytest.param(" 2 ", 2, id="padded-text"),
        pytest.param("-1", -1, id="negative-text"),
        pytest.param(1.0, 1, id="integral-float"),
        pytest.param(1.5, None, id="fractional-float"),
        pytest.param("oops", None, id="text"),
        pytest.param("", None, id="empty-text"),
        pytest.param(True, None, id="bool"),
        pytest.param(None, None, id="null"),
        pytest.param([], None, id="list"),
        pytest.param({"code": 1}, None, id="dict"),
        pytest.param(float("nan"), None, id="nan"),
    ],
)
def test_pod_snapshot_exit_code_types(exit_code: Any, expected: int | None) -> None:
    raw = o.kwok_failed_pod(exit_code=exit_code)

    assert pod_snapshot(raw).containers[0].exit_code == expected


def _pod(path: str, value: Any) -> Raw:
    return put(o.kwok_failed_pod(), path, value)


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        pytest.param(_pod("status", None), "containers", (), id="status-null"),
        pytest.param(_pod("status", None), "phase", "", id="status-null-phase"),
        pytest.param(_pod("status", ["Failed"]), "phase", "", id="status-list"),
        pytest.param(_pod("status.phase", 3), "phase", "", id="phase-int"),
        pytest.param(_pod("status.containerStatuses", None), "containers", (), id="statuses-null"),
        pytest.param(
            _pod("status.containerStatuses", "main"), "containers", (), id="statuses-string"
        ),
        pytest.param(
            _pod("status.containerStatuses", [None, "x", {}]),
            "containers",
            (ContainerOutcome(name=""),),
            id="statuses-junk",
        ),
        pytest.param(
            _pod("status.containerStatuses.0.state", None),
            "containers",
            (ContainerOutcome(name="main"),),
            id="state-null",
        ),
        pytest.param(
            _pod("status.containerStatuses.0.state.terminated", "x"),
            "containers",
            (ContainerOutcome(name="main"),),
            id="terminated-string",
        ),
        pytest.param(
            _pod("status.containerStatuses.0.restartCount", "many"),
            "containers",
            (
                ContainerOutcome(
                    "main",
                    exit_code=1,
                    terminated_reason="containerFailed",
                    terminated_message="container failed",
                ),
            ),
            id="restart-count-text",
        ),
        pytest.param(
            _pod("status.conditions", {"type": "Ready"}), "conditions", (), id="conditions-dict"
        ),
        pytest.param(_pod("spec", None), "node_name", "", id="spec-null"),
        pytest.param(_pod("spec.nodeName", ["kwok-node-0"]), "node_name", "", id="node-list"),
        pytest.param(_pod("metadata.deletionTimestamp", o.at(90)), "deleted", True, id="deleting"),
        pytest.param(
            _pod("metadata.deletionTimestamp", None), "deleted", False, id="deletion-null"
        ),
    ],
)
def test_pod_snapshot_tolerates_odd_fields(raw: Raw, field: str, expected: object) -> None:
    assert getattr(pod_snapshot(raw), field) == expected


def test_pod_snapshot_marks_pods_from_delete_events_deleted() -> None:
    assert pod_snapshot(o.kwok_failed_pod(), deleted=True).deleted is True
    assert pod_snapshot(o.kwok_failed_pod()).deleted is False


# --- job_uid_of_pod ------------------------------------------------------------------------


def _owned_pod(path: str, value: Any) -> Raw:
    return put(o.raw_pod(), path, value)


def _unlabelled(raw: Raw) -> Raw:
    raw["metadata"]["labels"] = {"app": "report"}
    return raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(o.raw_pod(), o.JOB_UID, id="owner-reference"),
        pytest.param(_unlabelled(o.raw_pod()), o.JOB_UID, id="owner-without-labels"),
        pytest.param(_owned_pod("metadata.ownerReferences", None), o.JOB_UID, id="label-fallback"),
        pytest.param(
            put(
                _owned_pod("metadata.ownerReferences", []),
                "metadata.labels",
                {"controller-uid": "legacy-uid"},
            ),
            "legacy-uid",
            id="legacy-label",
        ),
        pytest.param(
            _unlabelled(_owned_pod("metadata.ownerReferences.0.controller", False)),
            None,
            id="non-controller-owner",
        ),
        pytest.param(
            _unlabelled(
                _owned_pod("metadata.ownerReferences.0.apiVersion", "batch.volcano.sh/v1alpha1")
            ),
            None,
            id="volcano-job-is-not-a-batch-job",
        ),
        pytest.param(
            _unlabelled(_owned_pod("metadata.ownerReferences.0.kind", "ReplicaSet")),
            None,
            id="replicaset-owner",
        ),
        pytest.param(_owned_pod("metadata", None), None, id="metadata-null"),
        pytest.param({}, None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("pod", None, id="string"),
    ],
)
def test_job_uid_of_pod(raw: Any, expected: str | None) -> None:
    assert job_uid_of_pod(raw) == expected


# --- Events --------------------------------------------------------------------------------


def test_event_record_projects_a_core_v1_event() -> None:
    raw = o.raw_event(
        "Pod", "report-nightly-abcde", "Evicted", "The node was low on resource: memory.", count=2
    )

    assert event_record(raw) == EventRecord(
        involved_kind="Pod",
        involved_name="report-nightly-abcde",
        reason="Evicted",
        message="The node was low on resource: memory.",
        type="Warning",
        count=2,
        last_seen=o.T0_UNIX + 45,
    )


def _event(**fields: Any) -> Raw:
    raw = o.raw_event("Pod", "p-1", "FailedMount", "boom")
    raw.update(fields)
    return raw


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        pytest.param(
            _event(lastTimestamp=None, eventTime="2026-11-20T10:02:00.000001Z"),
            "last_seen",
            o.T0_UNIX + 120.000001,
            id="event-time",
        ),
        pytest.param(
            _event(lastTimestamp=None, series={"count": 4, "lastObservedTime": o.at(300)}),
            "last_seen",
            o.T0_UNIX + 300,
            id="series-observed",
        ),
        pytest.param(
            _event(lastTimestamp="garbage"), "last_seen", o.T0_UNIX + 40, id="first-timestamp"
        ),
        pytest.param(
            _event(lastTimestamp=None, firstTimestamp=None), "last_seen", None, id="no-time"
        ),
        pytest.param(_event(count=None, series={"count": 4}), "count", 4, id="series-count"),
        pytest.param(_event(count="x"), "count", 1, id="count-text"),
        pytest.param(_event(count=0), "count", 1, id="count-zero"),
        pytest.param(_event(type=None), "type", "Normal", id="type-null"),
        pytest.param(_event(involvedObject=None), "involved_name", "", id="involved-null"),
        pytest.param(_event(reason=["x"]), "reason", "", id="reason-list"),
        pytest.param(
            _event(involvedObject=None, regarding={"kind": "Pod", "name": "p-2"}),
            "involved_name",
            "p-2",
            id="events-k8s-io-regarding",
        ),
        pytest.param(
            _event(message=None, note="from events.k8s.io"),
            "message",
            "from events.k8s.io",
            id="events-k8s-io-note",
        ),
    ],
)
def test_event_record_tolerates_odd_fields(raw: Raw, field: str, expected: object) -> None:
    value = getattr(event_record(raw), field)
    if isinstance(expected, float):
        assert value == pytest.approx(expected, abs=1e-6)
    else:
        assert value == expected


# --- Nodes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "deleted", "expected"),
    [
        pytest.param(
            o.raw_node(),
            False,
            NodeState("kwok-node-0", ready="True", reason="KubeletReady"),
            id="ready",
        ),
        pytest.param(
            o.not_ready_node(),
            False,
            NodeState(
                "kwok-node-0",
                ready="Unknown",
                reason="NodeStatusUnknown",
                taints=("node.kubernetes.io/unreachable:NoExecute",),
            ),
            id="unreachable",
        ),
        pytest.param(
            put(
                o.raw_node(unschedulable=True),
                "spec.taints",
                [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}, {"effect": "x"}],
            ),
            False,
            NodeState(
                "kwok-node-0",
                reason="KubeletReady",
                unschedulable=True,
                taints=("dedicated=batch:NoSchedule",),
            ),
            id="cordoned-with-valued-taint",
        ),
        pytest.param(
            put(o.raw_node(), "spec.unschedulable", "true"),
            False,
            NodeState("kwok-node-0", reason="KubeletReady"),
            id="unschedulable-text",
        ),
        pytest.param(
            put(o.raw_node(), "status", None),
            False,
            NodeState("kwok-node-0", ready="Unknown"),
            id="status-null",
        ),
        pytest.param(
            put(o.raw_node(), "status.conditions.1.status", None),
            False,
            NodeState("kwok-node-0", ready="Unknown", reason="KubeletReady"),
            id="ready-status-null",
        ),
        pytest.param(
            o.raw_node(),
            True,
            NodeState("kwok-node-0", exists=False, reason="KubeletReady"),
            id="deleted",
        ),
    ],
)
def test_node_state(raw: Raw, deleted: bool, expected: NodeState) -> None:
    assert node_state(raw, deleted=deleted) == expected


# --- bounded messages ----------------------------------------------------------------------


def test_long_messages_keep_their_head_and_tail() -> None:
    # A hostile or hand-written status can carry megabytes of message; the projections keep a
    # bounded head and tail of each, so the correlator's memory and the dead letters stay small.
    huge = "HEAD" + "x" * 2**20 + "TAIL"
    pod = pod_snapshot(
        o.raw_pod(
            message=huge,
            conditions=[o.condition("DisruptionTarget", message=huge)],
            containers=[o.terminated("main", 1, "Error", huge), o.waiting("side", message=huge)],
        )
    )
    event = event_record(o.raw_event("Pod", "p", "FailedMount", huge))
    kept = [
        pod.message,
        pod.conditions[0].message,
        pod.containers[0].terminated_message,
        pod.containers[1].waiting_message,
        event.message,
    ]
    for message in kept:
        assert len(message) <= MAX_MESSAGE_CHARS + len("\n…\n")
        assert message.startswith("HEADxxx") and message.endswith("xxxTAIL")
        assert "\n…\n" in message


def test_messages_up_to_the_bound_are_kept_whole() -> None:
    message = "m" * MAX_MESSAGE_CHARS
    event = event_record(o.raw_event("Pod", "p", "FailedMount", message))
    assert event.message == message


# --- totality ------------------------------------------------------------------------------

FULL_OBJECTS: dict[str, tuple[Callable[[Any], object], Callable[[], Raw]]] = {
    "job": (job_snapshot, lambda: o.raw_job(pod_failure_policy=True)),
    "pod": (
        pod_snapshot,
        lambda: o.raw_pod(
            reason="Evicted",
            message="The node was low on resource: memory.",
            conditions=[
                o.disruption("TerminationByKubelet", "low on memory"),
                o.condition("Ready", "False"),
            ],
            init_containers=[o.terminated("setup", 0, "Completed")],
            containers=[
                o.crash_looping("main", o.terminated("main", 137, "OOMKilled")),
                o.waiting("side", "CreateContainerConfigError", "secret not found"),
            ],
            deleting=True,
        ),
    ),
    "event": (event_record, lambda: o.raw_event("Pod", "p-1", "Evicted", "low", count=3)),
    "node": (node_state, o.not_ready_node),
}


def _has_identity(raw: object) -> bool:
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    return isinstance(meta, dict) and all(
        isinstance(meta.get(k), str) and meta.get(k) for k in ("name", "uid")
    )


@pytest.mark.parametrize("kind", sorted(FULL_OBJECTS))
def test_randomly_pruned_objects_never_raise_except_without_identity(kind: str) -> None:
    project, build = FULL_OBJECTS[kind]
    rng = random.Random(f"snapshot-{kind}")  # fixed seed: failures reproduce
    projected = 0
    for _ in range(400):
        raw = o.pruned(build(), rng)
        if _has_identity(raw):
            project(raw)
            projected += 1
        else:
            with pytest.raises(MalformedObject):
                project(raw)
        assert job_uid_of_pod(raw) is None or isinstance(job_uid_of_pod(raw), str)
    # Both branches must actually run, or the fuzz proves nothing.
    assert 50 < projected < 400
