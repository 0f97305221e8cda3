"""Redrive: re-create a dead-lettered Job by hand, exactly once (docs/redrive.md). Pure.

The values and rules shared by ``kube-dlq dlq redrive`` (watcher.service.redrive) and the
daemon's settling of redriven Jobs (watcher.service.redrive_settle):

* `RedrivePlan`: what a claim decided before the POST (namespace, the deterministic Job
  name, a random token, the redrive number, the overrides). It is stored sealed in the
  redriving record, so a second run creates the same Job, and nothing else, whatever was
  written to Redis since;
* `redrive_job_name`: ``<original>-<hash of the entry id>-d<n>``, the same for every run of
  one redrive of one entry, so a second POST gets 409 instead of a second Job;
* `redrive_manifest`: the stored manifest cleaned again (``replayable_manifest``), without the
  lineage of an earlier automatic retry (the redriven Job is an original for the retry
  budget: a manual redrive does not use it up), with the pointer annotations, the
  ``redrive-ack`` finalizer and the overrides;
* `refusal`: why an entry must not be redriven (another controller manages it, too many
  redrives); `index_refusal`: why ``--failed-indexes`` cannot apply (not Indexed, none
  recorded);
* `redrive_pointer`: the pointer read back from a Job, hostile input, parsed strictly;
* `failed_again`: the dead letter of a redriven Job that failed: ``redrive_count`` + 1, a link
  to the earlier entry, the history with this attempt.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from watcher.core.annotations import (
    ANNOTATION_MEMORY_BUMP,
    ANNOTATION_REDRIVE_OF,
    ANNOTATION_REDRIVE_TOKEN,
    FINALIZER_REDRIVE_ACK,
)
from watcher.core.indexes import format_indexes, is_indexed, parse_indexes
from watcher.core.lineage import LINEAGE_ANNOTATIONS, TOKEN_RE
from watcher.core.manifest import MAX_JOB_NAME, replayable_manifest
from watcher.core.memory import format_quantity, parse_quantity
from watcher.core.model import AttemptRecord, Classification, DeadLetter, JobRef
from watcher.core.rawjson import RawObject

__all__ = [
    "JOB_CONTROLLER",
    "NO_OVERRIDES",
    "ORIGINAL_INDEXES_ENV",
    "Claim",
    "ClaimStatus",
    "Overrides",
    "RedrivePlan",
    "RedriveRecord",
    "decode_plan",
    "encode_plan",
    "failed_again",
    "index_refusal",
    "is_this_job",
    "original_name_of",
    "parse_image_override",
    "redrive_job_name",
    "redrive_manifest",
    "redrive_pointer",
    "refusal",
]

JOB_CONTROLLER: Final = "kubernetes.io/job-controller"
"""``spec.managedBy`` of a Job the built-in controller runs (also what an absent field means)."""

_ENTRY_ID_RE: Final = re.compile(r"[a-z0-9._-]{1,63}/[0-9]{1,20}-[0-9]{1,20}")
_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HASH_LEN: Final = 6
ORIGINAL_INDEXES_ENV: Final = "KUBE_DLQ_ORIGINAL_INDEXES"
"""Set on every container by ``--failed-indexes``: the original indexes, ``"1,3,4"``."""
_REASON_CHARS: Final = 500


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a redrive changes in the stored manifest; recorded in the entry's history."""

    memory: str = ""
    """A memory quantity: every container's memory limit, and requests above it, become it."""
    image: str = ""
    """An image for the only container, or ``<container>=<image>``."""
    failed_indexes: str = ""
    """``--failed-indexes``: the original indexes the new Job runs, ``"1,3"`` (one entry's)."""

    def describe(self) -> str:
        """``memory=2Gi, image=app:v2, failed-indexes=1,3``; "" without overrides."""
        parts = (
            ("memory", self.memory),
            ("image", self.image),
            ("failed-indexes", self.failed_indexes),
        )
        return ", ".join(f"{key}={value}" for key, value in parts if value)


