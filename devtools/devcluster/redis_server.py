"""A real redis-server process on a free loopback port, for tests and the demo.

Nothing here skips: a missing binary or a server that does not answer PING raises
`RedisServerError` naming the binary and the tail of its log, so the test run fails loudly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

DEFAULT_BINARY = "redis-server"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start, or did not stop."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server, started by `start()` (or ``with``) and stopped by PID in `stop()`.

    Defaults to no persistence (``--save "" --appendonly no``); ``persistent=True`` turns on
    the append-only file in the server's own temp dir, so `restart()` keeps the data.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        persistent: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or os.environ.get("REDIS_SERVER_BIN", DEFAULT_BINARY)
        self.persistent = persistent
        self.extra_args = extra_args
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "server was never started"
        return self._dir / "redis.log"

    def _resolve_binary(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise RedisServerError(
                f"{self.binary!r} not found on PATH (install Debian's redis-server, or set "
                "REDIS_SERVER_BIN); integration tests need a real Redis and do not skip"
            )
        return path

    def _command(self, binary: str) -> list[str]:
        assert self._dir is not None
        return [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        """Start on a free port (a fresh one unless restarting) and wait for PING."""
        binary = self._resolve_binary()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="kube-dlq-redis-"))
        fixed_port = self.port != 0
        for _ in range(1 if fixed_port else 3):
            if not fixed_port:
                self.port = _free_port()
            self._proc = subprocess.Popen(  # fixed argv, no shell
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            in_use = "Address already in use" in self._log_tail()
            self._kill()
            if not in_use:
                break
        raise RedisServerError(
            f"{binary} did not answer PING on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT_S:.0f}s; log {self.log_path}:\n{self._log_tail()}"
        )

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _ping(self.port):
                return True
            time.sleep(0.02)
        return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited after STOP_TIMEOUT_S."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc = proc
            self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop and start again on the same port and dir (data kept only if persistent)."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL by PID (kill -9: no shutdown, no final save) and wait for it to be gone.

        `start()` afterwards brings it back on the same port and dir; with ``persistent=True``
        it reloads the append-only file, which holds every write acknowledged before the kill
        (redis writes the AOF buffer to the file before it answers; only an fsync to disk, which
        a process kill does not need, may lag by up to a second).
        """
        assert self._proc is not None, "server is not running"
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, signal.SIGCONT)  # a frozen server dies the same way
        self._kill()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        assert self._proc is not None, "server is not running"
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._proc is not None, "server is not running"
        os.kill(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
