"""Process helpers shared by devtools' servers: a free local port, whether a recorded PID
still runs its binary, stopping a child (SIGTERM, wait, SIGKILL), and progress lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str], None]
"""Where a long step reports what it is doing."""


def to_stderr(message: str) -> None:
    """The default `Progress`: one line on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_alive(pid: int, binary: str) -> bool:
    """True if `pid` runs `binary` (guards against a recycled PID of an unrelated process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return cmdline == binary and not zombie


def terminate(
    pid: int, binary: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0
) -> None:
    """SIGTERM, wait, then SIGKILL — only if `pid` still runs `binary`."""
    if proc is not None and proc.poll() is not None:
        return
    if proc is None and not pid_alive(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not pid_alive(pid, binary):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def stop_child(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Stop a child this process started: SIGTERM, wait up to `timeout_s`, then SIGKILL.

    The one way devtools stops its servers (control plane, Redis helpers, Toxiproxy,
    Prometheus); a child that already exited is left alone."""
    terminate(proc.pid, "", proc, timeout_s)


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])
