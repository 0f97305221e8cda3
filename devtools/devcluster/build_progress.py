"""What a long `go build` is doing, said every so often instead of one line for minutes.

A cold build of the control plane takes 10 to 25 minutes on two cores: first Go downloads
modules, then it compiles a few thousand packages. `go build -v` writes each package's path to
the log as it is compiled; `describe` turns the log so far into one line (what phase, how far,
the last package), and `run` prints it every `every_s` seconds with the elapsed time.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["HEARTBEAT_S", "describe", "run"]

HEARTBEAT_S = 30.0


def describe(lines: Sequence[str]) -> str:
    """One line about a `go build -v` log so far (its first line is the command itself)."""
    downloads = [line for line in lines if line.startswith("go: downloading ")]
    packages = [
        line.strip()
        for line in lines[1:]
        if line.strip() and not line.startswith(("go: ", "#")) and " " not in line.strip()
    ]
    if packages:
        return f"compiling: {len(packages)} packages done, last {packages[-1]}"
    if downloads:
        last = downloads[-1].removeprefix("go: downloading ").strip()
        return f"downloading modules: {len(downloads)} so far, last {last}"
    return "resolving modules"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    log_file: IO[str],
    component: str,
    progress: Callable[[str], None],
    every_s: float = HEARTBEAT_S,
) -> int:
    """Run `cmd` with its output in `log_file` (open on `log`), saying how it goes."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=log_file, stderr=log_file)
    try:
        while True:
            try:
                return proc.wait(timeout=every_s)
            except subprocess.TimeoutExpired:
                log_file.flush()
                lines = log.read_text(errors="replace").splitlines()
                elapsed = _elapsed(time.monotonic() - started)
                progress(f"  {component}: {elapsed}, {describe(lines)}")
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): do not leave go building behind
            proc.kill()
            proc.wait()
