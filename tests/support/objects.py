"""Builders of raw Kubernetes JSON, shaped as the apiserver sends it on list/watch.

Every builder returns a fresh plain dict (camelCase keys), so tests can mutate or break it.
The defaults describe one Job `report-nightly` in namespace `batch`, created by a CronJob, whose
pods run on the kwok node `kwok-node-0`. `kwok_*` builders reproduce what kwok's chaos stage
`pod-container-running-failed` writes: phase Failed, Ready/ContainersReady False and, for every
container, `state.terminated {exitCode, reason, message, startedAt, finishedAt}` with kwok's
defaults exit 1 / `containerFailed` / `container failed`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from typing import Any

from watcher.core.model import FailureReport, NodeState
from watcher.core.snapshot import event_record, job_snapshot, node_state, pod_snapshot

Raw = dict[str, Any]

NAMESPACE = "batch"
JOB_NAME = "report-nightly"
JOB_UID = "0b3c9a52-1f7e-4c2a-9d47-5a1e2f3b4c5d"
CRONJOB_UID = "7d2f8e11-aaaa-4b0c-8e2d-1c2b3a4d5e6f"
NODE = "kwok-node-0"
T0 = "2026-11-20T10:00:00Z"
T0_UNIX = 1795168800.0


def at(seconds: int) -> str:
    """T0 plus `seconds`, in RFC 3339 as the apiserver writes it."""
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"2026-11-20T{10 + hours:02d}:{minute:02d}:{sec:02d}Z"


# --- Jobs ----------------------------------------------------------------------------------


def condition(type_: str, status: str = "True", reason: str = "", message: str = "") -> Raw:
    raw: Raw = {
        "type": type_,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": at(60),
    }
    if reason:
        raw["reason"] = reason
    if message:
        raw["message"] = message
    return raw


def job_failed(reason: str, message: str = "") -> Raw:
    return condition("Failed", reason=reason, message=message)


JOB_MESSAGES = {
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
    "PodFailurePolicy": (
        "Container main for pod batch/report-nightly-abcde failed with exit code 42 matching "
        "FailJob rule at index 0"
    ),
}


def raw_job(
    *,
    name: str = JOB_NAME,
    uid: str = JOB_UID,
    failed_reason: str | None = "BackoffLimitExceeded",
    failed: int = 1,
    pod_failure_policy: bool = False,
    owner: bool = True,
) -> Raw:
    """A Job as the Job controller leaves it, Failed with `failed_reason` (None: still active)."""
    conditions = []
    if failed_reason is not None:
        message = JOB_MESSAGES.get(failed_reason, "")
        conditions = [
            condition("FailureTarget", reason=failed_reason, message=message),
            job_failed(failed_reason, message),
        ]
    spec: Raw = {
        "backoffLimit": 0,
        "completionMode": "NonIndexed",
        "completions": 1,
        "parallelism": 1,
        "template": {
            "metadata": {"labels": {"app": "report"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1.36"}],
            },
        },
    }
    if pod_failure_policy:
        spec["podFailurePolicy"] = {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]},
                }
            ]
        }
    metadata: Raw = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": uid,
        "resourceVersion": "4711",
        "creationTimestamp": T0,
        "labels": {"app": "report", "batch.kubernetes.io/controller-uid": uid},
        "annotations": {"retry.kube-dlq.io/max-attempts": "3"},
    }
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": "report",
                "uid": CRONJOB_UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "conditions": conditions,
            "failed": failed,
            "active": 0 if failed_reason else 1,
            "startTime": T0,
            "uncountedTerminatedPods": {},
            "ready": 0,
        },
    }


# --- Pods ----------------------------------------------------------------------------------


def terminated(
    name: str = "main",
    exit_code: Any = 1,
    reason: str = "Error",
    message: str | None = None,
    *,
    signal: int | None = None,
    restart_count: int = 0,
) -> Raw:
    """A containerStatuses[] entry whose container has terminated."""
    state: Raw = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": at(1),
        "finishedAt": at(30),
        "containerID": f"containerd://{name}0123456789",
    }
    if message is not None:
        state["message"] = message
    if signal is not None:
        state["signal"] = signal
    return {
        "name": name,
        "image": "busybox:1.36",
        "imageID": "docker.io/library/busybox@sha256:0123",
        "ready": False,
        "started": False,
        "restartCount": restart_count,
        "state": {"terminated": state},
    }


def kwok_terminated(
    name: str = "main",
    exit_code: Any = 1,
    reason: str = "containerFailed",
    message: str = "container failed",
) -> Raw:
    """kwok's pod-container-running-failed container status (no imageID, no containerID)."""
    return {
        "image": "busybox:1.36",
        "name": name,
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {
            "terminated": {
                "exitCode": exit_code,
                "finishedAt": at(30),
                "reason": reason,
                "message": message,
                "startedAt": at(30),
            }
        },
    }


