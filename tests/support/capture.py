"""Record what a real control plane writes when a Job fails, and replay it through the classifier.

Each scenario provokes one failure on the local cluster (etcd, kube-apiserver, the real Job,
pod-GC, node-lifecycle and taint-eviction controllers, the real scheduler, kwok standing in for
kubelets) and records, in arrival order, every watch event kube-dlq's own watches would deliver
for that Job: every version of the Job, of its pods (including DELETED, so pods removed by taint
eviction, the Eviction API or pod GC are kept in their last state), the Events about the Job and
its pods, and the objects and Events of the nodes its pods ran on. Objects are stored exactly as
the API sent them (camelCase JSON); only `metadata.managedFields` is dropped, to keep files small.

    python -m tests.support.capture --out tests/data/captured [--only NAME ...] [--parallel]

starts its own local cluster, runs the scenarios one after another (each in a namespace of its
own, so `--parallel` works too, at the price of scheduler messages that count other scenarios'
nodes) and writes one pretty-printed JSON file per scenario, keys sorted:
{"scenario", "expected_class", "kubernetes_version", "captured_at", "watch": [{"resource",
"type", "object"}, ...]}. `replay` feeds such a record to `watcher.core.snapshot` and a `Correlator`
the way the daemon's pipeline does, and classifies the final report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from devtools.devcluster.kubeapi import node_manifest
from tests.support.kube import (
    IMAGE_PULL_LABEL,
    NODE_NOT_READY_LABEL,
    RUN_FOR,
    RawObject,
    condition,
    eventually,
    failing_pod,
    job_manifest,
    raw,
)
from watcher.core import snapshot
from watcher.core.classify import classify
from watcher.core.correlate import Correlator
from watcher.core.model import Classification, FailureClass, FailureReport
from watcher.core.settings import LimitsSettings

T = TypeVar("T")

RESOURCES = ("jobs", "pods", "events", "nodes")
JOB = "job"
"""Every scenario's Job has this name, in a namespace of its own."""
STUCK_DWELL_S = 5.0
"""Replay: a Job whose pods have waited to start this long counts as stuck."""
SETTLE_S = 1.5
"""After the last awaited signal: time for trailing updates (finalizers, Events) to arrive."""
IMAGE_PULL_CYCLING_S = 8.0
UNSCHEDULABLE_FOR_S = 6.0
IO_TIMEOUT_MESSAGE = "dial tcp 10.0.0.5:5432: i/o timeout"


# --- recording ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchEntry:
    resource: str
    type: str
    object: RawObject

    def name(self) -> str:
        return str((self.object.get("metadata") or {}).get("name", ""))

    def as_json(self) -> RawObject:
        return {"resource": self.resource, "type": self.type, "object": self.object}


def _slim(obj: RawObject) -> RawObject:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _about_job_or_pod(event: RawObject) -> bool:
    return (event.get("involvedObject") or {}).get("kind") in ("Job", "Pod")


ListCall = Callable[..., Awaitable[Any]]


