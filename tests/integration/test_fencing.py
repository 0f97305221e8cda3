"""Leader fencing on a real redis-server: a write carrying a stale leadership term writes nothing.

Two stores share one Redis, as an old leader (term 3) and its successor (term 4) would. Once
the successor has written, every write script the old leader calls is refused with
`FencedWrite`, and Redis is left byte for byte as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from tests.integration.conftest import make_store
from tests.integration.test_sink import T0, letter, ticket
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.store import RedisStore
from watcher.core.errors import FencedWrite, SinkError
from watcher.core.lineage import Lineage
from watcher.core.model import AttemptRecord, FailureClass, JobRef
from watcher.kit.metrics import FENCED_OPERATIONS

pytestmark = pytest.mark.redis

Op = Callable[[RedisStore], Awaitable[object]]

LINEAGE = Lineage(
    2, (AttemptRecord(1, "job-claimed", "claimed", FailureClass.NODE_LOST, "x", 1.0),)
)

STALE_OPS: dict[str, Op] = {
    "dead_letter": lambda s: s.dead_letter(letter("new-failure")),
    "schedule_retry": lambda s: s.schedule_retry(ticket("new-retry")),
    "claim_due_retries": lambda s: s.claim_due_retries(limit=10),
    "begin_create": lambda s: s.begin_create(
        "claimed", claim=1, job=JobRef("ns", "job-claimed-r2", ""), lineage=LINEAGE
    ),
    "settle_created": lambda s: s.settle_created("claimed", claim=1, job=None),
    "release_retry": lambda s: s.release_retry("claimed", delay_s=0, claim=1),
    "abandon_retry": lambda s: s.abandon_retry("claimed", letter("claimed"), claim=1),
    "forget_absent": lambda s: s.forget_absent(set(), written_up_to=10**9, namespaces=None),
}


def test_every_fenced_operation_is_tested_and_exported_from_the_start() -> None:
    assert set(STALE_OPS) == set(FENCED_OPERATIONS)


def fenced(redis: Redis, term: int | None) -> RedisStore:
    return make_store(redis).with_term(lambda: term)


async def snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    """Every key's serialized value and TTL state: equal snapshots mean nothing was written."""
    found: dict[bytes, bytes | None] = {}
    async for key in redis.scan_iter(count=1000):
        found[key] = await redis.dump(key)
        found[key + b"#ttl"] = str(await redis.pttl(key)).encode()
    return found


@pytest.mark.parametrize("operation", sorted(STALE_OPS))
async def test_every_write_with_a_stale_term_writes_nothing_and_raises(
    redis: Redis, keys: Keys, operation: str
) -> None:
    # Given the new leader (term 4) has written: a pending ticket, a claimed one, dead letters
    new, old = fenced(redis, 4), fenced(redis, 3)
    await new.schedule_retry(ticket("claimed", due_at=T0))
    await new.schedule_retry(ticket("pending", due_at=T0 + 60), delay_s=60)
    [claimed] = await new.claim_due_retries(limit=1)
    assert (claimed.ticket_id, claimed.claim) == ("claimed", 1)
    await new.dead_letter(letter("gone-job"))
    before = await snapshot(redis)

    # When the old leader, resumed, calls the script
    with pytest.raises(FencedWrite) as refused:
        await STALE_OPS[operation](old)

    # Then nothing changed in Redis, and the error says who was refused and why
    assert await snapshot(redis) == before
    assert (refused.value.operation, refused.value.term, refused.value.fence) == (operation, 3, 4)
    assert not isinstance(refused.value, SinkError)  # the writer must not retry it forever


async def test_the_new_leaders_writes_go_on_and_a_higher_term_raises_the_fence(
    redis: Redis, keys: Keys
) -> None:
    await fenced(redis, 3).dead_letter(letter("a"))
    assert await redis.get(keys.leader_fence) == b"3"
    assert (await fenced(redis, 4).dead_letter(letter("b"))).written
    assert (await fenced(redis, 4).dead_letter(letter("c"))).written  # same term: still fine
    assert await redis.get(keys.leader_fence) == b"4"
    with pytest.raises(FencedWrite):
        await fenced(redis, 3).dead_letter(letter("d"))
    assert not await redis.exists(keys.outcome("d"))


async def test_unfenced_writes_neither_check_nor_move_the_fence(redis: Redis, keys: Keys) -> None:
    # Given a leader at term 7 (a daemon with election on)
    await fenced(redis, 7).dead_letter(letter("a"))

    # When `kube-dlq sweep` (no term) writes, and a store built without a term writes
    swept = await fenced(redis, None).dead_letter(letter("b"))
    plain = await make_store(redis).schedule_retry(ticket("c"))

    # Then both are written, exactly once as always, and the fence is untouched
    assert swept.written and plain.written
    assert await redis.get(keys.leader_fence) == b"7"


async def test_claiming_a_term_needs_one_above_every_term_used_before(
    redis: Redis, keys: Keys
) -> None:
    store = make_store(redis)
    assert await store.claim_term(0) is None  # no fence yet: any term
    assert await store.claim_term(5) is None
    assert await store.claim_term(5) == 5  # equal: another leader may have computed it too
    assert await store.claim_term(2) == 5
    assert await redis.get(keys.leader_fence) == b"5"
    assert await store.claim_term(6) is None


async def test_a_fence_that_is_not_a_term_is_reported_and_nothing_is_written(
    redis: Redis, keys: Keys
) -> None:
    # Given someone wrote garbage into the fence key
    await redis.set(keys.leader_fence, b"inf")

    # When a leader writes or claims a term
    with pytest.raises(SinkError, match=r"leader:fence.*not a leadership term"):
        await fenced(redis, 3).dead_letter(letter("a"))
    with pytest.raises(SinkError, match="not a leadership term"):
        await make_store(redis).claim_term(9)

    # Then nothing was written; once an operator deletes the key, writes resume
    assert not await redis.exists(keys.outcome("a"))
    await redis.delete(keys.leader_fence)
    assert (await fenced(redis, 3).dead_letter(letter("a"))).written


def test_the_fence_key_shares_the_slot_of_every_other_key(keys: Keys) -> None:
    # Scripts on Redis Cluster need all their keys in one slot
    assert key_slot(keys.leader_fence.encode()) == key_slot(keys.outcome("x").encode())
