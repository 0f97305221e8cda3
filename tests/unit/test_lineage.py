"""Lineage comes from kube-dlq's create records, never from a Job's annotations (item 14).

The pure rule (`lineage_of`) as a table; the handler over FakeStore: a Job whose author copied
another Job's lineage annotations (pointer included) is handled as an original, and reported.
"""

from __future__ import annotations

import random

import pytest
import structlog
from structlog.testing import capture_logs

from tests.support.fakes import FakeClock, FakeJobs, FakeStore
from tests.support.objects import (
    DISRUPTION_MESSAGES,
    JOB_NAME,
    JOB_UID,
    NAMESPACE,
    T0_UNIX,
    disruption,
    raw_job,
    raw_pod,
    report,
    terminated,
)
from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_CREATE_TOKEN,
    ANNOTATION_HISTORY,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    ANNOTATION_RETRY_OF,
)
from watcher.core.lineage import (
    CreateRecord,
    Lineage,
    decode_lineage,
    encode_lineage,
    lineage_of,
    record_pointer,
)
from watcher.core.manifest import encode_history
from watcher.core.model import AttemptRecord, FailureClass, JobRef
from watcher.core.policy import RetryPolicy
from watcher.core.settings import ClassifySettings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler

TOKEN = "0123456789abcdef" * 2
OTHER = "fedcba9876543210" * 2
HISTORY = (
    AttemptRecord(1, "etl", "uid-etl", FailureClass.NODE_LOST, "node lost", T0_UNIX - 100),
    AttemptRecord(2, "etl-r2", "uid-etl-r2", FailureClass.EVICTED, "evicted", T0_UNIX - 50),
)
LINEAGE = Lineage(3, HISTORY)
JOB = JobRef("batch", "etl-r3", "uid-etl-r3")


def rec(namespace: str = "batch", name: str = "etl-r3", uid: str = JOB.uid) -> CreateRecord:
    return CreateRecord(namespace, name, TOKEN, uid, LINEAGE)


RECORDS = {
    # record, token on the Job -> is it the Job's lineage
    "uid recorded and matching": (rec(), "", True),
    "not settled yet, token matches": (rec(uid=""), TOKEN, True),
    "not settled yet, token differs": (rec(uid=""), OTHER, False),
    "settled for another uid (the token copied)": (rec(uid="uid-other"), TOKEN, False),
    "another name": (rec(name="mine"), TOKEN, False),
    "another namespace": (rec(namespace="other"), TOKEN, False),
    "unreadable lineage": (CreateRecord("batch", "etl-r3", TOKEN, JOB.uid, None), TOKEN, False),
    "no record": (None, TOKEN, False),
}  # fmt: skip


@pytest.mark.parametrize(("record", "token", "found"), RECORDS.values(), ids=list(RECORDS))
def test_a_record_is_a_jobs_lineage_only_when_it_names_that_job(
    record: CreateRecord | None, token: str, found: bool
) -> None:
    assert (lineage_of(JOB, token, record) == LINEAGE) is found


def test_lineage_round_trips_and_garbage_is_a_value_error() -> None:
    assert decode_lineage(encode_lineage(LINEAGE)) == LINEAGE
    assert LINEAGE.first_failed_at == T0_UNIX - 100
    for bad in ("", "[]", '{"attempt": 1, "history": []}', '{"attempt": 2}', "[" * 10_000):
        with pytest.raises(ValueError):
            decode_lineage(bad)


OF, TOK = ANNOTATION_RETRY_OF, ANNOTATION_CREATE_TOKEN
POINTERS = {
    "well-formed": ({OF: "uid-1", TOK: TOKEN}, ("uid-1", TOKEN)),
    "no token": ({OF: "uid-1"}, None),
    "a key pattern as ticket id": ({OF: "*", TOK: TOKEN}, None),
    "a short token": ({OF: "uid-1", TOK: "ab"}, None),
}


@pytest.mark.parametrize(("annotations", "pointer"), POINTERS.values(), ids=list(POINTERS))
def test_only_a_well_formed_pointer_is_looked_up(
    annotations: dict[str, str], pointer: tuple[str, str] | None
) -> None:
    assert record_pointer(annotations) == pointer


# --- the handler -------------------------------------------------------------------------------


def lost_pod() -> dict[str, object]:
    message = DISRUPTION_MESSAGES["DeletionByTaintManager"]
    return raw_pod(
        conditions=[disruption("DeletionByTaintManager", message)],
        containers=[terminated(exit_code=137)],
    )


def handler(store: FakeStore, metrics: Metrics) -> FailureHandler:
    return FailureHandler(
        store=store, jobs=FakeJobs(), policy=RetryPolicy(), classify=ClassifySettings(),
        cluster_name="unit", metrics=metrics, logger=structlog.get_logger(),
        clock=FakeClock(T0_UNIX + 60), rng=random.Random(0),
    )  # fmt: skip


