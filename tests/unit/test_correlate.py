"""The correlator joins evidence that arrives in any order, and forgets what it should."""

from __future__ import annotations

import pytest

from watcher.core.correlate import Correlator
from watcher.core.model import (
    Condition,
    ContainerOutcome,
    EventRecord,
    JobRef,
    JobSnapshot,
    NodeState,
    PodSnapshot,
)
from watcher.core.settings import LimitsSettings

NS = "batch"


def job(uid: str = "job-uid", name: str = "nightly", *conditions: Condition) -> JobSnapshot:
    return JobSnapshot(ref=JobRef(NS, name, uid), conditions=conditions)


def pod(name: str = "nightly-abc", uid: str = "pod-uid", **kw: object) -> PodSnapshot:
    return PodSnapshot(name=name, uid=uid, **kw)  # type: ignore[arg-type]


def event(kind: str, name: str, reason: str, count: int = 1) -> EventRecord:
    return EventRecord(involved_kind=kind, involved_name=name, reason=reason, count=count)


ORDERS = {
    "job, pod, events": ("job", "pod", "pod_event", "job_event"),
    "events first": ("pod_event", "job_event", "job", "pod"),
    "pod event before pod": ("job", "pod_event", "pod", "job_event"),
    "pod before job": ("pod", "job", "pod_event", "job_event"),
    "job last": ("pod_event", "pod", "job_event", "job"),
}


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
def test_report_joins_evidence_in_any_arrival_order(order: tuple[str, ...]) -> None:
    c = Correlator(LimitsSettings())
    steps = {
        "job": lambda: c.observe_job(job()),
        "pod": lambda: c.observe_pod("job-uid", NS, pod(node_name="n1")),
        "pod_event": lambda: c.observe_event(NS, event("Pod", "nightly-abc", "Evicted")),
        "job_event": lambda: c.observe_event(NS, event("Job", "nightly", "BackoffLimitExceeded")),
    }
    for step in order:
        steps[step]()

    report = c.report("job-uid")

    assert report is not None
    assert [p.name for p in report.pods] == ["nightly-abc"]
    assert sorted(e.reason for e in report.events) == ["BackoffLimitExceeded", "Evicted"]
    assert [n.name for n in report.nodes] == ["n1"]


def test_aggregated_event_keeps_newest_count() -> None:
    c = Correlator(LimitsSettings())
    c.observe_job(job())
    c.observe_event(NS, event("Job", "nightly", "BackoffLimitExceeded", count=1))
    c.observe_event(NS, event("Job", "nightly", "BackoffLimitExceeded", count=4))
    report = c.report("job-uid")
    assert report is not None
    assert [e.count for e in report.events] == [4]


def test_node_events_and_deletion_reach_reports_of_pods_on_that_node() -> None:
    c = Correlator(LimitsSettings())
    c.observe_job(job())
    c.observe_node(NodeState("n1"))
    c.observe_pod("job-uid", NS, pod(node_name="n1", phase="Running"))
    c.observe_event("", event("Node", "n1", "NodeNotReady"))
    c.node_deleted("n1")
    report = c.report("job-uid")
    assert report is not None
    assert report.nodes == (NodeState("n1", exists=False, ready="Unknown"),)
    assert [e.reason for e in report.events] == ["NodeNotReady"]


def test_pods_of_unknown_jobs_are_held_not_tracked() -> None:
    c = Correlator(LimitsSettings())
    c.observe_pod("other-uid", NS, pod())
    assert len(c) == 0
    assert c.report("other-uid") is None


def test_held_pods_keep_their_newest_version_and_are_bounded() -> None:
    # A restart relists pods before Jobs: the pods of many Jobs wait for their Jobs
    c = Correlator(LimitsSettings(max_orphan_pods=3))
    c.observe_pod("a", NS, pod(name="a-1", uid="pa", phase="Running"))
    c.observe_pod("a", NS, pod(name="a-1", uid="pa", phase="Failed"))
    for name in ("b", "c", "d"):
        c.observe_pod(name, NS, pod(name=f"{name}-1", uid=f"p{name}"))
    for name in ("a", "b", "c", "d"):
        c.observe_job(job(name, name))
    reports = {name: c.report(name) for name in ("a", "b", "c", "d")}
    assert reports["a"] is not None and reports["a"].pods == ()  # aged out: oldest Job first
    assert [(p.name, p.phase) for r in reports.values() if r for p in r.pods] == [
        ("b-1", ""),
        ("c-1", ""),
        ("d-1", ""),
    ]


def test_held_pod_is_adopted_with_its_newest_version() -> None:
    c = Correlator(LimitsSettings())
    c.observe_pod("job-uid", NS, pod(phase="Running"))
    c.observe_pod("job-uid", NS, pod(phase="Failed"))
    c.observe_job(job())
    report = c.report("job-uid")
    assert report is not None
    assert [p.phase for p in report.pods] == ["Failed"]


