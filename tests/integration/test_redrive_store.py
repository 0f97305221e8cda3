"""The redriving records on a real redis-server: each step atomic, each replay harmless."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.integration.conftest import CLUSTER, SETTINGS, make_queries, make_store
from tests.integration.test_sink import letter
from watcher.adapters.redis.keyring import Keyring
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.seal import Seal
from watcher.adapters.redis.store import RedisStore
from watcher.core.dlq_filter import DeadLetterFilter
from watcher.core.model import FailureClass, JobRef
from watcher.core.redrive import ClaimStatus, RedrivePlan

pytestmark = pytest.mark.redis

TOKEN = "0123456789abcdef0123456789abcdef"


def plan(name: str = "job-u1-abc123-d1") -> RedrivePlan:
    return RedrivePlan(namespace="ns", name=name, token=TOKEN, redrive=1)


async def one_entry(store: RedisStore, uid: str = "u1") -> str:
    written = await store.dead_letter(letter(uid))
    return written.ref


async def class_members(redis: Redis, queue: str = "batch") -> set[bytes]:
    keys = Keys(prefix=SETTINGS.key_prefix, cluster=CLUSTER)
    return set(await redis.zrange(keys.dlq_class_index(queue, "oom_killed"), 0, -1))


async def test_a_claim_takes_the_entry_off_its_queue_and_its_indexes_in_one_step(
    redis: Redis,
) -> None:
    store = make_store(redis)
    entry = await one_entry(store)
    claim = await store.claim_redrive(entry, plan())
    assert claim.status is ClaimStatus.CLAIMED and claim.plan == plan() and claim.begins == 1
    page = await make_queries(redis).select(DeadLetterFilter(), limit=10)
    assert page.entries == []
    assert await class_members(redis) == set()
    record = await store.redrive_record(entry)
    assert record is not None and record.letter == letter("u1") and record.plan == plan()
    assert await store.redriving_ids() == [entry]


async def test_a_second_claim_resumes_with_the_first_plan_not_its_own(redis: Redis) -> None:
    store = make_store(redis)
    entry = await one_entry(store)
    await store.claim_redrive(entry, plan())
    again = await store.claim_redrive(entry, plan("another-name"))
    assert again.status is ClaimStatus.RESUMED and again.plan == plan() and again.begins == 2
    resumed = await store.claim_redrive(entry, None)
    assert resumed.status is ClaimStatus.RESUMED and resumed.begins == 3


async def test_an_entry_neither_queued_nor_claimed_is_gone(redis: Redis) -> None:
    store = make_store(redis)
    claim = await store.claim_redrive("batch/1-0", plan())
    assert claim.status is ClaimStatus.GONE
    assert await store.redrive_record("batch/1-0") is None


async def test_release_puts_the_entry_back_only_when_no_create_can_have_happened(
    redis: Redis,
) -> None:
    store = make_store(redis)
    entry = await one_entry(store)
    await store.claim_redrive(entry, plan())
    back = await store.release_redrive(entry, letter("u1"))
    assert back is not None and back != entry
    page = await make_queries(redis).select(DeadLetterFilter(), limit=10)
    assert [e for e, _ in page.entries] == [back]
    assert await class_members(redis) == {back.partition("/")[2].encode()}
    # begun twice: an earlier POST may have landed, so the record stays for the next run
    await store.claim_redrive(back, plan())
    await store.claim_redrive(back, None)
    assert await store.release_redrive(back, letter("u1")) is None
    assert await store.redrive_record(back) is not None


async def test_archive_checks_the_recorded_uid_and_happens_once(redis: Redis) -> None:
    store = make_store(redis)
    entry = await one_entry(store)
    await store.claim_redrive(entry, plan())
    assert await store.redrive_created(entry, "new-uid") == 1
    assert await store.redrive_created(entry, "other-uid") == -1
    assert await store.archive_redriven(entry, JobRef("ns", plan().name, "other-uid")) == -1
    assert await store.archive_redriven(entry, JobRef("ns", plan().name, "new-uid")) == 1
    assert await store.archive_redriven(entry, JobRef("ns", plan().name, "new-uid")) == 0
    assert await store.redrive_record(entry) is None and await store.redriving_ids() == []
    archived = await store.archived("batch", count=10)
    assert [(of, job, shown) for _, of, job, shown in archived] == [
        (entry, f"ns/{plan().name}/new-uid", letter("u1"))
    ]
    assert await store.redrive_created(entry, "new-uid") == 0  # settled: no half record back
    assert await redis.exists(store.keys.redrive_record(entry)) == 0


async def test_a_failed_redrive_is_dead_lettered_and_its_record_removed_atomically(
    redis: Redis,
) -> None:
    store = make_store(redis)
    entry = await one_entry(store)
    await store.claim_redrive(entry, plan())
    await store.redrive_created(entry, "new-uid")
    again = replace(
        letter("new-uid"),
        failure_class=FailureClass.APP_ERROR,
        redrive_count=1,
        redrive_of=entry,
    )
    stranger = replace(again, job=JobRef("ns", "x", "stranger"))
    assert await store.dead_letter_redriven(entry, stranger) is None
    written = await store.dead_letter_redriven(entry, again)
    assert written is not None and written.written
    assert await store.redrive_record(entry) is None
    replay = await store.dead_letter_redriven(entry, again)
    assert replay is not None and replay.already_handled
    page = await make_queries(redis).select(DeadLetterFilter(), limit=10)
    assert [(e, got.redrive_count, got.redrive_of) for e, got in page.entries] == [
        (written.ref, 1, entry)
    ]


async def test_a_plan_written_by_hand_does_not_open(redis: Redis, tmp_path: Path) -> None:
    (tmp_path / "k1").write_text("ab" * 32)
    seal = Seal(signing=Keyring(str(tmp_path)), signing_key_id="k1")
    store = RedisStore(redis, SETTINGS, cluster_name=CLUSTER, seal=seal)
    entry = await one_entry(store)
    await store.claim_redrive(entry, plan())
    await redis.hset(store.keys.redrive_record(entry), "plan", b'{"namespace":"kube-system"}')
    record = await store.redrive_record(entry)
    assert record is not None and record.plan is None and record.forged
    assert record.letter == letter("u1")
