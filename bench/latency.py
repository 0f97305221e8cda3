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

Beside the latency, each variant reports where the time went (bench/stages.py): per step
(created, pod, bound, running, pod_fail, failed, lettered) how many Jobs reached it, at what
rate, and how long after the step before; the CPU each process used over the run (share of
one core); and the control plane's own metrics (bench/cpmetrics.py: client-side throttling,
queue depths, APF rejections, apiserver writes per Job). The loader's creates are open-loop:
each is started at its slot whatever the ones before it are doing, and ``create_lag_ms`` says
how late a slot started, ``create_ms`` how long the POST took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import stages
from bench.cpmetrics import ControlPlaneMetrics
from bench.loader import REPO_ROOT, Admin, DaemonProcess, control_plane, daemon_config, job_body
from bench.loader import signing_keys_dir as make_keys_dir
from bench.scheduler import quantiles
from devtools.devcluster.redis_server import RedisServer
from devtools.devcluster.state import ClusterState
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
    create_lag_ms: dict[str, float] = field(default_factory=dict)
    create_ms: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_job: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per dead-lettered Job, per process and in all: what 50 Jobs/s needs
    of the machine, whatever else ran beside (meaningful when every Job got through)."""
    control_plane: dict[str, Any] = field(default_factory=dict)


@dataclass
class Creates:
    """What the loader saw: each Job's uid and the unix time its POST was answered."""

    created: dict[str, float] = field(default_factory=dict)
    lag_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    achieved: float = 0.0


def _settle_sections(settle: str) -> dict[str, Any]:
    if settle == "default":
        return {}
    # A bare number is seconds; the config wants a unit.
    return {"pipeline": {"settle_s": f"{settle}s" if settle.replace(".", "").isdigit() else settle}}


async def _create_at_rate(admin: Admin, namespace: str, rate: float, seconds: float) -> Creates:
    """Create rate*seconds failing Jobs on a fixed schedule (open loop: a slow answer does not
    delay the next create); what was created, and when."""
    total = int(rate * seconds)
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    out = Creates()

    async def create(i: int, slot: float) -> None:
        sent = time.monotonic()
        out.lag_ms.append((sent - slot) * 1000)
        created = await admin.post(path, job_body(f"lat-{i}", fail_exit_code=1))
        out.latency_ms.append((time.monotonic() - sent) * 1000)
        uid = (created or {}).get("metadata", {}).get("uid")
        if isinstance(uid, str):
            out.created[uid] = time.time()

    started = time.monotonic()
    tasks = []
    for i in range(total):
        slot = started + i / rate
        wait = slot - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(create(i, slot)))
    await asyncio.gather(*tasks)
    out.achieved = total / (time.monotonic() - started)
    return out


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
    # Wide enough never to hold a create back (open loop): 50/s at 1 s a POST is 50 in flight.
    async with Admin(state, width=1024) as admin:
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
            pids = {c.name: c.pid for c in state.components}
            cpu = stages.CpuMeter(
                {**pids, "daemon": daemon.pid, "observer": observer.pid, "loader": os.getpid()}
            )
            metrics = ControlPlaneMetrics(state)
            await metrics.start()
            sampler = asyncio.create_task(metrics.sample_every(5.0))
            cpu.start(time.monotonic())
            creates = await _create_at_rate(admin, namespace, args.rate, args.seconds)
            created = int(args.rate * args.seconds) - len(admin.errors)
            stream = Keys(prefix=RedisSettings().key_prefix, cluster=namespace).dlq(
                DeadLetterSettings().default_queue
            )
            await _drain(redis, stream, created, args.drain)
            cpu_cores = cpu.stop(time.monotonic())
            sampler.cancel()
            control = await metrics.report(created)
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
    per_job = stages.step_times(creates.created, seen.get("pods", {}), failed, lettered)
    done = max(1, len(lettered))
    cpu_ms = {k: round(v * 1000 / done, 1) for k, v in cpu.seconds.items()}
    cpu_ms["all"] = round(sum(cpu.seconds.values()) * 1000 / done, 1)
    return Variant(
        settle=settle,
        jobs_created=created,
        create_errors=len(errors),
        failed_seen=len(failed),
        dead_lettered=len(lettered),
        no_outcome=sum(1 for uid in failed if uid not in lettered),
        never_failed=sum(1 for uid in seen["jobs"] if uid not in failed),
        latency_ms={k: round(v, 1) for k, v in quantiles(latencies).items()},
        achieved_rate_per_s=round(creates.achieved, 1),
        create_lag_ms={k: round(v, 1) for k, v in quantiles(creates.lag_ms).items()},
        create_ms={k: round(v, 1) for k, v in quantiles(creates.latency_ms).items()},
        steps=[asdict(s) for s in stages.summarise(per_job)],
        cpu_cores=cpu_cores,
        cpu_ms_per_job=cpu_ms,
        control_plane=control,
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
    for r in results:
        lag, took = r.create_lag_ms, r.create_ms
        print(
            f"\nsettle {r.settle}: creates started late p50/p99 {lag['p50']:,.0f}/{lag['p99']:,.0f}"
            f" ms, POST took p50/p99 {took['p50']:,.0f}/{took['p99']:,.0f} ms"
        )
        print("\n".join(stages.format_steps(stages.Step(**s) for s in r.steps)))
        cores = ", ".join(f"{k} {v:g}" for k, v in r.cpu_cores.items())
        print(f"  CPU over the run (cores): {cores}")
        per_job = ", ".join(f"{k} {v:g}" for k, v in r.cpu_ms_per_job.items())
        print(f"  CPU ms per dead-lettered Job: {per_job}")
        print(f"  control plane: {json.dumps(r.control_plane)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50.0, help="failing Jobs created per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--settle", nargs="+", default=["default", "0"], help="'default' or a duration")
    p.add_argument("--drain", type=float, default=60.0, help="seconds to wait for outcomes")
    p.add_argument("--cleanup", type=float, default=180.0, help="wait for a namespace to go")
    p.add_argument("--state-dir", type=Path, default=None, help="a running `dev up` cluster")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.keys_dir = make_keys_dir()
    return args


def run(args: argparse.Namespace) -> list[Variant]:
    """Every variant of `args` on the cluster of --state-dir, or on one started for the run."""
    with control_plane(args.state_dir) as state:
        return asyncio.run(_measure(state, args))


def main() -> None:
    args = parse_args()
    results = run(args)
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
