"""Retry scheduler: firing lateness and double fires with a million tickets in a real Redis.

    .venv/bin/python -m bench.scheduler [--tickets 1000000] [--rate 1000] [--window 30]
        [--loops 2] [--poll-interval S] [--json PATH]

(run from the repository root, as a module). Starts a private redis-server (devtools), loads
``--tickets`` retry tickets through the daemon's own schedule script (the ticket, due-time zset,
outcome marker and its index; `RedisStore.schedule_retries`: the KEYS and ARGV of
`RedisStore.schedule_retry`, ``--width`` calls pipelined per round trip), of which
``--rate * --window`` fall due at ``--rate`` per second during the window and the rest a day
or more later (they are there to make the zset as big as the brief asks). ``--loops``
processes each run the real `RetryLoop` (claim script, begin_create, settle_created, finalizer
queue) against the same Redis, with a `JobsPort` that records every create in memory: the
thing measured is the scheduler, not the apiserver.

Reported: lateness of each fire (the fake create's clock minus the ticket's due score in Redis,
same host so the same clock) p50/p90/p99/max; double fires (a ticket created twice, over all
loops: must be 0); tickets of the window never fired; tickets fired that were not due; Redis
``used_memory`` per stored ticket (INFO before and after loading). The loops use the daemon's
RetryLoopSettings defaults unless ``--poll-interval``/``--batch`` say otherwise: with the
default 5 s poll a ticket waits up to 5 s by design.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from watcher.adapters.redis.store import RedisStore
from watcher.core.annotations import ANNOTATION_RETRY_OF
from watcher.core.model import FailureClass, JobRef, RetryTicket
from watcher.core.rawjson import RawObject
from watcher.core.settings import RedisSettings, RetryLoopSettings
from watcher.kit.metrics import Metrics
from watcher.service.retrying import RetryLoop

CLUSTER = "bench"
FAR_S = 86_400.0
"""Tickets outside the window are due a day (and i ms) later: stored, never fired."""
LEAD_S = 2.0
"""The window opens this long after the last window ticket is expected to be stored."""


def ticket(i: int, due_at: float) -> RetryTicket:
    """A retry ticket as the handler writes one, with a realistic small manifest."""
    uid = f"00000000-0000-4000-8000-{i:012d}"
    name = f"bench-{i}"
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "etl", "tier": "b"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "etl"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.example/etl:1.4.2",
                            "args": ["--date", "2026-12-01", "--shard", str(i % 64)],
                            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                        }
                    ],
                },
            },
        },
    }
    return RetryTicket(
        job=JobRef(namespace="bench", name=name, uid=uid),
        attempt=2,
        due_at=due_at,
        failure_class=FailureClass.NODE_LOST,
        reason="node kwok-node-1 went NotReady while the pod ran",
        manifest=manifest,
        avoid_node="kwok-node-1",
    )


@dataclass
class RecordingJobs:
    """A `JobsPort` that records creates in memory: (ticket id, wall clock) per create."""

    fires: list[tuple[str, float]] = field(default_factory=list)

    async def get(self, namespace: str, name: str) -> RawObject | None:
        return None  # asked only after an earlier claim began; then no Job is there

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        at = time.time()
        ticket_id = body["metadata"]["annotations"][ANNOTATION_RETRY_OF]
        self.fires.append((ticket_id, at))
        return {"metadata": {**body["metadata"], "uid": f"created-{ticket_id}"}}

    async def delete(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        return True

    async def remove_finalizer(self, job: JobRef, finalizer: str) -> bool:
        return True

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        return None


def _loop_process(
    port: int, settings: dict[str, Any], ready: MpEvent, stop: MpEvent, out: Any
) -> None:
    """One replica's retry loop until `stop`; puts its fires and CPU seconds on `out`."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    jobs = RecordingJobs()

    async def run() -> None:
        redis = Redis(host="127.0.0.1", port=port)
        store = RedisStore(redis, RedisSettings(), cluster_name=CLUSTER)
        loop = RetryLoop(
            store=store, jobs=jobs, settings=RetryLoopSettings(**settings),
            cluster_name=CLUSTER, metrics=Metrics(), logger=structlog.get_logger(),
        )  # fmt: skip
        halt = asyncio.Event()
        task = asyncio.create_task(loop.run(halt))
        cpu.append(time.process_time())
        ready.set()
        # A process-wide flag cannot wake an asyncio.Event: wait for it in a thread.
        await asyncio.to_thread(stop.wait)
        halt.set()
        await task
        cpu.append(time.process_time())
        await redis.aclose()

    cpu: list[float] = []
    asyncio.run(run())
    out.put((jobs.fires, cpu[1] - cpu[0]))


