"""Leader election's terms, against fakes of the Lease and of Redis's fence.

A term's number is the Lease's leaseTransitions when this replica took it, claimed at the fence
before the replica acts as leader. Timings are short and real (the elector sleeps on the event
loop): leases of 0.6 s, a renew deadline of 0.4 s, polls every 0.05 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
from structlog.testing import capture_logs

from tests.support.fakes import FakeFence, FakeLeases
from watcher.core.errors import SinkError
from watcher.core.settings import LeaderElectionSettings
from watcher.kit.metrics import Metrics
from watcher.service.leadership import LeaderElector

SETTINGS = LeaderElectionSettings(
    enabled=True, lease_duration_s=0.6, renew_deadline_s=0.4, retry_period_s=0.05
)
WITHIN_S = 2.0


def elector(leases: FakeLeases, fence: FakeFence | None, identity: str = "me") -> LeaderElector:
    return LeaderElector(
        leases,
        SETTINGS,
        identity=identity,
        fence=fence,
        metrics=Metrics(),
        logger=structlog.get_logger(),
    )


@asynccontextmanager
async def running(candidate: LeaderElector) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(candidate.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, WITHIN_S)


async def until(condition: Callable[[], bool], within_s: float = WITHIN_S) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - the fakes have no event for these states
            await asyncio.sleep(0.01)


def other_holds(leases: FakeLeases, transitions: int, *, holder: str = "other") -> None:
    leases.put(
        {
            "holderIdentity": holder,
            "leaseDurationSeconds": 1,
            "renewTime": f"2026-01-01T00:00:{transitions:02d}.000000Z",
            "leaseTransitions": transitions,
        }
    )


async def test_the_first_leader_of_a_new_lease_claims_term_zero() -> None:
    leases, fence = FakeLeases(), FakeFence()
    candidate = elector(leases, fence)
    async with running(candidate):
        await candidate.is_leader.wait()
        assert candidate.term == 0
        assert fence.fence == 0
        assert candidate.metrics.registry.get_sample_value("kube_dlq_leader_term") == 0


async def test_a_successor_leads_with_a_term_above_its_predecessor() -> None:
    # Given another replica led with term 4 and stopped renewing
    leases, fence = FakeLeases(), FakeFence(fence=4)
    other_holds(leases, 4)
    candidate = elector(leases, fence)

    # When this replica takes the Lease over after it expired
    async with running(candidate):
        await candidate.is_leader.wait()

        # Then its term is the Lease's new transition count, claimed at the fence
        assert leases.spec["holderIdentity"] == "me"
        assert candidate.term == leases.spec["leaseTransitions"] == 5
        assert fence.fence == 5


async def test_a_lease_recreated_below_the_fence_is_moved_past_it_before_leading() -> None:
    # Given Redis's fence is at 7 and the Lease was deleted (a re-created one counts from 0)
    leases, fence = FakeLeases(), FakeFence(fence=7)
    candidate = elector(leases, fence)
    leading_when_moved: list[bool] = []
    original = leases.replace

    async def replace(*args: object, **kw: object) -> object:
        leading_when_moved.append(candidate.is_leader.is_set())
        return await original(*args, **kw)  # type: ignore[arg-type]

    leases.replace = replace  # type: ignore[method-assign]

    # When this replica takes it
    with capture_logs() as logs:
        async with running(candidate):
            await candidate.is_leader.wait()

            # Then it first moved the Lease's leaseTransitions past the fence, then led with it
            assert candidate.term == leases.spec["leaseTransitions"] == 8
            assert fence.claims[:2] == [0, 8] and fence.fence == 8
            assert leading_when_moved[0] is False
    moved = [e for e in logs if e["event"] == "lease_transitions_moved_past_fence"]
    assert [(e["fence"], e["lease_transitions"]) for e in moved] == [(7, 8)]

    # And the next holder (transitions + 1) is above it again, with no move needed
    other = elector(leases, fence, identity="next")
    other_holds(leases, 8, holder="")
    async with running(other):
        await other.is_leader.wait()
        assert other.term == 9


async def test_no_leadership_while_the_term_cannot_be_claimed() -> None:
    # Given Redis does not answer the first two claims
    leases = FakeLeases()
    fence = FakeFence(failures=[SinkError("redis claim_term failed"), SinkError("again")])
    candidate = elector(leases, fence)

    # When this replica wins the Lease
    with capture_logs() as logs:
        async with running(candidate):
            await until(lambda: len(fence.claims) >= 1)
            # Then it holds the Lease but does not act as leader until a claim succeeds
            assert leases.spec["holderIdentity"] == "me"
            assert not candidate.is_leader.is_set()
            await candidate.is_leader.wait()
            assert len(fence.claims) == 3 and candidate.term == 0
    assert sum(e["event"] == "leader_term_not_claimed" for e in logs) == 2


async def test_resign_stops_leading_at_once_and_stands_by_for_the_new_holder() -> None:
    # Given this replica leads, and another replica has since taken the Lease
    leases, fence = FakeLeases(), FakeFence()
    candidate = elector(leases, fence)
    async with running(candidate):
        await candidate.is_leader.wait()
        other_holds(leases, 1)

        # When the daemon reports a write refused by the fence
        candidate.resign("fenced", fence=1)

        # Then it is no longer leader, before anything else runs
        assert not candidate.is_leader.is_set()
        assert candidate.lost.is_set()
        assert candidate.metrics.registry.get_sample_value("kube_dlq_leader") == 0
        # And it stands by: the other holder's Lease is valid, so no new term starts
        await asyncio.sleep(SETTINGS.retry_period_s * 4)
        assert not candidate.is_leader.is_set()
        assert candidate.terms == 1


async def test_resign_with_the_lease_still_ours_leads_again_with_a_higher_term() -> None:
    # Given this replica leads with term 0, and the fence was raised past it meanwhile
    leases, fence = FakeLeases(), FakeFence()
    candidate = elector(leases, fence)
    async with running(candidate):
        await candidate.is_leader.wait()
        fence.fence = 5

        # When it resigns on a refused write, still holding the Lease
        candidate.resign("fenced", fence=5)

        # Then it leads again only with a term above the fence, the Lease's count moved too
        await until(lambda: candidate.terms == 2 and candidate.is_leader.is_set())
        assert candidate.term == leases.spec["leaseTransitions"] == 6


async def test_without_a_fence_the_term_is_still_the_leases_transitions() -> None:
    leases = FakeLeases()
    other_holds(leases, 2, holder="")
    candidate = elector(leases, None)
    async with running(candidate):
        await candidate.is_leader.wait()
        assert candidate.term == 3


async def test_a_lease_whose_transitions_are_not_a_count_still_gets_a_fenced_term() -> None:
    # Given someone wrote nonsense into the Lease's leaseTransitions; Redis's fence is at 5
    leases, fence = FakeLeases(), FakeFence(fence=5)
    leases.put({"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": "many"})
    candidate = elector(leases, fence)

    # When a candidate takes the Lease, then it leads with a term past the fence
    async with running(candidate):
        await asyncio.wait_for(candidate.is_leader.wait(), WITHIN_S)
        assert candidate.term == leases.spec["leaseTransitions"] == 6