def test_forgetting_a_job_drops_the_pods_held_for_it() -> None:
    c = Correlator(LimitsSettings())
    c.observe_pod("job-uid", NS, pod())
    c.forget("job-uid")  # e.g. the Job turned out to be out of scope
    c.observe_job(job())
    report = c.report("job-uid")
    assert report is not None
    assert report.pods == ()


def test_pods_per_job_are_bounded_newest_kept() -> None:
    c = Correlator(LimitsSettings(max_pods_per_job=3))
    c.observe_job(job())
    for i in range(10):
        c.observe_pod("job-uid", NS, pod(name=f"p{i}", uid=f"u{i}"))
    report = c.report("job-uid")
    assert report is not None
    assert [p.name for p in report.pods] == ["p7", "p8", "p9"]


def test_jobs_beyond_the_limit_evict_least_recently_updated() -> None:
    c = Correlator(LimitsSettings(max_tracked_jobs=2))
    c.observe_job(job("a", "a"))
    c.observe_job(job("b", "b"))
    c.observe_job(job("a", "a"))  # a updated: b is now the oldest
    c.observe_job(job("c", "c"))
    assert c.job("b") is None
    assert c.job("a") is not None and c.job("c") is not None
    assert c.evicted_jobs == 1


def test_pinned_job_is_never_evicted_for_room() -> None:
    # Given room for two Jobs, the oldest of which has a failure not yet written (pinned)
    c = Correlator(LimitsSettings(max_tracked_jobs=2))
    c.observe_job(job("a", "a"))
    c.pin("a")
    # When more Jobs arrive than there is room for
    for name in ("b", "c", "d"):
        c.observe_job(job(name, name))
    # Then only unpinned Jobs are evicted; once unpinned, a is evictable again
    assert c.job("a") is not None and c.job("d") is not None
    assert c.job("b") is None and c.job("c") is None
    c.unpin("a")
    c.observe_job(job("e", "e"))
    assert c.job("a") is None


def test_when_every_job_is_pinned_the_bound_yields_rather_than_drop_one() -> None:
    c = Correlator(LimitsSettings(max_tracked_jobs=1))
    for name in ("a", "b", "c"):
        c.pin(name)  # as the pipeline does for a failed Job: pinned before it is tracked
        c.observe_job(job(name, name))
    assert all(c.job(name) is not None for name in ("a", "b", "c"))


def test_orphan_events_are_bounded() -> None:
    c = Correlator(LimitsSettings(max_orphan_events=2))
    for i in range(5):
        c.observe_event(NS, event("Pod", f"p{i}", "Failed"))
    c.observe_job(job())
    c.observe_pod("job-uid", NS, pod(name="p0"))  # its Event was dropped: only 2 held
    c.observe_pod("job-uid", NS, pod(name="p4", uid="u4"))
    report = c.report("job-uid")
    assert report is not None
    assert [e.involved_name for e in report.events] == ["p4"]


def test_forget_and_retain_only_drop_all_state() -> None:
    c = Correlator(LimitsSettings())
    c.observe_job(job("a", "a"))
    c.observe_job(job("b", "b"))
    c.observe_pod("a", NS, pod(name="a-1", uid="pa"))
    assert c.retain_only(frozenset({"b"})) == ["a"]
    # a's pod name no longer routes Events to a forgotten Job
    c.observe_event(NS, event("Pod", "a-1", "Evicted"))
    c.observe_job(job("a", "a"))
    report = c.report("a")
    assert report is not None
    assert report.pods == ()


PULL = ContainerOutcome("main", waiting_reason="ImagePullBackOff")
RUNNING = ContainerOutcome("main")
UNSCHEDULED = (Condition("PodScheduled", "False", "Unschedulable"),)
STUCK_CASES = {
    "image pull past dwell": ([pod(phase="Pending", containers=(PULL,), created_at=0)], 600, 1),
    "image pull within dwell": ([pod(phase="Pending", containers=(PULL,), created_at=0)], 100, 0),
    "unschedulable past dwell": (
        [pod(phase="Pending", conditions=UNSCHEDULED, created_at=0)],
        600,
        1,
    ),
    "running pod": ([pod(phase="Running", containers=(RUNNING,), created_at=0)], 600, 0),
    "one of two pods stuck": (
        [
            pod(phase="Pending", containers=(PULL,), created_at=0),
            pod(name="b", uid="b", phase="Running", created_at=0),
        ],
        600,
        0,
    ),
    "no pods yet": ([], 600, 0),
}


