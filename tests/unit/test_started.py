"""Started or not: every classification says whether the workload ran (yes / no / unknown).

The scenarios are the classify case table (tests/unit/test_classify.py) and the captured
objects (tests/data/captured): the same evidence that picks the class decides whether a
container ran, so a retry that needs "never started" can trust it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.capture import load, replay
from tests.unit.test_classify import CASES, Case, _case_id
from tests.unit.test_classify_captured import FILES, _ids
from watcher.core.classify import classify
from watcher.core.model import Started

NO = {
    # Rejected by the kubelet before anything ran.
    "rejected-while-node-shuts-down",
    "unexpected-admission-error",
    "node-affinity-rejection",
    "out-of-cpu",
    "out-of-memory-without-rejected-prefix",
    "disk-pressure-rejection-is-admission-not-eviction",
    # Only waiting reasons: the image or the config never let a container start.
    "job-deadline-beats-image-pull",
    "stuck-in-image-pull-backoff",
    "image-pull-timeout-is-image-pull-not-io-timeout",
    "image-pull-before-config-error-of-another-container",
    "invalid-image-name",
    "image-pull-from-event-when-statuses-are-gone",
    "missing-secret",
    "containerd-start-error",
    "failed-mount-missing-configmap",
    "failed-mount-timeout",
    "sandbox-timeout-event",
    "normal-events-are-not-failures",
    "stuck-without-cause",
    # Never got a node.
    "pending-unschedulable",
    "failed-scheduling-event",
    "volume-binding-timeout-while-scheduling",
}
UNKNOWN = {
    # The pod is gone: only Events (or nothing) remain.
    "events-outlive-their-pods",
    "job-deadline-from-event-only",
    "pod-failure-policy-without-pods",
    "backoff-without-pods",
    "empty-report",
    # A failed pod without container statuses: it was on a node and may have run.
    "legacy-evicted-reason",
    "shutdown-reason-terminated",
    "shutdown-reason-before-1.22",
    "legacy-node-lost-reason",
    "backoff-with-unclassifiable-pod",
    "pod-with-null-status",
    "garbage-exit-code-is-no-evidence",
}


def _expected(c: Case) -> Started:
    if c.id in NO:
        return Started.NO
    if c.id in UNKNOWN:
        return Started.UNKNOWN
    return Started.YES  # a container terminated with an exit code, or the pod ran


def test_the_tables_name_only_existing_cases() -> None:
    ids = {c.id for c in CASES}
    assert ids >= NO
    assert ids >= UNKNOWN
    assert not NO & UNKNOWN


@pytest.mark.parametrize("c", CASES, ids=_case_id)
def test_started_per_scenario(c: Case) -> None:
    assert classify(c.report).started == _expected(c)


CAPTURED_STARTED = {
    "active-deadline": Started.YES,
    "eviction-api": Started.YES,
    "exit-1-plain": Started.YES,
    "exit-137-sigkill": Started.YES,
    "exit-2-invalid-input": Started.YES,
    "image-pull-stuck": Started.NO,
    "io-timeout": Started.YES,
    "node-deleted-pod-gc": Started.YES,
    "node-not-ready-taint-eviction": Started.YES,
    "oom-killed": Started.YES,
    "pod-failure-policy-failjob": Started.YES,
    "scheduler-preemption": Started.YES,
    "unschedulable": Started.NO,
}


def test_every_capture_has_an_expectation() -> None:
    assert set(CAPTURED_STARTED) == set(_ids(FILES))


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_started_from_real_captured_objects(path: Any) -> None:
    record = load(path)
    assert replay(record).classification.started == CAPTURED_STARTED[record["scenario"]]


def test_a_job_that_lost_failed_pods_cannot_be_never_started() -> None:
    # Given a Job that counts two failed pods, and one pending pod that never ran
    (c,) = [c for c in CASES if c.id == "stuck-in-image-pull-backoff"]
    job = c.report.job
    report = type(c.report)(
        job=type(job)(ref=job.ref, conditions=job.conditions, failed=2),
        pods=c.report.pods,
        events=c.report.events,
    )
    # Then the pod we cannot see may have run
    assert classify(report).started == Started.UNKNOWN
