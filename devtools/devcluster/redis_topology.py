"""Real multi-node Redis from Debian's redis-server: a 3-primary Redis Cluster, and a primary
with a replica watched by Sentinel. On free loopback ports, for tests; stopped by PID.

Like `devtools.devcluster.redis_server`, nothing here skips: a missing binary or a topology
that does not come up raises `RedisServerError` with the tail of the log that says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType

from devtools.devcluster.processes import stop_child
from devtools.devcluster.redis_server import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    RedisServer,
    RedisServerError,
    _free_port,
    _ping,
)

__all__ = ["RedisClusterNodes", "RedisSentinelGroup", "command"]

SERVICE = "kube-dlq"
"""The primary's name in `sentinel monitor` (the last part of a redis+sentinel:// URL)."""


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command by redis-cli against 127.0.0.1:`port`, its reply as text."""
    cli = shutil.which(os.environ.get("REDIS_CLI_BIN", "redis-cli"))
    if cli is None:
        raise RedisServerError("redis-cli not found on PATH (Debian's redis-tools)")
    done = subprocess.run(  # fixed argv, no shell
        [cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RedisServerError(f"redis-cli {' '.join(args)} on {port}: {done.stderr.strip()}")
    return done.stdout.strip()


def _info_field(port: int, name: str, *info: str) -> str | None:
    """Field `name` of the ``key:value`` reply of `info` (``INFO replication``, ``CLUSTER
    INFO``) from 127.0.0.1:`port`; None when it is not there or the node does not answer."""
    try:
        reply = command(port, *info)
    except (RedisServerError, subprocess.TimeoutExpired):
        return None
    for line in reply.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


def _wait(what: str, ready: Callable[[], bool], timeout: float, logs: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RedisServerError(f"{what} within {timeout:.0f}s; {logs}")


def _cluster_ok(port: int) -> bool:
    return _info_field(port, "cluster_state", "CLUSTER", "INFO") == "ok"


class RedisClusterNodes:
    """Three primaries (no replicas), slots split evenly by ``redis-cli --cluster create``."""

    def __init__(self, *, size: int = 3, persistent: bool = True) -> None:
        self.servers = [
            RedisServer(
                persistent=persistent,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    # The bus defaults to port + 10000, which a high free port cannot have.
                    "--cluster-port",
                    str(_free_port()),
                ),
            )
            for _ in range(size)
        ]

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def url(self, *ports: int) -> str:
        """A redis+cluster:// URL naming `ports` (default: every node) as seed nodes."""
        chosen = ports or tuple(self.ports)
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in chosen) + "/"

    def owner(self, key: str) -> int:
        """The port of the primary that serves `key`'s slot."""
        slot = int(command(self.ports[0], "CLUSTER", "KEYSLOT", key))
        return _slot_owner(command(self.ports[0], "CLUSTER", "NODES"), slot)

    def start(self) -> RedisClusterNodes:
        try:
            for server in self.servers:
                server.start()
            command(
                self.ports[0],
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
                timeout=START_TIMEOUT_S * 3,
            )
            for port in self.ports:
                _wait(
                    f"cluster node {port} did not report cluster_state:ok",
                    partial(_cluster_ok, port),
                    START_TIMEOUT_S * 3,
                    f"logs: {[str(s.log_path) for s in self.servers]}",
                )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _slot_owner(nodes: str, slot: int) -> int:
    """The port of the primary serving `slot`, from CLUSTER NODES (one line per node: id,
    ``host:port@cport``, flags, primary id, ..., then its slot ranges ``a-b`` or ``a``)."""
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) < 8 or "master" not in fields[2].split(","):
            continue
        for spec in fields[8:]:
            low, _, high = spec.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return int(fields[1].split("@")[0].rpartition(":")[2])
    raise RedisServerError(f"no primary serves slot {slot}")


class _SentinelProcess:
    """``redis-server <conf> --sentinel`` on a free port, watching one primary."""

    def __init__(self, primary_port: int, *, quorum: int) -> None:
        self.port = _free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="kube-dlq-sentinel-"))
        self.log_path = self._dir / "sentinel.log"
        # Sentinel rewrites its own config file (it records what it learns), so it must be a
        # file of its own in a writable dir. Short timeouts: a failover in a few seconds.
        (self._dir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._dir}\nlogfile {self.log_path}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which(os.environ.get("REDIS_SERVER_BIN", "redis-server"))
        if binary is None:
            raise RedisServerError("redis-server not found on PATH")
        self._proc = subprocess.Popen(  # fixed argv, no shell
            [binary, str(self._dir / "sentinel.conf"), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(
            f"sentinel on {self.port} did not answer PING",
            lambda: _ping(self.port),
            START_TIMEOUT_S,
            f"log {self.log_path}",
        )

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc, STOP_TIMEOUT_S)
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisSentinelGroup:
    """A primary, one replica and `sentinels` Sentinels (quorum: a majority of them).

    ``primary_args`` go to both data nodes (either may be primary after a failover).
    """

    def __init__(self, *, sentinels: int = 1, primary_args: tuple[str, ...] = ()) -> None:
        # Redis 7 waits 5 s before a diskless full sync, for more replicas to join; one joins.
        self._primary_args = ("--repl-diskless-sync-delay", "0", *primary_args)
        self.primary = RedisServer(persistent=True, extra_args=self._primary_args)
        self.replica: RedisServer | None = None
        self._count = sentinels
        self.sentinels: list[_SentinelProcess] = []

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [self.primary] + ([self.replica] if self.replica else [])

    def start(self) -> RedisSentinelGroup:
        try:
            self.primary.start()
            self.replica = RedisServer(
                persistent=True,
                extra_args=(
                    *self._primary_args,
                    "--replicaof",
                    "127.0.0.1",
                    str(self.primary.port),
                ),
            ).start()
            replica_port = self.replica.port
            # The link is up once the full sync is done (connected_slaves counts a replica
            # from the moment it asks, before it has any data).
            _wait(
                "the replica did not sync with the primary",
                lambda: (
                    _info_field(replica_port, "master_link_status", "INFO", "replication") == "up"
                ),
                START_TIMEOUT_S,
                f"log {self.replica.log_path}",
            )
            for _ in range(self._count):
                sentinel = _SentinelProcess(self.primary.port, quorum=self._count // 2 + 1)
                self.sentinels.append(sentinel)
                sentinel.start()
            self.wait_for_primary(self.primary.port)
        except BaseException:
            self.close()
            raise
        return self

    def current_primary(self) -> int | None:
        """The port the Sentinels name as primary now (None if they cannot say)."""
        try:
            reply = command(
                self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", SERVICE
            ).split()
        except (RedisServerError, subprocess.TimeoutExpired):
            return None
        return int(reply[1]) if len(reply) == 2 and reply[1].isdigit() else None

    def wait_for_primary(self, port: int, timeout: float = 30.0) -> None:
        """Until every Sentinel names `port` as primary and that node says it is one."""

        def settled() -> bool:
            return (
                self.current_primary() == port
                and _info_field(port, "role", "INFO", "replication") == "master"
            )

        _wait(
            f"sentinel did not name 127.0.0.1:{port} primary",
            settled,
            timeout,
            f"logs {[str(s.log_path) for s in self.sentinels]}",
        )

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.data_nodes:
            server.close()

    def __enter__(self) -> RedisSentinelGroup:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
