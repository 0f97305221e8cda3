"""What a running local cluster records in its state dir (state.json), and how another
process reads it: whether the recorded components are alive, and stopping them (`dev down`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools.devcluster.processes import Progress, pid_alive, terminate, to_stderr

STATE_FILE = "state.json"


class ClusterError(RuntimeError):
    """The local cluster could not start, or is not in the state asked for."""


@dataclass(frozen=True, slots=True)
class ComponentState:
    name: str
    pid: int
    binary: str
    log: str


@dataclass(slots=True)
class ClusterState:
    """What state.json records: enough for another process to use or stop the cluster."""

    state_dir: str
    api_url: str
    kubeconfig: str
    """Admin identity (system:masters)."""
    daemon_kubeconfig: str
    """The daemon's ServiceAccount identity, limited by deploy/manifests/rbac.yaml."""
    ca_file: str
    admin_token: str
    daemon_token: str
    nodes: list[str]
    bin_dirs: list[str]
    components: list[ComponentState] = field(default_factory=list)
    started_at: float = 0.0

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        path = state_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text())
            raw["components"] = [ComponentState(**c) for c in raw.get("components", [])]
            return cls(**raw)
        except FileNotFoundError as exc:
            raise ClusterError(f"no cluster state in {state_dir} (run `kube-dlq dev up`)") from exc
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"unreadable cluster state {path}: {exc}") from exc


def cluster_running(state_dir: Path) -> list[ComponentState]:
    """The recorded components still alive in `state_dir` (empty: nothing running).

    Reads only the component list, so a partly written or older state file still tells
    whether processes from it are alive.
    """
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        comps = [ComponentState(**c) for c in raw.get("components", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    return [c for c in comps if pid_alive(c.pid, c.binary)]


def stop_recorded(state_dir: Path, progress: Progress = to_stderr) -> list[str]:
    """Stop a cluster started by another process (`dev down`), by the PIDs it recorded."""
    state = ClusterState.load(state_dir)
    stopped = []
    for comp in reversed(state.components):
        if pid_alive(comp.pid, comp.binary):
            terminate(comp.pid, comp.binary, None)
            stopped.append(comp.name)
            progress(f"stopped {comp.name} (pid {comp.pid})")
    return stopped
