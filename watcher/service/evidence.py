"""Late evidence: a failed Job's failed pods that the pod watch has not delivered.

The Job watch can be ahead of the pod watch, or the pod watch behind on a reconnect (after an
apiserver restart it relists): classified then, the Job would be "unknown", or take a stale
Pending pod for the cause. The pipeline waits `pipeline.evidence_wait_s` for the watch, then
reads the Job's pods from the API once (`LatePods.read`) and classifies with what it found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from structlog.typing import FilteringBoundLogger

from watcher.core.errors import KubeAPIError, KubeForbidden, KubeUnauthorized
from watcher.core.model import FailureReport, JobRef
from watcher.core.rawjson import RawObject
from watcher.kit.metrics import Metrics
from watcher.service.ports import PodsPort

__all__ = ["LatePods", "failed_pods_missing"]

DENIED_PATIENCE_S: Final = 60.0
"""How long a refused (401/403) read is tried again before the Job is classified without it:
right after an apiserver restart its authorizer refuses for a few seconds, exactly when the
pod watch lags and the read matters."""
DENIED_AGAIN_S: Final = 2.0
"""Wait before reading again after a 401/403."""


def failed_pods_missing(report: FailureReport, max_pods_per_job: int) -> bool:
    """Fewer failed pods in than the Job counts failed (up to as many as are kept per Job)."""
    wanted = min(report.job.failed, max_pods_per_job)
    seen = sum(1 for p in report.pods if p.phase == "Failed" or p.deleted)
    return seen < wanted


class LatePods:
    """Reads a failed Job's pods from the API, and counts what the reads found."""

    def __init__(self, pods: PodsPort, *, metrics: Metrics, logger: FilteringBoundLogger) -> None:
        self.pods = pods
        self.metrics = metrics
        self.log = logger

    async def read(self, job: JobRef, *, waited_s: float) -> Sequence[RawObject] | None:
        """The Job's pods now; () if they cannot be read; None: read again shortly.

        A transient error raises (the writer backs off and the Job is read again); a 401/403
        answers None for up to DENIED_PATIENCE_S; any other refusal, or one that lasts, is
        logged and counted, and the Job is classified with what the watch delivered.
        """
        try:
            return await self.pods.of_job(job.namespace, job.uid)
        except KubeAPIError as exc:
            if exc.transient:
                raise
            if isinstance(exc, KubeForbidden | KubeUnauthorized) and waited_s < DENIED_PATIENCE_S:
                self.log.info(
                    "failed_job_pods_read_refused", error=str(exc), again_in_s=DENIED_AGAIN_S
                )
                return None
            self.metrics.pod_reads.labels(result="error").inc()
            self.log.warning("failed_job_pods_unreadable", error=str(exc))
            return ()

    def found(self, fresh: FailureReport, *, pods: int, max_pods_per_job: int) -> None:
        """Count and log what a read gave: `fresh` is the report with the read pods in."""
        complete = not failed_pods_missing(fresh, max_pods_per_job)
        self.metrics.pod_reads.labels(result="found" if complete else "missing").inc()
        self.log.info("failed_job_pods_read_from_api", pods=pods, complete=complete)
