"""Run the kube-dlq daemon for an end-to-end test, and read what it did the way a user would.

Two ways to run it against the session control plane (as its own ServiceAccount identity):

* in-process (`start_daemon` fixture): a `watcher.app.daemon.Daemon` built from a config
  document, run as a task of the test's event loop, stopped through its `stop` event at
  teardown (the exit code must be 0). Its health server listens on a free port; /readyz and
  /metrics are read over HTTP. Two knobs are turned down for speed, through the config like
  any setting: classify.stuck_check_interval_s and retry_loop.poll_interval_s.
* a subprocess (`spawn_daemon` fixture): `python -m watcher run --config FILE`, exactly what a
  user runs, for restart, SIGKILL and SIGTERM tests. Only processes this fixture started are
  signalled, by their PID.

Every test gets its own `cluster_name` (so its own Redis keys) on a FLUSHDB'd session Redis,
a scope limited to its namespace, retry backoff of about a second and a short stuck dwell.
Dead letters are read back through `DeadLetterQueries` (the CLI's reader) or
`kube-dlq dlq list -o json`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from devtools.devcluster.processes import free_port
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from tests.support.kube import eventually
from watcher.adapters.kube.connect import connect
from watcher.adapters.redis.client import redis_client
from watcher.adapters.redis.queries import DeadLetterQueries
from watcher.adapters.redis.store import RedisStore
from watcher.app.config import parse_config
from watcher.app.daemon import Daemon
from watcher.app.sealing import build_seal
from watcher.core.errors import SinkError
from watcher.core.model import DeadLetter, FailureClass

REPO_ROOT = Path(__file__).resolve().parents[2]

STUCK_DWELL_S = 8
"""classify.stuck_pending_after_s of every test daemon: an image that cannot be pulled makes
its Job count as failed after this long."""
STUCK_CHECK_INTERVAL_S = 1.0
"""In-process daemons look for stuck Jobs this often (the product checks every 10 s)."""
RETRY_POLL_S = 1.0
"""In-process daemons claim due retries this often (the product polls every 5 s)."""
SHUTDOWN_GRACE_S = 10
BACKOFF_BASE_S = 1


Doc = dict[str, Any]

SIGNING_KEY_ID = "k1"


@functools.cache
def signing_keys_dir() -> str:
    """A key directory like a mounted Secret, one key `k1`, shared by every daemon of this
    test process (in-process and subprocess alike) and removed when it exits."""
    directory = tempfile.mkdtemp(prefix="kube-dlq-signing-")
    Path(directory, SIGNING_KEY_ID).write_text(secrets.token_hex(32))
    atexit.register(shutil.rmtree, directory, True)
    return directory


def signing() -> Doc:
    """The ``security`` section every test daemon gets: signed, as in production."""
    return {"signing_keys_dir": signing_keys_dir(), "signing_key_id": SIGNING_KEY_ID}


def config_doc(
    cluster: ClusterState,
    *,
    namespace: str,
    redis_url: str,
    cluster_name: str,
    kubeconfig: str | None = None,
    port: int | None = None,
    **overrides: Any,
) -> Doc:
    """A daemon config for one test: its namespace only, fast backoff, short stuck dwell."""
    doc: Doc = {
        "cluster_name": cluster_name,
        "redis": {"url": redis_url},
        "kubernetes": {"kubeconfig": kubeconfig or cluster.daemon_kubeconfig},
        "scope": {"namespaces": [namespace]},
        "classify": {"stuck_pending_after_s": f"{STUCK_DWELL_S}s"},
        "retry": {"classes": {fc.value: {"base_s": BACKOFF_BASE_S} for fc in FailureClass}},
        "server": {"bind_address": "127.0.0.1", "port": free_port() if port is None else port},
        "shutdown_grace_s": SHUTDOWN_GRACE_S,
        "log": {"level": "info", "format": "json"},
        "security": signing(),
    }
    doc.update(overrides)
    return doc


def write_config(path: Path, doc: Doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- reading what a user reads -------------------------------------------------------------------


async def http_get(port: int, path: str, *, limit_s: float = 10.0) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path>; (status, body)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def try_get(port: int, path: str) -> tuple[int, str] | None:
    """Like http_get, but None while nothing answers on the port."""
    try:
        return await http_get(port, path, limit_s=5.0)
    except (aiohttp.ClientError, TimeoutError):
        return None


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample /metrics serves, keyed by (sample name, labels)."""
    status, body = await http_get(port, "/metrics")
    assert status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def metric(port: int, name: str, labels: Mapping[str, str] | None = None) -> float:
    """A sample from /metrics; with `labels`, those labels must match (others are summed over)."""
    wanted = set((labels or {}).items())
    samples = await scrape(port)
    return sum(value for (n, ls), value in samples.items() if n == name and wanted <= ls)


