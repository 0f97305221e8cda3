"""A real Prometheus (Debian's `prometheus`) as a plain process on a free loopback port.

For the monitoring tests and the demo: it scrapes the given targets every `scrape_interval_s`,
loads rule files, keeps its TSDB in its own temp dir, and answers PromQL through its HTTP API
(`query`). Nothing here skips: a missing binary or a server that does not report ready raises
`PrometheusError` naming the binary and the tail of its log. It is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from devtools.devcluster.processes import free_port, stop_child

DEFAULT_BINARY = "prometheus"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class PrometheusError(RuntimeError):
    """prometheus is missing, did not start, or a query failed."""


class PrometheusServer:
    """One prometheus, started by `start()` (or ``with``) and stopped by PID in `stop()`."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
        job: str = "kube-dlq",
        binary: str | None = None,
    ) -> None:
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval_s = scrape_interval_s
        self.job = job
        self.binary = binary or os.environ.get("PROMETHEUS_BIN", DEFAULT_BINARY)
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "server was never started"
        return self._dir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        """The prometheus.yml written for this server."""
        interval = f"{self.scrape_interval_s:g}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
        }

    def _resolve_binary(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise PrometheusError(
                f"{self.binary!r} not found on PATH (install Debian's prometheus: "
                "scripts/install-deps.sh does; or set PROMETHEUS_BIN); the monitoring tests "
                "need a real Prometheus and do not skip"
            )
        return path

    def start(self) -> PrometheusServer:
        binary = self._resolve_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="kube-dlq-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.port = free_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            # No console templates from /etc (the Debian defaults point there).
            f"--web.console.templates={self._dir}",
            f"--web.console.libraries={self._dir}",
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(  # fixed argv, no shell
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(
            f"{binary} did not report ready on {self.url} within {START_TIMEOUT_S:.0f}s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>?params; the `data` of a success answer (PrometheusError else)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time; its result vector (or a scalar as one item)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def metric_names(self) -> set[str]:
        names: list[str] = self.api("label/__name__/values")
        return set(names)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited after STOP_TIMEOUT_S."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, STOP_TIMEOUT_S)

    def close(self) -> None:
        """Stop the server and remove its temp dir (TSDB and log)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