NO_OVERRIDES: Final = Overrides()


@dataclass(frozen=True, slots=True)
class RedrivePlan:
    """The create intent of one redrive of one entry, fixed when the entry is claimed."""

    namespace: str
    name: str
    token: str
    redrive: int
    """1 for the first redrive of the Job's lineage (the entry's ``redrive_count`` + 1)."""
    overrides: Overrides = NO_OVERRIDES


def encode_plan(plan: RedrivePlan) -> bytes:
    doc = dataclasses.asdict(plan)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_plan(raw: bytes) -> RedrivePlan:
    """What `encode_plan` wrote, or ValueError."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"redrive plan is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("redrive plan is not a JSON object")
    over = doc.get("overrides")
    over = over if isinstance(over, dict) else {}
    texts = [doc.get(k) for k in ("namespace", "name", "token")]
    texts += [over.get(k, "") for k in ("memory", "image", "failed_indexes")]
    number = doc.get("redrive")
    if not all(isinstance(t, str) for t in texts) or type(number) is not int or number < 1:
        raise ValueError("redrive plan: a field is missing or of the wrong type")
    namespace, name, token, memory, image, indexes = (str(t) for t in texts)
    if indexes and not parse_indexes(indexes):
        raise ValueError("redrive plan: failed_indexes is not a list of indexes")
    return RedrivePlan(namespace, name, token, number, Overrides(memory, image, indexes))


def redrive_job_name(original_name: str, entry_id: str, redrive: int) -> str:
    """``<original>-<hash>-d<redrive>``, at most 63 characters (a label value).

    The hash is of the entry id, so two entries of one fixed-name Job get two names, and every
    run of one entry's redrive the same one. A long original is cut (and trimmed of ``-``/``.``)
    to make room; the hash keeps names distinct whatever was cut.
    """
    digest = hashlib.sha256(entry_id.encode()).hexdigest()[:_HASH_LEN]
    tail = f"-{digest}-d{redrive}"
    stem = original_name[: MAX_JOB_NAME - len(tail)].rstrip("-.")
    return f"{stem}{tail}" if stem else tail[1:]


def original_name_of(letter: DeadLetter) -> str:
    """The name the lineage started with: the first attempt's (when it is a valid name)."""
    first = min(letter.history, key=lambda r: r.attempt, default=None)
    if first is not None and _DNS_LABEL_RE.fullmatch(first.job_name or ""):
        return first.job_name
    return letter.job.name


def refusal(letter: DeadLetter, *, max_redrives: int) -> str:
    """Why `letter` must not be redriven, or "" when it may."""
    spec = letter.manifest.get("spec")
    managed_by = spec.get("managedBy") if isinstance(spec, dict) else None
    if managed_by is not None and managed_by != JOB_CONTROLLER:
        shown = str(managed_by)[:100]
        return f"spec.managedBy is {shown!r}: another controller runs this Job, not redriven"
    if letter.redrive_count >= max_redrives:
        return (
            f"redriven {letter.redrive_count} times already (--max-redrives {max_redrives}): "
            "it keeps failing; look at the evidence first"
        )
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
        return "no replayable manifest stored (spec.template missing)"
    return ""


def parse_image_override(text: str) -> tuple[str, str]:
    """(container or "", image) from ``IMG`` or ``NAME=IMG``; ValueError when malformed."""
    name, sep, image = text.partition("=")
    if not sep:
        name, image = "", text
    if not image or any(c.isspace() for c in image) or (sep and not _DNS_LABEL_RE.fullmatch(name)):
        raise ValueError(f"--image: expected IMAGE or CONTAINER=IMAGE, got {text!r}")
    return name, image


