"""Fixtures of the fault suite, and where its ledger tables go.

Every ledger table a test publishes is printed (seen with ``-s``), written as JSON next to
the test's tmp_path (``ledger.json``), attached to the test's report as a section and as a
user property (so JUnit XML carries it), and printed again in the terminal summary at the end
of the run, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from tests.faults.checker import LedgerReport
from tests.faults.harness import Profile, fault_config, soak_requested
from tests.support.daemon import (  # noqa: F401 (fixtures)
    SHUTDOWN_GRACE_S,
    DaemonProcess,
    cluster_name,
    dlq_redis,
    write_config,
)
from tests.support.kube import raw

REPORTS = pytest.StashKey[list[tuple[str, str]]]()
SECTION = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REPORTS] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a soak run, a fault test's timeout is its soak profile's (see `sized`)."""
    if not soak_requested(bool(config.getoption("--soak"))):
        return
    for item in items:
        marker = item.get_closest_marker("soak_timeout")
        if marker is not None:
            item.add_marker(pytest.mark.timeout(marker.args[0]))


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.when == "call" and SECTION in item.stash:
        item.add_report_section("call", "ledger", item.stash[SECTION])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash.get(REPORTS, [])
    if not reports:
        return
    terminalreporter.section("fault suite ledgers")
    for nodeid, table in reports:
        terminalreporter.write_line(nodeid)
        terminalreporter.write_line(table)


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return soak_requested(bool(request.config.getoption("--soak")))


@pytest.fixture
def sized(soak: bool) -> Callable[..., Profile]:
    """``sized(ci=Profile(...), soak=Profile(...))``: the profile of this run."""

    def pick(*, ci: Profile, soak: Profile) -> Profile:
        return soak if soaking else ci

    soaking = soak
    return pick


Publish = Callable[[LedgerReport], str]


@pytest.fixture
def publish(request: pytest.FixtureRequest, tmp_path: Path) -> Publish:
    """Print the report's table, write ledger.json, attach both to the test's report."""

    def publish_(report: LedgerReport) -> str:
        table = report.table()
        path = tmp_path / "ledger.json"
        path.write_text(json.dumps(report.as_json(), indent=2))
        table = f"{table}\n  (ledger JSON: {path})"
        print(f"\n{table}", flush=True)
        item = request.node
        item.stash[SECTION] = table
        item.user_properties.append(("ledger", json.dumps(report.numbers())))
        item.user_properties.append(("ledger_json", str(path)))
        request.config.stash[REPORTS].append((item.nodeid, table))
        return table

    return publish_


MakeDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def fault_daemon(tmp_path: Path) -> Iterator[MakeDaemon]:
    """Factory: ``fault_daemon(cluster_state, namespace=, redis_url=, cluster_name=)`` writes
    a config (`fault_config`) and returns the `kube-dlq run` process, not yet started.

    At teardown every process still running gets SIGTERM, then SIGKILL if it has not exited
    within the shutdown grace; only PIDs this fixture started are signalled.
    """
    made: list[DaemonProcess] = []

    def make(cluster: ClusterState, **kwargs: Any) -> DaemonProcess:
        doc = fault_config(cluster, **kwargs)
        n = len(made)
        config = write_config(tmp_path / f"fault-daemon-{n}.yaml", doc)
        process = DaemonProcess(config, doc["server"]["port"], tmp_path / f"fault-daemon-{n}.log")
        made.append(process)
        return process

    yield make
    for process in made:
        if not process.running:
            continue
        assert process.proc is not None
        with contextlib.suppress(ProcessLookupError):
            process.send(signal.SIGCONT)
            process.send(signal.SIGTERM)
        try:
            process.proc.wait(SHUTDOWN_GRACE_S + 5)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                process.send(signal.SIGKILL)
            process.proc.wait(10)


@pytest.fixture
async def own_api(own_cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    """An admin client of the control plane of the test module's own (its `own_cluster`)."""
    assert own_cluster.state is not None
    api = await config.new_client_from_config(config_file=own_cluster.state.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def own_ns(own_api: client.ApiClient) -> str:
    """A fresh namespace in that control plane (which goes away with it)."""
    name = f"f-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(own_api)
    await raw(core.create_namespace({"metadata": {"name": name}}, _preload_content=False))
    return name


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own with appendonly on, for kill -9 and restart."""
    with RedisServer(persistent=True) as server:
        yield server
