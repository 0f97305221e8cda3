"""The stored captures still match what Kubernetes writes today.

tests/unit/test_classify_captured.py classifies the files in tests/data/captured. Here two
cheap scenarios are provoked again, live, on the session's control plane, and the fresh
recording must classify exactly as the stored one (same class, same reason and evidence up to
generated names) and carry the same fields, so a Kubernetes or kwok upgrade that changes what
is written fails here instead of leaving the stored data silently out of date.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.devcluster.state import ClusterState
from tests.support.capture import capture, load, nodes_schedulable, replay

pytestmark = pytest.mark.cluster

CAPTURED = Path(__file__).resolve().parents[1] / "data" / "captured"
FRESH = ("exit-1-plain", "oom-killed")


async def test_fresh_captures_classify_like_the_stored_ones(
    admin_api: client.ApiClient, cluster: ClusterState
) -> None:
    await nodes_schedulable(admin_api, cluster.nodes)  # as when the stored files were made
    fresh = await asyncio.gather(*(capture(admin_api, name) for name in FRESH))

    for name, live in zip(FRESH, fresh, strict=True):
        stored = load(CAPTURED / f"{name}.json")
        assert live["kubernetes_version"] == stored["kubernetes_version"], (
            f"{name}: tests/data/captured was recorded on Kubernetes "
            f"{stored['kubernetes_version']}; re-capture with "
            "`python -m tests.support.capture --out tests/data/captured`"
        )
        assert verdict(live) == verdict(stored), name
        assert job_outcome(live) == job_outcome(stored), name
        assert event_reasons(live) == event_reasons(stored), name
        # Nodes are shared with other tests (their taints and Events are not this Job's doing),
        # so the shape check covers what the Job's failure itself writes.
        for resource in ("jobs", "pods", "events"):
            assert field_paths(live, resource) == field_paths(stored, resource), (name, resource)


def verdict(record: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """The classification with the generated names (namespace, pod, node) made neutral."""
    got = replay(record)
    names = {got.report.job.ref.namespace: "<namespace>"}
    names |= {pod.name: "<pod>" for pod in got.report.pods}
    names |= {node.name: "<node>" for node in got.report.nodes}
    pattern = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))

    def neutral(text: str) -> str:
        return pattern.sub(lambda m: names[m.group(0)], text)

    cls = got.classification
    return str(cls.failure_class), neutral(cls.reason), tuple(map(neutral, cls.evidence))


def job_outcome(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The final Job's conditions: what the Job controller decided."""
    jobs = [e["object"] for e in record["watch"] if e["resource"] == "jobs"]
    conditions = jobs[-1]["status"].get("conditions") or []
    return [(c["type"], c.get("reason", ""), c.get("message", "")) for c in conditions]


def event_reasons(record: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(involved kind, type, reason) of the Events about the Job and its pods."""
    return {
        (e["object"]["involvedObject"]["kind"], e["object"].get("type", ""), e["object"]["reason"])
        for e in record["watch"]
        if e["resource"] == "events" and _about_the_job(e["object"], "events")
    }


def field_paths(record: dict[str, Any], resource: str) -> set[str]:
    """Every field path written into any recorded object of `resource` (for Events: about the
    Job or its pods), e.g. `status.containerStatuses[].state.terminated.exitCode`."""
    paths: set[str] = set()
    for entry in record["watch"]:
        if entry["resource"] == resource and _about_the_job(entry["object"], resource):
            paths.update(_paths(entry["object"], ""))
    return paths


def _about_the_job(obj: dict[str, Any], resource: str) -> bool:
    return resource != "events" or obj["involvedObject"]["kind"] in ("Job", "Pod")


def _paths(value: Any, prefix: str) -> Iterable[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for inner in value:
            yield from _paths(inner, f"{prefix}[]")
    else:
        yield prefix