def redrive_manifest(letter: DeadLetter, plan: RedrivePlan, entry_id: str) -> RawObject:
    """The Job a redrive creates (see the module docstring). ValueError: an override does not
    fit the manifest (a container name that is not there, an image for several containers)."""
    body = replayable_manifest(letter.manifest)
    meta = body["metadata"]
    meta["name"] = plan.name
    meta["namespace"] = plan.namespace
    annotations = {
        key: value
        for key, value in dict(meta.get("annotations") or {}).items()
        if key not in LINEAGE_ANNOTATIONS and key != ANNOTATION_MEMORY_BUMP
    }
    annotations[ANNOTATION_REDRIVE_OF] = entry_id
    annotations[ANNOTATION_REDRIVE_TOKEN] = plan.token
    meta["annotations"] = annotations
    meta["finalizers"] = [FINALIZER_REDRIVE_ACK]
    template = body["spec"].get("template")
    pod = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(pod, dict):
        raise ValueError("the stored manifest has no pod template spec")
    if plan.overrides.memory:
        _set_memory(pod, parse_quantity(plan.overrides.memory))
    if plan.overrides.image:
        _set_image(pod, *parse_image_override(plan.overrides.image))
    if plan.overrides.failed_indexes:
        _only_indexes(body["spec"], pod, plan.overrides.failed_indexes)
    return body


def index_refusal(letter: DeadLetter) -> str:
    """Why ``--failed-indexes`` cannot redrive `letter`, or "" when it can."""
    if not is_indexed(letter.manifest):
        return "--failed-indexes: the Job is not Indexed (spec.completionMode), not redriven"
    if not letter.failed_indexes:
        return "--failed-indexes: no failed indexes were recorded for this entry, not redriven"
    return ""


def _only_indexes(spec: dict[str, Any], pod: dict[str, Any], original: str) -> None:
    """Run only the `original` indexes: index i of the new Job is the i-th of them, which the
    workload reads from ORIGINAL_INDEXES_ENV (docs/redrive.md)."""
    indexes = parse_indexes(original)
    if not indexes:
        raise ValueError(f"--failed-indexes: not a list of indexes: {original[:100]!r}")
    count = len(indexes)
    spec["completionMode"] = "Indexed"
    spec["completions"] = count
    parallelism = spec.get("parallelism")
    spec["parallelism"] = min(parallelism if type(parallelism) is int else 1, count)
    limit = spec.get("maxFailedIndexes")
    if type(limit) is int and limit > count:
        spec["maxFailedIndexes"] = count  # the API refuses more than completions
    # Its rules name the original indexes, which the new Job numbers 0..count-1.
    spec.pop("successPolicy", None)
    shown = format_indexes(indexes)
    for key in ("initContainers", "containers"):
        found = pod.get(key)
        for container in found if isinstance(found, list) else ():
            if not isinstance(container, dict):
                continue
            env = container.get("env")
            kept = [e for e in env if not _is_env(e)] if isinstance(env, list) else []
            container["env"] = [*kept, {"name": ORIGINAL_INDEXES_ENV, "value": shown}]


def _is_env(item: object) -> bool:
    return isinstance(item, dict) and item.get("name") == ORIGINAL_INDEXES_ENV


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    found = pod.get("containers")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def _set_memory(pod: dict[str, Any], n_bytes: int) -> None:
    quantity = format_quantity(n_bytes)
    for container in _containers(pod):
        resources = container.get("resources")
        if not isinstance(resources, dict):
            resources = container["resources"] = {}
        limits = resources.get("limits")
        if not isinstance(limits, dict):
            limits = resources["limits"] = {}
        limits["memory"] = quantity
        requests = resources.get("requests")
        if isinstance(requests, dict) and "memory" in requests:
            try:
                too_much = parse_quantity(str(requests["memory"])) > n_bytes
            except ValueError:
                too_much = True
            if too_much:
                requests["memory"] = quantity  # a request above its limit is invalid


