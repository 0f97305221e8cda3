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


def build_corpus(copies: int, scenarios: list[dict[str, Any]] | None = None) -> Corpus:
    """`copies` copies of every captured scenario, copy after copy, in captured order."""
    if copies < 1:
        raise ValueError("copies must be at least 1")
    scenarios = scenarios if scenarios is not None else load_scenarios()
    corpus = Corpus(copies=copies, scenarios=len(scenarios))
    rv = 1  # the empty initial list is at rv 1
    for copy in range(copies):
        for scenario in scenarios:
            failed: set[str] = set()
            for resource, etype, obj in _copy(scenario, copy):
                rv += 1
                obj["metadata"]["resourceVersion"] = str(rv)
                corpus.streams[resource].append(Stored(rv, etype, obj))
                if resource == "jobs" and is_failed_job(obj):
                    failed.add(obj["metadata"]["uid"])
            corpus.failed_jobs += len(failed)
    return corpus
