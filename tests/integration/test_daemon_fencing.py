"""A leader whose writes Redis refuses as stale steps down at once (real redis-server).

The daemon here leads by fiat (its elector is given term 3 and told it leads, no Lease involved)
while Redis's fence is already at 4, as after another replica took over during a freeze. The
Kubernetes client points nowhere: nothing here reaches the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import structlog
from kubernetes_asyncio import client
from redis.asyncio import Redis
from structlog.testing import capture_logs

from tests.integration.conftest import CLUSTER, SETTINGS, make_store
from tests.integration.test_sink import letter, ticket
from tests.support.fakes import FakeJobs
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.keys import Keys
from watcher.app.daemon import Daemon
from watcher.core.errors import FencedWrite
from watcher.core.settings import LeaderElectionSettings, RetryLoopSettings, Settings
from watcher.kit.metrics import Metrics
from watcher.service.retrying import RetryLoop

pytestmark = pytest.mark.redis


@pytest.fixture
async def daemon(redis: Redis) -> AsyncIterator[Daemon]:
    settings = Settings(
        cluster_name=CLUSTER,
        redis=SETTINGS,
        leader_election=LeaderElectionSettings(enabled=True),
    )
    api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
    made = Daemon(settings, kube=KubeClient(api, settings.kubernetes), store=make_store(redis))
    assert made.elector is not None
    made.elector.term = 3  # its term began before the freeze...
    made.elector.is_leader.set()
    try:
        yield made
    finally:
        await api.close()


def fenced_count(daemon: Daemon, operation: str) -> float:
    sample = daemon.metrics.registry.get_sample_value(
        "kube_dlq_fenced_writes_total", {"operation": operation}
    )
    return sample or 0.0


async def test_a_stale_leaders_retry_loop_is_refused_and_its_term_ends(
    daemon: Daemon, redis: Redis, keys: Keys
) -> None:
    # Given the new leader (term 4) scheduled a retry that is due now
    new_leader = make_store(redis).with_term(lambda: 4)
    await new_leader.schedule_retry(ticket("due", due_at=time.time() - 10))
    assert daemon.elector is not None
    election = asyncio.create_task(asyncio.sleep(60))  # stands in for the elector's task

    # When the resumed old leader serves its term
    try:
        with capture_logs() as logs:
            await asyncio.wait_for(daemon._serve_term(daemon.elector, election), 5)
    finally:
        election.cancel()

    # Then its first claim was refused, it stopped leading, and said so
    assert not daemon.elector.is_leader.is_set()
    assert fenced_count(daemon, "claim_due_retries") == 1
    assert daemon.metrics.registry.get_sample_value("kube_dlq_leader") == 0
    fenced = [e for e in logs if e["event"] == "write_fenced"]
    assert [(e["term"], e["fence"]) for e in fenced] == [(3, 4)]
    assert any(e["event"] == "leader_lost" and e["reason"] == "fenced" for e in logs)
    # And the ticket is untouched: still due, for the new leader to claim
    assert await redis.zcard(keys.retry_due) == 1
    assert await redis.zcard(keys.retry_inflight) == 0


async def test_a_stale_leaders_marker_sweep_is_refused_and_it_steps_down(
    daemon: Daemon, redis: Redis, keys: Keys
) -> None:
    # Given the new leader wrote a dead letter for a Job since deleted
    await make_store(redis).with_term(lambda: 4).dead_letter(letter("gone"))
    await daemon.markers.before_list()

    # When the old leader's complete list of Jobs (without that Job) ends
    await daemon._sweep_markers(frozenset())

    # Then forgetting was refused, the marker kept, and the replica no longer leads
    assert daemon.elector is not None and not daemon.elector.is_leader.is_set()
    assert fenced_count(daemon, "forget_absent") == 1
    assert await redis.zscore(keys.outcome_index, "ns/gone") is not None


async def test_with_election_off_the_daemon_writes_unfenced(redis: Redis, keys: Keys) -> None:
    # One replica, no Lease: its store carries no term, whatever the fence says
    settings = replace(Settings(cluster_name=CLUSTER), redis=SETTINGS)
    api = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))
    try:
        await make_store(redis).with_term(lambda: 9).dead_letter(letter("a"))
        solo = Daemon(settings, kube=KubeClient(api, settings.kubernetes), store=make_store(redis))
        assert (await solo.store.dead_letter(letter("b"))).written
    finally:
        await api.close()
    assert await redis.get(keys.leader_fence) == b"9"


async def test_a_retry_loop_fenced_mid_create_stops_instead_of_deferring(
    redis: Redis, keys: Keys
) -> None:
    # Given a leader (term 3) whose retry loop claims a due ticket
    old = make_store(redis).with_term(lambda: 3)
    await old.schedule_retry(ticket("t1", due_at=time.time() - 1))
    jobs = FakeJobs()
    created = jobs.create

    async def create_then_lose_the_lease(namespace: str, body: dict[str, object]) -> object:
        # ...and freezes during the create: meanwhile another replica claims term 4
        made = await created(namespace, body)
        assert await make_store(redis).claim_term(4) is None
        return made

    jobs.create = create_then_lose_the_lease  # type: ignore[method-assign]
    loop = RetryLoop(
        store=old,
        jobs=jobs,
        settings=RetryLoopSettings(poll_interval_s=0.05),
        cluster_name=CLUSTER,
        metrics=Metrics(),
        logger=structlog.get_logger(),
    )

    # When it resumes and settles the ticket
    with capture_logs() as logs, pytest.raises(FencedWrite) as refused:
        await asyncio.wait_for(loop.run(asyncio.Event()), 5)

    # Then its ack was refused and the loop stopped: no deferral, no crash, no second cycle
    assert refused.value.operation == "settle_created"
    events = [e["event"] for e in logs]
    assert "retry_fired" in events
    assert not {"retry_deferred", "retry_fire_crashed", "retry_cycle_crashed"} & set(events)
    # And the ticket stays claimed: after its lease the new leader settles it (409: ours)
    assert await redis.zcard(keys.retry_inflight) == 1
    assert await redis.hexists(keys.retry_tickets, "t1")
