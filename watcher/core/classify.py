"""Why did a Job fail? `FailureReport` -> `Classification`, pure and deterministic.

Classification runs in two steps.

1. **Each pod** that did not succeed is run through `POD_RULES`, an ordered table of small
   functions `(pod, facts) -> Classification | None`; the first answer wins. The order goes from
   the most specific, most authoritative evidence to the most generic:

   1. `DisruptionTarget` condition: written by the component that killed the pod (taint
      manager, pod GC, kubelet, eviction API, scheduler), so it names the real cause even when
      the container also shows OOMKilled or exit 137 as a side effect of being killed.
   2. pod `status.reason` Evicted / Terminated / Shutdown / NodeShutdown (kubelet eviction and
      graceful node shutdown, which predate or accompany the condition). An Evicted pod whose
      message says "Pod was rejected" never ran: that is admission (6), not eviction.
   3. node state: the pod's node is gone, or NotReady and tainted unreachable/not-ready.
   4. legacy pod reason NodeLost.
   5. Events TaintManagerEviction, Preempted, Evicted, then NodeNotReady. Events come after
      status because they expire and are lossy; they rescue cases whose status is gone.
   6. admission rejection (UnexpectedAdmissionError, NodeAffinity, OutOf*, "Pod was rejected").
   7. OOMKilled container, or a node OOMKilling Event with a SIGKILLed container. After the
      disruption rules because a disrupted pod's containers can die of anything on the way out;
      before deadline and exit codes because OOMKilled is more specific than both.
   8. pod deadline (`activeDeadlineSeconds` on the pod).
   9. image pull, 10. container config errors and FailedMount, 11. I/O timeout text: causes that
      stop a container from starting or make it fail on the network, which are more specific
      than the exit code they end in. Config errors come before I/O timeouts because a
      timeout in a FailedMount message is the one config-looking signal that is transient.
   12. unschedulable: a pod that never got a node.
   13. app error: any non-zero exit code, signals decoded (137 = SIGKILL, 143 = SIGTERM).

   Node-state and NodeNotReady evidence is circumstantial (the node may have gone bad after the
   pod ended), so it is ignored when the kubelet reported a plain application exit (1..128).
   Event evidence of start-up trouble (pull, mount, scheduling) is ignored once a container
   has run: it was transient, and what happened after is the better explanation.

2. **The Job**: the deciding pod is the most recent failed pod (by `created_at`) that has a
   class, so with `BackoffLimitExceeded` and pods that failed for different reasons the last
   failure speaks; failed or deleted pods come before pending or running ones, and when no
   pod object is left, the pods named by Events stand in for them. Then `JOB_RULES` combine
   it with the Job's Failed condition: `DeadlineExceeded` wins unless the pod's class ranks
   above deadlines in the order above (disruption, admission, OOM); `PodFailurePolicy` takes
   the pod's class, else app_error; any other case takes the pod's class, else unknown.

Every `Classification` has a one-line reason and evidence strings that name the object and the
signal, e.g. "pod p-1: DisruptionTarget reason=DeletionByTaintManager".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from watcher.core.model import (
    OUTRANKS_DEADLINE_CLASSES,
    Classification,
    Condition,
    ContainerOutcome,
    EventRecord,
    FailureClass,
    FailureReport,
    NodeState,
    PodSnapshot,
)

__all__ = ["DEFAULT_IO_TIMEOUT_PATTERNS", "DEFAULT_RULES", "ClassifyRules", "classify"]

DEFAULT_IO_TIMEOUT_PATTERNS: tuple[str, ...] = (
    r"i/o timeout",
    r"context deadline exceeded",
    r"ETIMEDOUT",
    r"connection timed out",
    r"operation timed out",
    r"timed out waiting for the condition",
    r"TLS handshake timeout",
    r"Client\.Timeout exceeded",
    r"ReadTimeout",  # Python requests/urllib3 ReadTimeout(Error)
    r"ConnectTimeout",
    r"SocketTimeoutException",
    r"Unable to attach or mount volumes",
    r"Volume\.\w+ failed.*timed out",  # MountVolume.SetUp, AttachVolume.Attach, ...
)

# A pattern without regex syntax (escaped punctuation allowed) is matched as a plain substring:
# `in` on casefolded text is some 20 times faster than the regex engine on a 2 KiB message.
_LITERAL_PATTERN = re.compile(r"(?:[^\\.^$*+?{}\[\]|()]|\\[^\w])+")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class _Matcher:
    """Case-insensitive 'any pattern matches' over literals first, then one regex."""

    literals: tuple[str, ...]
    regex: re.Pattern[str] | None

    def search(self, text: str) -> bool:
        if not text:
            return False
        folded = text.casefold()
        if any(literal in folded for literal in self.literals):
            return True
        return self.regex is not None and self.regex.search(text) is not None


@functools.lru_cache(maxsize=16)
def _compile_patterns(patterns: tuple[str, ...]) -> _Matcher:
    literals: list[str] = []
    regexes: list[str] = []
    for pattern in patterns:
        if not pattern:
            raise ValueError("empty io_timeout pattern would match every message")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid io_timeout pattern {pattern!r}: {exc}") from exc
        if _LITERAL_PATTERN.fullmatch(pattern):
            literals.append(_ESCAPE.sub(r"\1", pattern).casefold())
        else:
            regexes.append(f"(?:{pattern})")
    regex = re.compile("|".join(regexes), re.IGNORECASE) if regexes else None
    return _Matcher(tuple(literals), regex)


@dataclass(frozen=True, slots=True)
class ClassifyRules:
    """Tunable parts of classification. Patterns are compiled once, when this is built, so a
    bad pattern fails at configuration time (ValueError) and never inside `classify`."""

    io_timeout_patterns: tuple[str, ...] = DEFAULT_IO_TIMEOUT_PATTERNS
    """Case-insensitive regexes; a match in a termination or Warning Event message means the
    failure was a transient network or storage timeout."""
    _io_timeout: _Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_io_timeout", _compile_patterns(self.io_timeout_patterns))

    def io_timeout_in(self, text: str) -> bool:
        return self._io_timeout.search(text)


DEFAULT_RULES = ClassifyRules()


def classify(report: FailureReport, rules: ClassifyRules = DEFAULT_RULES) -> Classification:
    """Classify one failed (or stuck) Job. Total: every report yields a class."""
    facts = _Facts.of(report, rules)
    deciding = _deciding_pod(facts)
    for rule in JOB_RULES:
        verdict = rule(facts, deciding)
        if verdict is not None:
            return verdict
    return _unknown(facts)


# --- shared facts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """A report plus the lookups every rule needs, built once per `classify` call."""

    report: FailureReport
    rules: ClassifyRules
    events_by_object: Mapping[tuple[str, str], tuple[EventRecord, ...]]

    @classmethod
    def of(cls, report: FailureReport, rules: ClassifyRules) -> _Facts:
        index: dict[tuple[str, str], list[EventRecord]] = {}
        for event in report.events:
            index.setdefault((event.involved_kind, event.involved_name), []).append(event)
        return cls(report, rules, {key: tuple(found) for key, found in index.items()})

    def events(self, kind: str, name: str) -> tuple[EventRecord, ...]:
        return self.events_by_object.get((kind, name), ()) if name else ()

    def job_failure(self) -> Condition | None:
        """The Job's Failed condition, or FailureTarget (1.31+) while pods are still stopping."""
        job = self.report.job
        return job.condition("Failed") or job.condition("FailureTarget")


