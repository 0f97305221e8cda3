"""Shared values in what the correlator keeps: equal to what was observed, one copy each,
bounded on hostile input; and what a tracked pair costs (bench/tracked.py)."""

from __future__ import annotations

import json

from bench.tracked import measure, pod_json
from watcher.core import snapshot
from watcher.core.correlate import Correlator
from watcher.core.model import Condition, ContainerOutcome, JobSnapshot, PodSnapshot
from watcher.core.settings import LimitsSettings
from watcher.core.shared import MAX_SHARED_CHARS, Shared

UID = "0b6f2a8e-6d7e-4d59-9a43-2c1c1b9e8f10"


def _pod(i: int) -> PodSnapshot:
    return snapshot.pod_snapshot(json.loads(pod_json(i, "ns", UID)))


def _job(name: str, uid: str, **annotations: str) -> JobSnapshot:
    raw = {
        "metadata": {
            "name": name,
            "uid": uid,
            "namespace": "n" + "s",  # not the literal's object
            "annotations": {"example.com/source-uid": uid, "job-name": name, **annotations},
            "creationTimestamp": "2026-12-02T08:00:00Z",
        },
        "status": {"active": 1},
    }
    return snapshot.job_snapshot(json.loads(json.dumps(raw)))


def test_a_shared_pod_is_equal_and_shares_its_repeated_parts() -> None:
    shared = Shared()
    a, b = _pod(1), _pod(51)  # same node (50 nodes), decoded separately
    assert a.conditions is not b.conditions and a.node_name is not b.node_name
    sa, sb = shared.pod(a), shared.pod(b)
    assert sa == a and sb == b
    assert sa.conditions is sb.conditions
    assert sa.containers is sb.containers
    assert sa.node_name is sb.node_name and sa.phase is sb.phase
    assert sa.created_at is sb.created_at


def test_a_shared_job_is_equal_and_reuses_its_own_name_and_uid() -> None:
    shared = Shared()
    one, two = _job("a", UID, app="x"), _job("b", UID[::-1], app="x")
    s1, s2 = shared.job(one), shared.job(two)
    assert s1 == one and s2 == two
    annotations = dict(s1.annotations)
    assert annotations["example.com/source-uid"] is s1.ref.uid
    assert annotations["job-name"] is s1.ref.name
    assert s1.ref.namespace is s2.ref.namespace
    app1 = next(p for p in s1.annotations if p[0] == "app")
    app2 = next(p for p in s2.annotations if p[0] == "app")
    assert app1 is app2


def test_long_or_many_values_are_not_kept() -> None:
    shared = Shared(max_values=4)
    long = "x" * (MAX_SHARED_CHARS + 1)
    noisy = (Condition(type="Ready", status="False", message=long),)
    assert shared.conditions(noisy) is noisy
    assert long not in shared._values
    for i in range(10):  # hostile variety: the table never grows past its bound
        shared.containers((ContainerOutcome(name=f"c{i}"),))
        assert len(shared._values) <= 4
    pairs = (("k", long),)
    assert shared.pairs(pairs, name="n", uid="u") == pairs


def test_str_subclass_is_kept_as_is() -> None:
    class Text(str):
        pass

    pod = PodSnapshot(name="p", uid="u", phase=Text("Running"))
    assert Shared().pod(pod) == pod


def test_the_correlator_reports_what_was_observed() -> None:
    # Given a Job and its pod, each observed twice (an update of the same objects)
    c = Correlator(LimitsSettings())
    job = _job("a", UID)
    c.observe_job(job)
    c.observe_job(job)
    pod = _pod(1)
    c.observe_pod(UID, "ns", pod)
    c.observe_pod(UID, "ns", pod)
    report = c.report(UID)
    # Then the report holds values equal to the observed ones, the pod once
    assert report is not None
    assert report.job == job and report.pods == (pod,)
    assert c.job(UID) == job


def test_pods_stay_newest_last_and_bounded() -> None:
    c = Correlator(LimitsSettings(max_pods_per_job=2))
    c.observe_job(_job("a", UID))
    pods = [PodSnapshot(name=f"p{i}", uid=f"u{i}") for i in range(3)]
    for pod in (pods[0], pods[1], pods[0], pods[2]):
        c.observe_pod(UID, "ns", pod)
    report = c.report(UID)
    assert report is not None and [p.name for p in report.pods] == ["p0", "p2"]
    # the evicted pod's name no longer leads to the Job
    assert c._job_of_pod.get("ns", "p1") is None
    assert c._job_of_pod.get("ns", "p0") == UID
    c.forget(UID)
    assert len(c._job_of_pod) == 0 and len(c._job_by_name) == 0


def test_a_tracked_pair_costs_far_less_than_before() -> None:
    # 3.9 KB per Job + Running Pod before values were shared and the per-Job maps made lazy,
    # 1.2 KB after; the bound leaves room for one-off growth inside the measurement (the
    # interpreter's table of interned strings resizing is one 2 MB block).
    result = measure(3_000, top=0)
    assert result.tracked_jobs == 3_000
    assert result.bytes_per_pair < 2_500, result


def test_replacing_pairs_at_a_constant_count_keeps_nothing_of_the_deleted_ones() -> None:
    # Job deleted, then its pod (pod GC): the pod's last update is not held as an orphan
    # for a Job that never comes back (719 B per pair replaced before, so RSS crept up).
    # What is left is the bounded memory of finished Jobs (FINISHED_MEMORY uids).
    result = measure(2_000, top=0, churn=2_000)
    assert result.tracked_jobs == 2_000
    assert result.churn_bytes_per_pair < 400, result


def test_an_update_keeps_what_changed() -> None:
    # Given a tracked Job and its Running pod
    c = Correlator(LimitsSettings())
    c.observe_job(_job("a", UID))
    raw = json.loads(pod_json(1, "ns", UID))
    c.observe_pod(UID, "ns", snapshot.pod_snapshot(raw))
    # When the pod's node goes away: Ready turns False, the container is terminated
    raw["status"]["conditions"][1].update(status="False", reason="NodeLost")
    raw["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 137}}
    raw["status"]["phase"] = "Failed"
    updated = snapshot.pod_snapshot(raw)
    c.observe_pod(UID, "ns", updated)
    # And the Job turns Failed with a new annotation
    failed = _job("a", UID, team="x")
    c.observe_job(failed)
    # Then the report holds the new versions, not the shared old parts
    report = c.report(UID)
    assert report is not None
    assert report.pods == (updated,)
    assert report.pods[0].condition("Ready") == Condition("Ready", "False", "NodeLost")
    assert report.pods[0].containers[0].exit_code == 137
    assert report.job == failed and ("team", "x") in report.job.annotations