def waiting(name: str = "main", reason: str = "ImagePullBackOff", message: str = "") -> Raw:
    return {
        "name": name,
        "image": "registry.invalid/report:1.0",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


def running(name: str = "main") -> Raw:
    return {
        "name": name,
        "image": "busybox:1.36",
        "ready": True,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": at(1)}},
    }


def crash_looping(name: str, last: Raw, restarts: int = 3) -> Raw:
    """A restarted container (restartPolicy OnFailure): waiting now, `last` in lastState."""
    status = waiting(name, "CrashLoopBackOff", f"back-off 40s restarting failed container={name}")
    status["lastState"] = last["state"]
    status["restartCount"] = restarts
    return status


def disruption(reason: str, message: str = "") -> Raw:
    return condition("DisruptionTarget", reason=reason, message=message)


DISRUPTION_MESSAGES = {
    "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
    "DeletionByPodGC": "PodGC: node no longer exists",
    "EvictionByEvictionAPI": "Eviction API: evicting",
    "PreemptionByScheduler": "batch/high-prio: Scheduler preemption",
    "TerminationByKubelet": "The node was low on resource: memory.",
}


def raw_pod(
    name: str = "report-nightly-abcde",
    *,
    uid: str | None = None,
    job_uid: str = JOB_UID,
    node: str | None = NODE,
    phase: str = "Failed",
    reason: str | None = None,
    message: str | None = None,
    conditions: Iterable[Raw] = (),
    containers: Iterable[Raw] = (),
    init_containers: Iterable[Raw] = (),
    created: str = at(0),
    deleting: bool = False,
) -> Raw:
    """A Job's pod. `containers`/`init_containers` are status entries (terminated(), ...)."""
    status: Raw = {
        "phase": phase,
        "conditions": list(conditions),
        "containerStatuses": list(containers),
        "hostIP": "10.0.0.1",
        "podIP": "10.244.0.7",
        "qosClass": "BestEffort",
        "startTime": created,
    }
    if init_containers:
        status["initContainerStatuses"] = list(init_containers)
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    metadata: Raw = {
        "name": name,
        "generateName": f"{JOB_NAME}-",
        "namespace": NAMESPACE,
        "uid": uid or f"uid-{name}",
        "resourceVersion": "4800",
        "creationTimestamp": created,
        "labels": {
            "batch.kubernetes.io/controller-uid": job_uid,
            "batch.kubernetes.io/job-name": JOB_NAME,
            "controller-uid": job_uid,
            "job-name": JOB_NAME,
        },
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": JOB_NAME,
                "uid": job_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "finalizers": ["batch.kubernetes.io/job-tracking"],
    }
    if deleting:
        metadata["deletionTimestamp"] = at(90)
        metadata["deletionGracePeriodSeconds"] = 30
    spec: Raw = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "run-report"]}
        ],
        "schedulerName": "default-scheduler",
    }
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def kwok_failed_pod(
    name: str = "report-nightly-abcde",
    *,
    exit_code: Any = 1,
    reason: str = "containerFailed",
    message: str = "container failed",
    created: str = at(0),
) -> Raw:
    """What kwok's chaos stage leaves: phase Failed, one terminated container, no pod reason."""
    return raw_pod(
        name,
        created=created,
        conditions=[
            condition("Initialized"),
            condition("Ready", "False"),
            condition("ContainersReady", "False"),
            condition("PodScheduled"),
        ],
        containers=[kwok_terminated("main", exit_code, reason, message)],
    )