@pytest.mark.parametrize(
    ("pods", "now", "expected"), list(STUCK_CASES.values()), ids=list(STUCK_CASES)
)
def test_stuck_jobs_need_every_pod_waiting_past_dwell(
    pods: list[PodSnapshot], now: float, expected: int
) -> None:
    c = Correlator(LimitsSettings())
    c.observe_job(job())
    for p in pods:
        c.observe_pod("job-uid", NS, p)
    assert len(c.stuck_jobs(now, dwell_s=300)) == expected


def test_failed_job_is_not_stuck() -> None:
    c = Correlator(LimitsSettings())
    c.observe_job(job("job-uid", "nightly", Condition("Failed", "True", "BackoffLimitExceeded")))
    c.observe_pod("job-uid", NS, pod(phase="Pending", containers=(PULL,), created_at=0))
    assert c.stuck_jobs(600, dwell_s=300) == []


def test_events_of_a_pod_never_seen_reach_the_job_through_successful_create() -> None:
    # Given a pod deleted before the daemon started: only Events remain
    c = Correlator(LimitsSettings())
    c.observe_event(NS, event("Pod", "nightly-x7k2p", "TaintManagerEviction"))
    c.observe_job(job())
    created = EventRecord("Job", "nightly", "SuccessfulCreate", "Created pod: nightly-x7k2p")
    c.observe_event(NS, created)
    c.observe_event(NS, event("Pod", "nightly-x7k2p", "Killing"))
    report = c.report("job-uid")
    assert report is not None
    assert sorted(e.reason for e in report.events) == [
        "Killing",
        "SuccessfulCreate",
        "TaintManagerEviction",
    ]


def test_a_job_forgotten_after_a_successful_create_event_leaves_no_mapping_behind() -> None:
    # Given a Job whose pod is known only from its SuccessfulCreate Event (found by the
    # apiserver-restart soak: the bulkhead caught a KeyError here, watch_event_crashed)
    c = Correlator(LimitsSettings())
    c.observe_job(job())
    c.observe_event(NS, EventRecord("Job", "nightly", "SuccessfulCreate", "Created pod: nightly-x"))
    # When the Job is forgotten (handled, deleted or evicted) and an Event of that pod arrives
    c.forget("job-uid")
    c.observe_event(NS, event("Pod", "nightly-x", "Killing"))
    # Then nothing raises, and a new Job of the same name does not inherit the old pod's Events
    c.observe_job(job("other-uid"))
    report = c.report("other-uid")
    assert report is not None and [e.reason for e in report.events] == []


def test_pods_named_by_events_are_bounded_per_job_oldest_dropped() -> None:
    c = Correlator(LimitsSettings(max_pods_per_job=2))
    c.observe_job(job())
    for i in range(5):
        message = f"Created pod: nightly-{i}"
        c.observe_event(NS, EventRecord("Job", "nightly", "SuccessfulCreate", message, count=i + 1))
    # An Event of the oldest named pod no longer reaches the Job; one of the newest does
    c.observe_event(NS, event("Pod", "nightly-0", "Killing"))
    c.observe_event(NS, event("Pod", "nightly-4", "BackOff"))
    report = c.report("job-uid")
    assert report is not None
    assert sorted(e.reason for e in report.events) == ["BackOff", "SuccessfulCreate"]


def test_pods_of_a_finished_job_do_not_crowd_out_those_still_awaited() -> None:
    # A deleted Job's pods are deleted seconds later (pod GC): those updates are not held,
    # so the pods of Jobs not seen yet keep their place under max_orphan_pods.
    c = Correlator(LimitsSettings(max_orphan_pods=2))
    c.observe_job(job("gone", "gone"))
    c.forget("gone", finished=True)
    c.observe_pod("b", NS, pod(name="b-1", uid="pb", phase="Failed"))
    for i in range(5):
        c.observe_pod("gone", NS, pod(name=f"gone-{i}", uid=f"pg{i}", deleted=True))
    c.observe_pod("c", NS, pod(name="c-1", uid="pc", phase="Failed"))
    c.observe_job(job("b", "b"))
    c.observe_job(job("c", "c"))
    reports = [c.report(uid) for uid in ("b", "c")]
    assert [p.name for r in reports if r is not None for p in r.pods] == ["b-1", "c-1"]
    assert c.report("gone") is None


def test_a_job_forgotten_but_not_finished_gets_its_pods_back() -> None:
    # Evicted (max_tracked_jobs) or out of scope is not finished: the Job can come back.
    c = Correlator(LimitsSettings())
    c.observe_job(job())
    c.forget("job-uid")
    c.observe_pod("job-uid", NS, pod(phase="Failed"))
    c.observe_job(job())
    report = c.report("job-uid")
    assert report is not None and [p.phase for p in report.pods] == ["Failed"]
