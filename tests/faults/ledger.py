"""The load generator of the fault suite, and the ledger it keeps of what it injected.

`LoadGenerator.run` creates `count` failing Jobs in one namespace at a bounded rate, stopping
by itself after `count` Jobs or `max_duration_s`, whichever comes first. Every Job is one of
the `WORKLOADS` below, dealt from a shuffled deck (a fixed seed), so any N holds a fair mix:

    workload   how it fails (kwok stages)                  the outcome it must end with
    app        exit 2                                      dead letter app_error, 1 attempt
    oom        exit 137 OOMKilled                          dead letter oom_killed, 1 attempt
    io-now     i/o timeout, max-retries 0                  dead letter io_timeout, 1 attempt
    io-dl1     i/o timeout, max-retries 1, every attempt   dead letter io_timeout, 2 attempts
    io-dl2     i/o timeout, max-retries 2, every attempt   dead letter io_timeout, 3 attempts
    io-ok1     i/o timeout, then <name>-r2 passes          success after 1 retry
    io-ok2     i/o timeout twice, then <name>-r3 passes    success after 2 retries

Retried workloads carry ``kube-dlq.io/avoid-node: "false"``: the local cluster has two
nodes, and a third attempt avoiding both nodes of the first two would never be scheduled.

The ledger records, per injected Job, its uid, name, workload and the outcome it must end
with; `tests/faults/checker.py` joins it with Redis and the API. Creating a Job survives the
faults the suite injects (the apiserver down, a response lost mid-create): a failed create is
tried again under the same name, and a 409 adopts the Job that the lost create made.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client

from tests.support.kube import RawObject
from tests.support.workloads import IO_TIMEOUT_MESSAGE, failing_job
from watcher.core.annotations import ANNOTATION_AVOID_NODE, ANNOTATION_MAX_RETRIES
from watcher.core.manifest import retry_job_name

Outcome = Literal["dead_letter", "success"]

CREATE_RETRY_S = 0.5
CREATE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Workload:
    """One kind of injected failure and the outcome it must end with."""

    key: str
    weight: int
    outcome: Outcome
    failure_class: str | None
    """The class of its dead letter (None for a success)."""
    attempts: int
    """Attempts the lineage must take in all: 1 is the original Job alone."""
    exit_code: int = 1
    reason: str = "Error"
    message: str = ""
    max_retries: int | None = None

    @property
    def retries(self) -> int:
        return self.attempts - 1

    def final_job(self, name: str) -> str:
        """The name of the lineage's last Job: the one dead-lettered, or the one that passes."""
        return name if self.attempts == 1 else retry_job_name(name, self.attempts)

    def manifest(self, name: str, *, delay: str) -> RawObject:
        annotations: dict[str, str] = {}
        if self.max_retries is not None:
            annotations[ANNOTATION_MAX_RETRIES] = str(self.max_retries)
        if self.attempts > 1:
            annotations[ANNOTATION_AVOID_NODE] = "false"
        return failing_job(
            name,
            exit_code=self.exit_code,
            reason=self.reason,
            message=self.message,
            delay=delay,
            annotations=annotations,
            pass_job=self.final_job(name) if self.outcome == "success" else None,
        )


def _io(key: str, weight: int, outcome: Outcome, attempts: int, max_retries: int) -> Workload:
    return Workload(
        key,
        weight,
        outcome,
        "io_timeout" if outcome == "dead_letter" else None,
        attempts,
        message=IO_TIMEOUT_MESSAGE,
        max_retries=max_retries,
    )


