"""Session-wide real dependencies: one local control plane per test run.

Nothing here skips: when the control plane cannot be built or started the fixture errors,
naming the component and its log, so a missing real dependency fails the run loudly.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from kubernetes_asyncio import client, config

from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.commands import default_rbac
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
from tests.support.kube import raw
from tests.support.workloads import release_retry_finalizers

RUN_ID = uuid.uuid4().hex[:4]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long variants of tests/faults (as KUBE_DLQ_SOAK=1 does; `make soak`)",
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A real etcd + kube-apiserver + controller-manager + scheduler + kwok, started once."""
    binaries = ensure_binaries()
    state_dir: Path = tmp_path_factory.mktemp("cluster")
    with LocalCluster(state_dir, binaries, rbac_manifest=default_rbac()) as state:
        yield state


@pytest.fixture
async def admin_api(cluster: ClusterState) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=cluster.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def daemon_api(cluster: ClusterState) -> AsyncIterator[client.ApiClient]:
    """The daemon's own identity: only what deploy/manifests/rbac.yaml grants."""
    api = await config.new_client_from_config(config_file=cluster.daemon_kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def namespace(
    admin_api: client.ApiClient, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{RUN_ID}-{slug}-{uuid.uuid4().hex[:4]}"
    core = client.CoreV1Api(admin_api)
    await raw(core.create_namespace({"metadata": {"name": name}}, _preload_content=False))
    yield name
    await release_retry_finalizers(admin_api, name)
    await raw(core.delete_namespace(name, _preload_content=False))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests isolate by FLUSHDB, not by server."""
    with RedisServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Undo a test's `configure()` (the CLI run in-process sets it): it binds the stream that
    test's capture had, closed once the test ends, and later log lines would go there."""
    yield
    structlog.reset_defaults()
