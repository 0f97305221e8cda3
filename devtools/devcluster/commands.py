"""`kube-dlq dev up|down|status|env`: a local cluster for trying kube-dlq and running its tests."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path

from devtools.devcluster import versions
from devtools.devcluster.build import BuildError, ensure_binaries, ensure_helm, ensure_toxiproxy
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.kubeapi import api_get
from devtools.devcluster.pki import PKIError
from devtools.devcluster.state import ClusterError, ClusterState, cluster_running, stop_recorded

REPO_RBAC = Path(__file__).resolve().parents[2] / "deploy" / "manifests" / "rbac.yaml"


def default_rbac() -> Path | None:
    """deploy/manifests/rbac.yaml of a source checkout (the production RBAC), if present."""
    return REPO_RBAC if REPO_RBAC.is_file() else None


def build() -> int:
    try:
        binaries = ensure_binaries()
        toxiproxy = ensure_toxiproxy()
        helm = ensure_helm()
    except BuildError as exc:
        print(f"kube-dlq dev build: {exc}", file=sys.stderr)
        return 1
    for field in dataclasses.fields(binaries):
        print(f"{field.name:<24} {getattr(binaries, field.name)}")
    print(f"{'toxiproxy':<24} {toxiproxy}")
    print(f"{'helm':<24} {helm}")
    return 0


def up(state_dir: Path | None, nodes: int) -> int:
    folder = state_dir or versions.default_state_dir()
    try:
        binaries = ensure_binaries()
        cluster = LocalCluster(folder, binaries, nodes=nodes, rbac_manifest=default_rbac())
        state = cluster.start()
    except (BuildError, ClusterError, PKIError) as exc:
        print(f"kube-dlq dev up: {exc}", file=sys.stderr)
        return 1
    print(f"local cluster running: {state.api_url} ({len(state.nodes)} kwok nodes)")
    print(f"  admin kubeconfig:   {state.kubeconfig}")
    print(f"  daemon kubeconfig:  {state.daemon_kubeconfig}  (ServiceAccount kube-dlq/kube-dlq)")
    print(f"  component logs:     {folder.resolve()}/logs/")
    print("use it with:")
    print(f'  eval "$(kube-dlq dev env --state-dir {shlex.quote(str(folder))})"')
    print("  kubectl get nodes")
    print(f"stop it with: kube-dlq dev down --state-dir {shlex.quote(str(folder))}")
    return 0


def down(state_dir: Path | None) -> int:
    folder = state_dir or versions.default_state_dir()
    try:
        stopped = stop_recorded(folder)
    except ClusterError as exc:
        print(f"kube-dlq dev down: {exc}", file=sys.stderr)
        return 1
    print(f"stopped {len(stopped)} component(s); state kept in {folder} for its logs")
    return 0


def status(state_dir: Path | None) -> int:
    folder = state_dir or versions.default_state_dir()
    try:
        state = ClusterState.load(folder)
    except ClusterError as exc:
        print(f"kube-dlq dev status: {exc}", file=sys.stderr)
        return 1
    alive = {c.name for c in cluster_running(folder)}
    for comp in state.components:
        mark = "running" if comp.name in alive else "STOPPED"
        print(f"{comp.name:<24} {mark:<8} pid {comp.pid:<8} log {comp.log}")
    ready = api_get(state, "/api") is not None
    print(
        f"apiserver {state.api_url}: {'ready' if ready else 'NOT READY'}; "
        f"up {time.time() - state.started_at:.0f}s"
    )
    healthy = ready and alive == {c.name for c in state.components}
    return 0 if healthy else 1


def env(state_dir: Path | None) -> int:
    folder = state_dir or versions.default_state_dir()
    try:
        state = ClusterState.load(folder)
    except ClusterError as exc:
        print(f"kube-dlq dev env: {exc}", file=sys.stderr)
        return 1
    path = ":".join([*state.bin_dirs, "$PATH"])
    print(f"export KUBECONFIG={shlex.quote(state.kubeconfig)}")
    print(f'export PATH="{path}"')
    return 0
