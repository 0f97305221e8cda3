"""The documents a local cluster is given (kwok's configuration, kubeconfigs, Nodes) and
the small clients that talk to its components (kubectl, an admin GET, health probes).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devtools.devcluster.state import ClusterError, ClusterState

KWOK_OPTIONS: dict[str, Any] = {
    # kwok applies its defaults only when no KwokConfiguration is given at all: one from a
    # file must spell out every option whose zero value would differ (0 workers, handlers
    # off). These are kwok v0.8.0's defaults (pkg/apis/config/v1alpha1/zz_generated.defaults.go).
    "enableDebuggingHandlers": True,
    "enableContentionProfiling": False,
    "enableProfilingHandler": True,
    "podPlayStageParallelism": 4,
    "nodePlayStageParallelism": 4,
    "nodeLeaseParallelism": 4,
    "podsOnNodeSyncParallelism": 1,
    "enablePodsOnNodeSyncListPager": True,
    "enablePodsOnNodeSyncStreamWatch": False,
}


def kwok_configuration(options: dict[str, Any]) -> dict[str, Any]:
    """kwok's KwokConfiguration document: KWOK_OPTIONS with `options` over them (command
    line flags such as --cidr and --manage-all-nodes still win over both)."""
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {**KWOK_OPTIONS, **options},
    }


def kubeconfig_dict(api_url: str, ca: Path, token: str, *, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kube-dlq-dev",
                "cluster": {"server": api_url, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": f"kube-dlq-dev-{user}", "context": {"cluster": "kube-dlq-dev", "user": user}}
        ],
        "current-context": f"kube-dlq-dev-{user}",
    }


def run_kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def node_manifest(
    name: str, *, cpu: str = "32", pods: str = "110", taints: tuple[dict[str, str], ...] = ()
) -> dict[str, Any]:
    """A Node for kwok to manage (kwok fills in its status). The zone label matters: the
    scheduler's default topology spreading scores a node without one low."""
    resources = {"cpu": cpu, "memory": "256Gi", "pods": pods}
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/zone": "local",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }
    if taints:
        node["spec"] = {"taints": list(taints)}
    return node


def api_get(state: ClusterState, path: str) -> dict[str, Any] | None:
    """GET from the apiserver as admin; None on 404 or while it is not answering."""
    ctx = ssl.create_default_context(cafile=state.ca_file)
    req = urllib.request.Request(
        state.api_url + path, headers={"Authorization": f"Bearer {state.admin_token}"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_ok(
    url: str, *, token: str | None = None, ca: Path | None = None, expect: bytes = b""
) -> bool:
    if url.startswith("https://"):
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else _insecure_context()
    else:
        ctx = None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), context=ctx, timeout=2
        ) as resp:
            return resp.status == 200 and expect in resp.read()
    except (urllib.error.URLError, OSError):
        return False


def _insecure_context() -> ssl.SSLContext:
    # Controller-manager and scheduler serve /healthz with self-signed certs made at start.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
