"""Join the ledger with Redis and the API: per injected Job, did it end as it must, once?

Three sources, read the way a user (or an auditor) would:

* Redis, through `DeadLetterQueries` (the CLI's reader): every dead letter, by job uid; and,
  through the store's keys, the retry tickets still pending (ticket id = failed Job uid);
* the API, through the `JobRecorder` (every Job uid that ever existed in the namespace) and a
  final list: the retry Jobs of each injected Job (``kube-dlq.io/original-uid`` and
  ``kube-dlq.io/attempt``) and whether a Job completed.

Per ledger entry, its lineage is the injected Job plus every retry Job naming it as original.
The verdicts, each counted per entry:

    lost            no outcome at all: no dead letter in the lineage and no Job of it
                    completed (a ticket may still be pending: that is reported too)
    duplicated      some Job uid of the lineage has more than one dead letter
    double_created  two Job uids for one (original uid, attempt): a retry created twice
    wrong           an outcome, but not the one the ledger says: another class, another
                    attempt count, a dead letter where success was due (or both), a retry
                    Job missing or extra

`settle` polls until every entry has its outcome and no ticket is pending (or time is up),
then waits `quiet_s` more so late duplicates (a replay after the last restart) are caught,
and returns the final `LedgerReport`. `LedgerReport.table()` is what the suite prints.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.faults.ledger import WORKLOADS, Entry, Ledger
from tests.faults.recorder import JobRecorder
from tests.support.kube import RawObject, condition
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.core.annotations import ANNOTATION_ATTEMPT, ANNOTATION_ORIGINAL_UID
from watcher.core.errors import SinkError
from watcher.core.model import DeadLetter

VERDICTS = ("lost", "duplicated", "double_created", "wrong")


@dataclass
class EntryResult:
    """What one ledger entry ended with."""

    entry: Entry
    outcome: str
    """dead_letter, success, pending (a ticket waits) or none."""
    letters: list[tuple[str, DeadLetter]]
    jobs: dict[int, list[str]]
    """attempt -> uids of the Jobs of that attempt (1: the injected Job)."""
    problems: list[str] = field(default_factory=list)
    lost: bool = False
    duplicated: bool = False
    double_created: bool = False
    wrong: bool = False

    @property
    def resolved(self) -> bool:
        return self.outcome in ("dead_letter", "success")

    @property
    def bad(self) -> bool:
        return self.lost or self.duplicated or self.double_created or self.wrong

    def as_json(self) -> dict[str, Any]:
        return {
            **self.entry.as_json(),
            "outcome": self.outcome,
            "dead_letters": [
                {
                    "id": entry_id,
                    "job": lt.job.name,
                    "job_uid": lt.job.uid,
                    "class": lt.failure_class.value,
                    "attempts": lt.attempts,
                }
                for entry_id, lt in self.letters
            ],
            "jobs": {str(a): uids for a, uids in sorted(self.jobs.items())},
            "verdicts": [v for v in VERDICTS if getattr(self, v)],
            "problems": self.problems,
        }


@dataclass
class LedgerReport:
    """The ledger joined with what Redis and the API hold, and the faults that were injected."""

    title: str
    results: list[EntryResult]
    pending_tickets: int
    stray_letters: list[str]
    """Dead letters of Job uids no ledger entry knows (entry ids)."""
    faults: list[str]
    create_retries: int
    seconds: float = 0.0
    settled: bool = False
    effects: dict[str, int] = field(default_factory=dict)
    """What the daemon's log says it went through (`harness.daemon_effects`): proof that the
    faults were felt, not just sent."""

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.results if getattr(r, verdict))

    @property
    def ok(self) -> bool:
        return (
            self.settled
            and not any(self.count(v) for v in VERDICTS)
            and not self.stray_letters
            and self.pending_tickets == 0
        )

    @property
    def all_resolved(self) -> bool:
        return all(r.resolved for r in self.results) and self.pending_tickets == 0

    def numbers(self) -> dict[str, int]:
        """The headline numbers: what an xfail reason or a summary line quotes."""
        return {
            "injected": len(self.results),
            "dead_lettered": sum(1 for r in self.results if r.outcome == "dead_letter"),
            "succeeded": sum(1 for r in self.results if r.outcome == "success"),
            **{v: self.count(v) for v in VERDICTS},
            "retry_jobs": sum(len(u) for r in self.results for a, u in r.jobs.items() if a > 1),
            "pending_tickets": self.pending_tickets,
            "stray_letters": len(self.stray_letters),
        }

    def table(self) -> str:
        head = ("workload", "expect", "injected", "dead_letter", "success", *VERDICTS)
        rows: list[tuple[str, ...]] = []
        for w in WORKLOADS:
            mine = [r for r in self.results if r.entry.workload.key == w.key]
            if not mine:
                continue
            expect = (
                f"dl {w.failure_class} x{w.attempts}"
                if w.outcome == "dead_letter"
                else (f"ok after {w.retries}")
            )
            rows.append(_row(w.key, expect, mine))
        rows.append(_row("total", "", self.results))
        widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]

        def fmt(cells: tuple[str, ...]) -> str:
            first = f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}"
            rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[2:], widths[2:], strict=True))
            return f"  {first}  {rest}"

        rule = "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))
        n = self.numbers()
        lines = [
            f"== ledger: {self.title} ({'settled' if self.settled else 'NOT settled'} "
            f"after {self.seconds:.0f}s) ==",
            fmt(head),
            rule,
            *(fmt(r) for r in rows[:-1]),
            rule,
            fmt(rows[-1]),
            f"  retry Jobs created: {n['retry_jobs']} (ledger expects "
            f"{sum(r.entry.workload.retries for r in self.results)}); tickets pending: "
            f"{self.pending_tickets}; stray dead letters: {len(self.stray_letters)}; "
            f"creates tried again: {self.create_retries}",
        ]
        if self.faults:
            lines.append(f"  faults ({len(self.faults)}): " + "; ".join(self.faults))
        if self.effects:
            felt = ", ".join(f"{k}={v}" for k, v in sorted(self.effects.items()))
            lines.append(f"  daemon log: {felt}")
        bad = [r for r in self.results if r.bad or not r.resolved]
        for r in bad[:20]:
            verdicts = ",".join(v for v in VERDICTS if getattr(r, v)) or "unresolved"
            lines.append(
                f"  ! {r.entry.name} uid={r.entry.uid} [{verdicts}] outcome={r.outcome}: "
                + "; ".join(r.problems)
            )
        if len(bad) > 20:
            lines.append(f"  ! ... and {len(bad) - 20} more")
        for sid in self.stray_letters[:10]:
            lines.append(f"  ! stray dead letter {sid}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "settled": self.settled,
            "seconds": round(self.seconds, 1),
            "numbers": self.numbers(),
            "faults": self.faults,
            "daemon_log": self.effects,
            "stray_letters": self.stray_letters,
            "entries": [r.as_json() for r in self.results],
        }


def _row(label: str, expect: str, results: list[EntryResult]) -> tuple[str, ...]:
    outcomes = Counter(r.outcome for r in results)
    return (
        label,
        expect,
        str(len(results)),
        str(outcomes["dead_letter"]),
        str(outcomes["success"]),
        *(str(sum(1 for r in results if getattr(r, v))) for v in VERDICTS),
    )


# --- joining -------------------------------------------------------------------------------------


@dataclass
class Sources:
    """Where the checker reads: the daemon's Redis keys, and the namespace's Jobs."""

    redis: Redis
    queries: DeadLetterQueries
    keys: Keys
    api: client.ApiClient
    namespace: str
    recorder: JobRecorder


async def observe(ledger: Ledger, src: Sources, *, title: str, faults: list[str]) -> LedgerReport:
    """One join of the ledger with Redis and the API, as they are now."""
    letters = await src.queries.list_dead_letters(None, count=100_000)
    if letters.corrupt:
        raise AssertionError(f"corrupt dead letters: {letters.corrupt}")
    tickets = {
        t.decode() if isinstance(t, bytes) else str(t)
        for t in await src.redis.hkeys(src.keys.retry_tickets)
    }
    await src.recorder.relist()
    return join(ledger, list(letters), tickets, src.recorder.jobs, title=title, faults=faults)


def join(
    ledger: Ledger,
    letters: list[tuple[str, DeadLetter]],
    tickets: set[str],
    jobs: dict[str, RawObject],
    *,
    title: str,
    faults: list[str],
) -> LedgerReport:
    """The ledger against every dead letter, the pending ticket ids and every Job seen."""
    by_uid: dict[str, list[tuple[str, DeadLetter]]] = defaultdict(list)
    for entry_id, letter in letters:
        by_uid[letter.job.uid].append((entry_id, letter))
    lineages: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for uid, job in jobs.items():
        annotations = job["metadata"].get("annotations") or {}
        original = annotations.get(ANNOTATION_ORIGINAL_UID)
        if original:
            lineages[original][int(annotations.get(ANNOTATION_ATTEMPT, "0"))].append(uid)
    known: set[str] = set()
    results = []
    for entry in ledger:
        lineage = lineages[entry.uid]
        lineage[1].append(entry.uid)
        uids = [u for attempt in sorted(lineage) for u in lineage[attempt]]
        known.update(uids)
        results.append(_judge(entry, dict(lineage), uids, by_uid, tickets, jobs))
    stray = [eid for uid, found in by_uid.items() if uid not in known for eid, _ in found]
    return LedgerReport(
        title=title,
        results=results,
        pending_tickets=len(tickets),
        stray_letters=stray,
        faults=list(faults),
        create_retries=ledger.create_attempts_failed,
    )


def _judge(
    entry: Entry,
    jobs: dict[int, list[str]],
    uids: list[str],
    by_uid: dict[str, list[tuple[str, DeadLetter]]],
    tickets: set[str],
    seen: dict[str, RawObject],
) -> EntryResult:
    letters = [found for uid in uids for found in by_uid.get(uid, [])]
    completed = [u for u in uids if u in seen and condition(seen[u], "Complete")]
    pending = [u for u in uids if u in tickets]
    if letters:
        outcome = "dead_letter"
    elif completed:
        outcome = "success"
    elif pending:
        outcome = "pending"
    else:
        outcome = "none"
    result = EntryResult(entry, outcome, letters, jobs)
    p = result.problems
    if outcome in ("pending", "none"):
        result.lost = True
        p.append("no outcome" + (f" (ticket pending for {pending})" if pending else ""))
    dupes = {u: [eid for eid, _ in by_uid[u]] for u in uids if len(by_uid.get(u, [])) > 1}
    if dupes:
        result.duplicated = True
        p.append(f"several dead letters for one Job uid: {dupes}")
    twice = {a: us for a, us in jobs.items() if len(us) > 1}
    if twice:
        result.double_created = True
        p.append(f"retry Job created more than once: {twice}")
    wrong = _mismatch(entry, jobs, letters, completed)
    if wrong and not result.lost:
        result.wrong = True
        p.extend(wrong)
    return result


def _mismatch(
    entry: Entry,
    jobs: dict[int, list[str]],
    letters: list[tuple[str, DeadLetter]],
    completed: list[str],
) -> list[str]:
    w = entry.workload
    problems = []
    attempts = sorted(jobs)
    if attempts != list(range(1, w.attempts + 1)):
        problems.append(f"Jobs of attempts {attempts}, expected 1..{w.attempts}")
    distinct = {lt.job.uid for _, lt in letters}
    if w.outcome == "success":
        if letters:
            problems.append(f"dead-lettered ({[eid for eid, _ in letters]}) though due to pass")
        return problems
    if completed:
        problems.append(f"a Job completed ({completed}) though every attempt fails")
    if len(distinct) > 1:
        problems.append(f"dead letters for {len(distinct)} Jobs of one lineage")
    for entry_id, lt in letters:
        got = (lt.job.name, lt.failure_class.value, lt.attempts)
        want = (w.final_job(entry.name), w.failure_class, w.attempts)
        if got != want:
            problems.append(f"{entry_id}: (job, class, attempts) {got}, expected {want}")
    return problems


Observe = Callable[[], Awaitable[LedgerReport]]


async def settle(observe_now: Observe, *, within: float, quiet_s: float) -> LedgerReport:
    """Poll until every entry is resolved and no ticket waits, then `quiet_s` more; the last
    report (``settled`` False when `within` ran out first)."""
    started = time.monotonic()
    deadline = started + within
    report: LedgerReport | None = None
    while time.monotonic() < deadline:
        try:
            report = await observe_now()
        except (SinkError, RedisError):
            report = None  # Redis restarting: read again at the next poll
        if report is not None and report.all_resolved:
            break
        await asyncio.sleep(1.0)
    settled = report is not None and report.all_resolved
    if settled:
        await asyncio.sleep(quiet_s)
    final = await _observe_retrying(observe_now)
    final.settled = settled and final.all_resolved
    final.seconds = time.monotonic() - started
    return final


async def _observe_retrying(observe_now: Observe, tries: int = 20) -> LedgerReport:
    for _ in range(tries - 1):
        try:
            return await observe_now()
        except (SinkError, RedisError):
            await asyncio.sleep(1.0)
    return await observe_now()
