"""The daemon says when Redis does not keep acknowledged outcomes: a warning log line naming
what is missing (only when it changes), the `kube_dlq_redis_durable` gauge, and a warning in
the /readyz body that never makes the pod unready.

The daemon is built as `run_daemon` builds it, over clients that never connect; its store is
the real `RedisStore` with the Redis reads replaced by a scripted `Durability` (what the
server reports is tested against real redis-servers in tests/integration/test_durability.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from tests.support.watching import LogLines
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.durability import Durability
from watcher.adapters.redis.store import RedisStore
from watcher.app.daemon import Daemon
from watcher.core.errors import SinkError
from watcher.core.settings import ServerSettings, Settings

NO_PERSISTENCE = 'no persistence (appendonly no, save ""): a restart loses every outcome'
NOT_DURABLE = Durability("run-1", missing=(NO_PERSISTENCE,))
DURABLE = Durability("run-1")
WATCHES = {"jobs", "pods", "events", "nodes"}


class ScriptedStore(RedisStore):
    """A RedisStore whose server reads answer what the test sets; nothing reaches Redis."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        super().__init__(redis, settings.redis, cluster_name=settings.cluster_name)
        self.now: Durability | SinkError = NOT_DURABLE

    async def durability(self) -> Durability:
        if isinstance(self.now, SinkError):
            raise self.now
        return self.now

    async def server_problems(self) -> list[str]:
        return []

    async def ping(self, timeout_s: float) -> None:
        return None

    async def queue_depths(self) -> dict[str, int]:
        return {}

    async def oldest_age_s(self, now: float) -> dict[str, float]:
        return {}

    async def outcome_markers(self) -> int:
        return 0

    async def pending_retries(self) -> int:
        return 0


@dataclasses.dataclass
class Rig:
    daemon: Daemon
    store: ScriptedStore
    log: LogLines

    def gauge(self) -> float | None:
        return self.daemon.metrics.registry.get_sample_value("kube_dlq_redis_durable")

    async def readyz(self) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.daemon.health.port}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status, await resp.text()

    def lines(self) -> list[tuple[str, str]]:
        """(level, event) of every durability line logged so far."""
        return [
            (line["level"], line["event"])
            for line in self.log.lines
            if str(line["event"]).startswith("redis_")
        ]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    settings = Settings(
        cluster_name="unit", server=ServerSettings(bind_address="127.0.0.1", port=0)
    )
    api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
    redis = Redis()  # never connects: the store's reads are scripted
    log = LogLines()
    store = ScriptedStore(redis, settings)
    daemon = Daemon(
        settings, kube=KubeClient(api, settings.kubernetes), store=store, logger=log.logger
    )
    await daemon.health.start()
    try:
        yield Rig(daemon, store, log)
    finally:
        await daemon.health.stop()
        await redis.aclose()
        await api.close()


async def test_a_redis_without_persistence_is_said_everywhere_but_the_pod_stays_ready(
    rig: Rig,
) -> None:
    # Given every watch synced, and a Redis that answers but keeps nothing across a restart
    rig.daemon.synced.update(WATCHES)
    # When the daemon starts
    await rig.daemon._check_redis()
    # Then one warning line names what is missing
    [line] = rig.log.named("redis_not_durable")
    assert line["level"] == "warning" and line["missing"] == [NO_PERSISTENCE]
    # And the gauge says 0, and /readyz is 200 with the warning in its body
    assert rig.gauge() == 0
    assert await rig.readyz() == (200, f"ok\nwarning: redis not durable: {NO_PERSISTENCE}\n")


async def test_durability_is_logged_on_change_only_and_a_restart_is_noticed(rig: Rig) -> None:
    rig.daemon.synced.update(WATCHES)
    await rig.daemon._check_redis()
    # When the gauges chore ticks and nothing changed: nothing more is logged
    for _ in range(3):
        await rig.daemon._refresh_gauges()
    assert rig.lines() == [("warning", "redis_not_durable")]

    # When AOF is turned on (same server): durable, said once, and the warning is gone
    rig.store.now = DURABLE
    await rig.daemon._refresh_gauges()
    await rig.daemon._refresh_gauges()
    assert rig.lines()[1:] == [("info", "redis_durable")]
    assert rig.gauge() == 1
    assert await rig.readyz() == (200, "ok\n")

    # When Redis restarts without AOF (a new run_id): the restart and the loss of durability
    rig.store.now = dataclasses.replace(NOT_DURABLE, run_id="run-2")
    await rig.daemon._refresh_gauges()
    assert rig.lines()[2:] == [("info", "redis_restarted"), ("warning", "redis_not_durable")]
    assert rig.log.named("redis_restarted")[0]["outcomes_at_risk"] is False
    assert rig.gauge() == 0

    # When it restarts again, still without AOF: what it held may be lost, a warning
    rig.store.now = dataclasses.replace(NOT_DURABLE, run_id="run-3")
    await rig.daemon._refresh_gauges()
    assert rig.lines()[4:] == [("warning", "redis_restarted")]
    assert rig.log.named("redis_restarted")[1]["outcomes_at_risk"] is True


async def test_an_unready_daemon_still_carries_the_warning(rig: Rig) -> None:
    await rig.daemon._check_redis()
    status, body = await rig.readyz()
    assert status == 503
    first, warning = body.splitlines()
    assert first.startswith("not ready: jobs not synced;")
    assert warning == f"warning: redis not durable: {NO_PERSISTENCE}"


async def test_unknown_durability_is_no_warning_and_not_a_1(rig: Rig) -> None:
    # Given a Redis that cannot be read at start
    rig.daemon.synced.update(WATCHES)
    rig.store.now = SinkError("redis durability failed: ConnectionError")
    await rig.daemon._check_redis()
    # Then the start goes on, the gauge does not claim durability, /readyz warns of nothing
    assert rig.log.named("redis_unreachable_at_start")
    assert rig.gauge() == 0
    assert await rig.readyz() == (200, "ok\n")
    # And the first check that succeeds is logged
    rig.store.now = DURABLE
    await rig.daemon._refresh_gauges()
    assert rig.gauge() == 1
    assert rig.lines()[-1] == ("info", "redis_durable")
