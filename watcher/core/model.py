"""Plain values that flow between the pipeline stages.

watch -> correlate -> classify -> decide -> sink/retry. Every stage takes and returns these
frozen values (dataclasses; the projections built per watch event are frozen msgspec Structs,
see `_Projection`); none of them holds a Kubernetes client model or a Redis connection, so
the pure stages (correlate, classify, policy, backoff, decide) are testable from tables.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from watcher.core.fastinit import fast_init
from watcher.core.rawjson import RawObject


class FailureClass(enum.StrEnum):
    """Why a Job failed, as kube-dlq names it. Values are stable: they are metric labels."""

    NODE_LOST = "node_lost"
    NODE_SHUTDOWN = "node_shutdown"
    EVICTED = "evicted"
    API_EVICTION = "api_eviction"
    PREEMPTED = "preempted"
    ADMISSION_REJECTED = "admission_rejected"
    OOM_KILLED = "oom_killed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    IMAGE_PULL = "image_pull"
    CONFIG_ERROR = "config_error"
    IO_TIMEOUT = "io_timeout"
    UNSCHEDULABLE = "unschedulable"
    APP_ERROR = "app_error"
    UNKNOWN = "unknown"

    @property
    def is_infrastructure(self) -> bool:
        """True when the failure is the platform's fault, not the workload's code or config.

        Infrastructure and application failures have separate retry budgets.
        """
        return self in INFRASTRUCTURE_CLASSES


# Groupings of failure classes. Each is defined here once, so that a new class is placed in every
# group where it is declared, not in whichever modules someone remembered to update.

# The platform's fault, not the workload's: retried by default, with a budget of their own.
INFRASTRUCTURE_CLASSES: Final[frozenset[FailureClass]] = frozenset(
    {
        FailureClass.NODE_LOST,
        FailureClass.NODE_SHUTDOWN,
        FailureClass.EVICTED,
        FailureClass.API_EVICTION,
        FailureClass.PREEMPTED,
        FailureClass.ADMISSION_REJECTED,
        FailureClass.IO_TIMEOUT,
        FailureClass.UNSCHEDULABLE,
    }
)

# The platform lost or reclaimed capacity: a new pod elsewhere usually succeeds, so more retries.
CAPACITY_LOSS_CLASSES: Final[frozenset[FailureClass]] = frozenset(
    {
        FailureClass.NODE_LOST,
        FailureClass.NODE_SHUTDOWN,
        FailureClass.API_EVICTION,
        FailureClass.PREEMPTED,
    }
)

# The node, not the workload, was at fault: a retry may be sent away from that node.
NODE_FAULT_CLASSES: Final[frozenset[FailureClass]] = frozenset(
    {FailureClass.NODE_LOST, FailureClass.NODE_SHUTDOWN, FailureClass.EVICTED}
)

# Pod classes whose classify rules come before the deadline rule: they beat a Job deadline.
OUTRANKS_DEADLINE_CLASSES: Final[frozenset[FailureClass]] = frozenset(
    {
        FailureClass.NODE_LOST,
        FailureClass.NODE_SHUTDOWN,
        FailureClass.EVICTED,
        FailureClass.API_EVICTION,
        FailureClass.PREEMPTED,
        FailureClass.ADMISSION_REJECTED,
        FailureClass.OOM_KILLED,
    }
)


class Started(enum.StrEnum):
    """Did the workload start? ``no`` is the one answer that makes a retry free of side effects
    (Airflow retries automatically only then); ``unknown`` when the evidence cannot tell."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class Action(enum.StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


class _Projection(msgspec.Struct, frozen=True, gc=False):
    """A projection of a watched object, built once per watch event: a frozen msgspec Struct,
    built, hashed and compared in C (a frozen dataclass's ``__init__`` alone cost more than
    the rest of a projection). Never part of a reference cycle, so never tracked by the
    garbage collector. `watcher.core.plain` turns one into what ``dataclasses.asdict`` would."""


@fast_init
@dataclass(frozen=True, slots=True)
class JobRef:
    """Identity of one Job object. The uid changes when a Job is re-created."""

    namespace: str
    name: str
    uid: str


@fast_init
@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str


class Condition(_Projection, frozen=True, gc=False):
    """A status condition of a Job, Pod or Node (only the fields we read)."""

    type: str
    status: str
    reason: str = ""
    message: str = ""