def _set_image(pod: dict[str, Any], container_name: str, image: str) -> None:
    containers = _containers(pod)
    if container_name:
        chosen = [c for c in containers if c.get("name") == container_name]
        if not chosen:
            raise ValueError(f"--image: the Job has no container {container_name!r}")
    elif len(containers) != 1:
        raise ValueError("--image: the Job has several containers: use CONTAINER=IMAGE")
    else:
        chosen = containers
    chosen[0]["image"] = image


def redrive_pointer(annotations: Mapping[str, str]) -> tuple[str, str] | None:
    """(entry id, token) from a Job's redrive annotations when both are well-formed (they
    name a Redis key: nothing else is looked up), else None."""
    entry_id = annotations.get(ANNOTATION_REDRIVE_OF, "")
    token = annotations.get(ANNOTATION_REDRIVE_TOKEN, "")
    if not isinstance(entry_id, str) or not isinstance(token, str):
        return None
    if _ENTRY_ID_RE.fullmatch(entry_id) and TOKEN_RE.fullmatch(token):
        return entry_id, token
    return None


def is_this_job(plan: RedrivePlan, recorded_uid: str, job: JobRef, token: str) -> bool:
    """Whether `job` (carrying `token`) is the one a redriving record describes: same
    namespace and name, and the recorded uid, or the plan's token while no uid is recorded
    (the run that created it was stopped before recording it). Annotations are anyone's to
    write; the uid is the apiserver's and the token unknown before kube-dlq's Job exists."""
    if (job.namespace, job.name) != (plan.namespace, plan.name):
        return False
    if recorded_uid:
        return recorded_uid == job.uid
    return bool(token) and token == plan.token


def failed_again(
    earlier: DeadLetter,
    entry_id: str,
    plan: RedrivePlan,
    *,
    job: JobRef,
    classification: Classification,
    failed_at: float,
    report: RawObject,
    manifest: RawObject,
) -> DeadLetter:
    """The dead letter of a redriven Job that failed: back on the earlier entry's queue."""
    overrides = plan.overrides.describe()
    reason = f"redrive {plan.redrive} failed: {classification.reason}"[:_REASON_CHARS]
    record = AttemptRecord(
        attempt=max((r.attempt for r in earlier.history), default=earlier.attempts) + 1,
        job_name=job.name,
        job_uid=job.uid,
        failure_class=classification.failure_class,
        reason=f"{reason} ({overrides})" if overrides else reason,
        failed_at=failed_at,
        memory=plan.overrides.memory,
    )
    clean = copy.deepcopy(manifest)
    return dataclasses.replace(
        earlier,
        job=job,
        failure_class=classification.failure_class,
        reason=reason,
        attempts=earlier.attempts + 1,
        failed_at=failed_at,
        evidence=classification.evidence,
        manifest=clean,
        history=(*earlier.history, record),
        report=report,
        started=classification.started,
        redrive_count=plan.redrive,
        redrive_of=entry_id,
        # The earlier indexes are not this Job's: a --failed-indexes redrive renumbers them.
        failed_indexes=(),
    )


class ClaimStatus(enum.Enum):
    CLAIMED = 1
    """Taken off the queue now, with the plan given."""
    RESUMED = 2
    """Claimed before (an interrupted run): the record's own plan applies."""
    GONE = 0
    """Neither queued nor being redriven any more."""
    NO_DATA = -1
    """The stream entry has no data field."""


@dataclass(frozen=True, slots=True)
class Claim:
    status: ClaimStatus
    plan: RedrivePlan | None = None
    """None when the stored plan does not open (forged, unreadable): see ``error``."""
    begins: int = 0
    """How many times this record was claimed or resumed (1: this run's POST is the first)."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class RedriveRecord:
    """A redriving record as read back: the entry it holds and its plan, each checked."""

    entry_id: str
    letter: DeadLetter | None
    plan: RedrivePlan | None
    uid: str = ""
    begins: int = 0
    error: str = ""
    """Why ``letter`` or ``plan`` is None (unsigned, forged, unreadable)."""
    forged: bool = False
