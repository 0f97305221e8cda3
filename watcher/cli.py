"""The `kube-dlq` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from watcher import __version__

DESCRIPTION = """\
kube-dlq notices every failed Kubernetes Job, says why it failed (node lost, OOM, eviction,
deadline, image pull, application error, ...), and either re-creates it later with backoff or
puts it on a dead-letter queue in Redis for people and programs to inspect and replay.
"""


def _add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev",
        help="a local Kubernetes control plane (etcd, apiserver, controllers, kwok nodes)",
        description=(
            "Run a real local control plane built from the Go module proxy: etcd, "
            "kube-apiserver, kube-controller-manager, kube-scheduler, and kwok standing in for "
            "kubelets. Binaries are built once into ~/.cache/kube-dlq (needs Go >= 1.26; "
            "KUBEBUILDER_ASSETS may supply etcd and kube-apiserver)."
        ),
    )
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    state_help = "cluster state folder (default: ~/.local/state/kube-dlq/dev-cluster)"
    up = dev_sub.add_parser("up", help="build if needed, start the cluster, print how to use it")
    up.add_argument("--state-dir", type=Path, help=state_help)
    up.add_argument("--nodes", type=int, default=2, help="kwok nodes to create (default 2)")
    dev_sub.add_parser(
        "build",
        help="build (once) or locate the control-plane binaries and print where they are",
        description="Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kubectl and kwok from the Go module proxy into ~/.cache/kube-dlq (XDG_CACHE_HOME), "
        "unless cached. KUBEBUILDER_ASSETS may supply etcd and kube-apiserver.",
    )
    for name, text in (
        ("down", "stop every process `dev up` started (state and logs are kept)"),
        ("status", "show each component's process and the apiserver's readiness"),
        ("env", 'print shell exports (KUBECONFIG, PATH with kubectl): eval "$(kube-dlq dev env)"'),
    ):
        cmd = dev_sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--state-dir", type=Path, help=state_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-dlq", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kube-dlq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_dev(sub)
    return parser


def _run_dev(args: argparse.Namespace) -> int:
    from watcher.devcluster import commands

    if args.dev_command == "build":
        return commands.build()
    if args.dev_command == "up":
        return commands.up(args.state_dir, args.nodes)
    if args.dev_command == "down":
        return commands.down(args.state_dir)
    if args.dev_command == "status":
        return commands.status(args.state_dir)
    return commands.env(args.state_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return _run_dev(args)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
