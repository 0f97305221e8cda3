"""What the pipeline makes of a watched object, for tests comparing the two projection paths."""

from __future__ import annotations

from typing import Any

from watcher.core import project, snapshot
from watcher.service.pipeline import EVIDENCE_EVENT_KINDS

KINDS = ("jobs", "pods", "events", "nodes")


def by_snapshot(kind: str, raw: Any) -> object:
    """A dict's projection by `watcher.core.snapshot` alone: the reference ("malformed" for an
    object without identity, None for one the pipeline does not keep)."""
    try:
        if kind == "jobs":
            return snapshot.job_snapshot(raw)
        if kind == "pods":
            return snapshot.job_pod(raw, deleted=False)
        if kind == "events":
            record = snapshot.event_record_about(raw, EVIDENCE_EVENT_KINDS)
            return None if record is None else (snapshot.namespace_of(raw), record)
        return snapshot.node_state(raw)
    except snapshot.MalformedObject:
        return "malformed"


def by_project(kind: str, obj: Any) -> object:
    """What the pipeline gets from `watcher.core.project`, typed object or dict."""
    try:
        if kind == "jobs":
            return project.job_snapshot(obj)
        if kind == "pods":
            return project.job_pod(obj, deleted=False)
        if kind == "events":
            return project.event_about(obj, EVIDENCE_EVENT_KINDS)
        return project.node_state(obj)
    except snapshot.MalformedObject:
        return "malformed"