class Recorder:
    """List-then-watch the scenario's namespace (jobs, pods, events) and the involved nodes.

    The daemon watches whole resources; here each watch is narrowed to what concerns the
    scenario's Job, so concurrent scenarios do not see each other. A node is followed (its
    object and its Events, which live in namespace `default`) from the moment a pod is bound
    to it, or from before its creation for a node the scenario makes.
    """

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.entries: list[WatchEntry] = []
        self._core = client.CoreV1Api(api)
        self._tasks: set[asyncio.Task[None]] = set()
        self._nodes: set[str] = set()
        self._errors: list[BaseException] = []

    async def start(self) -> None:
        ns, core = self.namespace, self._core
        await self._follow("jobs", _bind(client.BatchV1Api(self.api).list_namespaced_job, ns))
        await self._follow("pods", _bind(core.list_namespaced_pod, ns))
        await self._follow("events", _bind(core.list_namespaced_event, ns), _about_job_or_pod)

    async def follow_node(self, name: str) -> None:
        if name in self._nodes:
            return
        self._nodes.add(name)
        core = self._core
        await self._follow("nodes", _bind(core.list_node, field_selector=f"metadata.name={name}"))
        await self._follow(
            "events",
            _bind(
                core.list_event_for_all_namespaces,
                field_selector=f"involvedObject.kind=Node,involvedObject.name={name}",
            ),
        )

    async def stop(self) -> None:
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        if self._errors:
            raise RuntimeError(f"a watch of {self.namespace} failed") from self._errors[0]

    # -- queries on what was recorded -----------------------------------------------------

    def latest(self, resource: str) -> dict[str, WatchEntry]:
        """The last entry per object uid."""
        out: dict[str, WatchEntry] = {}
        for entry in self.entries:
            if entry.resource == resource:
                out[str(entry.object["metadata"]["uid"])] = entry
        return out

    def job(self, name: str = JOB) -> RawObject | None:
        found = [e for e in self.latest("jobs").values() if e.name() == name]
        return found[-1].object if found else None

    def job_pods(self, job_uid: str) -> list[WatchEntry]:
        pods = self.latest("pods").values()
        return [e for e in pods if snapshot.job_uid_of_pod(e.object) == job_uid]

    def events(self, kind: str, name: str = "") -> list[RawObject]:
        found = []
        for entry in self.latest("events").values():
            involved = entry.object.get("involvedObject") or {}
            if involved.get("kind") == kind and (not name or involved.get("name") == name):
                found.append(entry.object)
        return found

    # -- internals ------------------------------------------------------------------------

    async def _follow(
        self,
        resource: str,
        list_call: ListCall,
        keep: Callable[[RawObject], bool] = lambda _: True,
    ) -> None:
        listed = await raw(list_call(_preload_content=False))
        for item in listed.get("items") or []:
            if keep(item):
                self._add(resource, "ADDED", item)
        rv = str(listed["metadata"]["resourceVersion"])
        self._spawn(lambda: self._watch(resource, list_call, keep, rv))

    async def _watch(
        self, resource: str, list_call: ListCall, keep: Callable[[RawObject], bool], rv: str
    ) -> None:
        try:
            while True:
                resp = await list_call(
                    watch=True,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    _preload_content=False,
                )
                try:
                    async for line in resp.content:
                        rv = self._on_line(resource, keep, json.loads(line), rv)
                finally:
                    resp.release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced by stop(): a lost watch makes a capture worthless
            self._errors.append(exc)

    def _on_line(
        self, resource: str, keep: Callable[[RawObject], bool], event: RawObject, rv: str
    ) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise RuntimeError(f"watch of {resource} in {self.namespace}: {obj}")
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if kind in ("ADDED", "MODIFIED", "DELETED") and keep(obj):
            self._add(resource, str(kind), obj)
        return new_rv

    def _add(self, resource: str, kind: str, obj: RawObject) -> None:
        self.entries.append(WatchEntry(resource, kind, _slim(obj)))
        node = (obj.get("spec") or {}).get("nodeName") if resource == "pods" else None
        if node and node not in self._nodes:
            self._spawn(lambda: self.follow_node(str(node)))

    def _spawn(self, start: Callable[[], Awaitable[None]]) -> None:
        # A factory, not a coroutine: a task cancelled before it runs then leaves no coroutine
        # behind that was never awaited.
        async def run() -> None:
            try:
                await start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._errors.append(exc)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _bind(call: ListCall, *args: Any, **kwargs: Any) -> ListCall:
    def bound(**more: Any) -> Awaitable[Any]:
        return call(*args, **kwargs, **more)

    return bound


# --- scenario plumbing -------------------------------------------------------------------


@dataclass(slots=True)
class Ctx:
    """What a scenario body gets: the API, its namespace, its recorder, its cleanups."""

    api: client.ApiClient
    namespace: str
    rec: Recorder
    suffix: str
    """Unique per run, for cluster-scoped names (nodes, PriorityClasses)."""
    cleanups: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


