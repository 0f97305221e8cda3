"""Replayable Job manifests: clean a Job as the API returned it, and build its retry.

Pure: no I/O, no clock, never mutates its input, never raises on a malformed Job or
annotation (only on programming errors such as ``attempt < 2``).

``replayable_manifest`` keeps what the Job's owner wrote and drops what the apiserver and the
Job controller added, so the result can be POSTed again::

    kept     apiVersion, kind (batch/v1 Job when absent), metadata.name/namespace/labels/
             annotations, spec (suspend, ttlSecondsAfterFinished, podFailurePolicy, ... as is)
    dropped  status; metadata uid, resourceVersion, creationTimestamp, generation,
             managedFields, selfLink, ownerReferences, deletionTimestamp, finalizers, ...;
             annotations kubectl.kubernetes.io/last-applied-configuration and
             batch.kubernetes.io/job-tracking; spec.template.metadata.creationTimestamp;
             unless spec.manualSelector is true: spec.selector, spec.manualSelector and the
             generated labels (CONTROLLER_LABELS) on the Job and its pod template

The owner reference is not kept: a re-created Job is not adopted by its CronJob, so the caller
records the owner next to the manifest.

``retry_manifest`` turns a clean manifest into the Job for attempt ``n`` (2 = first retry):

* name ``<original>-r<n>`` (see ``retry_job_name``): the same for every firing of one ticket,
  so a second firing fails with AlreadyExists instead of running the Job twice;
* lineage annotations ``kube-dlq.io/original-name``, ``original-uid``, ``attempt``,
  ``first-failed-at`` and ``history`` (compact JSON, see ``encode_history``), for people: the
  handler takes the lineage from kube-dlq's own record (``watcher.core.lineage``), which
  ``retry-of`` and ``create-token`` point to;
* the finalizer ``kube-dlq.io/retry-ack``, removed once kube-dlq has recorded the Job;
* with ``avoid_node``, a required node affinity ``kubernetes.io/hostname NotIn [node]`` merged
  into every non-empty node selector term (or a new term when there is none).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from watcher.core.annotations import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_CREATE_TOKEN,
    ANNOTATION_FIRST_FAILED_AT,
    ANNOTATION_HISTORY,
    ANNOTATION_ORIGINAL_NAME,
    ANNOTATION_ORIGINAL_UID,
    ANNOTATION_RETRY_OF,
    FINALIZER_RETRY_ACK,
)
from watcher.core.errors import PolicyError
from watcher.core.model import AttemptRecord, RetryTicket
from watcher.core.plain import json_copy
from watcher.core.rawjson import RawMapping, RawObject
from watcher.core.records import HISTORY_SHAPE, decode_attempt, encode_attempt

__all__ = [
    "CONTROLLER_LABELS",
    "HOSTNAME_LABEL",
    "MAX_JOB_NAME",
    "REASON_MAX_CHARS",
    "Annotations",
    "History",
    "attempt_of",
    "encode_history",
    "first_failed_at_of",
    "history_from_annotations",
    "manifest_for_ticket",
    "replayable_manifest",
    "retry_job_name",
    "retry_manifest",
    "with_create_token",
]

MAX_JOB_NAME: Final = 63
"""A Job's name becomes the value of its pods' ``job-name`` label, and label values are at most
63 characters, so the apiserver rejects longer Job names."""

CONTROLLER_LABELS: Final = (
    "batch.kubernetes.io/controller-uid",
    "controller-uid",
    "batch.kubernetes.io/job-name",
    "job-name",
)
"""Labels the apiserver adds to a Job's pod template (and selector) unless manualSelector is
true. Replaying them would select the old Job's pods: the create is rejected (422) because the
regenerated selector no longer matches the template."""

HOSTNAME_LABEL: Final = "kubernetes.io/hostname"

REASON_MAX_CHARS: Final = 120
"""Reasons in the history annotation are cut to this length: the annotation lists every earlier
attempt (up to a few hundred with the largest budgets) and all of a Job's annotations together
must stay under 256 KiB; the full reason is in the dead letter and the logs."""

MAX_ATTEMPT: Final = 100_000
"""Attempt numbers above this in an annotation are treated as malformed (budgets cap at 100)."""

_DROPPED_ANNOTATIONS: Final = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "batch.kubernetes.io/job-tracking",
    }
)
_HASH_LEN: Final = 8
_SALT_LEN: Final = 6
_ERROR_VALUE_CHARS: Final = 200
_DNS_SUBDOMAIN_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_UID_RE: Final = re.compile(r"[A-Za-z0-9-]{1,128}")
_INT_RE: Final = re.compile(r"[0-9]{1,9}")

Annotations = RawMapping | Iterable[tuple[str, str]] | None
"""Annotations as a mapping (raw JSON) or as ``(key, value)`` pairs (``JobSnapshot``)."""


# --- cleaning ------------------------------------------------------------------------------------


def replayable_manifest(raw_job: RawMapping) -> RawObject:
    """A copy of ``raw_job`` (a Job as the API returned it) that can be created again.

    Idempotent: cleaning a clean manifest returns an equal one. Missing or mistyped fields are
    left out, never an error; the apiserver judges what is left when it is POSTed.
    """
    job = _mapping(raw_job)
    meta = _mapping(job.get("metadata"))
    spec = json_copy(dict(_mapping(job.get("spec"))))
    manual = spec.get("manualSelector") is True
    generated = () if manual else CONTROLLER_LABELS

    clean_meta: RawObject = {}
    for key in ("name", "namespace"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            clean_meta[key] = value
    labels = _strings(meta.get("labels"), drop=generated)
    annotations = _strings(meta.get("annotations"), drop=_DROPPED_ANNOTATIONS)
    if labels:
        clean_meta["labels"] = labels
    if annotations:
        clean_meta["annotations"] = annotations

    if not manual:
        spec.pop("selector", None)
        spec.pop("manualSelector", None)
    template = spec.get("template")
    if isinstance(template, dict):
        _clean_template_meta(template, drop=generated)

    api_version = job.get("apiVersion")
    kind = job.get("kind")
    return {
        "apiVersion": api_version if isinstance(api_version, str) and api_version else "batch/v1",
        "kind": kind if isinstance(kind, str) and kind else "Job",
        "metadata": clean_meta,
        "spec": spec,
    }


def _clean_template_meta(template: RawObject, *, drop: Iterable[str]) -> None:
    meta = template.get("metadata")
    if not isinstance(meta, dict):
        return
    meta.pop("creationTimestamp", None)
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key in drop:
            labels.pop(key, None)
        if not labels:
            del meta["labels"]
    if not meta:
        del template["metadata"]


# --- the retry Job -------------------------------------------------------------------------------


def retry_job_name(original_name: str, attempt: int, *, salt: str = "") -> str:
    """``<original>-r<attempt>``, shortened to at most 63 characters when needed.

    When ``<original>-r<attempt>`` is too long, the original is cut and an 8-hex-digit hash of
    the whole original name is put before the suffix: ``<cut original>-<hash>-r<attempt>``.
    The hash keeps two long names that share their first 50 characters apart; it depends on
    the original name only, so every attempt of one Job carries the same one. A cut that ends
    in ``-`` or ``.`` is trimmed so the result stays a valid DNS-1123 name.

    With `salt` (the ticket id, when the usual name is taken by a Job of another lineage, such
    as a re-created fixed-name Job's own retry), a hash of it goes before ``-r<attempt>``:
    ``<original>-<salt hash>-r<attempt>``. It is as deterministic as the usual name, so a
    second firing of the same ticket still collides with the first instead of running twice.
    """
    if attempt < 2:
        raise ValueError(f"a retry has attempt >= 2, got {attempt}")
    suffix = f"-r{attempt}"
    if salt:
        suffix = f"-{hashlib.sha256(salt.encode()).hexdigest()[:_SALT_LEN]}{suffix}"
    if len(original_name) + len(suffix) <= MAX_JOB_NAME:
        return original_name + suffix
    digest = hashlib.sha256(original_name.encode()).hexdigest()[:_HASH_LEN]
    keep = MAX_JOB_NAME - len(suffix) - _HASH_LEN - 1
    stem = original_name[:keep].rstrip("-.")
    return f"{stem}-{digest}{suffix}" if stem else f"{digest}{suffix}"


def retry_manifest(
    clean: RawMapping,
    *,
    attempt: int,
    original_name: str,
    original_uid: str,
    first_failed_at: float,
    history: tuple[AttemptRecord, ...],
    avoid_node: str = "",
    salt: str = "",
) -> RawObject:
    """The Job to create for ``attempt`` (2 = first retry) of the Job ``original_name``.

    ``clean`` is cleaned again (idempotent) and not modified. Lineage annotations from an
    earlier retry are replaced. Raises ``ValueError`` for ``attempt < 2``. ``salt``: see
    `retry_job_name`. The create token is added by `with_create_token`, once recorded.
    """
    name = retry_job_name(original_name, attempt, salt=salt)
    body = replayable_manifest(clean)
    meta = body["metadata"]
    meta["name"] = name
    annotations: dict[str, str] = dict(meta.get("annotations") or {})
    annotations.update(
        {
            ANNOTATION_ORIGINAL_NAME: original_name,
            ANNOTATION_ORIGINAL_UID: original_uid,
            ANNOTATION_ATTEMPT: str(attempt),
            ANNOTATION_FIRST_FAILED_AT: _format_time(first_failed_at),
            ANNOTATION_HISTORY: encode_history(history),
        }
    )
    for key in (ANNOTATION_RETRY_OF, ANNOTATION_CREATE_TOKEN):
        annotations.pop(key, None)  # an earlier retry's pointer is not this Job's
    meta["annotations"] = annotations
    if avoid_node:
        _avoid_node(body["spec"], avoid_node)
    return body


def with_create_token(body: RawObject, *, ticket_id: str, token: str) -> RawObject:
    """`body` (changed in place, and returned) pointing to its create record (`ticket_id`,
    `token`) and carrying the retry-ack finalizer: what a retry Job is POSTed with once its
    create intent is recorded."""
    meta = body["metadata"]
    annotations: dict[str, str] = dict(meta.get("annotations") or {})
    annotations[ANNOTATION_RETRY_OF] = ticket_id
    annotations[ANNOTATION_CREATE_TOKEN] = token
    meta["annotations"] = annotations
    meta["finalizers"] = [FINALIZER_RETRY_ACK]
    return body


def manifest_for_ticket(ticket: RetryTicket, *, unique_name: bool = False) -> RawObject:
    """The Job a retry ticket asks for: ``retry_manifest`` with the lineage taken from it.

    ``ticket.manifest`` is the cleaned manifest of the Job that failed. The lineage is the
    ticket's own (its history, which the handler took from kube-dlq's records): the original
    is the first attempt in ``ticket.history`` (else the failed Job), ``first-failed-at`` its
    failure (else the earliest, else ``ticket.due_at``); the failed Job's annotations are
    never believed. The namespace is the ticket's. Raises
    ``ValueError`` for a ticket with ``attempt < 2``.
    """
    first = min(ticket.history, key=lambda r: r.attempt, default=None)
    original_name, original_uid = ticket.job.name, ticket.job.uid
    named = first is not None and _DNS_SUBDOMAIN_RE.fullmatch(first.job_name)
    if first is not None and named and _UID_RE.fullmatch(first.job_uid):
        original_name, original_uid = first.job_name, first.job_uid
    times = [record.failed_at for record in ticket.history if math.isfinite(record.failed_at)]
    first_failed_at = min(times) if times else ticket.due_at
    if first is not None and math.isfinite(first.failed_at):
        first_failed_at = first.failed_at  # the original's failure, whatever came later
    body = retry_manifest(
        ticket.manifest,
        attempt=ticket.attempt,
        original_name=original_name,
        original_uid=original_uid,
        first_failed_at=first_failed_at,
        history=ticket.history,
        avoid_node=ticket.avoid_node,
        salt=ticket.job.uid if unique_name else "",
    )
    body["metadata"]["namespace"] = ticket.job.namespace
    return body


MASKED: Final = "<hidden: kube-dlq dlq show --reveal prints it>"
"""What an inline env value reads as in output meant for people."""
_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")


def mask_inline_env(manifest: RawMapping) -> tuple[RawObject, int]:
    """A copy of a Job manifest with every inline ``env[].value`` hidden; how many were.

    Inline values are where people put tokens and passwords they did not move to a Secret;
    ``valueFrom`` references stay as they are (they name a Secret, they do not hold it).
    Whatever the manifest's shape, this never raises: it is run on stored, untrusted data.
    """
    body: RawObject = copy.deepcopy(dict(manifest))
    template = _mapping(_mapping(body.get("spec")).get("template"))
    pod_spec = _mapping(template.get("spec"))
    hidden = 0
    for key in _CONTAINER_LISTS:
        containers = pod_spec.get(key)
        for container in containers if isinstance(containers, list) else ():
            env = container.get("env") if isinstance(container, dict) else None
            for var in env if isinstance(env, list) else ():
                if isinstance(var, dict) and "value" in var:
                    var["value"] = MASKED
                    hidden += 1
    return body, hidden


def _avoid_node(spec: RawObject, node: str) -> None:
    """Require ``kubernetes.io/hostname NotIn [node]`` in every node selector term.

    Terms are ORed, so the requirement must go into each one. An empty term matches no node
    and stays empty (adding to it would let the pod run anywhere but ``node``).
    """
    pod_spec = _child(_child(spec, "template"), "spec")
    required = _child(
        _child(_child(pod_spec, "affinity"), "nodeAffinity"),
        "requiredDuringSchedulingIgnoredDuringExecution",
    )
    terms = required.get("nodeSelectorTerms")
    if not isinstance(terms, list) or not terms:
        required["nodeSelectorTerms"] = [{"matchExpressions": [_not_on(node)]}]
        return
    for term in terms:
        if isinstance(term, dict) and (term.get("matchExpressions") or term.get("matchFields")):
            _add_not_on(term, node)


def _add_not_on(term: RawObject, node: str) -> None:
    expressions = term.get("matchExpressions")
    if not isinstance(expressions, list):
        expressions = term["matchExpressions"] = []
    for expression in expressions:
        if (
            isinstance(expression, dict)
            and expression.get("key") == HOSTNAME_LABEL
            and expression.get("operator") == "NotIn"
            and isinstance(expression.get("values"), list)
        ):
            if node not in expression["values"]:
                expression["values"].append(node)
            return
    expressions.append(_not_on(node))


def _not_on(node: str) -> RawObject:
    return {"key": HOSTNAME_LABEL, "operator": "NotIn", "values": [node]}


# --- lineage annotations -------------------------------------------------------------------------


def encode_history(history: Iterable[AttemptRecord]) -> str:
    """The ``kube-dlq.io/history`` value: a compact JSON list, ordered by attempt.

    One object per attempt: ``attempt``, ``class``, ``reason`` (cut to REASON_MAX_CHARS),
    ``failed_at`` (unix seconds, ms precision), ``job`` and ``uid`` of the Job that failed
    (``watcher.core.records.HISTORY_SHAPE``).
    """
    records = [
        encode_attempt(_as_annotated(record), HISTORY_SHAPE)
        for record in sorted(history, key=lambda r: r.attempt)
    ]
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False)


def _as_annotated(record: AttemptRecord) -> AttemptRecord:
    """``record`` as the annotation keeps it: the reason cut, the time to the millisecond."""
    return dataclasses.replace(
        record,
        reason=_cut(record.reason, REASON_MAX_CHARS),
        failed_at=round(record.failed_at, 3) if math.isfinite(record.failed_at) else 0.0,
    )


class History(tuple[AttemptRecord, ...]):
    """The attempts read from a ``kube-dlq.io/history`` annotation: a plain tuple of records,
    plus ``error``, set (and the tuple empty) when the annotation could not be read."""

    error: PolicyError | None

    def __new__(
        cls, records: Iterable[AttemptRecord] = (), error: PolicyError | None = None
    ) -> History:
        self = super().__new__(cls, records)
        self.error = error
        return self

    @property
    def malformed(self) -> bool:
        return self.error is not None


def history_from_annotations(annotations: Annotations) -> History:
    """The earlier attempts recorded on a retried Job (a tuple), with ``.error`` to report.

    No annotation: an empty History, ``error`` None. A malformed one (not JSON, a missing or
    mistyped field, an unknown failure class): an empty History whose ``error`` is a
    PolicyError for the caller to log and count; its value is cut to 200 characters. Never
    raises.
    """
    value = _as_dict(annotations).get(ANNOTATION_HISTORY)
    if value is None:
        return History()
    if not isinstance(value, str):
        shown = repr(value)[:_ERROR_VALUE_CHARS]
        return History(error=PolicyError(ANNOTATION_HISTORY, shown, "not text"))
    try:
        parsed = json.loads(value)
        if not isinstance(parsed, list):
            raise ValueError("not a JSON list")
        records = [
            decode_attempt(item, shape=HISTORY_SHAPE, where=f"entry {i}")
            for i, item in enumerate(parsed)
        ]
    except (ValueError, RecursionError) as exc:
        error = PolicyError(
            ANNOTATION_HISTORY, _cut(value, _ERROR_VALUE_CHARS), f"malformed history: {exc}"
        )
        return History(error=error)
    return History(records)


def attempt_of(annotations: Annotations) -> int:
    """The ``kube-dlq.io/attempt`` of a Job: 1 (the original) when absent or malformed."""
    value = _as_dict(annotations).get(ANNOTATION_ATTEMPT)
    if not isinstance(value, str) or not _INT_RE.fullmatch(value.strip()):
        return 1
    attempt = int(value.strip())
    return attempt if 1 <= attempt <= MAX_ATTEMPT else 1


def first_failed_at_of(annotations: Annotations) -> float | None:
    """The ``kube-dlq.io/first-failed-at`` of a Job (unix seconds), None if absent or malformed."""
    value = _as_dict(annotations).get(ANNOTATION_FIRST_FAILED_AT)
    if not isinstance(value, str):
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --- helpers -------------------------------------------------------------------------------------


def _format_time(seconds: float) -> str:
    return f"{seconds:.3f}" if math.isfinite(seconds) else "0.000"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mapping(value: object) -> RawMapping:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object, *, drop: Iterable[str] = ()) -> dict[str, str]:
    dropped = set(drop)
    return {
        k: v
        for k, v in _mapping(value).items()
        if isinstance(k, str) and isinstance(v, str) and k not in dropped
    }


def _as_dict(annotations: Annotations) -> RawMapping:
    if annotations is None:
        return {}
    if isinstance(annotations, Mapping):
        return annotations
    try:
        return {k: v for k, v in annotations if isinstance(k, str)}
    except (TypeError, ValueError):
        return {}


def _child(parent: RawObject, key: str) -> RawObject:
    """``parent[key]`` as a dict, replacing a missing or mistyped value with a new one."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value
