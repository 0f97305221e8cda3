"""ScopedJobs: Job creates and deletes outside scope are refused before any API call."""

from __future__ import annotations

import pytest
import structlog
from structlog.testing import capture_logs

from tests.support.fakes import FakeJobs
from watcher.core.errors import KubeAPIError, KubeInvalid
from watcher.core.settings import ScopeSettings
from watcher.kit.metrics import Metrics
from watcher.service.scope import OutOfScope, ScopedJobs, namespace_allowed

EXPLICIT = ScopeSettings(namespaces=("batch", "etl"))
SELECTOR = ScopeSettings(namespace_label_selector="team=data")
EVERYWHERE = ScopeSettings()

# (scope, namespaces the selector matched, namespace, allowed)
CASES = [
    (EXPLICIT, None, "batch", True),
    (EXPLICIT, None, "kube-system", False),
    (SELECTOR, frozenset({"batch"}), "batch", True),
    (SELECTOR, frozenset({"batch"}), "kube-system", False),
    (SELECTOR, frozenset(), "batch", False),
    (SELECTOR, None, "batch", None),  # not listed yet: unknown, not allowed
    (EVERYWHERE, None, "kube-system", True),
]


@pytest.mark.parametrize(("scope", "selected", "namespace", "allowed"), CASES)
def test_namespace_allowed(
    scope: ScopeSettings, selected: frozenset[str] | None, namespace: str, allowed: bool | None
) -> None:
    assert namespace_allowed(namespace, scope, selected) is allowed


def scoped(
    scope: ScopeSettings, selected: frozenset[str] | None = None
) -> tuple[ScopedJobs, FakeJobs, Metrics]:
    inner, metrics = FakeJobs(), Metrics()
    jobs = ScopedJobs(
        inner,
        scope=scope,
        selected=lambda: selected,
        metrics=metrics,
        logger=structlog.get_logger(),
    )
    return jobs, inner, metrics


BODY = {"metadata": {"name": "evil"}, "spec": {}}


async def test_a_create_outside_scope_is_refused_counted_and_logged() -> None:
    jobs, inner, metrics = scoped(EXPLICIT)
    with capture_logs() as logs, pytest.raises(OutOfScope) as caught:
        await jobs.create("kube-system", BODY)
    # A KubeInvalid: the retry loop dead-letters it with the reason, as it does a 422
    assert isinstance(caught.value, KubeInvalid) and not caught.value.transient
    assert "outside kube-dlq's scope" in caught.value.reason
    assert inner.jobs == {}
    assert (
        metrics.registry.get_sample_value(
            "kube_dlq_out_of_scope_refused_total", {"action": "create"}
        )
        == 1
    )
    assert [(e["event"], e["namespace"]) for e in logs] == [
        ("job_out_of_scope_refused", "kube-system")
    ]


async def test_a_delete_outside_scope_is_refused() -> None:
    jobs, inner, _ = scoped(SELECTOR, frozenset({"batch"}))
    inner.put({"metadata": {"namespace": "etl", "name": "stuck", "uid": "u"}})
    with pytest.raises(OutOfScope):
        await jobs.delete("etl", "stuck", uid="u")
    assert inner.deleted == []


async def test_before_the_selector_is_listed_a_create_is_deferred_not_refused() -> None:
    jobs, _, metrics = scoped(SELECTOR, None)
    with pytest.raises(KubeAPIError) as caught:
        await jobs.create("batch", BODY)
    assert caught.value.transient and not isinstance(caught.value, OutOfScope)
    assert (
        metrics.registry.get_sample_value(
            "kube_dlq_out_of_scope_refused_total", {"action": "create"}
        )
        is None
    )


async def test_in_scope_calls_pass_through() -> None:
    jobs, inner, _ = scoped(EXPLICIT)
    await jobs.create("batch", BODY)
    assert await jobs.get("batch", "evil") is not None
    assert await jobs.delete("batch", "evil")
    assert inner.deleted == [("batch", "evil", None)]
