"""A real Toxiproxy server (Shopify's TCP fault proxy) on loopback, driven by its HTTP API.

The binary is built once from the Go module proxy (`build.ensure_toxiproxy`). `Toxiproxy`
starts it on a free API port, stops it by PID, and wraps the calls the fault suite makes:
create a proxy (``listen`` -> ``upstream``), add and remove toxics (latency, timeout,
reset_peer, ...), turn a proxy off and on, and reset everything. Nothing here skips: a missing
binary or a server that does not answer raises `ToxiproxyError` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from devtools.devcluster.processes import free_port, stop_child

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 5.0

Stream = Literal["upstream", "downstream"]
"""upstream: client -> server bytes; downstream: server -> client bytes."""


class ToxiproxyError(RuntimeError):
    """Toxiproxy is missing, did not start, or refused an API call."""


class Toxiproxy:
    """One toxiproxy server; use as a context manager, or start() and stop()."""

    def __init__(self, binary: Path, *, seed: int = 1) -> None:
        self.binary = binary
        self.seed = seed
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "server was never started"
        return self._dir / "toxiproxy.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Toxiproxy:
        if not os.access(self.binary, os.X_OK):
            raise ToxiproxyError(
                f"no toxiproxy binary at {self.binary} (`kube-dlq dev build` builds it); "
                "the fault suite needs a real one and does not skip"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="kube-dlq-toxiproxy-"))
        self.port = free_port()
        with self.log_path.open("ab") as log:
            argv = [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)]
            self._proc = subprocess.Popen(  # fixed argv, no shell
                [*argv, "-seed", str(self.seed)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            if self._wait_ready():
                return self
        except BaseException:
            self.stop()  # never leave a started server behind
            raise
        self.stop()
        raise ToxiproxyError(
            f"toxiproxy did not answer on {self.api} within {START_TIMEOUT_S:.0f}s; "
            f"log {self.log_path}:\n{self._log_tail()}"
        )

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, ToxiproxyError):
                self._call("GET", "/version")
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited after STOP_TIMEOUT_S."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, STOP_TIMEOUT_S)

    def __enter__(self) -> Toxiproxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and remove its temp dir (its log)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- the HTTP API -------------------------------------------------------------------------

    def proxy(self, name: str, upstream: str) -> int:
        """Create proxy `name` listening on a free loopback port towards `upstream`
        (``host:port``); returns the port it listens on."""
        port = free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream}
        self._call("POST", "/proxies", {**body, "enabled": True})
        return port

    def add_toxic(
        self,
        proxy: str,
        name: str,
        kind: str,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        **attributes: float,
    ) -> None:
        """Add a toxic of type `kind` (latency, timeout, reset_peer, bandwidth, ...)."""
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        self._call("POST", f"/proxies/{proxy}/toxics", body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def enable(self, proxy: str, enabled: bool) -> None:
        """Turn the proxy off (its listener closes, its connections drop) or on again."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def reset(self) -> None:
        """Every proxy on, every toxic gone."""
        self._call("POST", "/reset")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", f"/proxies/{proxy}/toxics")
        return found

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ToxiproxyError(f"{method} {path} -> {exc.code}: {detail}") from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")  # /version answers plain text

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