@dataclass(frozen=True, slots=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"`{' '.join(self.argv)}` exited {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_LOG_LEVEL", "KUBE_DLQ_CONFIG", "KUBECONFIG"):
        env.pop(name, None)
    return env


async def kube_dlq(*args: str, limit_s: float = 90.0) -> Completed:
    """Run `kube-dlq ARGS` (as `python -m watcher ARGS`) to completion."""
    argv = [sys.executable, "-m", "watcher", *args]
    result = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=REPO_ROOT,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=limit_s,
        check=False,
    )
    return Completed(argv[2:], result.returncode, result.stdout, result.stderr)


async def dlq_list(config: Path) -> list[dict[str, Any]]:
    """`kube-dlq dlq list -o json`: every dead letter, oldest first."""
    done = await kube_dlq("dlq", "list", "--config", str(config), "-o", "json", "--limit", "1000")
    assert done.returncode == 0, str(done)
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


async def dlq_show(config: Path, entry_id: str) -> dict[str, Any]:
    """`kube-dlq dlq show ID -o json`: one dead letter, evidence and history included."""
    done = await kube_dlq("dlq", "show", "--config", str(config), entry_id, "-o", "json")
    assert done.returncode == 0, str(done)
    entry: dict[str, Any] = json.loads(done.stdout)
    return entry


def by_uid(letters: list[tuple[str, DeadLetter]]) -> dict[str, list[str]]:
    """Dead-letter ids per Job uid (exactly-once: one id each)."""
    found: dict[str, list[str]] = {}
    for entry_id, letter in letters:
        found.setdefault(letter.job.uid, []).append(entry_id)
    return found


async def all_dead_letters(queries: DeadLetterQueries) -> list[tuple[str, DeadLetter]]:
    letters = await queries.list_dead_letters(None, count=10_000)
    assert not letters.corrupt, letters.corrupt
    return list(letters)


async def wait_dead_letters(
    queries: DeadLetterQueries, count: int, *, within: float, what: str = "", every: float = 0.25
) -> list[tuple[str, DeadLetter]]:
    """Wait until at least `count` dead letters exist; return them all.

    A read that fails (Redis restarting: the first command on a pooled connection from before
    the restart fails) is retried at the next poll, as a person would run the command again.
    """

    async def enough() -> list[tuple[str, DeadLetter]] | None:
        try:
            letters = await all_dead_letters(queries)
        except SinkError:
            return None
        return letters if len(letters) >= count else None

    return await eventually(
        enough, within=within, what=what or f"{count} dead letter(s)", every=every
    )


# --- redis ---------------------------------------------------------------------------------------


@pytest.fixture
async def dlq_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on the session redis-server, db 0 flushed for this test."""
    conn = Redis.from_url(redis_server.url, socket_timeout=5, socket_connect_timeout=5)
    await conn.flushdb()
    try:
        yield conn
    finally:
        await conn.aclose()


@pytest.fixture
def cluster_name() -> str:
    """Names this test's installation: its own Redis keys even without the FLUSHDB."""
    return f"e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that freeze, stop or restart it.

    With the append-only file, as docs/install.md requires of a production Redis: a daemon
    on it is durable (/readyz says a plain "ok"), and a restart keeps what was written. The
    session `redis_server` is the one without persistence.
    """
    with RedisServer(persistent=True) as server:
        yield server


# --- in-process daemon ---------------------------------------------------------------------------


@dataclass
class RunningDaemon:
    """A Daemon running as a task of the test's event loop."""

    daemon: Daemon
    task: asyncio.Task[int]
    doc: Doc
    redis: Redis
    """The client the daemon's store uses."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def store(self) -> RedisStore:
        """The daemon's own store (retry tickets, gauges)."""
        return self.daemon.store

    @property
    def queries(self) -> DeadLetterQueries:
        """A CLI reader of the keys the daemon writes (its config's prefix and cluster)."""
        config = self.daemon.settings
        return DeadLetterQueries(
            self.redis,
            config.redis,
            cluster_name=config.cluster_name,
            seal=build_seal(config.security),
        )

    @property
    def port(self) -> int:
        return self.daemon.health.port

    async def get(self, path: str) -> tuple[int, str]:
        return await http_get(self.port, path)

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        return await metric(self.port, name, labels)

    async def dead_letters(self) -> list[tuple[str, DeadLetter]]:
        return await all_dead_letters(self.queries)

    async def stop(self) -> int:
        """Set `stop` and wait for run() to return; its exit code."""
        self.daemon.stop.set()
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), SHUTDOWN_GRACE_S + 15)
        finally:
            for close in self.closers:
                with contextlib.suppress(Exception):
                    await close()
            self.closers.clear()


StartDaemon = Callable[..., Awaitable[RunningDaemon]]