Body = Callable[[Ctx], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    expected: FailureClass
    body: Body
    doc: str


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, expected: FailureClass) -> Callable[[Body], Body]:
    def register(body: Body) -> Body:
        SCENARIOS[name] = Scenario(name, expected, body, (body.__doc__ or "").strip())
        return body

    return register


async def until(check: Callable[[], T | None], *, within: float, what: str) -> T:
    async def probe() -> T | None:
        return check()

    return await eventually(probe, within=within, what=what, every=0.1)


async def create_job(ctx: Ctx, manifest: RawObject) -> RawObject:
    batch = client.BatchV1Api(ctx.api)
    return await raw(batch.create_namespaced_job(ctx.namespace, manifest, _preload_content=False))


def _terminal(entry: WatchEntry) -> bool:
    """The pod will not change any more: gone, or finished with no finalizer left."""
    if entry.type == "DELETED":
        return True
    meta, status = entry.object.get("metadata") or {}, entry.object.get("status") or {}
    return status.get("phase") in ("Failed", "Succeeded") and not meta.get("finalizers")


async def job_failed(ctx: Ctx, *, within: float = 60) -> RawObject:
    """Wait for the Job's Failed condition, its Warning Event, and every pod to be final."""

    def failed() -> RawObject | None:
        job = ctx.rec.job()
        return job if job is not None and condition(job, "Failed") else None

    job = await until(failed, within=within, what=f"Job {ctx.namespace}/{JOB} Failed")
    reason = (condition(job, "Failed") or {}).get("reason")
    await until(
        lambda: any(e.get("reason") == reason for e in ctx.rec.events("Job", JOB)),
        within=30,
        what=f"a {reason} Event on Job {ctx.namespace}/{JOB}",
    )
    uid = str(job["metadata"]["uid"])
    await until(
        lambda: all(_terminal(p) for p in ctx.rec.job_pods(uid)),
        within=30,
        what=f"the pods of Job {ctx.namespace}/{JOB} to be final",
    )
    await asyncio.sleep(SETTLE_S)
    return job


async def running_pod(ctx: Ctx, *, within: float = 60) -> RawObject:
    def running() -> RawObject | None:
        job = ctx.rec.job()
        if job is None:
            return None
        pods = ctx.rec.job_pods(str(job["metadata"]["uid"]))
        return next(
            (
                p.object
                for p in pods
                if p.type != "DELETED" and (p.object.get("status") or {}).get("phase") == "Running"
            ),
            None,
        )

    return await until(running, within=within, what=f"a Running pod of {ctx.namespace}/{JOB}")


async def make_node(ctx: Ctx, prefix: str, *, cpu: str = "8", pods: str = "110") -> str:
    """A kwok node of the scenario's own, Ready and untainted; deleted at cleanup."""
    name = f"{prefix}-{ctx.suffix}"
    await ctx.rec.follow_node(name)
    node = node_manifest(name, cpu=cpu, pods=pods)
    await raw(ctx.core.create_node(node, _preload_content=False))
    ctx.cleanups.append(lambda: _ignore_404(ctx.core.delete_node(name, _preload_content=False)))

    async def usable() -> bool:
        node = await raw(ctx.core.read_node(name, _preload_content=False))
        taints = (node.get("spec") or {}).get("taints") or []
        return condition(node, "Ready") is not None and not taints

    await eventually(usable, within=30, what=f"node {name} Ready and untainted")
    return name


async def nodes_schedulable(
    api: client.ApiClient, names: Iterable[str] = (), *, within: float = 30
) -> None:
    """Wait until the named nodes (default: every node) are Ready and untainted.

    A fresh cluster reports its nodes Ready a moment before the node-lifecycle controller lifts
    their `not-ready` taint; a pod created in between gets a FailedScheduling Event that is
    about the cluster's start, not the scenario.
    """
    core = client.CoreV1Api(api)
    wanted = set(names)

    async def schedulable() -> bool:
        nodes = (await raw(core.list_node(_preload_content=False))).get("items") or []
        nodes = [n for n in nodes if not wanted or n["metadata"]["name"] in wanted]
        return len(nodes) >= max(len(wanted), 1) and all(
            condition(n, "Ready") is not None and not (n.get("spec") or {}).get("taints")
            for n in nodes
        )

    await eventually(schedulable, within=within, what="every node Ready and untainted")


