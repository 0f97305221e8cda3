"""Run the `dlq consume` handler command once: stdin in, exit code out (`HandlerRunner`).

The handler runs in its own session (process group), so a Ctrl-C at the terminal reaches the
consumer only, and the consumer decides: the handler is let finish for the grace, then gets
SIGTERM, then SIGKILL. A timeout ends it the same way. Signals go to the whole group, so a
handler that is a shell script takes its children with it. Its stdout and stderr are the
consumer's (nothing is buffered here: memory stays bounded whatever the handler prints).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from watcher.core.consume import RunResult

__all__ = ["CommandRunner"]

EXEC_FAILED = 127
"""What a shell answers when it cannot run the command; the handler run counts as failed."""


@dataclass(frozen=True, slots=True)
class CommandRunner:
    argv: Sequence[str]
    grace_s: float = 30.0
    """After shutdown begins, how long the running handler may go on before SIGTERM."""
    kill_after_s: float = 10.0
    """After SIGTERM (shutdown or timeout), how long before SIGKILL."""
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    async def run(
        self, stdin: bytes, env: Mapping[str, str], *, timeout_s: float | None, stop: asyncio.Event
    ) -> RunResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                env={**self.base_env, **env},
                start_new_session=True,
            )
        except (OSError, ValueError):  # not runnable, or an argument exec refuses (a NUL)
            return RunResult(EXEC_FAILED)
        feed = asyncio.create_task(_feed(proc, stdin))
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, timeout=timeout_s, return_when="FIRST_COMPLETED")
            if exited.done():
                return RunResult(proc.returncode)
            if not stop.is_set():
                await self._end(proc, exited)
                return RunResult(None, timed_out=True)
            await asyncio.wait({exited}, timeout=self.grace_s)
            if exited.done():
                return RunResult(proc.returncode)
            code = await self._end(proc, exited)
            # Exit 0 on SIGTERM means it finished what it was doing: that counts.
            return RunResult(0) if code == 0 else RunResult(None, stopped=True)
        finally:
            for task in (feed, stopping):
                task.cancel()
            if proc.returncode is None:  # we are being cancelled: leave nothing behind
                _signal(proc, signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(feed, stopping, return_exceptions=True)

    async def _end(self, proc: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> int:
        _signal(proc, signal.SIGTERM)
        await asyncio.wait({exited}, timeout=self.kill_after_s)
        if not exited.done():
            _signal(proc, signal.SIGKILL)
        return await exited


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    """Write stdin and close it; a handler that does not read it is not an error."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
