"""The composition root: build every part from the config, run them, stop them cleanly.

Root tasks: one consumer per watched resource, the outcome writer, the retry loop, and a few
periodic chores (stuck-Job check, queue-depth gauges and Redis durability). Signals only set
the stop event; this supervisor owns shutdown: stop watching, give in-flight writes
`shutdown_grace_s`, cancel the rest, close clients. A root task that dies unexpectedly stops
the daemon with exit code 1 (Kubernetes restarts it) rather than leaving it half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from structlog.typing import FilteringBoundLogger

from watcher.adapters.http import HealthServer, Readiness
from watcher.adapters.kube import watch
from watcher.adapters.kube.connect import connect
from watcher.adapters.kube.leases import LeaseAPI
from watcher.adapters.kube.namespaces import namespaces_matching
from watcher.adapters.kube.request import KubeClient
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.durability import Durability
from watcher.adapters.redis.store import RedisStore
from watcher.app.components import build
from watcher.app.sealing import build_seal
from watcher.core import wire
from watcher.core.errors import FencedWrite, SinkError
from watcher.core.settings import Settings
from watcher.kit.aio import every, first_done
from watcher.kit.gctune import tune_gc
from watcher.kit.logs import get_logger
from watcher.kit.metrics import Metrics
from watcher.service.leadership import LeaderElector, resolve_lease_namespace
from watcher.service.markers import MarkerSweeper, marker_scope
from watcher.service.retrying import RetryLoop

EXIT_MARGIN_S = 1.0
"""Of shutdown_grace_s, what is kept for cancelling the last tasks and closing the clients."""
READINESS_PING_S = 2.0
"""How long /readyz waits for Redis to answer a PING."""


class Daemon:
    """Everything `kube-dlq run` builds, kept together so tests can drive it in-process."""

    def __init__(
        self,
        settings: Settings,
        *,
        kube: KubeClient,
        store: RedisStore,
        metrics: Metrics | None = None,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        """`kube` and `store` are the caller's: it opened them and closes them after `run`."""
        self.settings = settings
        self.shutdown_grace_s = settings.shutdown_grace_s
        """On SIGTERM, what the writer and the retry loop get to finish before cancellation."""
        self.kube = kube
        self.store = (
            store.with_term(self._write_term) if settings.leader_election.enabled else store
        )
        """With leader election on, every write carries this replica's term (fencing)."""
        self.metrics = metrics or Metrics()
        self.logger = logger or get_logger()
        self.stop = asyncio.Event()
        self._signalled_at: float | None = None
        """monotonic() of the first SIGTERM/SIGINT: the grace period counts from it."""
        parts = build(
            settings, kube=kube, store=self.store, metrics=self.metrics, logger=self.logger
        )
        self.handler = parts.handler
        self.pipeline = parts.pipeline
        self.redrive = parts.redrive
        self.retry_loop = RetryLoop(
            store=self.store,
            jobs=parts.jobs,
            settings=settings.retry_loop,
            cluster_name=settings.cluster_name,
            metrics=self.metrics,
            logger=self.logger,
        )
        self.markers = MarkerSweeper(self.store, metrics=self.metrics, logger=self.logger)
        """Forgets, after each complete list of Jobs, the markers of Jobs gone from the API."""
        self.synced: set[str] = set()
        self.redis_durability: Durability | None = None
        """What the last successful check found (None before one succeeded)."""
        election = settings.leader_election
        self.elector = (
            LeaderElector(
                LeaseAPI(
                    kube,
                    namespace=resolve_lease_namespace(election.lease_namespace),
                    name=election.lease_name,
                ),
                election,
                fence=store,
                metrics=self.metrics,
                logger=self.logger,
            )
            if election.enabled
            else None
        )
        """With leader election on, this replica writes and retries only while it leads."""
        self.health = HealthServer(settings.server, metrics=self.metrics, readiness=self.readiness)
        self.chores = self._chore_plan()
        """(name, interval_s, chore) of every periodic root task."""

    # -- running --------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or `stop` is set. Returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            return await self._supervise()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.logger.info("shutdown_requested", signal=sig.name)
        if self._signalled_at is None:
            self._signalled_at = time.monotonic()
        self.stop.set()

    async def _supervise(self) -> int:
        await self._check_redis()
        if self.settings.scope.namespace_label_selector:
            await self._refresh_namespaces()
        await self.health.start()
        self.logger.info(
            "daemon_started", cluster=self.settings.cluster_name, health_port=self.health.port
        )
        watchers = {
            name: asyncio.create_task(
                self._consume(self._stream(resource), resource, on_event, on_synced), name=name
            )
            for name, resource, on_event, on_synced in self._watch_plan()
        }
        if self.elector is None:
            duties = self._start_duties(self.stop)
        else:
            duties = [asyncio.create_task(self._lead(self.elector), name="leader-duties")]
        chores = [
            asyncio.create_task(
                every(interval, chore, stop=self.stop, logger=self.logger, name=name), name=name
            )
            for name, interval, chore in self.chores
        ]
        everything = [*watchers.values(), *duties, *chores]
        stopper = asyncio.create_task(self.stop.wait(), name="stop")
        done, _ = await asyncio.wait([stopper, *everything], return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        for task in done:
            if task is stopper:
                continue
            exc = None if task.cancelled() else task.exception()
            if exc is None and self.stop.is_set():
                continue  # it saw the stop event first and finished: a clean exit
            self.logger.error(
                "root_task_ended",
                task=task.get_name(),
                error=repr(exc) if exc else "returned before shutdown",
            )
            exit_code = 1
        self.stop.set()
        await self._shutdown(list(watchers.values()) + chores, duties)
        stopper.cancel()
        self.logger.info("daemon_stopped", exit_code=exit_code)
        return exit_code

    def _chore_plan(self) -> list[tuple[str, float, Callable[[], Awaitable[None]]]]:
        s = self.settings
        plan: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            ("stuck-check", s.classify.stuck_check_interval_s, self._check_stuck),
            ("gauges", s.dead_letter.depth_refresh_s, self._refresh_gauges),
        ]
        if self.elector is not None:
            plan.append(
                ("standby-prune", s.leader_election.standby_prune_s, self._prune_as_standby)
            )
        if s.scope.namespace_label_selector:
            plan.append(("namespaces", s.scope.namespace_refresh_s, self._refresh_namespaces))
        return plan

    async def _shutdown(
        self, immediate: list[asyncio.Task[Any]], graceful: list[asyncio.Task[Any]]
    ) -> None:
        # From the signal, not from here: the kubelet's SIGKILL counts from it, and the watch
        # consumers and root tasks may take a while to notice `stop`.
        started = self._signalled_at if self._signalled_at is not None else time.monotonic()
        for task in immediate:
            task.cancel()
        await asyncio.gather(*immediate, return_exceptions=True)
        # The writer and the retry loop see `stop` and finish what they hold: the writer
        # writes everything queued, retrying while Redis fails. They get what is left of the
        # grace period, less what cancelling and closing take, so the process exits within
        # shutdown_grace_s of SIGTERM; then they are cancelled.
        left = self.shutdown_grace_s - EXIT_MARGIN_S - (time.monotonic() - started)
        _, pending = await asyncio.wait(graceful, timeout=max(0.0, left))
        for task in pending:
            self.logger.warning("shutdown_grace_expired", task=task.get_name())
            task.cancel()
        await asyncio.gather(*graceful, return_exceptions=True)
        await self.health.stop()

    def _start_duties(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The outcome writer and the retry loop: the work one replica does for all."""
        return [
            asyncio.create_task(self.pipeline.run_writer(stop, shutdown=self.stop), name="writer"),
            asyncio.create_task(self.retry_loop.run(stop), name="retry-loop"),
            asyncio.create_task(self.redrive.run(stop), name="redrive-settle"),
        ]

    async def _lead(self, elector: LeaderElector) -> None:
        """Leader election on: run the duties during this replica's terms as leader only.

        Every replica runs the watches, so a standby's pipeline is current when it takes over,
        and queued failures carry over from one term to the next. A term ends when leadership
        is lost or at shutdown; the duties then stop as they do at shutdown (the writer
        finishes what is due, the retry loop its create in flight; both are exactly-once in
        Redis, and cancelling the writer mid-write would strand the failure it holds). The
        Lease is released after they stopped; cancelled (grace expired), it is left to expire.
        """
        elector_stop = asyncio.Event()
        election = asyncio.create_task(elector.run(elector_stop), name="leader-election")
        try:
            while not self.stop.is_set():
                await first_done(election, elector.is_leader.wait(), self.stop.wait())
                if election.done():
                    election.result()  # re-raises what ended it, if anything did
                    raise RuntimeError("leader election returned before shutdown")
                if elector.is_leader.is_set() and not self.stop.is_set():
                    await self._serve_term(elector, election)
        except asyncio.CancelledError:
            election.cancel()
            raise
        finally:
            elector_stop.set()
            await asyncio.gather(election, return_exceptions=True)

    async def _serve_term(self, elector: LeaderElector, election: asyncio.Task[None]) -> None:
        term_over = asyncio.Event()
        duties = self._start_duties(term_over)
        try:
            await first_done(*duties, election, elector.lost.wait(), self.stop.wait())
            ended_early = [task for task in duties if task.done()]
            self._resign_if_fenced(ended_early)  # before the other duty writes again
        except asyncio.CancelledError:
            for task in duties:
                task.cancel()
            raise
        finally:
            term_over.set()
            await asyncio.gather(*duties, return_exceptions=True)
        self._resign_if_fenced([task for task in duties if task not in ended_early])
        for task in ended_early:  # a duty ends only when its term does: anything else is a bug
            error = None if task.cancelled() else task.exception()
            if isinstance(error, FencedWrite):
                continue  # the term ended at Redis: handled above
            raise error or RuntimeError(f"{task.get_name()} returned before its term ended")

    def _write_term(self) -> int:
        """The term this replica's writes carry: its current or last term (0 before any)."""
        # Called at write time, so after __init__ has set the elector.
        return (self.elector.term if self.elector is not None else None) or 0

    def _resign_if_fenced(self, tasks: list[asyncio.Task[None]]) -> None:
        """Each duty that ended on a write Redis refused as stale: count it, stop leading."""
        for task in tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if isinstance(error, FencedWrite):
                    self._on_fenced(error)

    def _on_fenced(self, error: FencedWrite) -> None:
        """A write of this replica's term was refused: another replica leads (or has since this
        term began). Count and log it; stop leading at once. Nothing is lost: failures stay
        queued here and in the new leader's pipeline, claimed tickets come back after their
        lease."""
        self.metrics.fenced_writes.labels(operation=error.operation).inc(error.refused)
        self.logger.warning(
            "write_fenced",
            operation=error.operation,
            term=error.term,
            fence=error.fence,
            refused=error.refused,
        )
        if self.elector is not None:
            self.elector.resign("fenced", fence=error.fence)

    def _watch_plan(
        self,
    ) -> list[
        tuple[
            str,
            watch.Resource,
            Callable[[str, Any], None],  # the object as its Watcher yields it
            Callable[[frozenset[str]], None] | None,
        ]
    ]:
        p = self.pipeline
        return [
            ("jobs", watch.JOBS, self._on_job, p.on_jobs_synced),
            ("pods", watch.JOB_PODS, p.on_pod, None),
            ("events", watch.EVENTS, p.on_event, None),
            ("nodes", watch.NODES, p.on_node, None),
        ]

    def _on_job(self, event_type: str, raw: dict[str, Any]) -> None:
        self.redrive.observe(event_type, raw)  # a completed redriven Job settles its entry
        self.pipeline.on_job(event_type, raw)

    async def _consume(
        self,
        items: AsyncIterator[watch.Item],
        resource: watch.Resource,
        on_event: Callable[[str, Any], None],
        on_synced: Callable[[frozenset[str]], None] | None,
    ) -> None:
        """Feed one resource's watch into the pipeline; one bad object is reported, skipped."""
        jobs = resource is watch.JOBS
        if jobs:
            await self.markers.before_list()
        async for item in items:
            try:
                if isinstance(item, watch.Synced):
                    if on_synced is not None:
                        on_synced(item.uids)
                    self.synced.add(resource.name)
                    if len(self.synced) == len(self._watch_plan()):
                        self.pipeline.ready.set()
                    if jobs:
                        await self._sweep_markers(item.uids)
                    continue
                on_event(item.type, item.obj)
            except Exception:  # a bulkhead: one object must not end the watch (or the daemon)
                self.metrics.handling_errors.labels(stage=f"watch_{resource.name}").inc()
                self.logger.exception(
                    "watch_event_crashed", resource=resource.name, object=_identity(item)
                )
                continue
            await self.pipeline.wait_for_space()

    async def _sweep_markers(self, present_uids: frozenset[str]) -> None:
        """After a complete list of Jobs: the writer forgets the markers of Jobs gone.

        Runs in the Jobs consumer, so the stream (and any relist) waits until the next list's
        mark is noted: `before_list` always comes before the list it is for. Every replica notes
        the mark; only the one that writes (the leader, with election on) forgets, in its scope.
        """
        if self.elector is None or self.elector.is_leader.is_set():
            scope = marker_scope(self.settings.scope, self.pipeline.selected_namespaces)
            try:
                await self.markers.after_list(present_uids, scope)
            except FencedWrite as error:
                self._on_fenced(error)
        await self.markers.before_list()

    def _stream(self, resource: watch.Resource) -> AsyncIterator[watch.WatchEvent | watch.Synced]:
        return self._watcher(resource).stream()

    def _watcher(self, resource: watch.Resource) -> watch.Watcher:
        return watch.Watcher(
            self.kube,
            resource,
            metrics=self.metrics,
            logger=self.logger,
            line_type=wire.LINE_TYPES.get(resource.name),
        )

    async def _refresh_namespaces(self) -> None:
        """Namespaces matching scope.namespace_label_selector (labels can change at any time)."""
        selector = self.settings.scope.namespace_label_selector
        names = await namespaces_matching(self.kube, selector)
        if names != self.pipeline.selected_namespaces:
            self.logger.info("namespaces_selected", selector=selector, count=len(names))
        self.pipeline.selected_namespaces = names

    async def _prune_as_standby(self) -> None:
        if self.elector is not None and not self.elector.is_leader.is_set():
            dropped = await self.pipeline.prune_handled(self.store.handled)
            if dropped:
                self.logger.debug("standby_queue_pruned", dropped=dropped)

    async def _check_stuck(self) -> None:
        found = self.pipeline.check_stuck()
        if found:
            self.logger.info("stuck_jobs_found", count=found)

    async def _refresh_gauges(self) -> None:
        # Durability first: the daemon has no reconnect hook, so this tick is where a Redis
        # that restarted (a new run_id) or was reconfigured is noticed.
        await self._check_durability()
        depths = await self.store.queue_depths()
        ages = await self.store.oldest_age_s(time.time())
        for queue, depth in depths.items():
            self.metrics.dead_letter_depth.labels(queue=queue).set(depth)
            self.metrics.dead_letter_oldest_age.labels(queue=queue).set(ages.get(queue, 0.0))
        self.metrics.retries_pending.set(await self.store.pending_retries())
        self.metrics.outcome_markers.set(await self.store.outcome_markers())

    async def readiness(self) -> Readiness:
        """/readyz: not ready until every watch listed and while Redis does not answer.

        A Redis that is not durable is a warning in the body, never unready: the daemon is
        still the one writer of outcomes and still writes them (unready would not stop it, only
        hide it, and with one Redis every replica at once); the gauge is what to alert on
        (docs/install.md).
        """
        missing = [
            f"{name} not synced"
            for name in ("jobs", "pods", "events", "nodes")
            if name not in self.synced
        ]
        try:
            await self.store.ping(READINESS_PING_S)
        except SinkError as exc:
            missing.append(f"redis: {exc}")
        known = self.redis_durability
        warnings = [] if known is None or known.durable else [_not_durable(known)]
        return Readiness(missing, warnings)

    async def _check_redis(self) -> None:
        try:
            for problem in await self.store.server_problems():
                self.logger.warning("redis_misconfigured", problem=problem)
            await self._check_durability()
        except SinkError as exc:
            # Not fatal: the writer keeps failures and retries until Redis is back.
            self.logger.warning("redis_unreachable_at_start", error=str(exc))

    async def _check_durability(self) -> None:
        """Read Redis's durability into the gauge; log only what changed since the last check.

        Logged: the first result, a change of what is missing (or unreadable), and a restart
        (a new run_id). A restart of a Redis that was not durable is a warning: outcomes it
        had acknowledged may be gone, and this process will not write them again (it
        remembers what it handled); `kube-dlq sweep` or a daemon restart finds the failed
        Jobs still in the cluster and writes them again.
        """
        now = await self.store.durability()
        before, self.redis_durability = self.redis_durability, now
        self.metrics.redis_durable.set(1 if now.durable else 0)
        if before is not None and now.run_id != before.run_id:
            log = self.logger.info if before.durable else self.logger.warning
            log("redis_restarted", outcomes_at_risk=not before.durable, missing=list(now.missing))
        unchanged = before is not None and (before.missing, before.unchecked) == (
            now.missing,
            now.unchecked,
        )
        if unchanged:
            return
        if now.durable:
            self.logger.info("redis_durable", unchecked=list(now.unchecked))
        else:
            self.logger.warning(
                "redis_not_durable", missing=list(now.missing), unchecked=list(now.unchecked)
            )


def _not_durable(durability: Durability) -> str:
    return "redis not durable: " + "; ".join(durability.missing)


def _identity(item: watch.Item) -> str:
    """``namespace/name (uid)`` of a watch event's object, for a log line; never raises."""
    if isinstance(item, watch.Synced):
        return f"list of {item.resource.name}"
    obj = item.obj
    meta = obj.get("metadata") if isinstance(obj, dict) else msgspec.to_builtins(obj.metadata)
    if not isinstance(meta, dict):
        return "?"
    fields = [meta.get(key) or "" for key in ("namespace", "name", "uid")]
    return "{}/{} ({})".format(*fields)[:300]


async def run_daemon(settings: Settings) -> int:
    """`kube-dlq run`: connect, run until SIGTERM, close. Returns the exit code."""
    tune_gc()  # the process's collector, before the first lists fill the heap
    seal = build_seal(settings.security)  # before connecting: no keys, no start (exit 2)
    kube = await connect(settings.kubernetes)
    redis = redis_client(settings.redis)
    try:
        store = RedisStore(redis, settings.redis, cluster_name=settings.cluster_name, seal=seal)
        return await Daemon(settings, kube=kube, store=store).run()
    finally:
        await redis.aclose()
        await kube.close()
