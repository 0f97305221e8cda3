"""Build the control-plane binaries once, from the Go module proxy, into a per-user cache.

The wrapper modules under gomod/ pin every version (go.mod + go.sum), so a build is
reproducible and verified against the checksum database. Each component is built into a
temporary folder and renamed into place only when complete, so an interrupted build never
leaves a half-populated cache entry. A version bump is a new folder, never an overwrite.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools.devcluster import build_progress, versions
from devtools.devcluster.processes import Progress, to_stderr

GOMOD_DIR = Path(__file__).parent / "gomod"
STAGES_FILE = Path(__file__).parent / "stages.yaml"

# Upstream kwok stages we run, relative to the kwok module's kustomize/stage folder: the
# defaults kwokctl uses (with leases on) plus the two chaos stages tests drive by label.
KWOK_UPSTREAM_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    "pod/chaos/pod-container-running-failed.yaml",
    "node/chaos/node-not-ready.yaml",
)

UPSTREAM_STAGES = "upstream-stages.yaml"


class BuildError(RuntimeError):
    """A binary could not be built or found; the message names the component and its log."""


@dataclass(frozen=True, slots=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    """kwok's upstream stages we run, as one multi-document YAML file (the cluster adds the
    project's own, devtools/devcluster/stages.yaml, when it starts)."""

    @property
    def bin_dirs(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(p.parent for p in (self.kubectl, self.kube_apiserver)))


def ensure_binaries(
    *, progress: Progress = to_stderr, environ: Mapping[str, str] | None = None
) -> Binaries:
    """Return every binary the local cluster needs, building what the cache lacks."""
    env = dict(os.environ if environ is None else environ)
    root = versions.cache_root(env)
    k8s_dir = root / "bin" / f"k8s-{versions.KUBERNETES}"
    etcd_dir = root / "bin" / f"etcd-{versions.ETCD}"
    kwok_dir = root / "bin" / f"kwok-{versions.KWOK}"

    assets = env.get("KUBEBUILDER_ASSETS")
    etcd = kube_apiserver = None
    if assets:
        etcd, kube_apiserver = _from_assets(Path(assets), progress)

    with _build_lock(root):
        wanted = _K8S_COMMANDS if kube_apiserver is None else _K8S_COMMANDS[1:]
        if not _complete(k8s_dir, wanted):
            packages = [f"k8s.io/kubernetes/cmd/{c}" for c in wanted]
            _build(root, "k8s", k8s_dir, packages, _k8s_ldflags(), progress, env)
        if etcd is None and not _complete(etcd_dir, ("etcd",)):
            _build(
                root,
                "etcd",
                etcd_dir,
                ["go.etcd.io/etcd/server/v3"],
                "-s -w",
                progress,
                env,
                output_name="etcd",
            )
        if not _complete(kwok_dir, ("kwok",)):
            _build(root, "kwok", kwok_dir, ["sigs.k8s.io/kwok/cmd/kwok"], "-s -w", progress, env)
        if not _complete(kwok_dir, (UPSTREAM_STAGES,)):
            _write_kwok_stages(kwok_dir, env)

    return Binaries(
        etcd=etcd or etcd_dir / "etcd",
        kube_apiserver=kube_apiserver or k8s_dir / "kube-apiserver",
        kube_controller_manager=k8s_dir / "kube-controller-manager",
        kube_scheduler=k8s_dir / "kube-scheduler",
        kubectl=_assets_kubectl(assets) or k8s_dir / "kubectl",
        kwok=kwok_dir / "kwok",
        kwok_stages=kwok_dir / UPSTREAM_STAGES,
    )


_K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

TOXIPROXY_BINARY = "toxiproxy"
HELM_BINARY = "helm"


@dataclass(frozen=True, slots=True)
class GoTool:
    """One command built from a pinned wrapper module (gomod/<module>) into
    ``<cache>/bin/<module>-<version>/<binary>``."""

    module: str
    version: str
    package: str
    binary: str
    ldflags: str = "-s -w"