async def _ignore_404(call: Awaitable[Any]) -> None:
    try:
        (await call).release()
    except ApiException as exc:
        if exc.status != 404:
            raise


def _on_node(node: str) -> dict[str, str]:
    return {"kubernetes.io/hostname": node}


def _failing(exit_code: int, reason: str, message: str = "") -> RawObject:
    # kwok's chaos stage renders `message: {{ $failureMessage }}` unquoted into YAML, so a
    # message with ": " must arrive as a YAML (here: JSON) string literal.
    labels, annotations = failing_pod(
        exit_code, reason=reason, message=json.dumps(message) if message else ""
    )
    return job_manifest(JOB, pod_labels=labels, pod_annotations=annotations)


# --- the scenarios -------------------------------------------------------------------------


@scenario("exit-1-plain", FailureClass.APP_ERROR)
async def exit_1_plain(ctx: Ctx) -> None:
    """The container exits 1 with a plain error message."""
    await create_job(ctx, _failing(1, "Error", "report generation failed: 3 rows rejected"))
    await job_failed(ctx)


@scenario("exit-2-invalid-input", FailureClass.APP_ERROR)
async def exit_2_invalid_input(ctx: Ctx) -> None:
    """The container exits 2 saying its input is invalid."""
    await create_job(ctx, _failing(2, "Error", "invalid input: column 'amount' is not a number"))
    await job_failed(ctx)


@scenario("oom-killed", FailureClass.OOM_KILLED)
async def oom_killed(ctx: Ctx) -> None:
    """The runtime reports the container OOMKilled, exit 137."""
    await create_job(ctx, _failing(137, "OOMKilled"))
    await job_failed(ctx)


@scenario("exit-137-sigkill", FailureClass.APP_ERROR)
async def exit_137_sigkill(ctx: Ctx) -> None:
    """Exit 137 (SIGKILL) with reason Error: killed, but not by the OOM killer."""
    await create_job(ctx, _failing(137, "Error"))
    await job_failed(ctx)


@scenario("io-timeout", FailureClass.IO_TIMEOUT)
async def io_timeout(ctx: Ctx) -> None:
    """Exit 1 with a termination message naming a network timeout."""
    await create_job(ctx, _failing(1, "Error", f"connect to db: {IO_TIMEOUT_MESSAGE}"))
    await job_failed(ctx)


@scenario("active-deadline", FailureClass.DEADLINE_EXCEEDED)
async def active_deadline(ctx: Ctx) -> None:
    """A Running pod outlives the Job's activeDeadlineSeconds; the Job controller kills it."""
    await create_job(ctx, job_manifest(JOB, pod_annotations={RUN_FOR: "1h"}, active_deadline_s=3))
    await job_failed(ctx)


@scenario("node-not-ready-taint-eviction", FailureClass.NODE_LOST)
async def node_not_ready(ctx: Ctx) -> None:
    """The pod's node turns NotReady; node lifecycle taints it, taint eviction deletes the pod."""
    node = await make_node(ctx, "cap-notready")
    await create_job(
        ctx, job_manifest(JOB, pod_annotations={RUN_FOR: "1h"}, node_selector=_on_node(node))
    )
    await running_pod(ctx)
    # kwok's chaos stage re-reports NotReady every `delay`; at its default of 1 s the node's
    # updates would fill the file, so report like a kubelet's status update period instead.
    slow = {f"{NODE_NOT_READY_LABEL}/delay": "5s", f"{NODE_NOT_READY_LABEL}/jitter-delay": "0s"}
    patch = {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}, "annotations": slow}}
    await raw(ctx.core.patch_node(node, patch, _preload_content=False))
    await job_failed(ctx, within=90)


