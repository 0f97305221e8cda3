"""Cold start: daemon process start to /readyz with N Jobs and N Pods present, against a
bare paged LIST of the same objects, in the same run.

    .venv/bin/python -m bench.coldstart [--n 10000] [--state-dir DIR] [--json PATH]

(run from the repository root, as a module). Loads the objects (bench/loader_objects.py),
then, in turn: a bare lister process (``--bare-list``: Python start, one aiohttp session,
paged LISTs of 500 of the Jobs, the Jobs' pods, the Events and the Nodes, ``json.loads`` of
each page, nothing else), the daemon (``python -m watcher run`` with its default config scoped
to the namespace, timed until /readyz answers 200), and the bare lister again. Both are timed
from process start, so the interpreter start counts on both sides. bench/memory.py runs the
same measurement on its objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.loader import REPO_ROOT, Admin, DaemonProcess, control_plane, daemon_config
from bench.loader import signing_keys_dir as make_keys_dir
from bench.loader_objects import load
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState


@dataclass
class ColdStart:
    objects: int
    daemon_ready_s: float
    bare_list_s: float
    """The mean of the bare lister before and after the daemon."""
    bare_list_runs_s: tuple[float, float]
    ratio: float


async def bare_list(state: ClusterState, namespace: str) -> int:
    """Paged LISTs of what the daemon lists at start; the items read."""
    ctx = ssl.create_default_context(cafile=state.ca_file)
    headers = {"Authorization": f"Bearer {state.admin_token}"}
    paths = [
        (f"/apis/batch/v1/namespaces/{namespace}/jobs", ""),
        (f"/api/v1/namespaces/{namespace}/pods", "batch.kubernetes.io/controller-uid"),
        (f"/api/v1/namespaces/{namespace}/events", ""),
        ("/api/v1/nodes", ""),
    ]
    items = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        for path, selector in paths:
            token = ""
            while True:
                params = {"limit": "500", **({"continue": token} if token else {})}
                if selector:
                    params["labelSelector"] = selector
                async with session.get(state.api_url + path, params=params, ssl=ctx) as resp:
                    resp.raise_for_status()
                    page = json.loads(await resp.read())
                items += len(page.get("items", []))
                token = page.get("metadata", {}).get("continue", "")
                if not token:
                    break
    return items


async def _timed_bare_list(state: ClusterState, namespace: str) -> float:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(  # fixed argv, no shell
        sys.executable, "-m", "bench.coldstart", "--bare-list", "--state-dir", state.state_dir,
        "--namespace", namespace, cwd=REPO_ROOT,
    )  # fmt: skip
    if await proc.wait() != 0:
        raise RuntimeError(f"the bare lister exited with {proc.returncode}")
    return time.monotonic() - started


async def measure_cold_start(
    state: ClusterState, daemon: DaemonProcess, namespace: str, objects: int
) -> ColdStart:
    """Bare list, daemon start to ready (left running for the caller), bare list again."""
    before = await _timed_bare_list(state, namespace)
    daemon.start()
    ready_s = await asyncio.to_thread(daemon.wait_ready)
    after = await _timed_bare_list(state, namespace)
    bare = (before + after) / 2
    return ColdStart(
        objects=objects,
        daemon_ready_s=round(ready_s, 2),
        bare_list_s=round(bare, 2),
        bare_list_runs_s=(round(before, 2), round(after, 2)),
        ratio=round(ready_s / bare, 2),
    )


def report(cold: ColdStart) -> None:
    print(f"cold start with {cold.objects:,} Jobs + {cold.objects:,} Pods present")
    print(f"{'daemon start -> /readyz':<28}{cold.daemon_ready_s:>8.2f} s")
    runs = " / ".join(f"{r:.2f}" for r in cold.bare_list_runs_s)
    print(f"{'bare paged LIST (process)':<28}{cold.bare_list_s:>8.2f} s   (runs {runs})")
    print(f"{'ratio':<28}{cold.ratio:>8.2f} x   (goal <= 1.5)")


async def _standalone(state: ClusterState, args: argparse.Namespace, work: Path) -> ColdStart:
    namespace = f"bench-cold-{uuid.uuid4().hex[:6]}"
    with RedisServer() as server:
        doc = daemon_config(
            state, namespaces=[namespace], redis_url=server.url, cluster_name="bench-cold",
            keys_dir=make_keys_dir(),
        )  # fmt: skip
        daemon = DaemonProcess(work / "daemon.yaml", doc)
        async with Admin(state) as admin:
            await admin.create_namespace(namespace)
            names = [f"cold-{i}" for i in range(args.n)]
            rate = await load(admin, namespace, names, state.nodes, progress_every=20)
            print(f"loaded {args.n:,} Job+Pod pairs at {rate:,.0f}/s ({len(admin.errors)} errors)")
            try:
                return await measure_cold_start(state, daemon, namespace, args.n)
            finally:
                daemon.stop()
                await admin.delete_namespace(namespace)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="Jobs (and as many Pods)")
    p.add_argument("--state-dir", type=Path, default=None, help="a running `dev up` cluster")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--bare-list", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--namespace", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_list:
        asyncio.run(bare_list(ClusterState.load(args.state_dir), args.namespace))
        return
    work = Path(make_keys_dir()).parent / f"bench-cold-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    with control_plane(args.state_dir) as state:
        cold = asyncio.run(_standalone(state, args, work))
    report(cold)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(cold), indent=2) + "\n")


if __name__ == "__main__":
    main()
