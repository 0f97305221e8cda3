"""Rules that read container statuses, and the container facts other rules share.

The rules: OOMKilled (7), image pull (9), container config errors (10), I/O timeout in a
termination message (11) and the exit code (13), numbered as in the order of
`watcher.core.classify`. The shared facts: the signal a container died of, whether it exited on
its own (the kubelet was alive at the end) and whether any container ever ran.
"""

from __future__ import annotations

from watcher.core.classify.evidence import classified_as, container_evidence, container_label
from watcher.core.classify.facts import Facts
from watcher.core.model import Classification, ContainerOutcome, FailureClass, PodSnapshot

__all__ = [
    "by_config_container",
    "by_exit_code",
    "by_image_pull",
    "by_io_timeout_message",
    "by_oom_container",
    "kubelet_saw_end",
    "never_ran",
    "signal_of",
]

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


def signal_of(c: ContainerOutcome) -> int | None:
    if c.signal:
        return c.signal
    if c.exit_code is not None and 128 < c.exit_code <= 128 + _MAX_SIGNAL:
        return c.exit_code - 128
    return None


def _failed(c: ContainerOutcome) -> bool:
    return (c.exit_code is not None and c.exit_code != 0) or bool(c.signal)


def kubelet_saw_end(pod: PodSnapshot) -> ContainerOutcome | None:
    """A container whose end the kubelet reported: an exit on its own (1..128) or an OOM kill.

    Either way the node was alive when the container ended, so a node that is NotReady now (a
    flap, or trouble after the pod was done) does not explain the failure.
    """
    return next(
        (
            c
            for c in pod.containers
            if _failed(c) and (signal_of(c) is None or c.terminated_reason == "OOMKilled")
        ),
        None,
    )


def never_ran(pod: PodSnapshot) -> bool:
    """No container got past waiting. Start-up Events (pull, mount, sandbox, scheduling, and
    probe timeouts, which only come later) are history once a container has run."""
    return all(
        c.waiting_reason and c.exit_code is None and not c.signal and not c.restart_count
        for c in pod.containers
    )


def by_oom_container(pod: PodSnapshot, facts: Facts) -> Classification | None:
    c = next((c for c in pod.containers if c.terminated_reason == "OOMKilled"), None)
    if c is None:
        return None
    return classified_as(
        FailureClass.OOM_KILLED,
        f"{container_label(c)} was OOM-killed{_exit_suffix(c)}",
        container_evidence(pod, c),
    )


_IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


def by_image_pull(pod: PodSnapshot, facts: Facts) -> Classification | None:
    c = next((c for c in pod.containers if c.waiting_reason in _IMAGE_PULL_REASONS), None)
    if c is None:
        return None
    return classified_as(
        FailureClass.IMAGE_PULL,
        f"{container_label(c)} could not pull its image ({c.waiting_reason})",
        container_evidence(pod, c),
    )


_CONFIG_WAITING_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
# The runtime could not start the process at all (bad command, missing binary): docker says
# ContainerCannotRun, containerd StartError. That is the spec's fault, not the app's.
_CONFIG_TERMINATED_REASONS = frozenset({"ContainerCannotRun", "StartError"})


def by_config_container(pod: PodSnapshot, facts: Facts) -> Classification | None:
    for c in pod.containers:
        reason = c.waiting_reason if c.exit_code is None else c.terminated_reason
        if reason in _CONFIG_WAITING_REASONS or reason in _CONFIG_TERMINATED_REASONS:
            return classified_as(
                FailureClass.CONFIG_ERROR,
                f"{container_label(c)} could not be created or started ({reason})",
                container_evidence(pod, c),
            )
    return None


def by_io_timeout_message(pod: PodSnapshot, facts: Facts) -> Classification | None:
    io_timeout = facts.rules.io_timeout_in
    c = next(
        (c for c in pod.containers if c.exit_code != 0 and io_timeout(c.terminated_message)),
        None,
    )
    if c is None:
        return None
    return classified_as(
        FailureClass.IO_TIMEOUT,
        f"{container_label(c)} failed on an I/O timeout ({_exit_text(c)})",
        container_evidence(pod, c),
    )


def by_exit_code(pod: PodSnapshot, facts: Facts) -> Classification | None:
    # Main containers before init containers (a sidecar is an init container and is killed
    # after main exits); plain exits before signal kills (a signal is often collateral).
    failed = [c for c in pod.containers if _failed(c)]
    if not failed:
        return None
    c = min(failed, key=lambda c: (c.init, signal_of(c) is not None))  # first of equals
    reason = f"{container_label(c)} {_exit_text(c)}"
    if signal_of(c) == 9:
        reason += " without an OOMKilled reason"
    return classified_as(FailureClass.APP_ERROR, reason, container_evidence(pod, c))


def _exit_text(c: ContainerOutcome) -> str:
    signal = signal_of(c)
    if signal is None:
        return f"exited with code {c.exit_code}"
    name = _SIGNAL_NAMES.get(signal, f"signal {signal}")
    return f"was killed by {name}{_exit_suffix(c)}"


def _exit_suffix(c: ContainerOutcome) -> str:
    return f" (exit {c.exit_code})" if c.exit_code is not None else ""
