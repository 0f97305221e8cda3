"""`kube-dlq dlq redrive`: re-create dead-lettered Jobs, each exactly once (docs/redrive.md).

Per entry, in this order (the automatic retry path's idea, begin_create then settle, applied
to an entry instead of a ticket):

    1. refuse, touching nothing: another controller's Job (spec.managedBy), --max-redrives
       reached, a namespace outside scope, an override that does not fit the manifest,
       --failed-indexes for a Job that is not Indexed or recorded no failed indexes;
    2. claim (one Lua script): the entry leaves its queue for a redriving record holding the
       plan, fixed now: the namespace, the deterministic name, a random token, the number;
    3. POST the Job (annotated ``redrive-of`` and ``redrive-token``, finalizer ``redrive-ack``);
    4. record the created uid on the record.

Killed anywhere, a second run finds the record (every record without a uid is resumed first)
and creates nothing twice: its POST of the same name gets 409, and a Job there carrying the
record's token is this entry's ("already created"). The finalizer keeps that Job, and its
name, until the daemon has settled the entry, so a Job whose TTL ran out cannot free the name
for a second create. When a POST is definitely refused (403, 422, a name held by a Job that
is not ours) and no earlier run began this record, the entry goes back on its queue;
otherwise the record stays for the next run, and the result says so.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from watcher.core.annotations import ANNOTATION_REDRIVE_OF, ANNOTATION_REDRIVE_TOKEN
from watcher.core.errors import KubeAPIError, KubeConflict, KubeInvalid
from watcher.core.indexes import format_indexes
from watcher.core.model import DeadLetter
from watcher.core.rawjson import RawObject
from watcher.core.redrive import (
    NO_OVERRIDES,
    Claim,
    ClaimStatus,
    Overrides,
    RedrivePlan,
    RedriveRecord,
    index_refusal,
    original_name_of,
    redrive_job_name,
    redrive_manifest,
    refusal,
)
from watcher.service.ports import JobsPort

__all__ = ["RedriveResult", "RedriveStore", "Redriver", "Verdict"]


class RedriveStore(Protocol):
    """The redriving records (watcher.adapters.redis.redrive)."""

    async def claim_redrive(self, entry_id: str, plan: RedrivePlan | None) -> Claim: ...

    async def redrive_created(self, entry_id: str, uid: str) -> int: ...

    async def release_redrive(self, entry_id: str, letter: DeadLetter) -> str | None: ...

    async def redriving_ids(self, *, limit: int = 10_000) -> list[str]: ...

    async def redrive_record(self, entry_id: str) -> RedriveRecord | None: ...


class Verdict(enum.StrEnum):
    """What one entry's redrive did; the closing count adds them up."""

    REDRIVEN = "redriven"
    ALREADY = "already_redriven"
    """Created by an earlier (interrupted) run; recorded now if it was not."""
    WOULD = "would_redrive"
    """--dry-run: nothing was written or created."""
    SKIPPED = "skipped"
    """Refused before anything changed (the reason says why)."""
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RedriveResult:
    entry_id: str
    verdict: Verdict
    detail: str = ""
    """The Job (``<namespace>/<name>``), or why it was skipped or failed: one line."""