# --- Events and Nodes ----------------------------------------------------------------------


def raw_event(
    kind: str,
    name: str,
    reason: str,
    message: str = "",
    *,
    type_: str = "Warning",
    count: int = 1,
    last: str | None = at(45),
) -> Raw:
    """A core/v1 Event from the legacy recorder (firstTimestamp/lastTimestamp/count)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{reason.lower()}",
            "namespace": NAMESPACE if kind != "Node" else "default",
            "uid": f"ev-{kind}-{name}-{reason}",
            "creationTimestamp": at(40),
        },
        "involvedObject": {
            "apiVersion": "v1" if kind != "Job" else "batch/v1",
            "kind": kind,
            "name": name,
            "namespace": NAMESPACE if kind != "Node" else "",
            "uid": f"uid-{name}",
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "firstTimestamp": at(40),
        "lastTimestamp": last,
        "eventTime": None,
        "reportingComponent": "",
        "source": {"component": "kubelet", "host": NODE},
    }


def raw_node(
    name: str = NODE,
    *,
    ready: str = "True",
    reason: str = "KubeletReady",
    taints: Iterable[tuple[str, str]] = (),
    unschedulable: bool = False,
) -> Raw:
    """A kwok Node; `taints` are (key, effect) pairs."""
    spec: Raw = {"taints": [{"key": k, "effect": e} for k, e in taints]}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
        },
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("Ready", ready, reason),
            ],
        },
    }


def not_ready_node(name: str = NODE, *, ready: str = "Unknown") -> Raw:
    """A node whose kubelet stopped reporting: what the node lifecycle controller writes."""
    return raw_node(
        name,
        ready=ready,
        reason="NodeStatusUnknown",
        taints=[("node.kubernetes.io/unreachable", "NoExecute")],
    )


# --- reports -------------------------------------------------------------------------------


def report(
    job: Raw | None = None,
    pods: Iterable[Raw] = (),
    events: Iterable[Raw] = (),
    nodes: Iterable[Raw | NodeState] = (),
    *,
    stuck_for_s: float | None = None,
) -> FailureReport:
    """Run raw objects through `watcher.core.snapshot` into the report `classify` takes."""
    return FailureReport(
        job=job_snapshot(job if job is not None else raw_job()),
        pods=tuple(pod_snapshot(p) for p in pods),
        events=tuple(event_record(e) for e in events),
        nodes=tuple(n if isinstance(n, NodeState) else node_state(n) for n in nodes),
        stuck_for_s=stuck_for_s,
    )


def gone_node(name: str = NODE) -> NodeState:
    """The node as the Node watch's DELETED event leaves it."""
    return node_state(raw_node(name), deleted=True)


def put(raw: Raw, path: str, value: Any) -> Raw:
    """Set a nested value in place, e.g. put(pod, "status.containerStatuses.0.name", None).

    Missing dicts on the way are created; returns `raw` for chaining.
    """
    *parents, last = path.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


# --- fuzzing -------------------------------------------------------------------------------

_JUNK: tuple[Any, ...] = (None, "", "x", 0, -1, 3.5, True, [], {}, [None], {"a": None})


def pruned(raw: Raw, rng: random.Random, rate: float = 0.15) -> Raw:
    """A copy of `raw` with random keys dropped, values replaced by junk, list items cut."""
    mutated = _prune(copy.deepcopy(raw), rng, rate)
    return mutated if isinstance(mutated, dict) else {}


def _prune(value: Any, rng: random.Random, rate: float) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            roll = rng.random()
            if roll < rate:
                continue  # dropped
            out[key] = rng.choice(_JUNK) if roll < 2 * rate else _prune(item, rng, rate)
        return out
    if isinstance(value, list):
        kept = [_prune(item, rng, rate) for item in value if rng.random() >= rate]
        return [*kept, rng.choice(_JUNK)] if rng.random() < rate else kept
    return value
