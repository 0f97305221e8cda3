"""The daemon's side of redrive: settle the entry of every redriven Job that finished.

A Job carrying ``kube-dlq.io/redrive-of`` is only a candidate: the annotation is anyone's to
write. It is this entry's redrive when kube-dlq's redriving record for that entry names the
Job's namespace and name (in its sealed plan) and its uid (or, before the uid was recorded,
the Job carries the plan's token). Then:

    Complete   the entry moves to its queue's archive stream (``dlq list --archived``)
    Failed     a new dead letter on the entry's queue, ``redrive_count`` = the plan's number,
               ``redrive_of`` = the entry, this failure's evidence and the history so far;
               the record is removed in the same atomic step (the FailureHandler hook below)

and the ``redrive-ack`` finalizer comes off the Job. Nothing else is retried automatically: a
redrive is an operator's explicit attempt, and its result goes where the operator looks.

Completed Jobs are seen by `observe` (a tap on the Jobs watch, so a relist after a restart
finds them again: the finalizer keeps them in the API until settled) and settled by `run`, a
leader duty; failed ones come through the pipeline as usual and `failed` writes them. A Job
whose record is gone (settled before: a replay) only loses its finalizer; one whose record
names another Job, or does not open, is handled as an ordinary Job and logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from structlog.typing import FilteringBoundLogger

from watcher.core import project, snapshot, wire
from watcher.core.annotations import (
    ANNOTATION_REDRIVE_OF,
    ANNOTATION_REDRIVE_TOKEN,
    FINALIZER_REDRIVE_ACK,
)
from watcher.core.classify import ClassifyRules, classify
from watcher.core.errors import FencedWrite, KubeAPIError, SinkError
from watcher.core.manifest import replayable_manifest
from watcher.core.model import (
    Action,
    DeadLetter,
    Decision,
    FailureReport,
    JobRef,
    WriteResult,
)
from watcher.core.redrive import RedriveRecord, failed_again, is_this_job, redrive_pointer
from watcher.kit.aio import sleep_or_stop
from watcher.service.handler import RedriveOutcome, evidence_document
from watcher.service.ports import JobsPort

__all__ = ["RedriveSettler", "SettleStore"]

POLL_S: Final = 1.0
"""How often completed redriven Jobs are settled: a second after the watch saw them."""
MAX_QUEUED: Final = 10_000
"""Completed Jobs waiting to be settled, at most (more are found again by the next relist)."""


class SettleStore(Protocol):
    async def redrive_record(self, entry_id: str) -> RedriveRecord | None: ...

    async def archive_redriven(self, entry_id: str, job: JobRef) -> int: ...

    async def dead_letter_redriven(
        self, entry_id: str, letter: DeadLetter
    ) -> WriteResult | None: ...


@dataclass(frozen=True, slots=True)
class _Done:
    job: JobRef
    entry_id: str
    token: str
    complete: bool
    """False: Failed, which the pipeline settles; here only a leftover finalizer goes."""


class RedriveSettler:
    def __init__(
        self,
        *,
        store: SettleStore,
        jobs: JobsPort,
        rules: ClassifyRules,
        in_scope: Callable[[str], bool | None],
        logger: FilteringBoundLogger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._rules = rules
        self._in_scope = in_scope
        self._log = logger
        self._clock = clock
        self._completed: dict[str, _Done] = {}

    # --- completed Jobs ---------------------------------------------------------------------

    def observe(self, event_type: str, raw: Mapping[str, Any] | wire.WireJob) -> None:
        """A Jobs watch event (a dict or typed): queue a completed redriven Job for `run` to
        settle. Cheap and total: a malformed object is the pipeline's to report."""
        if event_type == "DELETED" or ANNOTATION_REDRIVE_OF not in project.annotations_of(raw):
            return
        try:
            job = project.job_snapshot(raw)
        except snapshot.MalformedObject:
            return
        pointer = redrive_pointer(dict(job.annotations))
        complete = job.condition("Complete") is not None
        if pointer is None or not (complete or job.condition("Failed")):
            return
        if self._in_scope(job.ref.namespace) is False:
            return
        if job.ref.uid not in self._completed and len(self._completed) >= MAX_QUEUED:
            return
        self._completed[job.ref.uid] = _Done(job.ref, pointer[0], pointer[1], complete)

    async def run(self, stop: asyncio.Event) -> None:
        """Settle queued completed Jobs until `stop` is set (a leader duty). Redis failures
        keep the Job queued for the next round; a fenced write ends the duty."""
        while not stop.is_set():
            await self.settle_completed()
            await sleep_or_stop(stop, POLL_S)

    async def settle_completed(self) -> int:
        """One round over the queued completed Jobs; how many were settled."""
        settled = 0
        for uid, done in list(self._completed.items()):
            allowed = self._in_scope(done.job.namespace)
            if allowed is None:
                continue  # a label selector not listed yet: fail closed, try next round
            if not allowed:
                self._completed.pop(uid, None)
                continue
            try:
                if await self._settle_one(done):
                    settled += 1
                self._completed.pop(uid, None)
            except FencedWrite:
                raise
            except (SinkError, KubeAPIError) as exc:
                self._log.warning("redrive_settle_failed", entry=done.entry_id, error=str(exc))
        return settled

    async def _settle_one(self, done: _Done) -> bool:
        log = self._log.bind(entry=done.entry_id, namespace=done.job.namespace, job=done.job.name)
        record = await self._store.redrive_record(done.entry_id)
        if record is None:
            await self._release(done.job)  # settled before: a replay
            return False
        if not done.complete:
            return False  # the pipeline writes it (FailureHandler hook, `failed`)
        if not self._verified(record, done.job, done.token, log):
            return False
        archived = await self._store.archive_redriven(done.entry_id, done.job)
        if archived == -1:
            log.warning("redrive_pointer_ignored", why="the record holds another uid")
            return False
        if archived == 1:
            log.info("redrive_succeeded", outcome="archived")
        await self._release(done.job)
        return archived == 1

    # --- failed Jobs (the FailureHandler hook) ----------------------------------------------

    async def failed(
        self, report: FailureReport, raw_job: Mapping[str, Any]
    ) -> RedriveOutcome | None:
        """Write the failed Job's dead letter if it is a verified redrive; None: it is not (or
        no longer) one, and the handler goes on as for any Job."""
        job = report.job
        pointer = redrive_pointer(dict(job.annotations))
        if pointer is None:
            return None
        entry_id, token = pointer
        log = self._log.bind(entry=entry_id)
        record = await self._store.redrive_record(entry_id)
        if record is None:
            await self._release(job.ref)
            return None
        if not self._verified(record, job.ref, token, log):
            return None
        assert record.letter is not None and record.plan is not None  # (verified)
        classification = classify(report, self._rules)
        decision = Decision(Action.DEAD_LETTER, "a redriven Job failed: back on its queue", 1)
        manifest = replayable_manifest(raw_job)
        annotations = manifest["metadata"].get("annotations") or {}
        for key in (ANNOTATION_REDRIVE_OF, ANNOTATION_REDRIVE_TOKEN):
            annotations.pop(key, None)  # the next redrive writes its own
        letter = failed_again(
            record.letter,
            entry_id,
            record.plan,
            job=job.ref,
            classification=classification,
            failed_at=self._clock(),
            report=evidence_document(report, decision),
            manifest=manifest,
        )
        write = await self._store.dead_letter_redriven(entry_id, letter)
        if write is None:
            return None  # settled by someone else between the read and the write
        log.info("redrive_failed_again", outcome=write.ref, redrive_count=letter.redrive_count)
        await self._release(job.ref)
        return RedriveOutcome(classification, decision, write, letter.queue)

    # --- shared -------------------------------------------------------------------------------

    def _verified(
        self, record: RedriveRecord, job: JobRef, token: str, log: FilteringBoundLogger
    ) -> bool:
        if record.plan is None or record.letter is None:
            what = "forged" if record.forged else "unreadable"
            log.warning("redrive_record_ignored", why=f"{what}: {record.error}")
            return False
        if not is_this_job(record.plan, record.uid, job, token):
            log.warning("redrive_pointer_ignored", why="the record names another Job")
            return False
        return True

    async def _release(self, job: JobRef) -> None:
        """Take our finalizer off (the entry is settled; a no-op without it, uid-checked); a
        failure is logged, and the next relist (the Job is still there) tries again."""
        try:
            await self._jobs.remove_finalizer(job, FINALIZER_REDRIVE_ACK)
        except KubeAPIError as exc:
            self._log.warning("redrive_finalizer_not_removed", job=job.name, error=str(exc))
