"""The development commands `kube-dlq dev ...` and `kube-dlq demo`, as a CLI plugin.

The product's CLI knows nothing of this package: it loads every ``kube_dlq.commands`` entry
point it finds, and this package registers two (see devtools/pyproject.toml). A wheel of
kube-dlq installed in a cluster therefore has neither command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_dev(sub: Subparsers) -> None:
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
    dev.set_defaults(run=_run_dev)
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    state_help = "cluster state folder (default: ~/.local/state/kube-dlq/dev-cluster)"
    up = dev_sub.add_parser("up", help="build if needed, start the cluster, print how to use it")
    up.add_argument("--state-dir", type=Path, help=state_help)
    up.add_argument("--nodes", type=int, default=2, help="kwok nodes to create (default 2)")
    dev_sub.add_parser(
        "build",
        help="build (once) or locate the control-plane binaries and print where they are",
        description="Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kubectl and kwok, plus toxiproxy (fault tests) and helm (chart tests), from the Go "
        "module proxy into ~/.cache/kube-dlq (XDG_CACHE_HOME), unless cached. "
        "KUBEBUILDER_ASSETS may supply etcd and kube-apiserver.",
    )
    for name, text in (
        ("down", "stop every process `dev up` started (state and logs are kept)"),
        ("status", "show each component's process and the apiserver's readiness"),
        ("env", 'print shell exports (KUBECONFIG, PATH with kubectl): eval "$(kube-dlq dev env)"'),
    ):
        cmd = dev_sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--state-dir", type=Path, help=state_help)


def add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo",
        help="local control plane + redis + daemon + a failing demo workload",
        description="Start a local control plane and redis-server, run the daemon, submit a "
        "workload that fails in typical ways, and show what kube-dlq made of each failure.",
    )
    demo.set_defaults(run=_run_demo)
    demo.add_argument("--state-dir", type=Path, help="keep the cluster state here")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running after the demo (Ctrl-C to stop)",
    )


def _run_demo(args: argparse.Namespace) -> int:
    from devtools import demo

    return demo.main(args.state_dir, args.keep)


def _run_dev(args: argparse.Namespace) -> int:
    from devtools.devcluster import commands

    if args.dev_command == "build":
        return commands.build()
    if args.dev_command == "up":
        return commands.up(args.state_dir, args.nodes)
    if args.dev_command == "down":
        return commands.down(args.state_dir)
    if args.dev_command == "status":
        return commands.status(args.state_dir)
    return commands.env(args.state_dir)