@pytest.fixture
async def start_daemon(
    cluster: ClusterState,
    namespace: str,
    dlq_redis: Redis,
    cluster_name: str,
    redis_server: RedisServer,
) -> AsyncIterator[StartDaemon]:
    """Factory: `await start_daemon(**config_overrides)` runs a Daemon for the test's namespace.

    Keyword arguments override config_doc's (redis_url, kubeconfig, or top-level sections);
    `ready=False` returns as soon as the health server listens instead of waiting for /readyz.
    Every daemon started is stopped at teardown, and must exit 0.
    """
    started: list[RunningDaemon] = []

    async def start(*, ready: bool = True, **overrides: Any) -> RunningDaemon:
        params: dict[str, Any] = {
            "redis_url": redis_server.url,
            "cluster_name": cluster_name,
            "port": 0,  # any free port; RunningDaemon.port reads the one chosen
            "retry_loop": {"poll_interval_s": RETRY_POLL_S},
        }
        params.update(overrides)
        doc = config_doc(cluster, namespace=namespace, **params)
        doc["classify"].setdefault("stuck_check_interval_s", STUCK_CHECK_INTERVAL_S)
        config = parse_config(doc)
        kube = await connect(config.kubernetes)
        redis = redis_client(config.redis)
        seal = build_seal(config.security)  # as run_daemon builds it
        store = RedisStore(redis, config.redis, cluster_name=config.cluster_name, seal=seal)
        daemon = Daemon(config, kube=kube, store=store)
        running = RunningDaemon(daemon, asyncio.create_task(daemon.run()), doc, redis)
        running.closers += [kube.close, redis.aclose]
        started.append(running)

        async def listening() -> bool:
            if running.task.done():
                raise AssertionError(f"daemon exited early: {running.task.result()}")
            return daemon.health.port != 0

        await eventually(listening, within=30, what="the daemon's health server", every=0.05)
        if ready:
            await wait_ready(running.port)
        return running

    yield start
    codes = [await running.stop() for running in started]
    assert codes == [0] * len(started), f"daemon exit codes {codes}"


async def wait_ready(port: int, *, within: float = 60) -> None:
    async def ready() -> bool:
        got = await try_get(port, "/readyz")
        return got is not None and got[0] == 200

    await eventually(ready, within=within, what=f"/readyz on port {port} to say 200", every=0.1)


# --- daemon subprocess ---------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    """`python -m watcher run --config FILE` as a child process, logging to a file."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        """Start the daemon (again, after it exited: a restart with the same config)."""
        assert not self.running, "already running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # fixed argv, no shell
                [sys.executable, "-m", "watcher", "run", "--config", str(self.config)],
                cwd=REPO_ROOT,
                env=_cli_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, *, within: float = 60) -> None:
        try:

            async def ready() -> bool:
                if not self.running:
                    raise AssertionError("the daemon exited while starting")
                got = await try_get(self.port, "/readyz")
                return got is not None and got[0] == 200

            await eventually(ready, within=within, what="the daemon's /readyz", every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    async def wait(self, within: float) -> int:
        """Wait for the process to exit; its return code (AssertionError if it does not)."""
        deadline = time.monotonic() + within
        assert self.proc is not None
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"daemon pid {self.pid} still running after {within:.0f}s\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def kill(self) -> int:
        """SIGKILL, as the OOM killer or a node crash would."""
        if self.running:
            self.send(signal.SIGKILL)
        return await self.wait(10)

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        return await metric(self.port, name, labels)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return f"--- {self.log} (last {lines} lines) ---\n" + "\n".join(text)

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (other lines skipped)."""
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    events.append(parsed)
        return events


SpawnDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def spawn_daemon(
    cluster: ClusterState,
    namespace: str,
    dlq_redis: Redis,
    cluster_name: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[SpawnDaemon]:
    """Factory: `spawn_daemon(**config_overrides)` starts `kube-dlq run` for the namespace.

    Each call writes its own config file (its own health port) and log; `.config` of the
    returned process is also what `kube-dlq dlq list --config` and `sweep --config` take.
    Processes still running at teardown are SIGKILLed by PID.
    """
    spawned: list[DaemonProcess] = []

    def spawn(*, start: bool = True, **overrides: Any) -> DaemonProcess:
        params: dict[str, Any] = {"redis_url": redis_server.url, "cluster_name": cluster_name}
        params.update(overrides)
        doc = config_doc(cluster, namespace=namespace, **params)
        n = len(spawned)
        config = write_config(tmp_path / f"kube-dlq-{n}.yaml", doc)
        process = DaemonProcess(config, doc["server"]["port"], tmp_path / f"daemon-{n}.log")
        spawned.append(process)
        return process.start() if start else process

    yield spawn
    for process in spawned:
        if process.running:
            with contextlib.suppress(ProcessLookupError):
                process.send(signal.SIGKILL)
            assert process.proc is not None
            process.proc.wait(10)