def _delay(i: int, window_n: int, t0: float, rate: float) -> float:
    """Ticket `i`'s delay from now: in the window (i < window_n) due at t0 + i/rate, else a
    day and i ms from now."""
    if i < window_n:
        return t0 + i / rate - time.time()
    return FAR_S + i / 1000


async def _schedule(port: int, lo: int, hi: int, plan: tuple[int, float, float], width: int) -> int:
    """Store tickets lo..hi-1 through the store, `width` schedule-script calls per round trip
    (`RedisStore.schedule_retries`: the daemon's script, KEYS and ARGV, pipelined); how many
    were stored with their due time still ahead."""
    redis = Redis(host="127.0.0.1", port=port)
    store = RedisStore(redis, RedisSettings(), cluster_name=CLUSTER)
    ahead = 0
    try:
        for start in range(lo, hi, width):
            delays = [(i, _delay(i, *plan)) for i in range(start, min(hi, start + width))]
            ahead += sum(1 for _, d in delays if d > 0)
            results = await store.schedule_retries(
                [(ticket(i, time.time() + d), d) for i, d in delays]
            )
            if not all(r.written for r in results):
                raise SystemExit("a ticket was not written: is the Redis not empty?")
    finally:
        await redis.aclose()
    return ahead


def _load_process(port: int, lo: int, hi: int, plan: tuple[int, float, float], width: int) -> int:
    return asyncio.run(_schedule(port, lo, hi, plan, width))