def victim_lineage() -> tuple[str, CreateRecord]:
    """Another team's retry chain: its attempt 3 (`etl-r3`), recorded by kube-dlq."""
    return "uid-etl-r2", CreateRecord(NAMESPACE, "etl-r3", TOKEN, "uid-etl-r3", LINEAGE)


async def test_a_job_carrying_another_jobs_lineage_annotations_is_an_original() -> None:
    # Given kube-dlq's record of another Job's retry chain in the same namespace, and a user's
    # Job that copied all of that retry Job's annotations (its pointer and token included)
    store, metrics = FakeStore(), Metrics()
    ticket_id, record = victim_lineage()
    store.records[ticket_id] = record
    job = raw_job()
    job["metadata"]["annotations"].update(
        {
            ANNOTATION_ORIGINAL_NAME: "etl",
            ANNOTATION_ORIGINAL_UID: "uid-etl",
            ANNOTATION_ATTEMPT: "3",
            ANNOTATION_HISTORY: encode_history(HISTORY),
            ANNOTATION_RETRY_OF: ticket_id,
            ANNOTATION_CREATE_TOKEN: TOKEN,
        }
    )

    # When the user's Job fails with a retried class
    with capture_logs() as logs:
        await handler(store, metrics).handle(report(job, [lost_pod()]), job)

    # Then it is its own first attempt: a ticket for attempt 2 of itself, whose history is only
    # its own failure, and the other lineage's record is untouched
    [ticket] = store.tickets
    assert ticket.job == JobRef(NAMESPACE, JOB_NAME, JOB_UID)
    assert ticket.attempt == 2
    assert [(h.attempt, h.job_uid) for h in ticket.history] == [(1, JOB_UID)]
    assert store.records[ticket_id] == record
    # And the ignored annotations are reported (log + metric)
    ignored = [e for e in logs if e["event"] == "lineage_annotation_ignored"]
    assert len(ignored) == 1 and "no kube-dlq record" in ignored[0]["error"]
    count = metrics.registry.get_sample_value(
        "kube_dlq_malformed_input_total", {"source": "lineage"}
    )
    assert count == 1


async def test_a_recorded_retry_job_continues_its_lineage_whatever_its_annotations_say() -> None:
    # Given kube-dlq's record of the Job as attempt 3 of "etl", and annotations that lie
    store, metrics = FakeStore(), Metrics()
    store.records["uid-etl-r2"] = CreateRecord(NAMESPACE, JOB_NAME, TOKEN, JOB_UID, LINEAGE)
    job = raw_job()
    job["metadata"]["annotations"].update(
        {ANNOTATION_ATTEMPT: "1", ANNOTATION_RETRY_OF: "uid-etl-r2", ANNOTATION_CREATE_TOKEN: TOKEN}
    )

    # When it fails
    with capture_logs() as logs:
        await handler(store, metrics).handle(report(job, [lost_pod()]), job)

    # Then its ticket is attempt 4 with the recorded history plus its own failure
    [ticket] = store.tickets
    assert ticket.attempt == 4
    assert [h.job_uid for h in ticket.history] == ["uid-etl", "uid-etl-r2", JOB_UID]
    # And the annotation that disagrees with the record is reported
    ignored = [e for e in logs if e["event"] == "lineage_annotation_ignored"]
    assert len(ignored) == 1 and "disagree" in ignored[0]["error"]


async def test_an_unreadable_record_makes_an_original_and_is_reported() -> None:
    store, metrics = FakeStore(), Metrics()
    store.records["uid-x"] = CreateRecord(NAMESPACE, JOB_NAME, TOKEN, JOB_UID, None, "not JSON")
    job = raw_job()
    job["metadata"]["annotations"].update(
        {ANNOTATION_RETRY_OF: "uid-x", ANNOTATION_CREATE_TOKEN: TOKEN}
    )
    with capture_logs() as logs:
        await handler(store, metrics).handle(report(job, [lost_pod()]), job)
    assert [t.attempt for t in store.tickets] == [2]
    assert any("unreadable" in e.get("error", "") for e in logs)


async def test_a_forged_record_makes_an_original_and_is_counted_as_forged() -> None:
    # Given a create record whose lineage failed its seal (written into Redis by someone else)
    store, metrics = FakeStore(), Metrics()
    store.records["uid-x"] = CreateRecord(
        NAMESPACE, JOB_NAME, TOKEN, JOB_UID, None, "lineage: bad signature", forged=True
    )
    job = raw_job()
    job["metadata"]["annotations"].update(
        {ANNOTATION_RETRY_OF: "uid-x", ANNOTATION_CREATE_TOKEN: TOKEN}
    )
    # When the Job fails
    with capture_logs() as logs:
        await handler(store, metrics).handle(report(job, [lost_pod()]), job)
    # Then it is an original (its own first retry), and the record is counted as forged
    assert [t.attempt for t in store.tickets] == [2]
    sample = metrics.registry.get_sample_value
    assert sample("kube_dlq_forged_entries_total", {"kind": "lineage"}) == 1
    assert not sample("kube_dlq_malformed_input_total", {"source": "lineage"})
    assert any("forged" in e.get("error", "") for e in logs)
