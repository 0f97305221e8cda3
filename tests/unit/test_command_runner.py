"""`CommandRunner` with real processes: exit codes, stdin, timeouts, shutdown's grace."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from watcher.core.consume import RunResult
from watcher.service.command import EXEC_FAILED, CommandRunner


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_the_exit_code_and_stdin_reach_the_caller_and_the_handler(tmp_path: Path) -> None:
    out = tmp_path / "stdin"
    runner = CommandRunner(
        py(
            f"import sys,os; open({str(out)!r},'w').write(sys.stdin.read()+os.environ['X']); "
            "sys.exit(4)"
        )
    )
    result = await runner.run(b"entry", {"X": "!"}, timeout_s=None, stop=asyncio.Event())
    assert result == RunResult(4) and out.read_text() == "entry!"


async def test_a_handler_that_ignores_a_large_stdin_still_ends_normally() -> None:
    runner = CommandRunner(py("pass"))
    result = await runner.run(b"x" * 5_000_000, {}, timeout_s=10, stop=asyncio.Event())
    assert result.ok


async def test_a_timeout_kills_the_handler_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    # A shell whose child would write the marker after 2 s: the group is signalled, not the shell.
    runner = CommandRunner(["sh", "-c", f"(sleep 2; touch {marker}) & wait"], kill_after_s=1)
    started = time.monotonic()
    result = await runner.run(b"", {}, timeout_s=0.3, stop=asyncio.Event())
    assert result.timed_out and not result.ok and time.monotonic() - started < 3
    await asyncio.sleep(2.2)
    assert not marker.exists()


async def test_a_command_that_cannot_be_run_is_a_failed_run(tmp_path: Path) -> None:
    runner = CommandRunner([str(tmp_path / "missing")])
    assert await runner.run(b"", {}, timeout_s=None, stop=asyncio.Event()) == RunResult(EXEC_FAILED)


async def test_at_shutdown_the_handler_gets_the_grace_then_sigterm() -> None:
    stop = asyncio.Event()
    stop.set()
    quick = CommandRunner(py("import time; time.sleep(0.2)"), grace_s=5)
    assert (await quick.run(b"", {}, timeout_s=None, stop=stop)).ok
    slow = CommandRunner(py("import time; time.sleep(30)"), grace_s=0.2)
    started = time.monotonic()
    result = await slow.run(b"", {}, timeout_s=None, stop=stop)
    assert result.stopped and time.monotonic() - started < 5