class Redriver:
    """Redrives entries one at a time against a store and the Jobs API."""

    def __init__(
        self,
        store: RedriveStore,
        jobs: JobsPort,
        *,
        max_redrives: int,
        overrides: Overrides = NO_OVERRIDES,
        dry_run: bool = False,
        failed_indexes: bool = False,
        in_scope: Callable[[str], bool | None] = lambda _ns: True,
        token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        """`in_scope(namespace)`: True, False, or None when it cannot be known yet."""
        self._store = store
        self._jobs = jobs
        self._max = max_redrives
        self._overrides = overrides
        self._dry_run = dry_run
        self._failed_indexes = failed_indexes
        self._in_scope = in_scope
        self._token = token

    async def redrive(self, entry_id: str, letter: DeadLetter) -> RedriveResult:
        """Redrive one entry read from its queue (its seal checked by the reader)."""
        namespace = letter.job.namespace
        why = refusal(letter, max_redrives=self._max)
        if not why and self._failed_indexes:
            why = index_refusal(letter)
        if not why:
            allowed = self._in_scope(namespace)
            if allowed is None:
                return RedriveResult(entry_id, Verdict.FAILED, "scope not known yet: run again")
            why = "" if allowed else f"namespace {namespace!r} is outside kube-dlq's scope"
        if why:
            return RedriveResult(entry_id, Verdict.SKIPPED, why)
        number = letter.redrive_count + 1
        name = redrive_job_name(original_name_of(letter), entry_id, number)
        overrides = self._overrides
        if self._failed_indexes:  # this entry's own indexes, fixed in the plan with the rest
            indexes = format_indexes(letter.failed_indexes)
            overrides = dataclasses.replace(overrides, failed_indexes=indexes)
        plan = RedrivePlan(namespace, name, self._token(), number, overrides)
        try:
            redrive_manifest(letter, plan, entry_id)  # an override that does not fit: before
        except ValueError as exc:
            return RedriveResult(entry_id, Verdict.SKIPPED, str(exc))
        if self._dry_run:
            described = overrides.describe()
            shown = f"{namespace}/{name}" + (f" ({described})" if described else "")
            return RedriveResult(entry_id, Verdict.WOULD, shown)
        claim = await self._store.claim_redrive(entry_id, plan)
        if claim.status is ClaimStatus.GONE:
            return RedriveResult(entry_id, Verdict.SKIPPED, "no longer on its queue")
        if claim.status is ClaimStatus.NO_DATA:
            return RedriveResult(entry_id, Verdict.FAILED, "the stored entry has no data")
        if claim.status is ClaimStatus.RESUMED:  # an earlier run's record: its plan applies
            return await self._resume(entry_id, begins=claim.begins)
        return await self._create(entry_id, letter, plan, begins=claim.begins)

    async def resume(self, entry_id: str) -> RedriveResult:
        """Finish a redrive an earlier run began (its redriving record)."""
        return await self._resume(entry_id, begins=None)

    async def _resume(self, entry_id: str, *, begins: int | None) -> RedriveResult:
        """`begins`: this run's begin, already counted by its claim (None: count one now)."""
        record = await self._store.redrive_record(entry_id)
        if record is None:
            return RedriveResult(entry_id, Verdict.SKIPPED, "no longer being redriven")
        if record.letter is None or record.plan is None:
            what = "forged" if record.forged else "unreadable"
            return RedriveResult(
                entry_id, Verdict.FAILED, f"redriving record is {what}, left alone: {record.error}"
            )
        letter, plan = record.letter, record.plan
        expected = redrive_job_name(original_name_of(letter), entry_id, plan.redrive)
        if (plan.namespace, plan.name) != (letter.job.namespace, expected):
            return RedriveResult(
                entry_id, Verdict.FAILED, "redriving record names another Job, left alone"
            )
        if record.uid:
            return RedriveResult(entry_id, Verdict.ALREADY, f"{plan.namespace}/{plan.name}")
        if self._dry_run:
            return RedriveResult(entry_id, Verdict.WOULD, f"{plan.namespace}/{plan.name} (resume)")
        if begins is None:
            claim = await self._store.claim_redrive(entry_id, None)  # one more begin, counted
            if claim.status is not ClaimStatus.RESUMED:
                return RedriveResult(entry_id, Verdict.SKIPPED, "no longer being redriven")
            begins = claim.begins
        return await self._create(entry_id, letter, plan, begins=begins)

    async def unfinished(self) -> list[str]:
        """Entry ids whose redrive an earlier run began and did not record as created."""
        found = []
        for entry_id in await self._store.redriving_ids():
            record = await self._store.redrive_record(entry_id)
            if record is not None and not record.uid:
                found.append(entry_id)
        return found

    async def _create(
        self, entry_id: str, letter: DeadLetter, plan: RedrivePlan, *, begins: int
    ) -> RedriveResult:
        job = f"{plan.namespace}/{plan.name}"
        try:
            body = redrive_manifest(letter, plan, entry_id)
        except ValueError as exc:  # checked before the claim; a resumed plan may differ
            return await self._give_back(entry_id, letter, begins, str(exc))
        try:
            created = await self._jobs.create(plan.namespace, body)
        except KubeConflict:
            return await self._conflict(entry_id, letter, plan, begins)
        except KubeAPIError as err:
            detail = _refused(err, plan.namespace)
            if err.transient or (err.status is None and not isinstance(err, KubeInvalid)):
                return RedriveResult(entry_id, Verdict.FAILED, f"{detail}; run again to finish")
            return await self._give_back(entry_id, letter, begins, detail)
        return await self._record(entry_id, created, job, Verdict.REDRIVEN)

    async def _conflict(
        self, entry_id: str, letter: DeadLetter, plan: RedrivePlan, begins: int
    ) -> RedriveResult:
        existing = await self._jobs.get(plan.namespace, plan.name)
        job = f"{plan.namespace}/{plan.name}"
        if existing is None:
            return RedriveResult(
                entry_id, Verdict.FAILED, f"{job}: name freed meanwhile; run again"
            )
        annotations = (existing.get("metadata") or {}).get("annotations") or {}
        ours = (
            isinstance(annotations, dict)
            and annotations.get(ANNOTATION_REDRIVE_OF) == entry_id
            and annotations.get(ANNOTATION_REDRIVE_TOKEN) == plan.token
        )
        if ours:
            return await self._record(entry_id, existing, job, Verdict.ALREADY)
        return await self._give_back(
            entry_id, letter, begins, f"{job} exists and is not this entry's redrive"
        )

    async def _record(
        self, entry_id: str, job: RawObject, shown: str, verdict: Verdict
    ) -> RedriveResult:
        uid = (job.get("metadata") or {}).get("uid")
        if not isinstance(uid, str) or not uid:
            return RedriveResult(entry_id, Verdict.FAILED, f"{shown}: the API answered no uid")
        recorded = await self._store.redrive_created(entry_id, uid)
        if recorded == -1:
            return RedriveResult(entry_id, Verdict.FAILED, f"{shown}: another uid is recorded")
        return RedriveResult(entry_id, verdict, shown)

    async def _give_back(
        self, entry_id: str, letter: DeadLetter, begins: int, detail: str
    ) -> RedriveResult:
        """Nothing was created by this POST: back on the queue if no earlier one can have."""
        if begins == 1:
            back = await self._store.release_redrive(entry_id, letter)
            if back is not None:
                return RedriveResult(
                    entry_id, Verdict.FAILED, f"{detail}; back on the queue as {back}"
                )
        return RedriveResult(entry_id, Verdict.FAILED, f"{detail}; kept for the next run")


def _refused(err: KubeAPIError, namespace: str) -> str:
    if err.status == 403:
        return f"forbidden to create Jobs in namespace {namespace!r} (403)"
    reason = " ".join(str(err.reason or err).split())[:300]
    return f"create in namespace {namespace!r} failed ({err.status or 'no answer'}): {reason}"
