"""Events about kinds the correlator never keeps (Deployments, ReplicaSets, ...) are dropped
before they are projected; Events about Jobs, pods and nodes are evidence as before."""

from __future__ import annotations

import pytest

from tests.support.objects import JOB_NAME, JOB_UID, raw_event, raw_job
from tests.unit.test_pipeline import build
from watcher.core import snapshot
from watcher.core.snapshot import MalformedObject, event_record, event_record_about
from watcher.service.pipeline import EVIDENCE_EVENT_KINDS


def test_event_record_about_projects_only_the_kinds_asked_for() -> None:
    about_pod = raw_event("Pod", "p", "FailedMount", "timed out")
    assert event_record_about(about_pod, EVIDENCE_EVENT_KINDS) == event_record(about_pod)
    about_deployment = raw_event("Deployment", "d", "ScalingReplicaSet")
    assert event_record_about(about_deployment, EVIDENCE_EVENT_KINDS) is None
    assert event_record_about(raw_event("Deployment", "d", "X"), None) == event_record(
        raw_event("Deployment", "d", "X")
    )


def test_an_event_without_identity_is_malformed_whatever_it_is_about() -> None:
    nameless = raw_event("Deployment", "d", "ScalingReplicaSet")
    del nameless["metadata"]["uid"]
    with pytest.raises(MalformedObject):
        event_record_about(nameless, EVIDENCE_EVENT_KINDS)
    rig = build()
    rig.pipeline.on_event("ADDED", nameless)
    assert rig.sample("kube_dlq_malformed_input_total", source="event") == 1


def test_the_pipeline_does_not_project_events_about_other_kinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = build()

    def not_here(*args: object) -> None:
        raise AssertionError("an Event about a Deployment was projected")

    monkeypatch.setattr(snapshot, "_event_last_seen", not_here)
    for kind in ("Deployment", "ReplicaSet", "CronJob", ""):
        rig.pipeline.on_event("ADDED", raw_event(kind, JOB_NAME, "SomethingHappened"))
    with pytest.raises(AssertionError):
        rig.pipeline.on_event("ADDED", raw_event("Job", JOB_NAME, "BackoffLimitExceeded"))


def test_events_about_jobs_are_still_evidence() -> None:
    rig = build()
    rig.pipeline.on_job("ADDED", raw_job(name=JOB_NAME, uid=JOB_UID))
    rig.pipeline.on_event("ADDED", raw_event("Deployment", JOB_NAME, "ScalingReplicaSet"))
    rig.pipeline.on_event("ADDED", raw_event("Job", JOB_NAME, "BackoffLimitExceeded"))
    report = rig.pipeline.correlator.report(JOB_UID)
    assert report is not None
    assert [(e.involved_kind, e.reason) for e in report.events] == [("Job", "BackoffLimitExceeded")]
