"""Job creates and deletes only in namespaces within scope, whatever a ticket says.

`ScopedJobs` wraps the `JobsPort` that the retry loop and the stuck-Job path are given. The
pipeline only hands in-scope Jobs on, but a retry ticket is read back from Redis, and its
namespace is whatever was written there (or is no longer in scope: the config changed, a
namespace lost its label). So, independently of signing, a create or delete outside scope is
refused here with `OutOfScope`, a `KubeInvalid`: the retry loop settles it as it settles a 422
(the ticket becomes a dead letter with the reason, never a silent drop), and the stuck-Job
path logs the refusal. Each refusal is counted (``kube_dlq_out_of_scope_refused_total``) and
logged.

Scope is the explicit ``scope.namespaces`` list, or else the namespaces the label selector
matched at the daemon's last refresh. With a selector whose first refresh has not happened,
nothing is known yet: the call raises a transient error and the retry is deferred, not lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from structlog.typing import FilteringBoundLogger

from watcher.core.annotations import ANNOTATION_ENABLED
from watcher.core.errors import KubeInvalid, KubeUnavailable
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.rawjson import RawObject
from watcher.core.settings import ScopeSettings
from watcher.kit.metrics import Metrics
from watcher.service.ports import JobsPort

__all__ = ["OutOfScope", "ScopedJobs", "in_scope", "namespace_allowed"]


def in_scope(
    job: JobSnapshot, scope: ScopeSettings, selected_namespaces: frozenset[str] | None
) -> bool:
    """Whether kube-dlq handles `job` (config `scope`; `selected_namespaces` are those the
    namespace label selector matched, None when there is no selector)."""
    ns = job.ref.namespace
    if scope.namespaces and ns not in scope.namespaces:
        return False
    if scope.namespace_label_selector and (
        selected_namespaces is None or ns not in selected_namespaces
    ):
        return False  # fails closed: a selector whose matches are not known yet matches none
    if selected_namespaces is not None and ns not in selected_namespaces:
        return False
    flag = dict(job.labels).get(ANNOTATION_ENABLED) or job.annotation(ANNOTATION_ENABLED)
    if flag is not None and flag.lower() == "false":
        return False
    return scope.jobs != "opt-in" or (flag is not None and flag.lower() == "true")


class OutOfScope(KubeInvalid):
    """A Job create or delete in a namespace outside scope, refused before any API call."""


class ScopeUnknown(KubeUnavailable):
    """The label selector's namespaces are not listed yet; try again later."""


def namespace_allowed(
    namespace: str, scope: ScopeSettings, selected: frozenset[str] | None
) -> bool | None:
    """Whether `namespace` is in scope; None when a selector's matches are not known yet."""
    if scope.namespaces:
        return namespace in scope.namespaces
    if scope.namespace_label_selector:
        return None if selected is None else namespace in selected
    return True


class ScopedJobs:
    """A `JobsPort` that refuses creates and deletes outside scope; reads pass through."""

    def __init__(
        self,
        inner: JobsPort,
        *,
        scope: ScopeSettings,
        selected: Callable[[], frozenset[str] | None],
        metrics: Metrics,
        logger: FilteringBoundLogger,
    ) -> None:
        """`selected` answers the namespaces the label selector matched last (None: not yet
        listed, or no selector)."""
        self._inner = inner
        self._scope = scope
        self._selected = selected
        self._metrics = metrics
        self._log = logger

    async def get(self, namespace: str, name: str) -> RawObject | None:
        return await self._inner.get(namespace, name)

    async def create(self, namespace: str, body: Mapping[str, Any]) -> RawObject:
        self._check("create", namespace, _name(body))
        return await self._inner.create(namespace, body)

    async def delete(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self._check("delete", namespace, name)
        return await self._inner.delete(namespace, name, uid=uid)

    async def warn(self, job: JobRef, reason: str, message: str) -> None:
        await self._inner.warn(job, reason, message)

    async def remove_finalizer(self, job: JobRef, finalizer: str) -> bool:
        # Not scope-checked: it only ever undoes kube-dlq's own finalizer on a retry Job it
        # created (uid-tested), and a namespace that left the scope since must not keep that
        # Job Terminating for good.
        return await self._inner.remove_finalizer(job, finalizer)

    def _check(self, action: str, namespace: str, name: str) -> None:
        allowed = namespace_allowed(namespace, self._scope, self._selected())
        if allowed:
            return
        if allowed is None:
            raise ScopeUnknown(
                f"{action} Job: the namespaces matching scope.namespace_label_selector are not "
                "listed yet",
                kind="Job",
                namespace=namespace,
                name=name,
            )
        self._metrics.out_of_scope.labels(action=action).inc()
        self._log.warning(
            "job_out_of_scope_refused", action=action, namespace=namespace, job=name[:253]
        )
        raise OutOfScope(
            f"{action} Job refused",
            kind="Job",
            namespace=namespace,
            name=name,
            reason=f"namespace {namespace!r} is outside kube-dlq's scope",
        )


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else ""
