"""Join Jobs, their pods, the Events about them and their nodes by Job uid.

The four watches deliver in no particular order relative to each other: an Event can arrive
before the pod it is about, a pod before its Job. The correlator keeps what it has seen in
bounded maps and assembles a FailureReport on demand. It holds status projections only
(PodSnapshot, EventRecord, NodeState), never specs, and forgets a Job once it is handled or
succeeded, so memory follows the number of live Jobs, not their size or history.

What it keeps is built for a hundred thousand quiet Jobs: repeated values are shared
(`watcher.core.shared`), a Job's pods are a small tuple, its Events and pods-known-by-name
maps exist only once it has some, and names are looked up per namespace without a key tuple
per object.

Pure: no I/O, no clock of its own (callers pass `now`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from watcher.core.model import EventRecord, FailureReport, JobSnapshot, NodeState, PodSnapshot
from watcher.core.settings import LimitsSettings
from watcher.core.shared import Shared

# Waiting reasons that mean a pod will not start by itself (the kubelet keeps retrying).
STUCK_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})  # fmt: skip

FINISHED_MEMORY = 4_096
"""Finished Jobs remembered so their pods' last updates are dropped: the garbage collector
deletes a deleted Job's pods seconds after it, so this covers hundreds of deletions a second.
A pod of a Job forgotten before that is held as an orphan, as before (max_orphan_pods)."""


@dataclass(slots=True)
class _JobState:
    snapshot: JobSnapshot
    pods: tuple[PodSnapshot, ...] = ()
    """Newest last; a pod seen again moves to the end (at most max_pods_per_job)."""
    events: dict[tuple[str, str, str], EventRecord] | None = None
    """Newest last (insertion order); None until the Job has one."""
    named_pods: dict[str, None] | None = None
    """Pods known only by name, from the Job's SuccessfulCreate Events (see observe_event);
    oldest first; None until there is one."""


class _Names:
    """(namespace, name) -> Job uid, one dict per namespace: no key tuple per object."""

    __slots__ = ("_by_namespace",)

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, str]] = {}

    def get(self, namespace: str, name: str) -> str | None:
        names = self._by_namespace.get(namespace)
        return names.get(name) if names is not None else None

    def __contains__(self, key: tuple[str, str]) -> bool:
        return self.get(*key) is not None

    def put(self, namespace: str, name: str, uid: str) -> None:
        names = self._by_namespace.get(namespace)
        if names is None:
            names = self._by_namespace[namespace] = {}
        names[name] = uid

    def pop(self, namespace: str, name: str) -> None:
        names = self._by_namespace.get(namespace)
        if names is not None and names.pop(name, None) is not None and not names:
            del self._by_namespace[namespace]

    def pop_if(self, namespace: str, name: str, uid: str) -> None:
        """Drop the entry only while it still points at `uid`."""
        if self.get(namespace, name) == uid:
            self.pop(namespace, name)

    def __len__(self) -> int:
        return sum(len(names) for names in self._by_namespace.values())


class Correlator:
    def __init__(self, limits: LimitsSettings) -> None:
        """`limits` bound every collection held (config `limits`)."""
        self.limits = limits
        self._jobs: OrderedDict[str, _JobState] = OrderedDict()
        self._job_by_name = _Names()
        self._job_of_pod = _Names()
        self._shared = Shared()
        self._nodes: dict[str, NodeState] = {}
        self._node_events: dict[str, deque[EventRecord]] = {}
        self._orphans: OrderedDict[tuple[str, str, str], list[EventRecord]] = OrderedDict()
        self._orphan_pods: OrderedDict[str, dict[str, tuple[str, PodSnapshot]]] = OrderedDict()
        """Job uid -> pod uid -> (namespace, newest version) of pods whose Job is not known."""
        self._orphan_pod_count = 0
        self._pinned: set[str] = set()
        """Jobs whose failure is queued and not yet written: never evicted (not rebuildable)."""
        self._finished: OrderedDict[str, None] = OrderedDict()
        """Jobs deleted, complete or handled (newest last, at most FINISHED_MEMORY): their
        pods' later updates are dropped, not held as orphans for a Job that never comes."""
        self.evicted_jobs = 0
        """Jobs dropped because max_jobs was reached (exported as a metric by the app)."""

    def __len__(self) -> int:
        return len(self._jobs)

    # -- updates --------------------------------------------------------------------------

    def observe_job(self, job: JobSnapshot) -> None:
        uid = job.ref.uid
        state = self._jobs.get(uid)
        job = self._shared.job(job, state.snapshot if state is not None else None)
        if state is None:
            state = self._jobs[uid] = _JobState(job)
            self._job_by_name.put(job.ref.namespace, job.ref.name, uid)
            self._adopt_orphans(job.ref.namespace, "Job", job.ref.name, state)
            self._adopt_orphan_pods(uid)
            self._enforce_job_limit()
        else:
            state.snapshot = job
            self._jobs.move_to_end(uid)

    def observe_pod(self, job_uid: str, namespace: str, pod: PodSnapshot) -> None:
        namespace = self._shared.namespace(namespace)
        state = self._jobs.get(job_uid)
        if state is None:
            if job_uid in self._finished:
                return  # e.g. pod GC after the Job's deletion: nothing will read it
            # Its Job has not been seen yet (or is out of scope, or handled and forgotten):
            # hold the pod until the Job shows up; forget() or age drops it otherwise.
            self._hold_orphan_pod(job_uid, namespace, self._shared.pod(pod))
            return
        self._job_of_pod.put(namespace, pod.name, job_uid)
        pods = state.pods
        if pods and pods[-1].uid == pod.uid:  # the usual update: the newest pod again
            pod = self._shared.pod(pod, pods[-1])
            pods = (*pods[:-1], pod)
        else:
            pod = self._shared.pod(pod)
            pods = (*(p for p in pods if p.uid != pod.uid), pod)
        excess = len(pods) - self.limits.max_pods_per_job
        if excess > 0:
            for old in pods[:excess]:
                self._job_of_pod.pop(namespace, old.name)
            pods = pods[excess:]
        state.pods = pods
        self._adopt_orphans(namespace, "Pod", pod.name, state)

    def observe_event(self, namespace: str, event: EventRecord) -> None:
        if event.involved_kind == "Node":
            events = self._node_events.setdefault(
                event.involved_name, deque(maxlen=self.limits.max_events_per_object)
            )
            events.append(event)
            return
        uid = self._owner_uid(namespace, event)
        if uid is None:
            self._hold_orphan(namespace, event)
            return
        state = self._jobs.get(uid)
        if state is None:
            # A mapping left behind by a Job forgotten since: never trusted, never fatal.
            self._job_of_pod.pop(namespace, event.involved_name)
            self._hold_orphan(namespace, event)
            return
        self._add_event(state, event)
        created = _created_pod(event)
        if created and (namespace, created) not in self._job_of_pod:
            # The Job controller names each pod it creates. If the pod itself is never seen
            # (deleted before we started watching), its Events still reach the Job this way.
            self._job_of_pod.put(namespace, created, uid)
            if state.named_pods is None:
                state.named_pods = {}
            state.named_pods[created] = None
            while len(state.named_pods) > self.limits.max_pods_per_job:
                name = next(iter(state.named_pods))
                del state.named_pods[name]
                self._job_of_pod.pop_if(namespace, name, uid)
            self._adopt_orphans(namespace, "Pod", created, state)

    def observe_node(self, node: NodeState) -> None:
        self._nodes[node.name] = node

    def node_deleted(self, name: str) -> None:
        """Remember the node as gone: a pod's node vanishing is node-loss evidence."""
        old = self._nodes.get(name)
        self._nodes[name] = NodeState(
            name=name, exists=False, ready="Unknown", taints=old.taints if old else ()
        )

    def pin(self, job_uid: str) -> None:
        """Keep this Job's evidence whatever the limits: its failure is not written yet."""
        self._pinned.add(job_uid)

    def unpin(self, job_uid: str) -> None:
        self._pinned.discard(job_uid)

    def forget(self, job_uid: str, *, finished: bool = False) -> None:
        """Drop everything held for a Job (handled, succeeded or deleted). `finished`: the
        Job will not be seen again (deleted, complete, handled), so its pods are not held
        for it either."""
        if finished:
            self._finished[job_uid] = None
            self._finished.move_to_end(job_uid)
            if len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)
        self._pinned.discard(job_uid)
        self._drop_orphan_pods(job_uid)
        state = self._jobs.pop(job_uid, None)
        if state is None:
            return
        ref = state.snapshot.ref
        self._job_by_name.pop(ref.namespace, ref.name)
        for pod in state.pods:
            self._job_of_pod.pop(ref.namespace, pod.name)
        for name in state.named_pods or ():
            self._job_of_pod.pop_if(ref.namespace, name, job_uid)

    def retain_only(self, job_uids: frozenset[str]) -> list[str]:
        """After a relist: drop Jobs that no longer exist. Returns the uids dropped."""
        gone = [uid for uid in self._jobs if uid not in job_uids]
        for uid in gone:
            self.forget(uid, finished=True)
        return gone

    # -- queries --------------------------------------------------------------------------

    def job(self, job_uid: str) -> JobSnapshot | None:
        state = self._jobs.get(job_uid)
        return state.snapshot if state else None

    def report(self, job_uid: str, *, stuck_for_s: float | None = None) -> FailureReport | None:
        state = self._jobs.get(job_uid)
        if state is None:
            return None
        pods = state.pods
        node_names = {p.node_name for p in pods if p.node_name}
        nodes = tuple(
            self._nodes.get(n) or NodeState(name=n, exists=True) for n in sorted(node_names)
        )
        node_events = tuple(e for n in sorted(node_names) for e in self._node_events.get(n, ()))
        return FailureReport(
            job=state.snapshot,
            pods=pods,
            events=tuple((state.events or {}).values()) + node_events,
            nodes=nodes,
            stuck_for_s=stuck_for_s,
        )

    def stuck_jobs(
        self, now: float, dwell_s: float, *, only: str | None = None
    ) -> list[tuple[str, float]]:
        """Jobs with no running pod whose pods have waited to start for longer than dwell_s.

        Kubernetes never fails these (an image that cannot be pulled, a missing ConfigMap,
        no node that fits), so kube-dlq treats them as failed after a dwell time. With
        `only`, just that Job is checked.
        """
        stuck = []
        if only is None:
            candidates = list(self._jobs.items())
        else:
            state_of = self._jobs.get(only)
            candidates = [(only, state_of)] if state_of is not None else []
        for uid, state in candidates:
            if state.snapshot.condition("Failed") or state.snapshot.condition("Complete"):
                continue
            waits = [
                now - p.created_at
                for p in state.pods
                if _waiting_to_start(p) and p.created_at is not None
            ]
            if waits and len(waits) == len(state.pods) and min(waits) >= dwell_s:
                stuck.append((uid, min(waits)))
        return stuck

    # -- internals ------------------------------------------------------------------------

    def _owner_uid(self, namespace: str, event: EventRecord) -> str | None:
        if event.involved_kind == "Job":
            return self._job_by_name.get(namespace, event.involved_name)
        if event.involved_kind == "Pod":
            return self._job_of_pod.get(namespace, event.involved_name)
        return None

    def _add_event(self, state: _JobState, event: EventRecord) -> None:
        # Aggregated Events come back as updates with a higher count: keep the newest copy.
        key = (event.involved_kind, event.involved_name, event.reason)
        if state.events is None:
            state.events = {}
        state.events.pop(key, None)
        state.events[key] = event
        while len(state.events) > self.limits.max_events_per_object:
            del state.events[next(iter(state.events))]

    def _hold_orphan(self, namespace: str, event: EventRecord) -> None:
        if event.involved_kind not in ("Job", "Pod"):
            return
        key = (namespace, event.involved_kind, event.involved_name)
        held = self._orphans.setdefault(key, [])
        held.append(event)
        del held[: -self.limits.max_events_per_object]
        self._orphans.move_to_end(key)
        while len(self._orphans) > self.limits.max_orphan_events:
            self._orphans.popitem(last=False)

    def _adopt_orphans(self, namespace: str, kind: str, name: str, state: _JobState) -> None:
        for event in self._orphans.pop((namespace, kind, name), ()):
            self._add_event(state, event)

    def _hold_orphan_pod(self, job_uid: str, namespace: str, pod: PodSnapshot) -> None:
        held = self._orphan_pods.setdefault(job_uid, {})
        if pod.uid not in held:
            self._orphan_pod_count += 1
        held[pod.uid] = (namespace, pod)
        self._orphan_pods.move_to_end(job_uid)
        while self._orphan_pod_count > self.limits.max_orphan_pods:
            _, dropped = self._orphan_pods.popitem(last=False)
            self._orphan_pod_count -= len(dropped)

    def _drop_orphan_pods(self, job_uid: str) -> dict[str, tuple[str, PodSnapshot]]:
        held = self._orphan_pods.pop(job_uid, None) or {}
        self._orphan_pod_count -= len(held)
        return held

    def _adopt_orphan_pods(self, job_uid: str) -> None:
        for namespace, pod in self._drop_orphan_pods(job_uid).values():
            self.observe_pod(job_uid, namespace, pod)

    def _enforce_job_limit(self) -> None:
        """Evict the least recently updated Jobs past max_tracked_jobs, pinned ones excepted.

        Only evidence that the watch can deliver again is dropped. Pinned Jobs can outnumber
        the limit only while more failures wait to be written than it allows, and the
        pipeline's max_pending_writes back-pressure (below max_tracked_jobs) stops that.
        """
        skipped = 0
        while len(self._jobs) > self.limits.max_tracked_jobs and skipped <= len(self._pinned):
            oldest = next(iter(self._jobs))
            if oldest in self._pinned:
                self._jobs.move_to_end(oldest)
                skipped += 1
                continue
            self.forget(oldest)
            self.evicted_jobs += 1


def _created_pod(event: EventRecord) -> str:
    """The pod name in a Job's "SuccessfulCreate" Event ("Created pod: nightly-x7k2p")."""
    if event.involved_kind != "Job" or event.reason != "SuccessfulCreate":
        return ""
    _, sep, name = event.message.partition("Created pod: ")
    return name.strip() if sep else ""


def _waiting_to_start(pod: PodSnapshot) -> bool:
    if pod.phase != "Pending" or pod.deleted:
        return False
    if any(c.waiting_reason in STUCK_WAITING_REASONS for c in pod.containers):
        return True
    scheduled = pod.condition("PodScheduled")
    return scheduled is not None and scheduled.status == "False"
