"""Every Redis key name and prefix kube-dlq uses (after arq's constants.py).

Layout for prefix ``kube-dlq`` and cluster ``prod`` (``{prod}`` is a Redis Cluster hash tag)::

    kube-dlq:{prod}:queues               set      names of the dead-letter queues ever written
    kube-dlq:{prod}:dlq:<queue>          stream   one entry per dead letter, field "data"
    kube-dlq:{prod}:dlqx:<queue>:class:<class>   zset  stream ids of the queue's entries of one
                                                  failure class, score = the id's ms part
    kube-dlq:{prod}:dlqx:<queue>:ns:<namespace>  zset  the same per namespace
    kube-dlq:{prod}:dlqx:<queue>         set      the names of that queue's index zsets, so a
                                                  trim or purge finds every index to update
                                                  (docs/dead-letters.md, "Indexes")
    kube-dlq:{prod}:outcome:<job-uid>    string   exactly-once marker, "dead_letter:<queue>/<id>"
                                                  or "retry:<ticket-id>"; no TTL while its Job
                                                  may be in the API (see below)
    kube-dlq:{prod}:outcomes             zset     marker index: "<namespace>/<job-uid>",
                                                  score = the marker's sequence number
    kube-dlq:{prod}:outcomes:seq         string   the last sequence number given to a marker
    kube-dlq:{prod}:retry:tickets        hash     ticket id -> encoded RetryTicket
    kube-dlq:{prod}:retry:due            zset     ticket id, score = due time (unix ms)
    kube-dlq:{prod}:retry:inflight       zset     claimed ticket id, score = lease expiry (unix ms)
    kube-dlq:{prod}:retry:corrupt        hash     ticket id -> raw body that failed to decode
    kube-dlq:{prod}:retry:claims         hash     ticket id -> number of its latest claim (fence)
    kube-dlq:{prod}:retry:create:<id>    hash     the ticket's create record: token, namespace,
                                                  name, begins, last_ms, lineage, then uid;
                                                  TTL 40 days (watcher.core.lineage)
    kube-dlq:{prod}:retry:finalize       zset     "<namespace>/<name>/<uid>" of retry Jobs whose
                                                  finalizer is still to remove, score = when (ms)
    kube-dlq:{prod}:leader:fence         string   the highest leadership term a write carried
                                                  (docs/scale-out.md, "Fencing"); no TTL
    kube-dlq:{prod}:redrive:<queue>/<id> hash     a dead letter being redriven (docs/redrive.md):
                                                  the entry as it was stored, its sealed plan
                                                  (namespace, Job name, token, redrive number,
                                                  overrides), begins, then the created Job's uid;
                                                  no TTL (removed when the daemon settles it)
    kube-dlq:{prod}:redriving            zset     "<queue>/<id>" of every redrive record,
                                                  score = when it was claimed (ms)
    kube-dlq:{prod}:archive:<queue>      stream   entries whose redriven Job succeeded, fields
                                                  "data" (the entry), "of", "job"; capped

Hash tags: every key of one (prefix, cluster) carries the same ``{cluster}`` tag, so each Lua
script's keys live in one slot and the scripts run unchanged on Redis Cluster. The price is
that one cluster's kube-dlq data sits on one shard; dead-letter streams are capped and retry
tickets are few, so that is far below a shard's capacity. Several clusters sharing one Redis
spread over slots by cluster name.

TTLs: an outcome marker has none while it is indexed; once a complete list of Jobs shows its
Job gone from the API it leaves the index and expires after ``redis.outcome_ttl_s``
(docs/exactly-once.md). Streams are trimmed by length and age (``redis.stream_maxlen``,
``redis.stream_max_age_s``) instead of expiring as a whole. Those defaults live in
`watcher.core.settings.RedisSettings` only. Retry tickets have no TTL on purpose: they are a
work queue, removed by ack, and a TTL would silently drop a scheduled retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "STREAM_FIELD",
    "Keys",
]


STREAM_FIELD: Final = "data"
"""The single field of a dead-letter stream entry; its value is a codec envelope."""

_FORBIDDEN = frozenset("{}")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one kube-dlq installation (prefix) watching one Kubernetes cluster."""

    prefix: str
    """redis.key_prefix"""
    cluster: str
    """cluster_name"""

    def __post_init__(self) -> None:
        for name, value in (("prefix", self.prefix), ("cluster", self.cluster)):
            if not value or _FORBIDDEN & set(value):
                raise ValueError(f"redis key {name} must be non-empty without braces: {value!r}")

    @property
    def base(self) -> str:
        """``<prefix>:{<cluster>}``: the start of every key, with the cluster as hash tag."""
        return f"{self.prefix}:{{{self.cluster}}}"

    @property
    def queues(self) -> str:
        return f"{self.base}:queues"

    @property
    def dlq_prefix(self) -> str:
        return f"{self.base}:dlq:"

    def dlq(self, queue: str) -> str:
        if not queue:
            raise ValueError("dead-letter queue name must not be empty")
        return f"{self.dlq_prefix}{queue}"

    def dlq_indexes(self, queue: str) -> str:
        """The set naming every index zset of `queue` (written by the same scripts)."""
        return f"{self.base}:dlqx:{self.dlq(queue).removeprefix(self.dlq_prefix)}"

    def dlq_class_index(self, queue: str, failure_class: str) -> str:
        """Stream ids of `queue`'s entries of one failure class, scored by their time (ms)."""
        return f"{self.dlq_indexes(queue)}:class:{failure_class}"

    def dlq_namespace_index(self, queue: str, namespace: str) -> str:
        """Stream ids of `queue`'s entries from one namespace (a DNS label: no ``:``)."""
        return f"{self.dlq_indexes(queue)}:ns:{namespace}"

    def dlq_entry_indexes(
        self, queue: str, failure_class: str, namespace: str
    ) -> tuple[str, str, str]:
        """KEYS of a script that writes an entry: its class index, namespace index, registry."""
        return (
            self.dlq_class_index(queue, failure_class),
            self.dlq_namespace_index(queue, namespace),
            self.dlq_indexes(queue),
        )

    def outcome(self, job_uid: str) -> str:
        if not job_uid:
            raise ValueError("job uid must not be empty")
        return f"{self.base}:outcome:{job_uid}"

    @property
    def outcome_index(self) -> str:
        """Every marker without a TTL, as `outcome_member`, scored by its sequence number."""
        return f"{self.base}:outcomes"

    @property
    def outcome_seq(self) -> str:
        """The counter the marker index's scores come from (INCR)."""
        return f"{self.base}:outcomes:seq"

    @staticmethod
    def outcome_member(namespace: str, job_uid: str) -> str:
        """``<namespace>/<job-uid>``; read back with `outcome_member_parts`."""
        if not job_uid:
            raise ValueError("job uid must not be empty")
        return f"{namespace}/{job_uid}"

    @staticmethod
    def outcome_member_parts(member: str) -> tuple[str, str]:
        """(namespace, job uid) of an `outcome_member`. Split at the last ``/``: a uid (a UUID)
        has none, and a namespace (a DNS label) has none either, but a malformed one must not
        make this name another uid."""
        namespace, _, uid = member.rpartition("/")
        return namespace, uid

    @property
    def retry_tickets(self) -> str:
        return f"{self.base}:retry:tickets"

    @property
    def retry_due(self) -> str:
        return f"{self.base}:retry:due"

    @property
    def retry_inflight(self) -> str:
        return f"{self.base}:retry:inflight"

    @property
    def retry_corrupt(self) -> str:
        return f"{self.base}:retry:corrupt"

    @property
    def retry_claims(self) -> str:
        return f"{self.base}:retry:claims"

    def retry_create(self, ticket_id: str) -> str:
        if not ticket_id:
            raise ValueError("ticket id must not be empty")
        return f"{self.base}:retry:create:{ticket_id}"

    @property
    def retry_finalize(self) -> str:
        return f"{self.base}:retry:finalize"

    def redrive_record(self, entry_id: str) -> str:
        """The redriving record of ``<queue>/<stream-id>`` (written by redrive_claim.lua)."""
        if not entry_id:
            raise ValueError("entry id must not be empty")
        return f"{self.base}:redrive:{entry_id}"

    @property
    def redriving(self) -> str:
        """Every redriving record's entry id, scored by its claim time (ms)."""
        return f"{self.base}:redriving"

    def dlq_archive(self, queue: str) -> str:
        """Entries of `queue` whose redriven Job succeeded (capped like the queue)."""
        return f"{self.base}:archive:{self.dlq(queue).removeprefix(self.dlq_prefix)}"

    @property
    def leader_fence(self) -> str:
        """The highest leadership term seen; every write script checks it first."""
        return f"{self.base}:leader:fence"