@dataclass(frozen=True, slots=True)
class _PodVerdict:
    pod: PodSnapshot
    verdict: Classification
    others: tuple[str, ...] = ()
    """'name=class' of the other failed pods whose class differs, for the evidence."""


PodRule = Callable[[PodSnapshot, _Facts], Classification | None]
JobRule = Callable[[_Facts, _PodVerdict | None], Classification | None]

_CLIP = 160
_UNREACHABLE_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})
_SHUTDOWN_TEXT = re.compile(r"shut\s?down", re.IGNORECASE)
_SHUTDOWN_REASONS = frozenset({"Terminated", "Shutdown", "NodeShutdown"})
_REJECTED = "Pod was rejected"  # the kubelet's prefix for every admission failure message
_TAINT_KEY_END = re.compile(r"[=:]")
# Linux numbering, where the containers run; other signals print as "signal N".
_SIGNAL_NAMES = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
}
_MAX_SIGNAL = 64


# --- evidence text -----------------------------------------------------------------------


def _clip(text: str, *, tail: bool = False) -> str:
    """One line of at most _CLIP characters; `tail` keeps the end, where logs put the error."""
    # Slice before splitting: termination messages can be 4 KiB.
    text = " ".join((text[-2 * _CLIP :] if tail else text[: 2 * _CLIP]).split())
    if len(text) <= _CLIP:
        return text
    return "…" + text[1 - _CLIP :] if tail else text[: _CLIP - 1] + "…"