class ContainerOutcome(_Projection, frozen=True, gc=False):
    """Last known state of one container (init or main) of a pod."""

    name: str
    init: bool = False
    exit_code: int | None = None
    signal: int | None = None
    terminated_reason: str = ""
    terminated_message: str = ""
    waiting_reason: str = ""
    waiting_message: str = ""
    restart_count: int = 0


class PodSnapshot(_Projection, frozen=True, gc=False):
    """What we keep of a pod: status only, never its spec (memory must not grow with specs)."""

    name: str
    uid: str
    phase: str = ""
    reason: str = ""
    message: str = ""
    node_name: str = ""
    deleted: bool = False
    conditions: tuple[Condition, ...] = ()
    containers: tuple[ContainerOutcome, ...] = ()
    created_at: float | None = None
    completion_index: str = ""
    """An Indexed Job's pod: its ``batch.kubernetes.io/job-completion-index`` annotation."""

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class EventRecord(_Projection, frozen=True, gc=False):
    """A core/v1 Event about a Job, one of its pods, or their node."""

    involved_kind: str
    involved_name: str
    reason: str
    message: str = ""
    type: str = "Normal"
    count: int = 1
    last_seen: float | None = None


class NodeState(_Projection, frozen=True, gc=False):
    name: str
    exists: bool = True
    ready: str = "True"
    """The Ready condition's status: "True", "False" or "Unknown"."""
    reason: str = ""
    unschedulable: bool = False
    taints: tuple[str, ...] = ()


class JobSnapshot(_Projection, frozen=True, gc=False):
    """The parts of a Job that classification and policy read."""

    ref: JobRef
    owner: OwnerRef | None = None
    labels: tuple[tuple[str, str], ...] = ()
    """Only those kube-dlq reads (`watcher.core.snapshot.JOB_LABELS_READ`)."""
    annotations: tuple[tuple[str, str], ...] = ()
    conditions: tuple[Condition, ...] = ()
    active: int = 0
    failed: int = 0
    succeeded: int = 0
    has_pod_failure_policy: bool = False
    created_at: float | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_ and c.status == "True"), None)

    def annotation(self, key: str) -> str | None:
        return next((v for k, v in self.annotations if k == key), None)


@dataclass(frozen=True, slots=True)
class FailureReport:
    """All evidence about one failed (or stuck) Job, joined by correlate."""

    job: JobSnapshot
    pods: tuple[PodSnapshot, ...] = ()
    events: tuple[EventRecord, ...] = ()
    nodes: tuple[NodeState, ...] = ()
    stuck_for_s: float | None = None
    """Set when the Job is not failed but its pods have been stuck Pending this long."""

    def node(self, name: str) -> NodeState | None:
        return next((n for n in self.nodes if n.name == name), None)


@dataclass(frozen=True, slots=True)
class Classification:
    failure_class: FailureClass
    reason: str
    """One short sentence a person can read in a table."""
    evidence: tuple[str, ...] = ()
    """The signals that led here, e.g. 'pod x: DisruptionTarget=DeletionByTaintManager'."""
    started: Started = Started.UNKNOWN
    """Whether any container of the Job ran (watcher.core.classify.started)."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One earlier failed attempt of the same logical Job."""

    attempt: int
    job_name: str
    job_uid: str
    failure_class: FailureClass
    reason: str
    failed_at: float
    memory: str = ""
    """The memory raised for the next attempt after this one failed, e.g.
    "x1.5: main limits 512Mi -> 768Mi" (the OOM policy); "" when none was."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    attempt: int
    """The attempt that failed (1 = the original Job)."""
    delay_s: float = 0.0
    """With RETRY: how long to wait before re-creating the Job."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry on a dead-letter queue: everything needed to understand and replay a Job."""

    queue: str
    job: JobRef
    failure_class: FailureClass
    reason: str
    attempts: int
    failed_at: float
    cluster: str
    evidence: tuple[str, ...] = ()
    owner: OwnerRef | None = None
    manifest: RawObject = field(default_factory=dict)
    """The cleaned, replayable Job manifest."""
    history: tuple[AttemptRecord, ...] = ()
    report: RawObject = field(default_factory=dict)
    """Pod statuses, termination messages and Events, captured before Kubernetes drops them."""
    started: Started = Started.UNKNOWN
    """Whether the failed attempt's workload started (entries stored before it: unknown)."""
    redrive_count: int = 0
    """How many times `dlq redrive` re-created this Job before it landed here again."""
    redrive_of: str = ""
    """The earlier entry (``<queue>/<stream-id>``) whose redriven Job this entry's failed."""
    failed_indexes: tuple[int, ...] = ()
    """An Indexed Job's failed completion indexes, sorted (watcher.core.indexes); () when not
    Indexed, not known, or stored before they were recorded."""


