"""The captured watch streams, scaled up: N copies of every scenario, each its own world.

A copy gets its own namespace (``<namespace>-c<copy>``), its own uids (every uid of the
scenario, wherever it appears: labels, ownerReferences, involvedObject) and its own nodes
(``<node>-c<copy>``, wherever the name appears: spec.nodeName, Event names). So N copies are
N times the objects a consumer has to track, not N replays of the same object, and every
copy's failed Job is a distinct failure to write.

resourceVersions are given anew, one counter across all kinds in stream order (as etcd
does), so each resource's stream is strictly increasing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CAPTURED = Path(__file__).resolve().parents[2] / "tests" / "data" / "captured"
RESOURCES = ("jobs", "pods", "events", "nodes")
JOB_PODS_LABEL = "batch.kubernetes.io/controller-uid"
"""The daemon watches pods with this label only (watcher.adapters.kube.watch.JOB_PODS)."""
_NAMESPACE = uuid.UUID("6f1e6f55-9c4b-4b8e-9d0f-3f6c2a4b1d10")


@dataclass(frozen=True, slots=True)
class Stored:
    """One watch event as served: its resourceVersion and the object after rewriting."""

    rv: int
    type: str
    obj: dict[str, Any]


@dataclass(slots=True)
class Corpus:
    """Every resource's stream, and what a consumer of it must end up writing."""

    copies: int
    streams: dict[str, list[Stored]] = field(default_factory=lambda: {r: [] for r in RESOURCES})
    failed_jobs: int = 0
    """Distinct Jobs whose stream reaches a Failed=True condition: one outcome each."""
    scenarios: int = 0

    @property
    def events(self) -> int:
        return sum(len(s) for s in self.streams.values())

    @property
    def watched_events(self) -> int:
        """Events of the daemon's four watches: pods of Jobs only (a few captured pods are
        not a Job's)."""
        pods = sum(1 for s in self.streams["pods"] if JOB_PODS_LABEL in _labels(s.obj))
        return self.events - len(self.streams["pods"]) + pods

    @property
    def last_rv(self) -> int:
        return max((s[-1].rv for s in self.streams.values() if s), default=1)


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def load_scenarios(directory: Path = CAPTURED) -> list[dict[str, Any]]:
    scenarios = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    if not scenarios:
        raise SystemExit(f"no captured scenarios under {directory}")
    return scenarios


def is_failed_job(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in conditions)


def _rewrites(scenario: dict[str, Any], tag: str) -> list[tuple[str, str]]:
    """Textual (old, new) pairs: uids and node names are distinctive enough to replace."""
    pairs: dict[str, str] = {}
    for item in scenario["watch"]:
        meta = item["object"].get("metadata") or {}
        uid = meta.get("uid")
        if uid:
            pairs[uid] = str(uuid.uuid5(_NAMESPACE, f"{tag}/{uid}"))
        if item["resource"] == "nodes" and meta.get("name"):
            pairs[meta["name"]] = f"{meta['name']}-{tag}"
    # Longest first, so a name that prefixes another is not replaced inside it.
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _copy(scenario: dict[str, Any], copy: int) -> list[tuple[str, str, dict[str, Any]]]:
    tag = f"c{copy}"
    text = json.dumps(scenario["watch"])
    for old, new in _rewrites(scenario, tag):
        text = text.replace(f'"{old}', f'"{new}')  # a JSON string starting with it
    out = []
    for item in json.loads(text):
        obj = item["object"]
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace"):
            meta["namespace"] = f"{meta['namespace']}-{tag}"
        involved = obj.get("involvedObject")
        if isinstance(involved, dict) and involved.get("namespace"):
            involved["namespace"] = f"{involved['namespace']}-{tag}"
        out.append((item["resource"], item["type"], obj))
    return out


def fails(scenario: dict[str, Any]) -> bool:
    """True when one of the scenario's Jobs reaches Failed=True."""
    return any(
        item["resource"] == "jobs" and is_failed_job(item["object"]) for item in scenario["watch"]
    )


def build_corpus(
    copies: int, scenarios: list[dict[str, Any]] | None = None, quiet_copies: int = 0
) -> Corpus:
    """`copies` copies of every captured scenario, copy after copy, in captured order, and
    `quiet_copies` more of the scenarios in which no Job fails, spread evenly between them
    (as many before each copy): more watch events per failure, as in a cluster where most
    Jobs do not fail."""
    if copies < 1 or quiet_copies < 0:
        raise ValueError("copies must be at least 1 and quiet_copies at least 0")
    scenarios = scenarios if scenarios is not None else load_scenarios()
    quiet = [s for s in scenarios if not fails(s)]
    if quiet_copies and not quiet:
        raise ValueError("no captured scenario without a failed Job to make quiet copies of")
    corpus = Corpus(copies=copies, scenarios=len(scenarios))
    rv = 1  # the empty initial list is at rv 1
    tag = 0
    for copy in range(copies):
        extra = (copy + 1) * quiet_copies // copies - copy * quiet_copies // copies
        for chosen in [quiet] * extra + [scenarios]:
            for scenario in chosen:
                rv = _append(corpus, _copy(scenario, tag), rv)
            tag += 1
    return corpus


def _append(corpus: Corpus, items: list[tuple[str, str, dict[str, Any]]], rv: int) -> int:
    """Add one copy of a scenario to `corpus` from resourceVersion `rv` on; the last one."""
    failed: set[str] = set()
    for resource, etype, obj in items:
        rv += 1
        obj["metadata"]["resourceVersion"] = str(rv)
        corpus.streams[resource].append(Stored(rv, etype, obj))
        if resource == "jobs" and is_failed_job(obj):
            failed.add(obj["metadata"]["uid"])
    corpus.failed_jobs += len(failed)
    return rv
