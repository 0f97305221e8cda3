"""Redriver and RedriveSettler against in-memory fakes of their ports.

The fake store keeps the scripts' rules (a claim moves the entry, a second claim resumes with
the first plan and counts a begin, a release needs one begin and no uid, settling needs the
record and its uid); the real scripts are tested on a real redis-server
(tests/integration/test_redrive_store.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.support.fakes import FakeJobs
from watcher.core.annotations import (
    ANNOTATION_REDRIVE_OF,
    ANNOTATION_REDRIVE_TOKEN,
    FINALIZER_REDRIVE_ACK,
)
from watcher.core.classify import ClassifyRules
from watcher.core.errors import KubeForbidden, KubeServerError
from watcher.core.model import (
    Action,
    Condition,
    DeadLetter,
    FailureClass,
    FailureReport,
    JobRef,
    JobSnapshot,
    WriteResult,
)
from watcher.core.redrive import Claim, ClaimStatus, RedrivePlan, RedriveRecord
from watcher.kit.logs import get_logger
from watcher.service.redrive import Redriver, Verdict
from watcher.service.redrive_settle import RedriveSettler

ENTRY = "batch/1700000000000-0"
TOKENS = iter(f"{n:032x}" for n in range(1, 1000))


@dataclass
class Rec:
    letter: DeadLetter
    plan: RedrivePlan
    begins: int = 1
    uid: str = ""


@dataclass
class FakeRedriveStore:
    queue: dict[str, DeadLetter] = field(default_factory=dict)
    records: dict[str, Rec] = field(default_factory=dict)
    archive: list[tuple[str, JobRef]] = field(default_factory=list)
    written: list[DeadLetter] = field(default_factory=list)
    forged: set[str] = field(default_factory=set)

    async def claim_redrive(self, entry_id: str, plan: RedrivePlan | None) -> Claim:
        rec = self.records.get(entry_id)
        if rec is not None:
            rec.begins += 1
            return Claim(ClaimStatus.RESUMED, rec.plan, rec.begins)
        if plan is None or entry_id not in self.queue:
            return Claim(ClaimStatus.GONE)
        self.records[entry_id] = Rec(self.queue.pop(entry_id), plan)
        return Claim(ClaimStatus.CLAIMED, plan, 1)

    async def redrive_created(self, entry_id: str, uid: str) -> int:
        rec = self.records.get(entry_id)
        if rec is None:
            return 0
        if rec.uid and rec.uid != uid:
            return -1
        rec.uid = uid
        return 1

    async def release_redrive(self, entry_id: str, letter: DeadLetter) -> str | None:
        rec = self.records.get(entry_id)
        if rec is None or rec.begins != 1 or rec.uid:
            return None
        del self.records[entry_id]
        back = f"batch/{len(self.queue) + 2}-0"
        self.queue[back] = rec.letter
        return back

    async def redriving_ids(self, *, limit: int = 10_000) -> list[str]:
        return list(self.records)[:limit]

    async def redrive_record(self, entry_id: str) -> RedriveRecord | None:
        rec = self.records.get(entry_id)
        if rec is None:
            return None
        if entry_id in self.forged:
            return RedriveRecord(entry_id, rec.letter, None, rec.uid, rec.begins, "bad sig", True)
        return RedriveRecord(entry_id, rec.letter, rec.plan, rec.uid, rec.begins)

    async def archive_redriven(self, entry_id: str, job: JobRef) -> int:
        rec = self.records.get(entry_id)
        if rec is None:
            return 0
        if rec.uid and rec.uid != job.uid:
            return -1
        del self.records[entry_id]
        self.archive.append((entry_id, job))
        return 1

    async def dead_letter_redriven(self, entry_id: str, letter: DeadLetter) -> WriteResult | None:
        rec = self.records.get(entry_id)
        if rec is None or (rec.uid and rec.uid != letter.job.uid):
            return None
        del self.records[entry_id]
        self.written.append(letter)
        return WriteResult(written=True, action=Action.DEAD_LETTER, ref="batch/9-0")


def letter(**changes: Any) -> DeadLetter:
    base = DeadLetter(
        queue="batch",
        job=JobRef("etl", "work", "u1"),
        failure_class=FailureClass.APP_ERROR,
        reason="exit 1",
        attempts=1,
        failed_at=1.0,
        cluster="c",
        manifest={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "work", "namespace": "etl"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a"}]}}},
        },
    )
    return dataclasses.replace(base, **changes)


def redriver(store: FakeRedriveStore, jobs: FakeJobs, **kwargs: Any) -> Redriver:
    kwargs.setdefault("max_redrives", 3)
    return Redriver(store, jobs, token=lambda: next(TOKENS), **kwargs)


async def test_one_entry_is_claimed_created_and_recorded() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    result = await redriver(store, jobs).redrive(ENTRY, letter())
    assert result.verdict is Verdict.REDRIVEN and result.detail.startswith("etl/work-")
    [created] = jobs.created
    assert created["metadata"]["annotations"][ANNOTATION_REDRIVE_OF] == ENTRY
    assert store.records[ENTRY].uid == created["metadata"]["uid"] and store.queue == {}


async def test_a_run_killed_after_the_post_is_finished_by_the_next_without_a_second_job() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    jobs.fail_next(KubeServerError("boom", status=500), method="create")  # the reply is lost...
    first = await redriver(store, jobs).redrive(ENTRY, letter())
    assert first.verdict is Verdict.FAILED and "run again" in first.detail
    rec = store.records[ENTRY]  # ...but the POST landed: the Job exists with the plan's token
    body = {
        "metadata": {
            "name": rec.plan.name,
            "namespace": "etl",
            "uid": "landed",
            "annotations": {ANNOTATION_REDRIVE_OF: ENTRY, ANNOTATION_REDRIVE_TOKEN: rec.plan.token},
        }
    }
    jobs.put(body)
    second = redriver(store, jobs)
    assert await second.unfinished() == [ENTRY]
    result = await second.resume(ENTRY)
    assert result.verdict is Verdict.ALREADY and store.records[ENTRY].uid == "landed"
    assert jobs.created == []  # never a second Job
    assert (await second.resume(ENTRY)).verdict is Verdict.ALREADY


async def test_a_403_on_the_first_post_puts_the_entry_back_with_one_line_naming_the_namespace() -> (
    None
):
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    jobs.fail_next(KubeForbidden("no", status=403), method="create")
    result = await redriver(store, jobs).redrive(ENTRY, letter())
    assert result.verdict is Verdict.FAILED
    assert "namespace 'etl' (403)" in result.detail and "back on the queue" in result.detail
    assert "\n" not in result.detail and store.records == {} and len(store.queue) == 1


async def test_a_refusal_after_an_earlier_begin_keeps_the_record() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    jobs.fail_next(KubeServerError("boom", status=503), method="create")
    await redriver(store, jobs).redrive(ENTRY, letter())
    jobs.fail_next(KubeForbidden("no", status=403), method="create")
    result = await redriver(store, jobs).resume(ENTRY)
    assert result.verdict is Verdict.FAILED and "kept for the next run" in result.detail
    assert ENTRY in store.records  # the first POST may have created it


async def test_a_name_held_by_someone_elses_job_is_not_taken_for_ours() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    name = (await redriver(store, jobs, dry_run=True).redrive(ENTRY, letter())).detail
    jobs.put({"metadata": {"name": name.split("/")[1], "namespace": "etl", "uid": "theirs"}})
    result = await redriver(store, jobs).redrive(ENTRY, letter())
    assert result.verdict is Verdict.FAILED and "not this entry's redrive" in result.detail
    assert store.records == {} and len(store.queue) == 1


@pytest.mark.parametrize(
    ("changes", "kwargs", "why"),
    [
        ({"redrive_count": 3}, {}, "--max-redrives 3"),
        ({}, {"in_scope": lambda ns: False}, "outside kube-dlq's scope"),
        (
            {"manifest": {**letter().manifest, "spec": {"managedBy": "x", "template": {}}}},
            {},
            "managedBy",
        ),
    ],
)
async def test_refused_entries_are_not_claimed(
    changes: dict[str, Any], kwargs: dict[str, Any], why: str
) -> None:
    entry = letter(**changes)
    store, jobs = FakeRedriveStore({ENTRY: entry}), FakeJobs()
    result = await redriver(store, jobs, **kwargs).redrive(ENTRY, entry)
    assert result.verdict is Verdict.SKIPPED and why in result.detail
    assert store.records == {} and jobs.created == []


async def test_dry_run_claims_and_creates_nothing() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    result = await redriver(store, jobs, dry_run=True).redrive(ENTRY, letter())
    assert result.verdict is Verdict.WOULD and store.records == {} and jobs.created == []


async def test_a_forged_record_is_left_alone() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    store.records[ENTRY] = Rec(letter(), RedrivePlan("kube-system", "evil", "0" * 32, 1))
    store.forged.add(ENTRY)
    result = await redriver(store, jobs).resume(ENTRY)
    assert result.verdict is Verdict.FAILED and "forged" in result.detail and jobs.created == []


# --- settling ------------------------------------------------------------------------------------


def settler(store: FakeRedriveStore, jobs: FakeJobs) -> RedriveSettler:
    return RedriveSettler(
        store=store,
        jobs=jobs,
        rules=ClassifyRules(),
        in_scope=lambda ns: True,
        logger=get_logger(),
    )


async def redriven(store: FakeRedriveStore, jobs: FakeJobs) -> dict[str, Any]:
    await redriver(store, jobs).redrive(ENTRY, letter())
    return jobs.created[0]


def failed_report(job: dict[str, Any], **meta: Any) -> FailureReport:
    m = {**job["metadata"], **meta}
    return FailureReport(
        job=JobSnapshot(
            ref=JobRef(m["namespace"], m["name"], m["uid"]),
            annotations=tuple(m["annotations"].items()),
            conditions=(Condition("Failed", "True", "BackoffLimitExceeded"),),
            failed=1,
        )
    )


async def test_a_failed_redrive_is_written_back_and_its_finalizer_released() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    job = await redriven(store, jobs)
    outcome = await settler(store, jobs).failed(failed_report(job), job)
    assert outcome is not None and outcome.queue == "batch"
    [again] = store.written
    assert (again.redrive_count, again.redrive_of, again.job.uid) == (
        1,
        ENTRY,
        job["metadata"]["uid"],
    )
    assert ANNOTATION_REDRIVE_OF not in again.manifest["metadata"].get("annotations", {})
    stored = jobs.jobs[("etl", job["metadata"]["name"])]
    assert FINALIZER_REDRIVE_ACK not in stored["metadata"]["finalizers"]


async def test_a_job_pointing_at_an_entry_it_is_not_the_redrive_of_is_an_ordinary_job() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    job = await redriven(store, jobs)
    with capture_logs() as logs:
        outcome = await settler(store, jobs).failed(failed_report(job, uid="impostor"), job)
    assert outcome is None and store.written == [] and ENTRY in store.records
    assert any(e["event"] == "redrive_pointer_ignored" for e in logs)


async def test_a_completed_redrive_is_archived_once_even_when_seen_again() -> None:
    store, jobs = FakeRedriveStore({ENTRY: letter()}), FakeJobs()
    job = await redriven(store, jobs)
    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    s = settler(store, jobs)
    s.observe("MODIFIED", done)
    assert await s.settle_completed() == 1
    s.observe("ADDED", done)  # a relist
    assert await s.settle_completed() == 0
    assert store.archive == [
        (ENTRY, JobRef("etl", job["metadata"]["name"], job["metadata"]["uid"]))
    ]
    assert (
        FINALIZER_REDRIVE_ACK
        not in jobs.jobs[("etl", job["metadata"]["name"])]["metadata"]["finalizers"]
    )
