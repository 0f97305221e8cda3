"""What every fault test shares: sizes, a fault log, the daemon's config, one scenario run.

A scenario is: a `JobRecorder` on the namespace, the daemon (`kube-dlq run` as a subprocess)
started and ready, then the load generator and the test's fault injector running together,
then the daemon brought back if the injector left it down, then `settle` and the report.
Sizes come from a `Profile`: a short one for CI (`make test`) and a long one for `make soak`
(``KUBE_DLQ_SOAK=1`` or ``--soak``). The fault schedule is drawn from a seeded
`random.Random`: ``KUBE_DLQ_FAULT_SEED`` replays another schedule.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from redis.asyncio import Redis

from devtools.devcluster.state import ClusterState
from tests.faults.checker import LedgerReport, Sources, observe, settle
from tests.faults.ledger import LoadGenerator
from tests.faults.recorder import JobRecorder
from tests.support.daemon import RETRY_POLL_S, STUCK_CHECK_INTERVAL_S, DaemonProcess, config_doc
from watcher.adapters.redis.keys import Keys
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.app.config import parse_config
from watcher.app.sealing import build_seal

SOAK_ENV = "KUBE_DLQ_SOAK"
SEED_ENV = "KUBE_DLQ_FAULT_SEED"

CLAIM_LEASE_S = 10
"""redis.retry_claim_lease_s of the fault daemons: a ticket claimed by a daemon that was then
killed is fired again after this (the product's 60 s would stretch every run by a minute)."""
DEFER_BASE_S = 1
DEFER_CAP_S = 8
"""retry_loop.defer_base_s / defer_cap_s: a retry whose create failed (apiserver down) is
tried again within seconds, not the product's 15 s doubling to 10 min."""
WATCH_BACKOFF_CAP_S = 5
"""kubernetes.watch_backoff_cap_s: a watch reconnects within 5 s of the apiserver's return."""
QUIET_S = 6.0
"""After everything has its outcome, wait this long for late duplicates (a replay after the
last restart: the relist plus pipeline.settle_s) before the final count."""


@dataclass(frozen=True, slots=True)
class Profile:
    """How big one fault run is."""

    jobs: int
    """Failures the load generator injects (it stops by itself after these)."""
    rate_per_s: float
    faults: int
    """Faults the injector causes during the load."""
    settle_s: float
    """How long everything may take to reach its outcome once load and faults are over.
    (A test's pytest timeout is its ``timeout`` marker, and ``soak_timeout`` in a soak run.)"""

    @property
    def load_s(self) -> float:
        return self.jobs / self.rate_per_s


def soak_requested(option: bool) -> bool:
    return option or os.environ.get(SOAK_ENV, "") not in ("", "0")


def seed_for(default: int) -> int:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else default


class FaultLog:
    """When each fault happened, relative to the start of the load."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []

    def note(self, what: str) -> None:
        self.lines.append(f"t+{time.monotonic() - self.t0:.1f}s {what}")


def fault_config(
    cluster: ClusterState, *, namespace: str, redis_url: str, cluster_name: str, **overrides: Any
) -> dict[str, Any]:
    """The daemon config of a fault run: config_doc's fast backoff and dwell, plus a retry loop
    polling every second and a short claim lease; a mapping in `overrides` is merged into its
    section (``kubernetes={"watch_timeout_s": 3}``), anything else replaces the key."""
    doc = config_doc(
        cluster,
        namespace=namespace,
        redis_url=redis_url,
        cluster_name=cluster_name,
        redis={"url": redis_url, "retry_claim_lease_s": CLAIM_LEASE_S},
        retry_loop={
            "poll_interval_s": RETRY_POLL_S,
            "defer_base_s": DEFER_BASE_S,
            "defer_cap_s": DEFER_CAP_S,
        },
    )
    doc["classify"]["stuck_check_interval_s"] = STUCK_CHECK_INTERVAL_S
    doc["kubernetes"]["watch_backoff_cap_s"] = WATCH_BACKOFF_CAP_S
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(section), dict):
            doc[section].update(value)
        else:
            doc[section] = value
    return doc


def queries_for(config: Path, redis: Redis) -> tuple[DeadLetterQueries, Keys]:
    """The CLI's reader of what the daemon with this config file writes, and its key names."""
    settings = parse_config(yaml.safe_load(config.read_text()))
    seal = build_seal(settings.security)
    queries = DeadLetterQueries(
        redis, settings.redis, cluster_name=settings.cluster_name, seal=seal
    )
    return queries, queries.keys


Injector = Callable[[FaultLog, asyncio.Event], Awaitable[None]]
"""Causes the test's faults while the load runs (the event is set once the load is over)."""


@dataclass
class Scenario:
    title: str
    load: LoadGenerator
    sources: Sources
    daemon: DaemonProcess
    profile: Profile
    faults: FaultLog = field(default_factory=FaultLog)

    async def run(self, inject: Injector) -> LedgerReport:
        """Load and faults together, the daemon back up, then the settled report."""
        self.faults = FaultLog()
        await asyncio.gather(self.load.run(), inject(self.faults, self.load.done))
        if not self.daemon.running:
            self.daemon.start()
        await self.daemon.wait_ready(within=120)

        async def observe_now() -> LedgerReport:
            return await observe(
                self.load.ledger, self.sources, title=self.title, faults=self.faults.lines
            )

        return await settle(observe_now, within=self.profile.settle_s, quiet_s=QUIET_S)


@dataclass
class Target:
    """Where a fault run happens: a control plane, a namespace in it, a Redis."""

    cluster: ClusterState
    api: client.ApiClient
    """An admin client of that control plane (the load generator's and checker's)."""
    namespace: str
    redis: Redis
    """A client of the Redis the daemon writes to (the checker's)."""
    redis_url: str
    """What the daemon's redis.url says (a proxy in front of that Redis, possibly)."""
    cluster_name: str


async def ledgered_run(
    target: Target,
    make_daemon: Callable[..., DaemonProcess],
    *,
    title: str,
    profile: Profile,
    seed: int,
    injector: Callable[[DaemonProcess], Injector],
    **daemon_overrides: Any,
) -> tuple[LedgerReport, DaemonProcess]:
    """Start `kube-dlq run` on `target`, run the load with `injector`'s faults, settle."""
    daemon = make_daemon(
        target.cluster,
        namespace=target.namespace,
        redis_url=target.redis_url,
        cluster_name=target.cluster_name,
        **daemon_overrides,
    )
    queries, keys = queries_for(daemon.config, target.redis)
    load = LoadGenerator(
        target.api,
        target.namespace,
        count=profile.jobs,
        rate_per_s=profile.rate_per_s,
        seed=seed,
        max_duration_s=profile.load_s + 60,
    )
    async with JobRecorder(target.api, target.namespace) as recorder:
        daemon.start()
        await daemon.wait_ready()
        sources = Sources(target.redis, queries, keys, target.api, target.namespace, recorder)
        scenario = Scenario(title, load, sources, daemon, profile)
        report = await scenario.run(injector(daemon))
    report.effects = daemon_effects(daemon.log)
    return report, daemon


ROUTINE_EVENTS = frozenset({"watch_listed", "retry_loop_started", "retry_loop_stopped"})


def daemon_effects(log: Path) -> dict[str, int]:
    """Counts of the daemon's log events across all its runs, routine ones left out; watch
    restarts by resource and reason (``watch_restarted:jobs:expired``)."""
    counts: Counter[str] = Counter()
    for raw in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict) or line.get("event") in ROUTINE_EVENTS:
            continue
        event = str(line.get("event"))
        if event == "watch_restarted":
            event = f"{event}:{line.get('resource')}:{line.get('reason')}"
        counts[event] += 1
    return dict(counts)


def evidence(log: Path, report: LedgerReport, *, limit: int = 40) -> str:
    """The daemon's log lines about the Jobs the report found wrong, for the failure message."""
    names = {r.entry.name for r in report.results if r.bad or not r.resolved}
    if not names:
        return ""
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        text = json.dumps(line, sort_keys=True)
        if any(name in text for name in names):
            lines.append(raw)
    shown = lines[:limit]
    more = f"\n  ... {len(lines) - limit} more in {log}" if len(lines) > limit else ""
    return (
        f"--- daemon log lines naming the {len(names)} bad Job(s) ({log}) ---\n"
        + "\n".join(shown)
        + more
    )