def _with_message(text: str, message: str, *, tail: bool = False) -> str:
    return f"{text} message={_clip(message, tail=tail)!r}" if message else text


def _container_label(c: ContainerOutcome) -> str:
    return f"{'init container' if c.init else 'container'} {c.name or '<unnamed>'}"


def _container_evidence(pod: PodSnapshot, c: ContainerOutcome) -> str:
    if c.waiting_reason and c.exit_code is None:
        text = f"{_container_label(c)} waiting reason={c.waiting_reason}"
        return f"pod {pod.name}: {_with_message(text, c.waiting_message)}"
    text = f"{_container_label(c)} terminated reason={c.terminated_reason or '-'}"
    text += f" exitCode={c.exit_code}"
    if c.signal:
        text += f" signal={c.signal}"
    return f"pod {pod.name}: {_with_message(text, c.terminated_message, tail=True)}"


def _event_evidence(event: EventRecord) -> str:
    text = f"event {event.involved_kind}/{event.involved_name}: {event.reason}"
    if event.count > 1:
        text += f" (x{event.count})"
    return _with_message(text, event.message)


def _condition_evidence(owner: str, c: Condition) -> str:
    return _with_message(f"{owner}: {c.type} reason={c.reason or '-'}", c.message)


def _verdict(cls: FailureClass, reason: str, *evidence: str) -> Classification:
    return Classification(failure_class=cls, reason=reason, evidence=evidence)


# --- pod predicates ----------------------------------------------------------------------


def _disruption(pod: PodSnapshot) -> Condition | None:
    condition = pod.condition("DisruptionTarget")
    return condition if condition is not None and condition.status == "True" else None


def _ended_badly(pod: PodSnapshot) -> bool:
    """Failed, Unknown, or deleted before it could succeed."""
    if pod.phase in ("Failed", "Unknown") or _disruption(pod) is not None:
        return True
    return pod.deleted and pod.phase != "Succeeded"


def _signal_of(c: ContainerOutcome) -> int | None:
    if c.signal:
        return c.signal
    if c.exit_code is not None and 128 < c.exit_code <= 128 + _MAX_SIGNAL:
        return c.exit_code - 128
    return None


def _failed(c: ContainerOutcome) -> bool:
    return (c.exit_code is not None and c.exit_code != 0) or bool(c.signal)


def _app_exit(pod: PodSnapshot) -> ContainerOutcome | None:
    """A container the kubelet saw exit on its own (1..128): the node was alive at the end."""
    return next((c for c in pod.containers if _failed(c) and _signal_of(c) is None), None)


def _never_ran(pod: PodSnapshot) -> bool:
    """No container got past waiting. Start-up Events (pull, mount, sandbox, scheduling, and
    probe timeouts, which only come later) are history once a container has run."""
    return all(
        c.waiting_reason and c.exit_code is None and not c.signal and not c.restart_count
        for c in pod.containers
    )


def _taint_key(taint: str) -> str:
    return _TAINT_KEY_END.split(taint, maxsplit=1)[0]


def _lost_taint(node: NodeState) -> str | None:
    return next((t for t in node.taints if _taint_key(t) in _UNREACHABLE_TAINTS), None)


def _startup_event(
    pod: PodSnapshot, facts: _Facts, wanted: Callable[[EventRecord], bool]
) -> EventRecord | None:
    """The first wanted Warning Event about `pod`, if no container of it ever ran."""
    if not _never_ran(pod):
        return None
    events = facts.events("Pod", pod.name)
    return next((e for e in events if e.type == "Warning" and wanted(e)), None)


# --- pod rules, in precedence order ------------------------------------------------------

_DISRUPTIONS: Mapping[str, tuple[FailureClass, str]] = {
    "DeletionByTaintManager": (
        FailureClass.NODE_LOST,
        "was deleted by the taint manager: its node became unreachable or not ready",
    ),
    "DeletionByPodGC": (
        FailureClass.NODE_LOST,
        "was garbage-collected: its node no longer exists",
    ),
    "EvictionByEvictionAPI": (
        FailureClass.API_EVICTION,
        "was evicted through the Eviction API (drain or autoscaler)",
    ),
    "PreemptionByScheduler": (
        FailureClass.PREEMPTED,
        "was preempted by the scheduler for a higher-priority pod",
    ),
}


