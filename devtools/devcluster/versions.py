"""Pinned component versions and where their builds are cached."""

from __future__ import annotations

import os
from pathlib import Path

KUBERNETES = "v1.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
TOXIPROXY = "v2.5.0"
"""Toxiproxy, the TCP fault proxy the fault suite puts between the daemon and Redis."""
HELM = "v3.22.0"
"""Helm, for the chart tests (tests/helm) and rendering deploy/manifests/ from the chart."""
HELM_KUBERNETES_MINOR = "37"
"""The Kubernetes minor helm assumes without a cluster: its client-go's (v0.37), as upstream."""


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """Per-user cache: $XDG_CACHE_HOME/kube-dlq (default ~/.cache/kube-dlq)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kube-dlq"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """Where `kube-dlq dev up` keeps a cluster's state when no --state-dir is given."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kube-dlq" / "dev-cluster"