@scenario("node-deleted-pod-gc", FailureClass.NODE_LOST)
async def node_deleted(ctx: Ctx) -> None:
    """The Node object is deleted under a running pod; pod GC deletes the orphaned pod."""
    node = await make_node(ctx, "cap-deleted")
    await create_job(
        ctx, job_manifest(JOB, pod_annotations={RUN_FOR: "1h"}, node_selector=_on_node(node))
    )
    await running_pod(ctx)
    await raw(ctx.core.delete_node(node, _preload_content=False))
    # Pod GC checks every 20 s and quarantines a missing node for 40 s before acting.
    await job_failed(ctx, within=150)


@scenario("eviction-api", FailureClass.API_EVICTION)
async def eviction_api(ctx: Ctx) -> None:
    """A drain evicts the Running pod through the Eviction API."""
    await create_job(ctx, job_manifest(JOB, pod_annotations={RUN_FOR: "1h"}))
    pod = str((await running_pod(ctx))["metadata"]["name"])
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": ctx.namespace},
    }
    await raw(
        ctx.core.create_namespaced_pod_eviction(
            pod, ctx.namespace, eviction, _preload_content=False
        )
    )
    await job_failed(ctx)


async def _priority_class(ctx: Ctx, name: str, value: int) -> str:
    full = f"{name}-{ctx.suffix}"
    scheduling = client.SchedulingV1Api(ctx.api)
    body = {"apiVersion": "scheduling.k8s.io/v1", "metadata": {"name": full}, "value": value}
    await raw(scheduling.create_priority_class(body, _preload_content=False))
    ctx.cleanups.append(
        lambda: _ignore_404(scheduling.delete_priority_class(full, _preload_content=False))
    )
    return full


def _pinned_pod_spec(spec: RawObject, node: str, priority_class: str, cpu: str) -> None:
    spec["nodeSelector"] = _on_node(node)
    spec["priorityClassName"] = priority_class
    for container in spec["containers"]:
        container["resources"] = {"requests": {"cpu": cpu}}


@scenario("scheduler-preemption", FailureClass.PREEMPTED)
async def scheduler_preemption(ctx: Ctx) -> None:
    """A higher-priority pod needs the CPU of a small node; the scheduler preempts the Job pod."""
    node = await make_node(ctx, "cap-small", cpu="1")
    low = await _priority_class(ctx, "cap-low", 100)
    high = await _priority_class(ctx, "cap-high", 1_000_000)
    manifest = job_manifest(JOB, pod_annotations={RUN_FOR: "1h"})
    _pinned_pod_spec(manifest["spec"]["template"]["spec"], node, low, "800m")
    await create_job(ctx, manifest)
    await running_pod(ctx)
    preemptor = job_manifest("preemptor", pod_annotations={RUN_FOR: "1h"})["spec"]["template"]
    preemptor["metadata"]["name"] = "preemptor"
    _pinned_pod_spec(preemptor["spec"], node, high, "800m")
    await raw(ctx.core.create_namespaced_pod(ctx.namespace, preemptor, _preload_content=False))
    await job_failed(ctx)


@scenario("image-pull-stuck", FailureClass.IMAGE_PULL)
async def image_pull_stuck(ctx: Ctx) -> None:
    """The image cannot be pulled: the pod cycles ErrImagePull/ImagePullBackOff, never fails."""
    await create_job(ctx, job_manifest(JOB, pod_labels={IMAGE_PULL_LABEL: "true"}, backoff_limit=6))

    def waited(reason: str) -> Callable[[], bool]:
        return lambda: reason in _waiting_reasons(ctx.rec.entries)

    await until(waited("ErrImagePull"), within=30, what="ErrImagePull")
    started = time.monotonic()
    await until(waited("ImagePullBackOff"), within=30, what="ImagePullBackOff")
    await asyncio.sleep(max(0.0, IMAGE_PULL_CYCLING_S - (time.monotonic() - started)))


