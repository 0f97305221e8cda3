"""The chart against the real local apiserver: every object it can render passes a server-side
dry-run, `helm install` is accepted object by object, and kube-dlq then runs with exactly the
installed ServiceAccount's token (TokenRequest) and handles a failed Job end to end.

kwok nodes run no containers, so the chart's own pods never really start here (kwok only
marks them Running): the daemon runs outside the cluster, as a process of this test, with the
identity the chart gives its pods. That proves the RBAC, not the image.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.kubeapi import kubeconfig_dict, run_kubectl
from devtools.devcluster.state import ClusterState
from tests.helm.conftest import Helm
from tests.support.daemon import StartDaemon, wait_dead_letters
from tests.support.kube import raw
from tests.support.workloads import create_job, failing_job

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

EVERYTHING = str(Path(__file__).with_name("values-everything.yaml"))
CRDS = Path(__file__).with_name("crds.yaml")


def kubectl(cluster: ClusterState, *args: str, stdin: str | None = None) -> str:
    return run_kubectl(ensure_binaries().kubectl, Path(cluster.kubeconfig), *args, stdin=stdin)


@pytest.fixture
async def release_namespace(admin_api: client.ApiClient) -> AsyncIterator[str]:
    """A namespace of its own for the release (the test's `namespace` holds the Jobs)."""
    name = f"helm-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin_api)
    await raw(core.create_namespace({"metadata": {"name": name}}, _preload_content=False))
    yield name
    await raw(core.delete_namespace(name, _preload_content=False))


async def test_every_object_passes_a_server_side_dry_run(
    helm: Helm, chart: str, cluster: ClusterState, release_namespace: str, namespace: str
) -> None:
    # ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs: minimal ones
    # from crds.yaml (group/version/kind/scope only; see its comment), not skipped.
    kubectl(cluster, "apply", "-f", str(CRDS))
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))
    result = helm(
        "template",
        "dry",
        chart,
        "--namespace",
        release_namespace,
        "--values",
        EVERYTHING,
        "--set-json",
        f'config.scope.namespaces=["{namespace}"]',
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds >= {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
        "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "CronJob",
        "ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim",
    }, kinds  # fmt: skip
    out = kubectl(
        cluster, "apply", "--dry-run=server", "-o", "name", "-f", "-", stdin=result.stdout
    )
    accepted = out.splitlines()
    assert len(accepted) == len(docs), (accepted, [d["kind"] for d in docs])


async def test_installed_chart_identity_runs_the_daemon_and_nothing_more(
    helm: Helm,
    chart: str,
    cluster: ClusterState,
    admin_api: client.ApiClient,
    release_namespace: str,
    namespace: str,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    release = f"t{uuid.uuid4().hex[:6]}"
    install = helm(
        "install", release, chart,
        "--kubeconfig", cluster.kubeconfig,
        "--namespace", release_namespace,
        "--set", f"config.cluster_name={release}",
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    try:
        # Every object of the release exists in the apiserver
        manifest = helm(
            "get", "manifest", release, "--kubeconfig", cluster.kubeconfig,
            "--namespace", release_namespace,
        )  # fmt: skip
        assert manifest.returncode == 0, manifest.stderr
        docs = [d for d in yaml.safe_load_all(manifest.stdout) if d]
        assert len(docs) >= 10
        for doc in docs:
            where = ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
            got = kubectl(
                cluster, "get", doc["kind"], doc["metadata"]["name"], *where, "-o", "name"
            )
            assert got.strip(), doc["kind"]
        [account] = [d for d in docs if d["kind"] == "ServiceAccount"]

        # Given a token of exactly the chart's ServiceAccount, by TokenRequest
        core = client.CoreV1Api(admin_api)
        request = {"spec": {"expirationSeconds": 3600}}
        token = await raw(
            core.create_namespaced_service_account_token(
                account["metadata"]["name"], release_namespace, request, _preload_content=False
            )
        )
        kubeconfig = tmp_path / "chart-sa.kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                kubeconfig_dict(
                    cluster.api_url, Path(cluster.ca_file), token["status"]["token"], user="chart"
                )
            )
        )

        # When the daemon runs with it, and with the installed ConfigMap's config where it
        # applies outside a pod (its cluster_name, dead_letter, and leader election, on a Lease
        # in the release's namespace: the chart's Role), and a Job fails
        [configmap] = [d for d in docs if d["kind"] == "ConfigMap"]
        chart_config = yaml.safe_load(configmap["data"]["kube-dlq.yaml"])
        assert chart_config["leader_election"]["enabled"] is True
        daemon = await start_daemon(
            kubeconfig=str(kubeconfig),
            cluster_name=chart_config["cluster_name"],
            dead_letter=chart_config["dead_letter"],
            leader_election={
                **chart_config["leader_election"],
                "lease_namespace": release_namespace,
            },
        )
        await create_job(
            admin_api, namespace, failing_job("work", exit_code=2, message="ValueError: row 17")
        )

        # Then the failure is dead-lettered by the leader: every call it made was allowed
        [(_, letter)] = await wait_dead_letters(daemon.queries, 1, within=90)
        assert (letter.job.namespace, letter.job.name) == (namespace, "work")
        assert letter.cluster == release
        assert await daemon.metric("kube_dlq_leader") == 1
        lease = kubectl(cluster, "-n", release_namespace, "get", "lease", "kube-dlq", "-o", "json")
        assert json.loads(lease)["spec"]["holderIdentity"], lease

        # And an action outside the role is refused with 403
        chart_api = await config.new_client_from_config(config_file=str(kubeconfig))
        async with chart_api:
            core_as_chart, apps_as_chart = client.CoreV1Api(chart_api), client.AppsV1Api(chart_api)
            denied: dict[str, Callable[[], Awaitable[object]]] = {
                "read Secrets": core_as_chart.list_secret_for_all_namespaces,
                "create a ConfigMap": lambda: core_as_chart.create_namespaced_config_map(
                    namespace, {"metadata": {"name": "nope"}}
                ),
                "delete a node": lambda: core_as_chart.delete_node(cluster.nodes[0]),
                "list Deployments": apps_as_chart.list_deployment_for_all_namespaces,
            }
            for what, call in denied.items():
                with pytest.raises(ApiException) as refused:
                    await call()
                assert refused.value.status == 403, what
        # (stopped before the uninstall takes its role away, so it exits on its own terms)
        assert await daemon.stop() == 0
    finally:
        uninstall = helm(
            "uninstall", release, "--kubeconfig", cluster.kubeconfig,
            "--namespace", release_namespace,
        )  # fmt: skip
        assert uninstall.returncode == 0, uninstall.stderr
