"""The values `kube-dlq dlq consume` passes between its consumer group and its loop."""

from __future__ import annotations

from dataclasses import dataclass

from watcher.core.model import DeadLetter

__all__ = ["Delivery", "RunResult"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry handed to this consumer."""

    entry_id: str
    """``<queue>/<stream-id>``, as `dlq list` shows it."""
    queue: str
    letter: DeadLetter | None
    """None when the entry cannot be run: see `problem`."""
    problem: str | None = None
    """Why it is not run: forged, does not decode, or gone from the stream."""
    forged: bool = False
    gone: bool = False
    """Deleted from the stream (trimmed or purged) while pending: nothing left to run."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run of the handler ended."""

    exit_code: int | None
    """None when it was killed (timeout, shutdown) and gave no exit code of its own."""
    timed_out: bool = False
    stopped: bool = False
    """Ended by the consumer's shutdown (SIGTERM after the grace), not by itself."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.stopped:
            return "stopped at shutdown"
        if self.exit_code is not None and self.exit_code < 0:
            return f"killed by signal {-self.exit_code}"
        return f"exit {self.exit_code}"