TOXIPROXY = GoTool(
    "toxiproxy", versions.TOXIPROXY, "github.com/Shopify/toxiproxy/v2/cmd/server", TOXIPROXY_BINARY
)
# Stamped at link time as upstream's Makefile does: unstamped, helm reports v3.x-dev and, with
# no cluster to ask (`helm template`, `lint`), assumes Kubernetes 1.20, which fails a chart's
# kubeVersion constraint. Upstream derives the version from its client-go (v0.37 -> 1.37).
_HELM_PKG = "helm.sh/helm/v3"
HELM = GoTool(
    "helm",
    versions.HELM,
    f"{_HELM_PKG}/cmd/helm",
    HELM_BINARY,
    " ".join(
        [
            "-s -w",
            f"-X {_HELM_PKG}/internal/version.version={versions.HELM}",
            f"-X {_HELM_PKG}/internal/version.metadata=",
            f"-X {_HELM_PKG}/internal/version.gitTreeState=clean",
            *(
                f"-X {_HELM_PKG}/pkg/{pkg}.k8sVersion{part}={value}"
                for pkg in ("lint/rules", "chartutil")
                for part, value in (("Major", "1"), ("Minor", versions.HELM_KUBERNETES_MINOR))
            ),
        ]
    ),
)


def ensure_toxiproxy(
    *, progress: Progress = to_stderr, environ: Mapping[str, str] | None = None
) -> Path:
    """Toxiproxy's server (the fault suite's TCP fault proxy), building it if not cached.

    Upstream names the binary ``server``; the cache names it ``toxiproxy``.
    """
    return ensure_go_tool(TOXIPROXY, progress=progress, environ=environ)


def ensure_helm(
    *, progress: Progress = to_stderr, environ: Mapping[str, str] | None = None
) -> Path:
    """Helm 3 (the chart tests: lint, template, install), building it if not cached."""
    return ensure_go_tool(HELM, progress=progress, environ=environ)


def ensure_go_tool(
    tool: GoTool, *, progress: Progress = to_stderr, environ: Mapping[str, str] | None = None
) -> Path:
    """The binary of `tool`, built like the control plane from its pinned wrapper module.

    Each tool has a lock of its own: it shares nothing with the control plane's folders, so
    building helm need not wait for a cold Kubernetes build in another process.
    """
    env = dict(os.environ if environ is None else environ)
    root = versions.cache_root(env)
    out_dir = root / "bin" / f"{tool.module}-{tool.version}"
    with _build_lock(root, tool.module):
        if not _complete(out_dir, (tool.binary,)):
            _build(
                root,
                tool.module,
                out_dir,
                [tool.package],
                tool.ldflags,
                progress,
                env,
                output_name=tool.binary,
            )
    return out_dir / tool.binary


def _complete(folder: Path, names: tuple[str, ...]) -> bool:
    return all((folder / n).is_file() for n in names)


def _from_assets(assets: Path, progress: Progress) -> tuple[Path, Path]:
    """Use etcd and kube-apiserver from KUBEBUILDER_ASSETS (the envtest convention)."""
    etcd, apiserver = assets / "etcd", assets / "kube-apiserver"
    for binary in (etcd, apiserver):
        if not os.access(binary, os.X_OK):
            raise BuildError(
                f"KUBEBUILDER_ASSETS={assets} has no executable {binary.name}; "
                "unset it to build one, or point it at a folder holding etcd and kube-apiserver"
            )
    version = _version_line(apiserver)
    progress(f"using etcd and kube-apiserver from KUBEBUILDER_ASSETS={assets} ({version})")
    wanted_minor = versions.KUBERNETES.rsplit(".", 1)[0]
    if wanted_minor not in version:
        progress(
            f"warning: {apiserver} reports {version!r}; controller-manager, scheduler and kwok "
            f"are built for {versions.KUBERNETES}, version skew may misbehave"
        )
    return etcd, apiserver


