"""Poison entries in a real Redis: quarantined and reported, never raised, never a stall.

A retry ticket that does not decode (a huge integer, deep nesting, garbage bytes, an id that is
not UTF-8) is moved to the corrupt hash while the good tickets of the same batch are claimed
and fired; the retry loop counts it in ``kube_dlq_quarantined_entries_total`` and logs one
warning per ticket. ``kube-dlq dlq list`` shows the good dead letters on stdout and one warning
line per bad one on stderr; ``dlq show`` of a bad one prints one error line and exits 2.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from devtools.devcluster.redis_server import RedisServer
from tests.integration.conftest import (
    CLUSTER,
    SETTINGS,
    make_queries,
    make_redis,
    make_store,
    travel,
)
from tests.integration.test_sink import T0, letter, ticket
from tests.support.fakes import FakeJobs
from watcher.adapters.redis import codec
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.store import RedisStore
from watcher.cli.main import main
from watcher.core.settings import RetryLoopSettings
from watcher.kit.metrics import Metrics
from watcher.service.retrying import RetryLoop

pytestmark = pytest.mark.redis

GOOD_TICKET = codec.encode_retry_ticket(ticket("template")).decode()
POISON_TICKETS: dict[str, bytes] = {
    "huge-due-at": GOOD_TICKET.replace(str(T0), "1" + "0" * 400).encode(),
    "huge-attempt": GOOD_TICKET.replace('"attempt":2', '"attempt":' + "9" * 400).encode(),
    "deep-nesting": GOOD_TICKET.replace(
        '"manifest":{', '"manifest":{"deep":' + "[" * 10_000 + "]" * 10_000 + ","
    ).encode(),
    "deep-but-parsable": GOOD_TICKET.replace(
        '"manifest":{', '"manifest":{"deep":' + "[" * 500 + "]" * 500 + ","
    ).encode(),
    "infinity": GOOD_TICKET.replace(str(T0), "1e400").encode(),
    "lone-surrogate": GOOD_TICKET.replace('"reason":"', '"reason":"\\ud800').encode(),
    "garbage-bytes": b"\xff\xfe\x00garbage",
    "empty": b"",
}
BAD_ID = b"bad-id-\xff"


async def _add_poison(redis: Redis, keys: Keys, ticket_id: str | bytes, body: bytes) -> None:
    await redis.hset(keys.retry_tickets, ticket_id, body)
    await redis.zadd(keys.retry_due, {ticket_id: T0 * 1000})


async def test_poison_tickets_are_quarantined_and_the_batch_is_claimed(
    redis: Redis, keys: Keys
) -> None:
    # Given good due tickets mixed with every kind of poison the fuzzing found
    store = make_store(redis)
    for uid in ("good-1", "good-2", "good-3"):
        await store.schedule_retry(ticket(uid))
    for ticket_id, body in POISON_TICKETS.items():
        await _add_poison(redis, keys, ticket_id, body)
    await _add_poison(redis, keys, BAD_ID, GOOD_TICKET.encode())

    # When one claim takes them all
    batch = await store.claim_due_retries(limit=100)

    # Then the good ones are claimed, and each poison one is in the corrupt hash, reported
    assert sorted(c.ticket_id for c in batch) == ["good-1", "good-2", "good-3"]
    shown_bad_id = BAD_ID.decode(errors="backslashreplace")
    assert {q.ticket_id for q in batch.quarantined} == {*POISON_TICKETS, shown_bad_id}
    assert all(q.error for q in batch.quarantined)
    corrupt = await store.corrupt_retries()
    assert corrupt == {**POISON_TICKETS, shown_bad_id: GOOD_TICKET.encode()}
    # And none of them is left to be claimed again once the leases run out
    assert await store.pending_retries() == 3
    assert await redis.hlen(keys.retry_tickets) == 3
    await travel(redis, keys, 3600)
    later = await store.claim_due_retries(limit=100)
    assert sorted(c.ticket_id for c in later) == ["good-1", "good-2", "good-3"]
    assert later.quarantined == ()


async def test_retry_loop_fires_the_good_tickets_and_counts_the_poison(
    redis: Redis, keys: Keys
) -> None:
    # Given two good tickets and three poison ones due together
    store = make_store(redis)
    for uid in ("good-1", "good-2"):
        await store.schedule_retry(ticket(uid))
    for ticket_id in ("huge-due-at", "deep-nesting", "garbage-bytes"):
        await _add_poison(redis, keys, ticket_id, POISON_TICKETS[ticket_id])
    jobs, metrics = FakeJobs(), Metrics()
    loop = RetryLoop(
        store=store,
        jobs=jobs,
        settings=RetryLoopSettings(),
        cluster_name="it",
        metrics=metrics,
        logger=structlog.get_logger(),
    )

    # When the retry loop runs one cycle
    with capture_logs() as logs:
        claimed = await loop.fire_due()

    # Then both good Jobs are re-created and acked
    assert claimed == 2
    assert sorted(name for _, name in jobs.jobs) == ["job-good-1-r2", "job-good-2-r2"]
    assert await store.pending_retries() == 0
    # And each poison ticket is counted and named in one warning
    count = metrics.registry.get_sample_value(
        "kube_dlq_quarantined_entries_total", {"kind": "retry_ticket"}
    )
    assert count == 3
    warnings = [line for line in logs if line["event"] == "retry_ticket_quarantined"]
    assert sorted(w["ticket_id"] for w in warnings) == [
        "deep-nesting",
        "garbage-bytes",
        "huge-due-at",
    ]
    assert {w["log_level"] for w in warnings} == {"warning"}
    assert set(await store.corrupt_retries()) == {"deep-nesting", "garbage-bytes", "huge-due-at"}


async def test_queries_never_raise_on_a_bad_entry(redis: Redis, keys: Keys) -> None:
    # Given a queue with a good dead letter, poison ones, and a queue name that is not UTF-8
    store = make_store(redis)
    good = await store.dead_letter(letter("good"))
    good_text = codec.encode_dead_letter(letter("x")).decode()
    bad_ids = []
    for body in (
        good_text.replace(str(T0), "1" + "0" * 400),
        good_text.replace('"evidence":[', '"evidence":[' + "[" * 10_000 + "]" * 10_000 + ","),
        "\udcff",
    ):
        raw = body.encode(errors="surrogateescape")
        stream_id = await redis.xadd(keys.dlq("batch"), {STREAM_FIELD: raw})
        bad_ids.append(f"batch/{stream_id.decode()}")
    no_field = await redis.xadd(keys.dlq("batch"), {"other": b"x"})
    bad_ids.append(f"batch/{no_field.decode()}")
    await redis.sadd(keys.queues, b"q-\xff")
    queries_ = make_queries(redis)

    # When listing and looking each one up
    listed = await queries_.list_dead_letters(None, count=100)

    # Then the good one is listed and every bad one reported, the odd queue name too
    assert [entry_id for entry_id, _ in listed] == [good.ref]
    reported = {c.entry_id for c in listed.corrupt}
    assert reported == {*bad_ids, "q-\\xff/"}
    assert await queries_.queues() == ["batch"]
    for bad_id in bad_ids:
        found = await queries_.find_dead_letter(bad_id)
        assert found is not None and not isinstance(found, tuple)
        assert found.entry_id == bad_id
        with pytest.raises(codec.CorruptEntry, match=bad_id):
            await queries_.get_dead_letter(bad_id)
    assert await queries_.find_dead_letter(good.ref) == await queries_.get_dead_letter(good.ref)


# --- the CLI, in-process ----------------------------------------------------------------------


def _config(tmp_path: Path, server: RedisServer, prefix: str) -> Path:
    path = tmp_path / "kube-dlq.yaml"
    path.write_text(
        f"cluster_name: {CLUSTER}\nredis:\n  url: {server.url}\n  key_prefix: {prefix}\n"
        # Unsigned: these entries are written straight into Redis to test decoding.
        "security:\n  allow_unsigned: true\n"
    )
    return path


def _with_redis(server: RedisServer, work: Callable[[Redis], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        client = make_redis(server.port)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _poisoned_queue(server: RedisServer, prefix: str) -> tuple[str, str, list[str]]:
    """Two good dead letters around two poison ones; returns their ids."""

    async def fill(redis: Redis) -> tuple[str, str, list[str]]:
        store = RedisStore(redis, replace(SETTINGS, key_prefix=prefix), cluster_name=CLUSTER)
        first = await store.dead_letter(letter("good-1"))
        text = codec.encode_dead_letter(letter("x")).decode()
        bad = []
        for body in (text.replace(str(T0), "1e400").encode(), b"\xff{"):
            stream_id = await redis.xadd(store.keys.dlq("batch"), {STREAM_FIELD: body})
            bad.append(f"batch/{stream_id.decode()}")
        second = await store.dead_letter(letter("good-2"))
        return first.ref, second.ref, bad

    result: tuple[str, str, list[str]] = _with_redis(server, fill)
    return result


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("cli_env")
def test_dlq_list_json_stays_parseable_and_warns_once_per_bad_entry(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    first, second, bad = _poisoned_queue(redis_server, prefix)
    config = _config(tmp_path, redis_server, prefix)

    code = main(["dlq", "list", "--config", str(config), "-o", "json"])

    out, err = capsys.readouterr()
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == [first, second]
    lines = err.splitlines()
    assert len(lines) == len(bad)
    for bad_id, line in zip(bad, lines, strict=True):
        assert line.startswith(f"warning: entry {bad_id} could not be read: ")


@pytest.mark.usefixtures("cli_env")
def test_dlq_list_table_puts_warnings_on_stderr(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    first, second, bad = _poisoned_queue(redis_server, prefix)

    code = main(["dlq", "list", "--config", str(_config(tmp_path, redis_server, prefix))])

    out, err = capsys.readouterr()
    assert code == 0
    assert first in out and second in out and "warning" not in out
    assert len(err.splitlines()) == len(bad)


@pytest.mark.usefixtures("cli_env")
def test_dlq_show_of_a_corrupt_entry_is_one_error_line(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    first, _, bad = _poisoned_queue(redis_server, prefix)
    config = str(_config(tmp_path, redis_server, prefix))

    for bad_id in bad:
        code = main(["dlq", "show", "--config", config, bad_id])
        out, err = capsys.readouterr()
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith(f"kube-dlq dlq show: {bad_id} could not be read: ")

    assert main(["dlq", "show", "--config", config, first, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == first