def load(
    port: int, lo: int, hi: int, plan: tuple[int, float, float], args: argparse.Namespace
) -> int:
    """Tickets lo..hi-1 stored by --load-procs processes at once (the schedule script is
    the cost measured; one Python process cannot keep Redis busy)."""
    procs = max(1, min(args.load_procs, (hi - lo) // 1000 or 1))
    bounds = [lo + (hi - lo) * k // procs for k in range(procs + 1)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        parts = pool.starmap(
            _load_process,
            [(port, a, b, plan, args.width) for a, b in itertools.pairwise(bounds)],
        )
    return sum(parts)


async def _used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of `values` (nearest rank), NaN-free: empty gives zeros."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1]}


@dataclass
class Result:
    tickets: int
    window_tickets: int
    rate_per_s: float
    loops: int
    poll_interval_s: float
    batch_size: int
    load_per_s: float
    fired: int
    double_fires: int
    missed: int
    not_due_fired: int
    lateness_ms: dict[str, float]
    used_memory_per_ticket_b: float
    fire_rate_per_s: float
    """Fires per second over all loops, first fire to last: what they keep up with."""
    loop_cpu_us_per_fire: float = 0.0
    """CPU time of the loop processes (from start to stop, idle polls included) per fire: less
    sensitive to the machine's other load than lateness."""


async def _measure(port: int, args: argparse.Namespace) -> Result:
    redis = Redis(host="127.0.0.1", port=port)
    keys = RedisStore(redis, RedisSettings(), cluster_name=CLUSTER).keys
    window_n = int(args.rate * args.window)
    if window_n > args.tickets:
        raise SystemExit(f"--tickets {args.tickets} < --rate x --window = {window_n}")
    before = await _used_memory(redis)
    started = time.perf_counter()
    far_n = args.tickets - window_n
    await asyncio.to_thread(load, port, window_n, args.tickets, (window_n, 0.0, 1.0), args)
    elapsed = time.perf_counter() - started
    load_rate = far_n / elapsed if far_n else 2000.0

    settings = {"batch_size": args.batch}
    if args.poll_interval is not None:
        settings["poll_interval_s"] = args.poll_interval
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(args.loops)]
    procs = [
        ctx.Process(target=_loop_process, args=(port, settings, ready, stop, out))
        for ready in readies
    ]
    for proc in procs:
        proc.start()
    for ready in readies:
        if not ready.wait(60):
            raise SystemExit("a retry loop process did not start within 60 s")

    # The window: ticket j due at t0 + j/rate, t0 after all of them are expected stored.
    t0 = time.time() + window_n / load_rate * 1.5 + LEAD_S
    plan = (window_n, t0, args.rate)
    ahead = await asyncio.to_thread(load, port, 0, window_n, plan, args)
    if ahead < window_n:
        print(f"warning: {window_n - ahead} tickets stored after their due time", file=sys.stderr)
    uids = [ticket(j, 0).job.uid for j in range(window_n)]
    due_ms: dict[str, float] = {}
    for start in range(0, window_n, 5000):
        part = uids[start : start + 5000]
        scores = await redis.zmscore(keys.retry_due, part)
        due_ms.update({u: s for u, s in zip(part, scores, strict=True) if s is not None})
    # Measured after loading (its Python side grows Redis's client buffers, not its data).
    per_ticket = (await _used_memory(redis) - before) / args.tickets

    # Until every window ticket is settled (none due before the far ones, none leased), or
    # --drain seconds after the window: what is left then is reported as missed.
    await asyncio.sleep(max(0.0, t0 + args.window - time.time()))
    deadline = time.time() + args.drain
    far_ms = (time.time() + FAR_S / 2) * 1000
    while time.time() < deadline:
        due = await redis.zcount(keys.retry_due, 0, far_ms)
        if due == 0 and await redis.zcard(keys.retry_inflight) == 0:
            break
        await asyncio.sleep(0.25)
    stop.set()
    fires: list[tuple[str, float]] = []
    cpu_s = 0.0
    for _ in procs:
        loop_fires, loop_cpu_s = out.get(timeout=120)
        fires.extend(loop_fires)
        cpu_s += loop_cpu_s
    for proc in procs:
        proc.join(30)
    await redis.aclose()

    counts = Counter(uid for uid, _ in fires)
    times = [at for _, at in fires]
    span = max(times) - min(times) if times else 0.0
    lateness = [(at * 1000 - due_ms[uid]) for uid, at in fires if uid in due_ms]
    return Result(
        tickets=args.tickets,
        window_tickets=window_n,
        rate_per_s=args.rate,
        loops=args.loops,
        poll_interval_s=settings.get("poll_interval_s", RetryLoopSettings().poll_interval_s),
        batch_size=args.batch,
        load_per_s=round(load_rate),
        fired=len(counts),
        double_fires=sum(n - 1 for n in counts.values() if n > 1),
        missed=sum(1 for uid in uids if uid not in counts),
        not_due_fired=len(counts.keys() - set(uids)),
        lateness_ms={k: round(v, 1) for k, v in quantiles(lateness).items()},
        used_memory_per_ticket_b=round(per_ticket, 1),
        fire_rate_per_s=round(len(fires) / max(1e-3, span), 1),
        loop_cpu_us_per_fire=round(cpu_s / max(1, len(fires)) * 1e6),
    )


def run(port: int, argv: Sequence[str] = ()) -> Result:
    """Parse `argv` as the command line does and measure against the redis-server at `port`."""
    return asyncio.run(_measure(port, parser().parse_args(list(argv))))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tickets", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=1000.0, help="tickets falling due per second")
    p.add_argument("--window", type=float, default=30.0, help="seconds of firing measured")
    p.add_argument("--loops", type=int, default=2, help="retry loop processes at once")
    p.add_argument("--poll-interval", type=float, default=None, help="default: the daemon's")
    p.add_argument("--batch", type=int, default=RetryLoopSettings().batch_size)
    p.add_argument("--width", type=int, default=500, help="schedule calls per round trip")
    p.add_argument("--load-procs", type=int, default=2, help="processes storing tickets")
    p.add_argument("--drain", type=float, default=60.0, help="seconds allowed after the window")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    return p


def report(result: Result) -> None:
    late = result.lateness_ms
    print(
        f"{result.tickets:,} tickets stored ({result.load_per_s:,.0f}/s through the schedule "
        f"script, pipelined), {result.window_tickets:,} due at {result.rate_per_s:,.0f}/s, "
        f"{result.loops} loops (poll {result.poll_interval_s} s, batch {result.batch_size})"
    )
    print(f"{'lateness p50':<22}{late['p50']:>10,.0f} ms")
    print(f"{'lateness p90':<22}{late['p90']:>10,.0f} ms")
    print(f"{'lateness p99':<22}{late['p99']:>10,.0f} ms   (goal < 1,000)")
    print(f"{'lateness max':<22}{late['max']:>10,.0f} ms")
    print(f"{'fired':<22}{result.fired:>10,}   ({result.fire_rate_per_s:,.0f}/s, all loops)")
    print(f"{'loop CPU per fire':<22}{result.loop_cpu_us_per_fire:>10,.0f} us")
    print(f"{'double fires':<22}{result.double_fires:>10,}   (must be 0)")
    print(f"{'missed':<22}{result.missed:>10,}")
    print(f"{'fired, not due':<22}{result.not_due_fired:>10,}")
    print(f"{'used_memory/ticket':<22}{result.used_memory_per_ticket_b:>10,.0f} B")


def main() -> None:
    args = parser().parse_args()
    with RedisServer() as server:
        result = asyncio.run(_measure(server.port, args))
    report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