@dataclass(frozen=True, slots=True)
class RetryTicket:
    """A scheduled re-creation of a failed Job, due at `due_at` (unix seconds)."""

    job: JobRef
    attempt: int
    """The attempt number the re-created Job will carry (2 = first retry)."""
    due_at: float
    failure_class: FailureClass
    reason: str
    manifest: RawObject = field(default_factory=dict)
    history: tuple[AttemptRecord, ...] = ()
    avoid_node: str = ""
    queue: str = "default"
    """The dead-letter queue of the failed Job: where the ticket goes if the retry cannot be
    created (its queue when it was scheduled; tickets stored before this field read as
    "default")."""
    started: Started = Started.UNKNOWN
    """Whether the failed attempt's workload started (tickets stored before it: unknown)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What `dead_letter` / `schedule_retry` did for a job uid.

    ``written`` is False when the uid was already handled before; then ``action`` and ``ref``
    describe that earlier outcome, which may be of the other kind.
    """

    written: bool
    action: Action
    ref: str
    """``<queue>/<stream-id>`` for a dead letter, the ticket id for a retry."""
    trimmed: int = 0
    """Older entries the queue's caps (``redis.stream_maxlen``, ``redis.stream_max_age_s``)
    removed from the stream when this dead letter was written; 0 for a retry or a replay."""

    @property
    def already_handled(self) -> bool:
        return not self.written


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What one pass over the outcome markers did (`forget_absent`)."""

    forgotten: int = 0
    """Markers of Jobs the list did not show, now set to expire."""
    pending_retry: int = 0
    """Such markers kept because their retry ticket is still pending."""
    out_of_scope: int = 0
    """Such markers left alone because their namespace is outside the caller's scope."""


@dataclass(frozen=True, slots=True)
class ClaimedTicket:
    ticket_id: str
    ticket: RetryTicket
    lease_until: float
    """Unix seconds on Redis's clock; after this another claim may take the ticket again unless
    it is settled."""
    claim: int = 0
    """This claim's number (the ticket's claim counter): the fencing token that lets only the
    latest claim begin a create or settle the ticket. 0: unfenced (tools, old callers)."""


class BeginStatus(enum.StrEnum):
    """What `RetryStore.begin_create` answered."""

    BEGUN = "begun"
    """The create may go ahead; the intent is recorded."""
    SETTLED = "settled"
    """The ticket was settled meanwhile: create nothing."""
    SUPERSEDED = "superseded"
    """Another replica claimed the ticket since (its lease ran out): create nothing."""


@dataclass(frozen=True, slots=True)
class CreateIntent:
    """A create about to happen, as `RetryStore.begin_create` recorded it."""

    status: BeginStatus
    token: str = ""
    """The ticket's create token, for the Job's ``kube-dlq.io/create-token``."""
    earlier_claims: int = 0
    """Other claims that began a create of this ticket before: one of them may have created
    the Job (a lost reply, a crash before settling)."""
    earlier_name: str = ""
    """The Job name the last of them used."""


@dataclass(frozen=True, slots=True)
class SettleResult:
    """What `RetryStore.settle_created` did."""

    status: BeginStatus
    """BEGUN here means: settled now, by this call."""
    release_finalizer_now: bool = False
    """Remove the Job's finalizer at once; otherwise it waits in the store's finalizer queue
    (`RetryStore.due_finalizers`) until no earlier POST can land any more."""


@dataclass(frozen=True, slots=True)
class QuarantinedTicket:
    """A due retry ticket that could not be decoded and was set aside, not fired."""

    ticket_id: str
    """As stored; an id that is not UTF-8 is shown with backslash escapes."""
    error: str
    """Why it did not decode (the codec's message)."""
    forged: bool = False
    """Its seal did not check out (unsigned, unknown key, bad signature): not kube-dlq's."""


class ClaimedBatch(list[ClaimedTicket]):
    """The tickets one claim handed out, plus those it quarantined instead (`quarantined`).

    A list, so callers that only fire tickets use it as one; the store owns no metrics or
    logs, so it returns what it set aside and the retry loop counts and reports it.
    """

    def __init__(
        self,
        claimed: Iterable[ClaimedTicket] = (),
        quarantined: Iterable[QuarantinedTicket] = (),
    ) -> None:
        super().__init__(claimed)
        self.quarantined: tuple[QuarantinedTicket, ...] = tuple(quarantined)