def _by_disruption_target(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    condition = _disruption(pod)
    if condition is None:
        return None
    evidence = _condition_evidence(f"pod {pod.name}", condition)
    if condition.reason == "TerminationByKubelet":
        return _kubelet_termination(pod, condition.message, evidence)
    known = _DISRUPTIONS.get(condition.reason)
    if known is None:
        return None
    cls, what = known
    return _verdict(cls, f"pod {pod.name} {what}", evidence)


def _kubelet_termination(pod: PodSnapshot, message: str, evidence: str) -> Classification:
    shutdown = pod.reason in _SHUTDOWN_REASONS or any(
        _SHUTDOWN_TEXT.search(text) for text in (message, pod.message)
    )
    if shutdown:
        return _verdict(
            FailureClass.NODE_SHUTDOWN,
            f"pod {pod.name} was terminated by the kubelet for a node shutdown",
            evidence,
        )
    return _verdict(
        FailureClass.EVICTED,
        f"pod {pod.name} was evicted by the kubelet (node pressure)",
        evidence,
    )


def _by_pod_reason(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    if pod.reason != "Evicted" and pod.reason not in _SHUTDOWN_REASONS:
        return None
    # The kubelet's eviction manager also rejects pods at admission with reason Evicted
    # ("Pod was rejected: The node had condition: [DiskPressure]"); the pod never ran.
    if pod.reason == "Evicted" and _REJECTED in pod.message:
        return None
    evidence = _with_message(f"pod {pod.name}: status.reason={pod.reason}", pod.message)
    if pod.reason == "Evicted":
        return _verdict(
            FailureClass.EVICTED, f"pod {pod.name} was evicted by the kubelet", evidence
        )
    return _verdict(
        FailureClass.NODE_SHUTDOWN,
        f"pod {pod.name} was stopped by a node shutdown ({pod.reason})",
        evidence,
    )


def _by_node_state(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    if not pod.node_name or not _ended_badly(pod) or _app_exit(pod) is not None:
        return None
    node = facts.report.node(pod.node_name)
    if node is None:  # not looked up: no evidence either way
        return None
    if not node.exists:
        return _verdict(
            FailureClass.NODE_LOST,
            f"pod {pod.name} was lost with its node {node.name}, which no longer exists",
            f"node {node.name}: missing",
            f"pod {pod.name}: phase={pod.phase or '-'} deleted={pod.deleted}",
        )
    taint = _lost_taint(node)
    if node.ready != "True" and taint is not None:
        return _verdict(
            FailureClass.NODE_LOST,
            f"pod {pod.name} was lost with its node {node.name} (Ready={node.ready})",
            f"node {node.name}: Ready={node.ready} reason={node.reason or '-'} taint={taint}",
            f"pod {pod.name}: phase={pod.phase or '-'} deleted={pod.deleted}",
        )
    return None


def _by_legacy_node_lost(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    if pod.reason != "NodeLost":
        return None
    return _verdict(
        FailureClass.NODE_LOST,
        f"pod {pod.name} was lost with its node (NodeLost)",
        _with_message(f"pod {pod.name}: status.reason=NodeLost", pod.message),
    )


_EVENT_DISRUPTIONS: tuple[tuple[str, FailureClass, str], ...] = (
    ("TaintManagerEviction", FailureClass.NODE_LOST, "was deleted by the taint manager"),
    ("Preempted", FailureClass.PREEMPTED, "was preempted"),
    ("Evicted", FailureClass.EVICTED, "was evicted by the kubelet"),
)


def _by_disruption_event(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    events = facts.events("Pod", pod.name)
    for reason, cls, what in _EVENT_DISRUPTIONS:
        for event in events:
            # The taint manager also reports "Cancelling deletion" when a taint goes away.
            if event.reason == reason and not event.message.startswith("Cancelling"):
                return _verdict(cls, f"pod {pod.name} {what}", _event_evidence(event))
    return None


def _by_node_not_ready_event(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    if not _ended_badly(pod) or _app_exit(pod) is not None:
        return None
    events = facts.events("Pod", pod.name) + facts.events("Node", pod.node_name)
    event = next((e for e in events if e.reason == "NodeNotReady"), None)
    if event is None:
        return None
    where = f" {pod.node_name}" if pod.node_name else ""
    return _verdict(
        FailureClass.NODE_LOST,
        f"pod {pod.name} failed while its node{where} was not ready",
        _event_evidence(event),
    )


_ADMISSION_REASONS = frozenset(
    {
        "UnexpectedAdmissionError",
        "NodeAffinity",
        "NodeSelectorMismatching",
        "TopologyAffinityError",
        "InvalidNodeInfo",
    }
)


def _by_admission(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    rejected = (
        pod.reason in _ADMISSION_REASONS
        or pod.reason.startswith("OutOf")  # OutOfcpu, OutOfmemory, OutOfpods, ...
        or _REJECTED in pod.message
    )
    if not rejected:
        return None
    return _verdict(
        FailureClass.ADMISSION_REJECTED,
        f"pod {pod.name} was rejected by the kubelet at admission ({pod.reason or 'rejected'})",
        _with_message(f"pod {pod.name}: status.reason={pod.reason or '-'}", pod.message),
    )


def _by_oom_container(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    c = next((c for c in pod.containers if c.terminated_reason == "OOMKilled"), None)
    if c is None:
        return None
    return _verdict(
        FailureClass.OOM_KILLED,
        f"{_container_label(c)} was OOM-killed{_exit_suffix(c)}",
        _container_evidence(pod, c),
    )


def _by_oom_node_event(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    # A node OOMKilling Event names a process, not a pod; it explains this pod only when one of
    # its containers on that node died of SIGKILL (the runtime did not say OOMKilled).
    killed = next((c for c in pod.containers if _signal_of(c) == 9), None)
    if killed is None:
        return None
    event = next((e for e in facts.events("Node", pod.node_name) if e.reason == "OOMKilling"), None)
    if event is None:
        return None
    return _verdict(
        FailureClass.OOM_KILLED,
        f"{_container_label(killed)} was SIGKILLed while node {pod.node_name} reported an OOM kill",
        _container_evidence(pod, killed),
        _event_evidence(event),
    )


def _by_pod_deadline(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    if pod.reason == "DeadlineExceeded":
        evidence = _with_message(f"pod {pod.name}: status.reason=DeadlineExceeded", pod.message)
    else:
        c = next((c for c in pod.containers if c.terminated_reason == "DeadlineExceeded"), None)
        if c is None:
            return None
        evidence = _container_evidence(pod, c)
    return _verdict(
        FailureClass.DEADLINE_EXCEEDED,
        f"pod {pod.name} ran longer than its activeDeadlineSeconds",
        evidence,
    )


_IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_IMAGE_PULL_EVENT_REASONS = frozenset({"Failed", "BackOff", "InspectFailed", "ErrImageNeverPull"})
_IMAGE_PULL_TEXT = re.compile(
    r"pull(?:ing)? image|ErrImagePull|ImagePullBackOff|InvalidImageName", re.IGNORECASE
)


def _by_image_pull(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    c = next((c for c in pod.containers if c.waiting_reason in _IMAGE_PULL_REASONS), None)
    if c is None:
        return None
    return _verdict(
        FailureClass.IMAGE_PULL,
        f"{_container_label(c)} could not pull its image ({c.waiting_reason})",
        _container_evidence(pod, c),
    )


def _is_pull_failure(e: EventRecord) -> bool:
    return e.reason in _IMAGE_PULL_EVENT_REASONS and _IMAGE_PULL_TEXT.search(e.message) is not None


def _by_image_pull_event(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    event = _startup_event(pod, facts, _is_pull_failure)
    if event is None:
        return None
    return _verdict(
        FailureClass.IMAGE_PULL, f"pod {pod.name} could not pull an image", _event_evidence(event)
    )


_CONFIG_WAITING_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
# The runtime could not start the process at all (bad command, missing binary): docker says
# ContainerCannotRun, containerd StartError. That is the spec's fault, not the app's.
_CONFIG_TERMINATED_REASONS = frozenset({"ContainerCannotRun", "StartError"})


def _by_config_container(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    for c in pod.containers:
        reason = c.waiting_reason if c.exit_code is None else c.terminated_reason
        if reason in _CONFIG_WAITING_REASONS or reason in _CONFIG_TERMINATED_REASONS:
            return _verdict(
                FailureClass.CONFIG_ERROR,
                f"{_container_label(c)} could not be created or started ({reason})",
                _container_evidence(pod, c),
            )
    return None


def _by_failed_mount(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    io_timeout = facts.rules.io_timeout_in
    event = _startup_event(
        pod, facts, lambda e: e.reason == "FailedMount" and not io_timeout(e.message)
    )
    if event is None:
        return None
    return _verdict(
        FailureClass.CONFIG_ERROR,
        f"pod {pod.name} could not mount a volume",
        _event_evidence(event),
    )


def _by_io_timeout_message(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    io_timeout = facts.rules.io_timeout_in
    c = next(
        (c for c in pod.containers if c.exit_code != 0 and io_timeout(c.terminated_message)),
        None,
    )
    if c is None:
        return None
    return _verdict(
        FailureClass.IO_TIMEOUT,
        f"{_container_label(c)} failed on an I/O timeout ({_exit_text(c)})",
        _container_evidence(pod, c),
    )


def _by_io_timeout_event(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    io_timeout = facts.rules.io_timeout_in
    event = _startup_event(pod, facts, lambda e: io_timeout(e.message))
    if event is None:
        return None
    return _verdict(
        FailureClass.IO_TIMEOUT,
        f"pod {pod.name} could not start: {event.reason} timed out",
        _event_evidence(event),
    )


def _by_unschedulable(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    scheduled = pod.condition("PodScheduled")
    if (
        pod.phase == "Pending"
        and scheduled is not None
        and scheduled.status == "False"
        and scheduled.reason == "Unschedulable"
    ):
        evidence = _condition_evidence(f"pod {pod.name}", scheduled)
    elif pod.node_name:  # it was scheduled in the end; old FailedScheduling events are moot
        return None
    else:
        event = next(
            (e for e in facts.events("Pod", pod.name) if e.reason == "FailedScheduling"), None
        )
        if event is None:
            return None
        evidence = _event_evidence(event)
    return _verdict(
        FailureClass.UNSCHEDULABLE,
        f"pod {pod.name} could not be scheduled on any node",
        evidence,
    )


def _by_exit_code(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    # Main containers before init containers (a sidecar is an init container and is killed
    # after main exits); plain exits before signal kills (a signal is often collateral).
    failed = [c for c in pod.containers if _failed(c)]
    if not failed:
        return None
    c = min(failed, key=lambda c: (c.init, _signal_of(c) is not None))  # first of equals
    reason = f"{_container_label(c)} {_exit_text(c)}"
    if _signal_of(c) == 9:
        reason += " without an OOMKilled reason"
    return _verdict(FailureClass.APP_ERROR, reason, _container_evidence(pod, c))


def _exit_text(c: ContainerOutcome) -> str:
    signal = _signal_of(c)
    if signal is None:
        return f"exited with code {c.exit_code}"
    name = _SIGNAL_NAMES.get(signal, f"signal {signal}")
    return f"was killed by {name}{_exit_suffix(c)}"


def _exit_suffix(c: ContainerOutcome) -> str:
    return f" (exit {c.exit_code})" if c.exit_code is not None else ""


POD_RULES: tuple[PodRule, ...] = (
    _by_disruption_target,
    _by_pod_reason,
    _by_node_state,
    _by_legacy_node_lost,
    _by_disruption_event,
    _by_node_not_ready_event,
    _by_admission,
    _by_oom_container,
    _by_oom_node_event,
    _by_pod_deadline,
    _by_image_pull,
    _by_image_pull_event,
    _by_config_container,
    _by_failed_mount,
    _by_io_timeout_message,
    _by_io_timeout_event,
    _by_unschedulable,
    _by_exit_code,
)


def _classify_pod(pod: PodSnapshot, facts: _Facts) -> Classification | None:
    for rule in POD_RULES:
        verdict = rule(pod, facts)
        if verdict is not None:
            return verdict
    return None


# --- choosing the deciding pod -----------------------------------------------------------


def _candidate_pods(facts: _Facts) -> tuple[PodSnapshot, ...]:
    pods = tuple(p for p in facts.report.pods if p.phase != "Succeeded")
    if pods or facts.report.pods:
        return pods
    # Pod objects already gone (TTL, pod GC): their Events may still say what happened.
    names = dict.fromkeys(e.involved_name for e in facts.report.events if e.involved_kind == "Pod")
    return tuple(PodSnapshot(name=name, uid="", deleted=True) for name in names if name)


def _created(pod: PodSnapshot) -> float:
    return pod.created_at if pod.created_at is not None else float("-inf")


def _deciding_pod(facts: _Facts) -> _PodVerdict | None:
    """The most recent failed pod with a class; failed pods before pending or running ones.

    Ties on creation time go to the greater name, so the list order of pods never matters.
    """
    classified = sorted(
        (
            ((_ended_badly(pod), _created(pod), pod.name, pod.uid), pod, verdict)
            for pod in _candidate_pods(facts)
            if (verdict := _classify_pod(pod, facts)) is not None
        ),
        key=lambda entry: entry[0],
        reverse=True,
    )
    if not classified:
        return None
    (_, pod, verdict), rest = classified[0], classified[1:]
    others = tuple(
        f"{other.name}={v.failure_class}"
        for _, other, v in rest
        if v.failure_class != verdict.failure_class
    )
    return _PodVerdict(pod, verdict, others)


# --- job rules ---------------------------------------------------------------------------

_MAX_OTHERS = 5


def _job_name(facts: _Facts) -> str:
    ref = facts.report.job.ref
    return f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name or "<unnamed>"


def _job_evidence(facts: _Facts) -> tuple[str, ...]:
    failure = facts.job_failure()
    return (_condition_evidence(f"job {_job_name(facts)}", failure),) if failure else ()


def _pod_evidence(deciding: _PodVerdict | None) -> tuple[str, ...]:
    if deciding is None:
        return ()
    others = deciding.others
    if not others:
        return deciding.verdict.evidence
    listed = ", ".join(others[:_MAX_OTHERS]) + (", …" if len(others) > _MAX_OTHERS else "")
    return (*deciding.verdict.evidence, f"other failed pods: {listed}")


def _job_deadline_signal(facts: _Facts) -> str | None:
    failure = facts.job_failure()
    if failure is not None and failure.reason == "DeadlineExceeded":
        return _condition_evidence(f"job {_job_name(facts)}", failure)
    job_events = facts.events("Job", facts.report.job.ref.name)
    event = next((e for e in job_events if e.reason == "DeadlineExceeded"), None)
    return _event_evidence(event) if event is not None else None


def _by_job_deadline(facts: _Facts, deciding: _PodVerdict | None) -> Classification | None:
    signal = _job_deadline_signal(facts)
    if signal is None:
        return None
    if deciding is not None and deciding.verdict.failure_class in OUTRANKS_DEADLINE_CLASSES:
        return None
    return _verdict(
        FailureClass.DEADLINE_EXCEEDED,
        f"job {_job_name(facts)} ran longer than its activeDeadlineSeconds",
        signal,
        *_pod_evidence(deciding),
    )


def _by_pod_failure_policy(facts: _Facts, deciding: _PodVerdict | None) -> Classification | None:
    failure = facts.job_failure()
    if failure is None or failure.reason != "PodFailurePolicy":
        return None
    if deciding is not None:
        return _verdict(
            deciding.verdict.failure_class,
            f"podFailurePolicy failed the job: {deciding.verdict.reason}",
            *_pod_evidence(deciding),
            *_job_evidence(facts),
        )
    # The user's policy matched an exit code (or a condition we no longer see): their call.
    detail = f" ({_clip(failure.message)})" if failure.message else ""
    return _verdict(
        FailureClass.APP_ERROR,
        f"podFailurePolicy failed the job{detail}",
        *_job_evidence(facts),
    )


def _by_pod_verdict(facts: _Facts, deciding: _PodVerdict | None) -> Classification | None:
    if deciding is None:
        return None
    reason = deciding.verdict.reason
    stuck = facts.report.stuck_for_s
    if stuck is not None and facts.job_failure() is None:
        reason += f" (stuck for {stuck:.0f} s)"
    return _verdict(
        deciding.verdict.failure_class,
        reason,
        *_pod_evidence(deciding),
        *_job_evidence(facts),
    )


JOB_RULES: tuple[JobRule, ...] = (_by_job_deadline, _by_pod_failure_policy, _by_pod_verdict)


def _unknown(facts: _Facts) -> Classification:
    report, failure = facts.report, facts.job_failure()
    if failure is not None:
        reason = f"job failed ({failure.reason or 'no reason'}) but no pod evidence explains it"
    elif report.stuck_for_s is not None:
        reason = f"job stuck for {report.stuck_for_s:.0f} s without a recognised cause"
    elif not (report.pods or report.events):
        reason = "no failure evidence: no pods, events or Failed condition"
    else:
        reason = "no recognised failure signal in the pods or events"
    return _verdict(FailureClass.UNKNOWN, reason, *_job_evidence(facts))