def _assets_kubectl(assets: str | None) -> Path | None:
    if assets and os.access(Path(assets) / "kubectl", os.X_OK):
        return Path(assets) / "kubectl"
    return None


def _version_line(binary: Path) -> str:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise BuildError(f"{binary} does not run: {exc}") from exc
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _k8s_ldflags() -> str:
    # Upstream stamps these (hack/lib/version.sh); without them /version says v0.0.0-master
    # and kubectl prints version-skew warnings.
    minor = versions.KUBERNETES.split(".")[1]
    stamp = {
        "gitVersion": versions.KUBERNETES,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    flags = ["-s", "-w"]
    for key, value in stamp.items():
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags.append(f"-X {pkg}.{key}={value}")
    return " ".join(flags)


def _go_env(env: Mapping[str, str]) -> dict[str, str]:
    go_env = dict(env)
    # GOTOOLCHAIN=local: an old Go must fail loudly, not download a toolchain (no network).
    go_env.update(GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    return go_env


def _require_go(component: str, env: Mapping[str, str]) -> str:
    go = shutil.which("go", path=env.get("PATH", os.defpath))
    if go is None:
        raise BuildError(
            f"cannot build {component}: no Go toolchain on PATH. Install Go >= 1.26, or set "
            "KUBEBUILDER_ASSETS to a folder with etcd and kube-apiserver (controller-manager, "
            "scheduler and kwok still need Go), or point KUBECONFIG at an existing cluster"
        )
    return go


def _build(
    root: Path,
    module: str,
    out_dir: Path,
    packages: list[str],
    ldflags: str,
    progress: Progress,
    env: Mapping[str, str],
    *,
    output_name: str | None = None,
) -> None:
    component = out_dir.name
    go = _require_go(component, env)
    src = root / "src" / component
    src.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(GOMOD_DIR / module / name, src / name)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log = root / "logs" / f"build-{component}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    target = str(tmp / output_name) if output_name else str(tmp) + "/"
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", target, *packages]
    progress(f"building {component} from the Go module proxy (once; log: {log})")
    started = time.monotonic()
    with log.open("w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        returncode = build_progress.run(
            cmd, cwd=src, env=_go_env(env), log=log, log_file=fh, component=component,
            progress=progress,
        )  # fmt: skip
    if returncode != 0:
        raise BuildError(
            f"building {component} failed (go exit {returncode}); see {log}: " + _tail(log, 3)
        )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    progress(f"built {component} in {time.monotonic() - started:.0f}s -> {out_dir}")


def _write_kwok_stages(out_dir: Path, env: Mapping[str, str]) -> None:
    """Collect kwok's upstream stages from its module (they ship inside it, go:embed)."""
    go = _require_go("kwok stages", env)
    modcache = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True, env=_go_env(env)
    ).stdout.strip()
    stage_root = Path(modcache) / f"sigs.k8s.io/kwok@{versions.KWOK}" / "kustomize" / "stage"
    if not stage_root.is_dir():  # module cache cleaned since the build: fetch the module again
        subprocess.run(
            [go, "mod", "download", f"sigs.k8s.io/kwok@{versions.KWOK}"],
            cwd=GOMOD_DIR / "kwok",
            env=_go_env(env),
            check=False,
            capture_output=True,
        )
    docs = []
    for rel in KWOK_UPSTREAM_STAGES:
        path = stage_root / rel
        if not path.is_file():
            raise BuildError(f"kwok stage {rel} not found under {stage_root}")
        docs.append(path.read_text().strip())
    tmp = out_dir / (UPSTREAM_STAGES + ".tmp")
    tmp.write_text("\n---\n".join(docs) + "\n")
    tmp.replace(out_dir / UPSTREAM_STAGES)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


@contextlib.contextmanager
def _build_lock(root: Path, name: str = "") -> Iterator[None]:
    """Serialise builds between processes (a test run and `dev up` at the same time); `name`
    gives a tool its own lock (``.build-<name>.lock``), the control plane uses ``.build.lock``."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / (f".build-{name}.lock" if name else ".build.lock")).open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