WORKLOADS: tuple[Workload, ...] = (
    Workload("app", 3, "dead_letter", "app_error", 1, exit_code=2, message="ValueError: row 17"),
    Workload("oom", 1, "dead_letter", "oom_killed", 1, exit_code=137, reason="OOMKilled"),
    _io("io-now", 1, "dead_letter", 1, max_retries=0),
    _io("io-dl1", 1, "dead_letter", 2, max_retries=1),
    _io("io-dl2", 1, "dead_letter", 3, max_retries=2),
    _io("io-ok1", 2, "success", 2, max_retries=2),
    _io("io-ok2", 1, "success", 3, max_retries=2),
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One injected Job: what it is, and what it must end with."""

    seq: int
    name: str
    uid: str
    workload: Workload
    created_at: float
    """Unix time the create returned."""

    def as_json(self) -> dict[str, Any]:
        w = self.workload
        return {
            "seq": self.seq,
            "name": self.name,
            "uid": self.uid,
            "workload": w.key,
            "expect": {
                "outcome": w.outcome,
                "failure_class": w.failure_class,
                "attempts": w.attempts,
                "final_job": w.final_job(self.name),
            },
        }


@dataclass
class Ledger:
    """Every Job the load generator created, in creation order."""

    entries: list[Entry] = field(default_factory=list)
    create_attempts_failed: int = 0
    """Creates that got no answer or a 5xx/429 and were tried again (a fault at work)."""

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def by_uid(self) -> dict[str, Entry]:
        return {e.uid: e for e in self.entries}


def deal(seed: int) -> Iterator[Workload]:
    """Workloads in a fair, seeded order: each shuffled deck holds every workload `weight`
    times, so any run of N Jobs is close to the weights."""
    rng = random.Random(seed)
    deck = [w for w in WORKLOADS for _ in range(w.weight)]
    while True:
        rng.shuffle(deck)
        yield from deck


@dataclass
class LoadGenerator:
    """Inject `count` failures into `namespace` at `rate_per_s`, recording them in `ledger`."""

    api: client.ApiClient
    namespace: str
    count: int
    rate_per_s: float
    seed: int
    max_duration_s: float
    prefix: str = "load"
    ledger: Ledger = field(default_factory=Ledger)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> Ledger:
        """Create the Jobs, paced; return when `count` exist or `max_duration_s` is up."""
        rng = random.Random(self.seed + 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        workloads = deal(self.seed)
        try:
            for seq in range(self.count):
                due = started + seq / self.rate_per_s
                if due - started > self.max_duration_s:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                workload = next(workloads)
                name = f"{self.prefix}-{seq:04d}-{workload.key}"
                delay = f"{rng.choice((1, 1, 2, 3))}s"
                remaining = started + self.max_duration_s - loop.time()
                created = await self._create(workload.manifest(name, delay=delay), remaining)
                if created is None:
                    break
                entry = Entry(seq, name, created["metadata"]["uid"], workload, time.time())
                self.ledger.entries.append(entry)
        finally:
            self.done.set()
        return self.ledger

    async def _create(self, body: RawObject, within: float) -> RawObject | None:
        """POST the Job until the apiserver takes it; a 409 adopts the Job a lost create made.
        None when `within` runs out first."""
        batch = client.BatchV1Api(self.api)
        name = body["metadata"]["name"]
        deadline = time.monotonic() + max(within, CREATE_TIMEOUT_S)
        while True:
            found = await self._answer(
                batch.create_namespaced_job(self.namespace, body, _preload_content=False)
            )
            if found is not None and found.get("kind") == "Job":
                return found
            if found is not None and found.get("code") == 409:
                existing = await self._answer(
                    batch.read_namespaced_job(name, self.namespace, _preload_content=False)
                )
                if existing is not None and existing.get("kind") == "Job":
                    return existing
            elif found is not None and found.get("code") not in (429, 500, 502, 503, 504):
                raise AssertionError(f"creating Job {name} failed: {found}")
            self.ledger.create_attempts_failed += 1
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(CREATE_RETRY_S)

    @staticmethod
    async def _answer(call: Any) -> RawObject | None:
        """The decoded JSON answer of an API call, or None when none came (apiserver down)."""
        try:
            resp = await asyncio.wait_for(call, CREATE_TIMEOUT_S)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        try:
            body: RawObject = json.loads(await resp.read())
            return body
        except (aiohttp.ClientError, OSError, ValueError):
            return None
        finally:
            resp.release()
