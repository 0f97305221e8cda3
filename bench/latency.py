"""Failure to dead letter, measured from outside on the real local control plane.

    .venv/bin/python -m bench.latency [--rate 50] [--seconds 60] [--settle default 0]
        [--state-dir DIR] [--json PATH]

(run from the repository root, as a module). Starts the local control plane (or uses the one
`kube-dlq dev up` runs in --state-dir) and a redis-server. For each ``--settle`` variant
("default": the daemon's documented config as it is; a duration: only ``pipeline.settle_s``
changed, through the config file), in a namespace of its own: one daemon
(``python -m watcher run``, a subprocess), one observer (bench/observer.py, another process
with its own Job watch and XREAD BLOCK on the dead-letter stream), then failing Jobs created
at --rate per second for --seconds (kwok ends each pod with exit code 1 a second after it
runs: app_error, dead-lettered by default). Reported per variant: p50/p90/p99/max of (dead
letter seen - Failed condition seen), Jobs that failed with no dead letter within --drain,
Jobs that never failed, and create errors. Both variants run in the same invocation so they
compare on the same machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.loader import REPO_ROOT, Admin, DaemonProcess, control_plane, daemon_config, job_body
from bench.loader import signing_keys_dir as make_keys_dir
from bench.scheduler import quantiles
from devtools.devcluster.cluster import ClusterState
from devtools.devcluster.redis_server import RedisServer
from watcher.adapters.redis.keys import Keys
from watcher.core.settings import DeadLetterSettings, RedisSettings


@dataclass
class Variant:
    settle: str
    jobs_created: int
    create_errors: int
    failed_seen: int
    dead_lettered: int
    no_outcome: int
    never_failed: int
    latency_ms: dict[str, float]
    achieved_rate_per_s: float


def _settle_sections(settle: str) -> dict[str, Any]:
    if settle == "default":
        return {}
    # A bare number is seconds; the config wants a unit.
    return {"pipeline": {"settle_s": f"{settle}s" if settle.replace(".", "").isdigit() else settle}}


async def _create_at_rate(admin: Admin, namespace: str, rate: float, seconds: float) -> float:
    """Create rate*seconds failing Jobs on a fixed schedule; the rate achieved."""
    total = int(rate * seconds)
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    started = time.monotonic()
    tasks = []
    for i in range(total):
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(admin.post(path, job_body(f"lat-{i}", fail_exit_code=1))))
    await asyncio.gather(*tasks)
    return total / (time.monotonic() - started)


async def _drain(redis: Redis, stream: str, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if int(await redis.xlen(stream)) >= expected:
            return
        await asyncio.sleep(0.5)


async def _variant(
    state: ClusterState, server: RedisServer, settle: str, args: argparse.Namespace, work: Path
) -> Variant:
    namespace = f"bench-lat-{uuid.uuid4().hex[:6]}"
    doc = daemon_config(
        state, namespaces=[namespace], redis_url=server.url, cluster_name=namespace,
        keys_dir=args.keys_dir, **_settle_sections(settle),
    )  # fmt: skip
    async with Admin(state) as admin:
        await admin.create_namespace(namespace)
        daemon = DaemonProcess(work / f"daemon-{namespace}.yaml", doc).start()
        observer = None
        redis = Redis.from_url(server.url)
        try:
            await asyncio.to_thread(daemon.wait_ready)
            out, ready = work / f"observed-{namespace}.json", work / f"ready-{namespace}"
            observer = await asyncio.create_subprocess_exec(  # fixed argv, no shell
                sys.executable, "-m", "bench.observer", "--state-dir", state.state_dir,
                "--namespace", namespace, "--config", str(daemon.config),
                "--out", str(out), "--ready", str(ready),
                cwd=REPO_ROOT,
            )  # fmt: skip
            while not ready.exists():
                if observer.returncode is not None:
                    raise RuntimeError("the observer exited before it was watching")
                await asyncio.sleep(0.1)
            achieved = await _create_at_rate(admin, namespace, args.rate, args.seconds)
            created = int(args.rate * args.seconds) - len(admin.errors)
            stream = Keys(prefix=RedisSettings().key_prefix, cluster=namespace).dlq(
                DeadLetterSettings().default_queue
            )
            await _drain(redis, stream, created, args.drain)
            await asyncio.sleep(1.0)  # the observer's last XREAD
            observer.send_signal(signal.SIGTERM)
            await asyncio.wait_for(observer.wait(), 60)
            seen = json.loads(out.read_text())
        finally:
            if observer is not None and observer.returncode is None:
                observer.kill()
            daemon.stop()
            await redis.aclose()
        errors = list(admin.errors)
        await admin.delete_namespace(namespace, within=args.cleanup)
    failed, lettered = seen["failed"], seen["dead_lettered"]
    latencies = [(lettered[uid] - at) * 1000 for uid, at in failed.items() if uid in lettered]
    return Variant(
        settle=settle,
        jobs_created=created,
        create_errors=len(errors),
        failed_seen=len(failed),
        dead_lettered=len(lettered),
        no_outcome=sum(1 for uid in failed if uid not in lettered),
        never_failed=sum(1 for uid in seen["jobs"] if uid not in failed),
        latency_ms={k: round(v, 1) for k, v in quantiles(latencies).items()},
        achieved_rate_per_s=round(achieved, 1),
    )


async def _measure(state: ClusterState, args: argparse.Namespace) -> list[Variant]:
    results = []
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="bench-lat-") as work:
        for settle in args.settle:
            results.append(await _variant(state, server, settle, args, Path(work)))
            print(json.dumps(asdict(results[-1])), flush=True)  # kept if a later one fails
    return results


def report(results: list[Variant], args: argparse.Namespace) -> None:
    print(
        f"failing Jobs at {args.rate:g}/s for {args.seconds:g} s; Failed seen -> dead letter seen"
    )
    head = f"{'settle':<9}{'jobs':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(f"{head}{'no outcome':>12}{'not failed':>12}{'rate/s':>8}")
    for r in results:
        q = r.latency_ms
        print(
            f"{r.settle:<9}{r.jobs_created:>6}{q['p50']:>9,.0f}{q['p90']:>9,.0f}{q['p99']:>9,.0f}"
            f"{q['max']:>9,.0f}{r.no_outcome:>12}{r.never_failed:>12}{r.achieved_rate_per_s:>8}"
        )
    print("goal: p50 < 50 ms, p99 < 500 ms; 'no outcome': Failed but no dead letter in time")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50.0, help="failing Jobs created per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--settle", nargs="+", default=["default", "0"], help="'default' or a duration")
    p.add_argument("--drain", type=float, default=60.0, help="seconds to wait for outcomes")
    p.add_argument("--cleanup", type=float, default=180.0, help="wait for a namespace to go")
    p.add_argument("--state-dir", type=Path, default=None, help="a running `dev up` cluster")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.keys_dir = make_keys_dir()
    with control_plane(args.state_dir) as state:
        results = asyncio.run(_measure(state, args))
    report(results, args)
    if args.json is not None:
        payload = {
            "rate": args.rate,
            "seconds": args.seconds,
            "variants": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