def _waiting_reasons(entries: Iterable[WatchEntry]) -> set[str]:
    return {
        str(((status.get("state") or {}).get("waiting") or {}).get("reason"))
        for entry in entries
        if entry.resource == "pods"
        for status in (entry.object.get("status") or {}).get("containerStatuses") or []
    }


@scenario("unschedulable", FailureClass.UNSCHEDULABLE)
async def unschedulable(ctx: Ctx) -> None:
    """No node matches the pod's nodeSelector: PodScheduled=False/Unschedulable, stuck Pending."""
    selector = {"kube-dlq.io/capture-pool": "no-such-pool"}
    await create_job(ctx, job_manifest(JOB, node_selector=selector, backoff_limit=6))
    started = time.monotonic()
    await until(
        lambda: any(e.get("reason") == "FailedScheduling" for e in ctx.rec.events("Pod")),
        within=30,
        what="a FailedScheduling Event",
    )
    await asyncio.sleep(max(0.0, UNSCHEDULABLE_FOR_S - (time.monotonic() - started)))


@scenario("pod-failure-policy-failjob", FailureClass.APP_ERROR)
async def pod_failure_policy(ctx: Ctx) -> None:
    """podFailurePolicy FailJob on exit code 42: the Job fails at once, reason PodFailurePolicy."""
    manifest = _failing(42, "Error", "tenant quota exhausted, giving up")
    manifest["spec"]["backoffLimit"] = 6
    manifest["spec"]["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]},
            }
        ]
    }
    await create_job(ctx, manifest)
    await job_failed(ctx)


# --- running a scenario --------------------------------------------------------------------


async def kubernetes_version(api: client.ApiClient) -> str:
    info = await raw(client.VersionApi(api).get_code(_preload_content=False))
    return str(info.get("gitVersion", ""))


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def capture(api: client.ApiClient, name: str) -> RawObject:
    """Provoke scenario `name` in a fresh namespace and return its record."""
    sc = SCENARIOS[name]
    suffix = uuid.uuid4().hex[:5]
    namespace = f"cap-{name}"[:56] + f"-{suffix}"
    core = client.CoreV1Api(api)
    await raw(core.create_namespace({"metadata": {"name": namespace}}, _preload_content=False))
    rec = Recorder(api, namespace)
    ctx = Ctx(api, namespace, rec, suffix)
    ctx.cleanups.append(
        lambda: _ignore_404(core.delete_namespace(namespace, _preload_content=False))
    )
    try:
        version = await kubernetes_version(api)
        await rec.start()
        await sc.body(ctx)
        captured_at = _now_rfc3339()
    finally:
        try:
            await rec.stop()
        finally:
            for cleanup in reversed(ctx.cleanups):
                await cleanup()
    return {
        "scenario": sc.name,
        "expected_class": str(sc.expected),
        "kubernetes_version": version,
        "captured_at": captured_at,
        "watch": [e.as_json() for e in rec.entries],
    }


