"""Did the workload start? ``yes``, ``no`` or ``unknown``, from the same evidence as the class.

Retrying a Job that never started cannot repeat a side effect, which is why Airflow retries
automatically only then; the policy can require it per class (``require_never_started``).

Per pod:

* **yes**: a container terminated with an exit code (not the runtime's own StartError /
  ContainerCannotRun, whose process never ran), was restarted, the pod is Running or
  Succeeded, or its ContainersReady / Ready condition is True;
* **no**: the kubelet rejected the pod at admission, it is Pending without a node
  (unschedulable), or every container is still only waiting (image pull, config error);
* **unknown**: anything else, e.g. a pod that is gone and only named by Events.

For the Job: **yes** if any pod started (or the Job counts a succeeded pod); **no** only if
every pod is known not to have started and none is missing (the Job counts more failed pods
than are left to read); otherwise **unknown**. "yes" wins because one run is enough to have
had side effects; "no" needs every pod because a pod we cannot see may have run.
"""

from __future__ import annotations

from typing import Final

from watcher.core.classify.containers import never_ran
from watcher.core.classify.pods import rejected_at_admission
from watcher.core.model import ContainerOutcome, FailureReport, PodSnapshot, Started

__all__ = ["pod_started", "started_of"]

# The runtime could not start the process (docker, containerd): an exit code, but no run.
_NOT_RUN_REASONS: Final = frozenset({"ContainerCannotRun", "StartError"})


def _ran(c: ContainerOutcome) -> bool:
    if c.restart_count > 0:
        return True
    ended = c.exit_code is not None or bool(c.signal)
    return ended and c.terminated_reason not in _NOT_RUN_REASONS


def _was_ready(pod: PodSnapshot) -> bool:
    # Kept after the pod failed: a pod garbage-collected with its node still shows it.
    return any(
        (c := pod.condition(kind)) is not None and c.status == "True"
        for kind in ("ContainersReady", "Ready")
    )


def pod_started(pod: PodSnapshot) -> Started:
    if any(_ran(c) for c in pod.containers) or pod.phase in ("Running", "Succeeded"):
        return Started.YES
    if _was_ready(pod):
        return Started.YES
    if rejected_at_admission(pod):
        return Started.NO
    if pod.phase == "Pending" and not pod.node_name:
        return Started.NO  # never scheduled
    if pod.containers and never_ran(pod):
        return Started.NO
    if pod.containers and all(c.terminated_reason in _NOT_RUN_REASONS for c in pod.containers):
        return Started.NO
    if pod.phase == "Pending" and not pod.containers:
        return Started.NO  # on a node, but the kubelet reported no container yet
    return Started.UNKNOWN


def started_of(report: FailureReport) -> Started:
    """Whether the Job's workload started, over all its pods (see the module docstring)."""
    if report.job.succeeded > 0:
        return Started.YES
    verdicts = [pod_started(pod) for pod in report.pods]
    if Started.YES in verdicts:
        return Started.YES
    if not verdicts or Started.UNKNOWN in verdicts:
        return Started.UNKNOWN
    # The Job controller counts a pending pod it deleted (deadline, failure) as failed too.
    failed_seen = sum(1 for pod in report.pods if pod.phase != "Succeeded")
    if report.job.failed > failed_seen:
        return Started.UNKNOWN  # failed pods already deleted: they may have run
    return Started.NO
