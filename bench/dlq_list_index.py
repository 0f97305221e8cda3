"""`dlq list --class` over the indexes versus a full scan, on one queue of 100,000 entries.

    .venv/bin/python -m bench.dlq_list_index [--entries 100000] [--match-every 100]

Starts a private redis-server (devtools), writes `--entries` dead letters through the
daemon's own RedisStore (so the indexes are written by the same scripts as in production),
one in `--match-every` of class image_pull, then times, in the same run and on the same data:

- the first page (100) of ``--class image_pull`` read from the class index, and every match;
- the same answers by a full scan (every entry read and decoded, the class checked on each):
  what `dlq list` without an index would have to do.

Prints entries read from the stream and wall time of each, and the ratio. A benchmark, not a
test: the numbers depend on the machine; the entries-read counts do not.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from devtools.devcluster.redis_server import RedisServer
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.model import DeadLetter, FailureClass, JobRef, OwnerRef
from watcher.core.settings import RedisSettings

CLUSTER = "bench"
PAGE = 100


def entry(i: int, match_every: int) -> DeadLetter:
    cls = FailureClass.IMAGE_PULL if i % match_every == 0 else FailureClass.APP_ERROR
    return DeadLetter(
        queue="batch",
        job=JobRef(f"ns{i % 20}", f"report-{i}", f"uid-{i:08d}"),
        failure_class=cls,
        reason="container main exited 1" if cls is FailureClass.APP_ERROR else "ErrImagePull",
        attempts=3,
        failed_at=1_800_000_000.0 + i,
        cluster=CLUSTER,
        evidence=("pod report-x: container main terminated (exit 1)",),
        owner=OwnerRef("CronJob", f"report-{i % 50}", "c"),
        manifest={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"report-{i}"}},
    )


async def fill(store: RedisStore, entries: int, match_every: int) -> float:
    started = time.perf_counter()
    width = 50  # concurrent script calls: well under the client's connection pool
    for i in range(0, entries, width):
        batch = [entry(j, match_every) for j in range(i, min(entries, i + width))]
        await asyncio.gather(*(store.dead_letter(x) for x in batch))
    return time.perf_counter() - started


async def timed(queries: DeadLetterQueries, work: Any) -> tuple[int, int, float]:
    """(matches, stream entries read, seconds) of one run of `work`."""
    before = queries.selector.read
    started = time.perf_counter()
    found = await work()
    return found, queries.selector.read - before, time.perf_counter() - started


async def run(port: int, entries: int, match_every: int) -> None:
    redis = Redis(host="127.0.0.1", port=port)
    try:
        settings = RedisSettings(stream_maxlen=entries * 2)
        store = RedisStore(redis, settings, cluster_name=CLUSTER)
        took = await fill(store, entries, match_every)
        print(
            f"wrote {entries} entries in {took:.1f}s ({entries / took:.0f}/s), "
            f"1 in {match_every} image_pull"
        )
        queries = DeadLetterQueries(redis, settings, cluster_name=CLUSTER)
        by_class = DeadLetterFilter(failure_class=FailureClass.IMAGE_PULL)
        now = await queries.now_ms()

        async def index_page() -> int:
            return len((await queries.select(by_class, limit=PAGE, now_ms=now)).entries)

        async def index_all() -> int:
            return sum([1 async for _ in queries.iterate(by_class, now_ms=now)])

        async def scan(limit: int | None) -> int:
            found = 0
            async for item in queries.iterate(DeadLetterFilter(), now_ms=now):
                decoded = item.decoded
                if (
                    isinstance(decoded, tuple)
                    and decoded[1].failure_class is FailureClass.IMAGE_PULL
                ):
                    found += 1
                    if limit is not None and found >= limit:
                        break
            return found

        rows = [
            ("first page, index", await timed(queries, index_page)),
            ("first page, full scan", await timed(queries, lambda: scan(PAGE))),
            ("every match, index", await timed(queries, index_all)),
            ("every match, full scan", await timed(queries, lambda: scan(None))),
        ]
        print(f"{'':24}  {'matches':>8}  {'read':>8}  {'seconds':>8}")
        for name, (found, read, secs) in rows:
            print(f"{name:24}  {found:>8}  {read:>8}  {secs:>8.3f}")
        for label, fast, slow in (
            ("first page", rows[0][1], rows[1][1]),
            ("every match", rows[2][1], rows[3][1]),
        ):
            print(
                f"{label}: full scan / index = {slow[2] / fast[2]:.0f}x time, "
                f"{slow[1] / max(1, fast[1]):.0f}x entries read"
            )
        memory = await redis.memory_usage(
            store.keys.dlq_class_index("batch", "app_error"), samples=0
        )
        stream = await redis.memory_usage(store.keys.dlq("batch"), samples=0)
        print(f"index memory: {int(memory or 0) / entries:.0f} bytes per entry per index "
              f"(stream: {int(stream or 0) / entries:.0f} bytes per entry)")  # fmt: skip
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--match-every", type=int, default=100)
    args = parser.parse_args()
    with RedisServer() as server:
        asyncio.run(run(server.port, args.entries, args.match_every))


if __name__ == "__main__":
    main()