def dump(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- replay --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    report: FailureReport
    classification: Classification
    stuck_for_s: float | None


def replay(record: Mapping[str, Any], *, dwell_s: float = STUCK_DWELL_S) -> Replay:
    """Feed the recorded watch events, in order, to snapshot + Correlator, as the pipeline does.

    A Job without a Failed condition is classified as stuck only if the correlator itself
    finds it stuck (pods waiting to start for `dwell_s`) at the capture time.
    """
    correlator = Correlator(LimitsSettings())
    job_uid = ""
    for entry in record["watch"]:
        job_uid = _feed(correlator, entry["resource"], entry["type"], entry["object"]) or job_uid
    job = correlator.job(job_uid)
    if job is None:
        raise ValueError(f"{record.get('scenario')}: no Job in the recording")
    stuck_for_s = None
    if job.condition("Failed") is None:
        now = snapshot.parse_time(record["captured_at"])
        if now is None:
            raise ValueError(f"{record.get('scenario')}: unreadable captured_at")
        stuck_for_s = dict(correlator.stuck_jobs(now, dwell_s)).get(job_uid)
    report = correlator.report(job_uid, stuck_for_s=stuck_for_s)
    assert report is not None
    return Replay(report, classify(report), stuck_for_s)


def _feed(correlator: Correlator, resource: str, kind: str, obj: RawObject) -> str | None:
    """One watch event into the correlator; returns the Job uid for a Job event."""
    namespace = str((obj.get("metadata") or {}).get("namespace", ""))
    deleted = kind == "DELETED"
    if resource == "jobs":
        if deleted:
            return None
        job = snapshot.job_snapshot(obj)
        correlator.observe_job(job)
        return job.ref.uid
    if resource == "pods":
        owner = snapshot.job_uid_of_pod(obj)
        if owner is not None:
            correlator.observe_pod(owner, namespace, snapshot.pod_snapshot(obj, deleted=deleted))
    elif resource == "events":
        if not deleted:  # an Event expiring is not news (as in the pipeline)
            correlator.observe_event(namespace, snapshot.event_record(obj))
    elif resource == "nodes":
        node = snapshot.node_state(obj, deleted=deleted)
        if deleted:
            correlator.node_deleted(node.name)
        else:
            correlator.observe_node(node)
    else:
        raise ValueError(f"unknown resource {resource!r}")
    return None


def load(path: Path) -> RawObject:
    record: RawObject = json.loads(path.read_text())
    return record


def stored(folder: Path) -> Iterable[Path]:
    return sorted(folder.glob("*.json"))


# --- CLI -----------------------------------------------------------------------------------


Outcome = tuple[RawObject, float] | BaseException


async def _capture_all(kubeconfig: str, names: list[str], *, parallel: bool) -> list[Outcome]:
    api = await config.new_client_from_config(config_file=kubeconfig)
    async with api:
        await nodes_schedulable(api)
        if parallel:
            return await asyncio.gather(
                *(_timed(capture(api, name)) for name in names), return_exceptions=True
            )
        outcomes: list[Outcome] = []
        for name in names:
            try:
                outcomes.append(await _timed(capture(api, name)))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


async def _timed(coro: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


def _write(names: list[str], outcomes: list[Outcome], out: Path) -> int:
    """Write each captured record; print what the classifier makes of it. 1 if any failed."""
    failures = 0
    out.mkdir(parents=True, exist_ok=True)
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failures += 1
            print(f"{name:30} CAPTURE FAILED: {outcome!r}", file=sys.stderr)
            continue
        record, took = outcome
        text = dump(record)
        (out / f"{name}.json").write_text(text)
        got = replay(record).classification
        mark = "ok" if got.failure_class == record["expected_class"] else "MISMATCH"
        print(
            f"{name:30} {took:5.1f}s {len(text) / 1024:5.1f} KiB "
            f"{record['expected_class']:>17} -> {got.failure_class:<17} {mark}: {got.reason}"
        )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.capture",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for <scenario>.json")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="scenarios to run")
    parser.add_argument("--kubeconfig", help="use this running cluster instead of a new one")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run all scenarios at once (faster; scheduler messages then count their nodes)",
    )
    args = parser.parse_args(argv)
    names = list(args.only or SCENARIOS)
    started = time.monotonic()
    if args.kubeconfig:
        outcomes = asyncio.run(_capture_all(args.kubeconfig, names, parallel=args.parallel))
    else:
        from devtools.devcluster.build import ensure_binaries
        from devtools.devcluster.cluster import LocalCluster

        with (
            tempfile.TemporaryDirectory(prefix="kube-dlq-capture-") as tmp,
            LocalCluster(Path(tmp) / "cluster", ensure_binaries()) as state,
        ):
            outcomes = asyncio.run(_capture_all(state.kubeconfig, names, parallel=args.parallel))
    status = _write(names, outcomes, args.out)
    print(f"captured {len(names)} scenarios in {time.monotonic() - started:.1f}s")
    return status


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
