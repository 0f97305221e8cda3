"""Redis memory of dead letters and outcome markers, measured on realistic entries.

    .venv/bin/python -m bench.dead_letter_memory [--entries 1000]

(run from the repository root, as a module: it reads tests/data/captured through
tests.support.capture). Starts a private redis-server (devtools), replays every captured
failure scenario (objects recorded from a real control plane) into a FailureReport and has
the daemon's own FailureHandler and RedisStore write `--entries` dead letters from them, each
Job under its own uid, with a policy that retries nothing (so every failure is a dead letter:
pod statuses, termination messages, Events, nodes, the cleaned manifest). Then it reads
``MEMORY USAGE <key> SAMPLES 0`` (every element counted, not sampled) of the queue's stream,
of the outcome markers and of the rest, and prints bytes per entry and the memory of one queue
at the default cap (``redis.stream_maxlen``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from tests.support.capture import load, replay, stored
from watcher.adapters.redis.keys import STREAM_FIELD
from watcher.adapters.redis.store import RedisStore
from watcher.core.model import FailureReport
from watcher.core.policy import RetryPolicy
from watcher.core.settings import ClassifySettings, RedisSettings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "captured"
CLUSTER = "bench"


def scenarios() -> list[tuple[FailureReport, dict[str, Any]]]:
    """(report, raw Job) of every captured scenario: the Job as last seen, and its evidence."""
    found = []
    for path in stored(DATA):
        record = load(path)
        jobs = [e["object"] for e in record["watch"] if e["resource"] == "jobs"]
        found.append((replay(record).report, jobs[-1]))
    if not found:
        raise SystemExit(f"no captured scenarios under {DATA}")
    return found


def as_job(report: FailureReport, raw: dict[str, Any], i: int) -> tuple[FailureReport, Any]:
    """The same failure under a Job uid and name of its own."""
    uid = f"{report.job.ref.uid[:-8]}{i:08d}"
    ref = dataclasses.replace(report.job.ref, uid=uid, name=f"{report.job.ref.name}-{i}")
    meta = {**raw["metadata"], "uid": uid, "name": ref.name}
    return dataclasses.replace(report, job=dataclasses.replace(report.job, ref=ref)), {
        **raw,
        "metadata": meta,
    }


async def usage(redis: Redis, key: str) -> int:
    return int(await redis.memory_usage(key, samples=0) or 0)


async def measure(port: int, entries: int) -> None:
    redis = Redis(host="127.0.0.1", port=port)
    try:
        settings = RedisSettings()
        store = RedisStore(redis, settings, cluster_name=CLUSTER)
        handler = FailureHandler(
            store=store, jobs=None, policy=RetryPolicy(infra_budget=0, app_budget=0),
            classify=ClassifySettings(), cluster_name=CLUSTER, metrics=Metrics(),
            logger=structlog.get_logger(), rng=random.Random(0),
        )  # fmt: skip
        base = scenarios()
        queues: set[str] = set()
        for i in range(entries):
            report, raw = as_job(*base[i % len(base)], i)
            outcome = await handler.handle(report, raw)
            assert outcome.write.written, outcome
            queues.add(outcome.write.ref.partition("/")[0])
        (queue,) = queues
        k = store.keys
        stream = await usage(redis, k.dlq(queue))
        marker_prefix = k.outcome("*")[:-1].encode()
        markers = 0
        others: dict[str, int] = {}
        async for key in redis.scan_iter(match=f"{k.base}:*", count=1000):
            if key.startswith(marker_prefix):
                markers += await usage(redis, key)
            elif key != k.dlq(queue).encode():
                others[key.decode()] = await usage(redis, key)
        length = int(await redis.xlen(k.dlq(queue)))
        per_entry = stream / length
        sizes = [
            len(fields[STREAM_FIELD.encode()]) for _, fields in await redis.xrange(k.dlq(queue))
        ]
        cap = settings.stream_maxlen
        print(f"{length} dead letters from {len(base)} captured scenarios, queue {queue!r}")
        nodes = (await redis.xinfo_stream(k.dlq(queue)))["radix-tree-keys"]
        print(f"stream:  {stream} bytes, {per_entry:.0f} bytes per entry, in {nodes} nodes")
        print(
            f"payload (the codec's JSON): {sum(sizes) / len(sizes):.0f} bytes on average, "
            f"{min(sizes)} to {max(sizes)}"
        )
        print(
            f"at the default cap (stream_maxlen {cap}): about {per_entry * cap / 2**20:.1f} MiB "
            "per queue"
        )
        print(f"outcome markers: {markers / entries:.0f} bytes per failed Job")
        for key, size in sorted(others.items()):
            print(f"{key}: {size} bytes ({size / entries:.1f} per failed Job)")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40)  # errors only
    )
    with RedisServer() as server:
        asyncio.run(measure(server.port, args.entries))


if __name__ == "__main__":
    main()
