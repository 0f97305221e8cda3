"""Daemon memory while tracking N Jobs and N Pods, flat under churn, against kopf.

    .venv/bin/python -m bench.memory [--n 100000] [--churn 300] [--churn-rate 20]
        [--state-dir DIR] [--json PATH]

(run from the repository root, as a module; kopf comes with the ``bench`` extra). On the
local control plane (its own, or the `kube-dlq dev up` one in --state-dir):

1. a daemon on the empty namespace: its RSS at /readyz is the baseline;
2. N Jobs and N Pods kept Running by kwok, one Event per ten Jobs (bench/loader_objects.py);
3. cold start with those objects present, against a bare paged LIST (bench/coldstart.py);
4. the daemon's RSS at /readyz (VmRSS from /proc/<pid>/status), and bytes per Job+Pod pair
   over the baseline;
5. a kopf operator (bench/observer_kopf.py) on the same namespace, its RSS once it has
   handled the initial listing;
6. --churn seconds at a constant object count (--churn-rate pairs deleted and as many
   created per second), both RSS sampled every --sample seconds: drift (last vs first) and
   spread ((max - min) / first).

Goals (issue 10): < 200 MB at 100,000, <= 0.5x kopf, flat within 10 % over 30 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.coldstart import ColdStart, measure_cold_start
from bench.coldstart import report as report_cold
from bench.loader import REPO_ROOT, Admin, DaemonProcess, control_plane, daemon_config, vm_rss
from bench.loader import signing_keys_dir as make_keys_dir
from bench.loader_objects import WIDTH, create_pair, delete_pair, load
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState

MB = 1024 * 1024


@dataclass
class Memory:
    n: int
    load_pairs_per_s: float
    load_errors: int
    baseline_rss_b: int
    ready_rss_b: int
    bytes_per_pair: float
    kopf_rss_b: int
    ratio_to_kopf: float
    churn_s: float
    churned_pairs: int
    daemon_samples_b: list[int] = field(default_factory=list)
    kopf_samples_b: list[int] = field(default_factory=list)
    drift: float = 0.0
    spread: float = 0.0
    kopf_drift: float = 0.0
    churn_errors: int = 0
    cold_start: ColdStart | None = None


def tracking_limits(n: int) -> dict[str, int]:
    """`limits` that let the daemon hold all `n` pairs: max_tracked_jobs (default 20,000)
    would evict beyond it, and max_orphan_pods (10,000) drops pods listed before their Jobs
    (the Jobs and Pods lists run side by side). Defaults where they are larger."""
    return {"max_tracked_jobs": max(n, 20_000), "max_orphan_pods": max(n, 10_000)}


def _change(samples: list[int]) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    first = samples[0]
    return (samples[-1] - first) / first, (max(samples) - min(samples)) / first


def _start_kopf(
    state: ClusterState, namespace: str, work: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    count = work / "kopf-count"
    env = {**os.environ, "KUBECONFIG": state.kubeconfig, "BENCH_KOPF_COUNT": str(count)}
    with (work / "kopf.log").open("ab") as log:
        proc = subprocess.Popen(  # fixed argv, no shell
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace,
             "--quiet", str(REPO_ROOT / "bench" / "observer_kopf.py")],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, count


def _read_count(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0  # not written yet, or caught mid-write


async def _kopf_listed(proc: subprocess.Popen[bytes], count: Path, want: int, within: float) -> int:
    """Wait until kopf has handled `want` events (or `within` s); the count reached."""
    deadline = time.monotonic() + within
    seen = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kopf exited with {proc.returncode}: see its log")
        seen = _read_count(count)
        if seen >= want:
            return seen
        await asyncio.sleep(0.5)
    return seen


async def _churn(
    admin: Admin, namespace: str, names: list[str], args: argparse.Namespace,
    pids: tuple[int, int],
) -> tuple[int, list[int], list[int]]:  # fmt: skip
    """Replace the oldest pairs with new ones at --churn-rate for --churn s; RSS samples."""
    daemon_rss, kopf_rss = [vm_rss(pids[0])], [vm_rss(pids[1])]
    started = time.monotonic()
    next_sample, churned, serial = started + args.sample, 0, len(names)
    while time.monotonic() - started < args.churn:
        tick = time.monotonic()
        old = [names.pop(0) for _ in range(min(args.churn_rate, len(names)))]
        new = [f"mem-{serial + i}" for i in range(len(old))]
        serial += len(old)
        await asyncio.gather(*(delete_pair(admin, namespace, name) for name in old))
        await asyncio.gather(
            *(create_pair(admin, namespace, name, admin.state.nodes[0], False) for name in new)
        )
        names.extend(new)
        churned += len(old)
        if time.monotonic() >= next_sample:
            daemon_rss.append(vm_rss(pids[0]))
            kopf_rss.append(vm_rss(pids[1]))
            next_sample += args.sample
            # Each sample printed: a run that dies late still leaves its figures.
            print(
                f"  churn {time.monotonic() - started:5.0f} s: {churned:,} pairs replaced, "
                f"daemon {daemon_rss[-1] / MB:.1f} MB, kopf {kopf_rss[-1] / MB:.1f} MB",
                flush=True,
            )
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    daemon_rss.append(vm_rss(pids[0]))
    kopf_rss.append(vm_rss(pids[1]))
    return churned, daemon_rss, kopf_rss


async def _measure(state: ClusterState, args: argparse.Namespace, work: Path) -> Memory:
    namespace = f"bench-mem-{uuid.uuid4().hex[:6]}"
    keys_dir = make_keys_dir()
    with RedisServer() as server:
        doc: dict[str, Any] = daemon_config(
            state, namespaces=[namespace], redis_url=server.url, cluster_name="bench-memory",
            keys_dir=keys_dir, limits=tracking_limits(args.n),
        )  # fmt: skip
        async with Admin(state, width=WIDTH) as admin:
            await admin.create_namespace(namespace)
            empty = DaemonProcess(work / "daemon-baseline.yaml", doc).start()
            try:
                await asyncio.to_thread(empty.wait_ready)
                await asyncio.sleep(2.0)
                baseline = empty.rss_bytes()
            finally:
                empty.stop()
            print(f"daemon RSS, empty: {baseline / MB:.1f} MB", flush=True)
            names = [f"mem-{i}" for i in range(args.n)]
            rate = await load(admin, namespace, names, state.nodes, progress_every=20)
            errors = len(admin.errors)
            print(f"loaded {args.n:,} Job+Pod pairs at {rate:,.0f}/s ({errors} errors)", flush=True)
            daemon = DaemonProcess(work / "daemon.yaml", doc)
            kopf = None
            try:
                cold = await measure_cold_start(state, daemon, namespace, args.n)
                report_cold(cold)
                await asyncio.sleep(5.0)  # what it allocates right after ready
                ready_rss = daemon.rss_bytes()
                print(
                    f"daemon RSS at ready: {ready_rss / MB:.1f} MB, "
                    f"{(ready_rss - baseline) / args.n:,.0f} B per pair over empty",
                    flush=True,
                )
                kopf, count = _start_kopf(state, namespace, work)
                handled = await _kopf_listed(kopf, count, 2 * args.n, args.kopf_wait)
                print(f"kopf handled {handled:,} events", flush=True)
                await asyncio.sleep(5.0)
                kopf_rss = vm_rss(kopf.pid)
                print(f"kopf RSS: {kopf_rss / MB:.1f} MB", flush=True)
                churned, d_rss, k_rss = await _churn(
                    admin, namespace, names, args, (daemon.pid, kopf.pid)
                )
            finally:
                daemon.stop()
                if kopf is not None and kopf.poll() is None:
                    kopf.terminate()
                    try:
                        kopf.wait(30)
                    except subprocess.TimeoutExpired:
                        # A slow exit must not hide the error that brought us here.
                        kopf.kill()
                        kopf.wait()
            await admin.delete_namespace(namespace)
    drift, spread = _change(d_rss)
    return Memory(
        n=args.n,
        load_pairs_per_s=round(rate, 1),
        load_errors=errors,
        baseline_rss_b=baseline,
        ready_rss_b=ready_rss,
        bytes_per_pair=round((ready_rss - baseline) / args.n, 1),
        kopf_rss_b=kopf_rss,
        ratio_to_kopf=round(ready_rss / kopf_rss, 2),
        churn_s=args.churn,
        churned_pairs=churned,
        daemon_samples_b=d_rss,
        kopf_samples_b=k_rss,
        drift=round(drift, 4),
        spread=round(spread, 4),
        kopf_drift=round(_change(k_rss)[0], 4),
        churn_errors=len(admin.errors) - errors,
        cold_start=cold,
    )


def report(m: Memory) -> None:
    print(f"{m.n:,} Jobs + {m.n:,} Pods (Running, kwok), one Event per ten Jobs")
    print(f"{'daemon RSS, empty':<30}{m.baseline_rss_b / MB:>9.1f} MB")
    print(f"{'daemon RSS at ready':<30}{m.ready_rss_b / MB:>9.1f} MB   (goal < 200 at 100k)")
    print(f"{'per Job+Pod over empty':<30}{m.bytes_per_pair:>9,.0f} B")
    print(f"{'kopf RSS, same objects':<30}{m.kopf_rss_b / MB:>9.1f} MB")
    print(f"{'daemon / kopf':<30}{m.ratio_to_kopf:>9.2f} x    (goal <= 0.5)")
    print(
        f"churn: {m.churned_pairs:,} pairs replaced over {m.churn_s:g} s "
        f"({m.churn_errors} requests failed)"
    )
    print(f"{'daemon drift (last/first)':<30}{m.drift * 100:>+9.1f} %   (goal within 10)")
    print(f"{'daemon spread (max-min)':<30}{m.spread * 100:>9.1f} %")
    print(f"{'kopf drift':<30}{m.kopf_drift * 100:>+9.1f} %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="Jobs (and as many Pods)")
    p.add_argument("--churn", type=float, default=300.0, help="seconds of churn")
    p.add_argument("--churn-rate", type=int, default=20, help="pairs replaced per second")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--kopf-wait", type=float, default=600.0, help="longest wait for kopf's list")
    p.add_argument("--state-dir", type=Path, default=None, help="a running `dev up` cluster")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    work = Path(make_keys_dir()).parent / f"bench-mem-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    with control_plane(args.state_dir) as state:
        result = asyncio.run(_measure(state, args, work))
    report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
