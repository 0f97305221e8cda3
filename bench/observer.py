"""An observer independent of the daemon: when each Job turned Failed, when its dead letter
appeared. Run in its own process by bench/latency.py:

    .venv/bin/python -m bench.observer --state-dir DIR --namespace NS --config DAEMON.yaml \
        --out FILE.json

It keeps its own watches on the namespace's Jobs and Pods (admin identity, plain HTTP chunked
watch, no client models) and an ``XREAD BLOCK`` on the default dead-letter stream of the
daemon's config (entries opened with the same seal, so a forged entry would not count). On
SIGTERM it writes ``{"failed": {uid: unix_s}, "dead_lettered": {uid: unix_s}, "jobs":
[uid...], "pods": {job uid: {"pod"|"bound"|"running"|"pod_fail": unix_s}}}`` to --out and
exits: when each Job turned Failed and got its dead letter, and when its pod appeared, was
bound, ran and failed (bench/stages.py). Times are taken the moment the event is read, on
this host's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from devtools.devcluster.state import ClusterState
from watcher.adapters.redis import codec
from watcher.adapters.redis.keys import STREAM_FIELD, Keys
from watcher.adapters.redis.seal import dead_letter_place
from watcher.app.config import load_config
from watcher.app.sealing import build_seal

JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


class Observations:
    def __init__(self) -> None:
        self.failed: dict[str, float] = {}
        self.dead_lettered: dict[str, float] = {}
        self.jobs: set[str] = set()
        self.pods: dict[str, dict[str, float]] = {}
        self.undecodable = 0

    def job(self, obj: dict[str, Any]) -> None:
        at = time.time()
        uid = obj.get("metadata", {}).get("uid", "")
        if not uid:
            return
        self.jobs.add(uid)
        for cond in obj.get("status", {}).get("conditions") or ():
            if cond.get("type") == "Failed" and cond.get("status") == "True":
                self.failed.setdefault(uid, at)

    def pod(self, obj: dict[str, Any]) -> None:
        """The first time the Job's pod was seen, bound to a node, Running, Failed."""
        at = time.time()
        labels = obj.get("metadata", {}).get("labels") or {}
        uid = labels.get(JOB_UID_LABEL) or labels.get("controller-uid")
        if not isinstance(uid, str) or not uid:
            return
        steps = self.pods.setdefault(uid, {})
        steps.setdefault("pod", at)
        if obj.get("spec", {}).get("nodeName"):
            steps.setdefault("bound", at)
        phase = obj.get("status", {}).get("phase")
        if phase == "Running":
            steps.setdefault("running", at)
        elif phase == "Failed":
            steps.setdefault("pod_fail", at)

    def as_json(self) -> dict[str, Any]:
        return {
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "jobs": sorted(self.jobs),
            "pods": self.pods,
            "undecodable": self.undecodable,
        }


async def watch(
    state: ClusterState, path: str, handle: Callable[[dict[str, Any]], None], listed: asyncio.Event
) -> None:
    """List, then watch from the list's resourceVersion; on the end of a stream, watch again."""
    ctx = ssl.create_default_context(cafile=state.ca_file)
    headers = {"Authorization": f"Bearer {state.admin_token}"}
    url = f"{state.api_url}{path}"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        async with session.get(url, ssl=ctx) as resp:
            first = await resp.json()
        for item in first.get("items", []):
            handle(item)
        version = first["metadata"]["resourceVersion"]
        listed.set()
        while True:
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true"}
            async with session.get(url, params=params, ssl=ctx) as resp:
                async for line in resp.content:
                    event = json.loads(line)
                    obj = event.get("object", {})
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        handle(obj)


async def read_stream(config_path: Path, seen: Observations) -> None:
    settings = load_config(config_path)
    keys = Keys(prefix=settings.redis.key_prefix, cluster=settings.cluster_name)
    seal = build_seal(settings.security)
    queue = settings.dead_letter.default_queue
    stream, place = keys.dlq(queue), dead_letter_place(keys, queue)
    redis = Redis.from_url(settings.redis.url)
    last: Any = "0-0"
    try:
        while True:
            reply: Any = await redis.xread({stream: last}, block=1000, count=1000)
            at = time.time()
            for _, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        opened = seal.open(
                            codec.KIND_DEAD_LETTER, place, fields[STREAM_FIELD.encode()]
                        )
                        letter = codec.decode_dead_letter(opened)
                    except (codec.CorruptEntry, KeyError):
                        seen.undecodable += 1
                        continue
                    seen.dead_lettered.setdefault(letter.job.uid, at)
    finally:
        await redis.aclose()


async def _both(a: asyncio.Event, b: asyncio.Event) -> None:
    await a.wait()
    await b.wait()


async def observe(args: argparse.Namespace) -> Observations:
    seen = Observations()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    state = ClusterState.load(args.state_dir)
    jobs_listed, pods_listed = asyncio.Event(), asyncio.Event()
    ns = f"namespaces/{args.namespace}"
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(watch(state, f"/apis/batch/v1/{ns}/jobs", seen.job, jobs_listed)),
        asyncio.create_task(watch(state, f"/api/v1/{ns}/pods", seen.pod, pods_listed)),
        asyncio.create_task(read_stream(args.config, seen)),
    ]
    done: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    ready: asyncio.Task[Any] = asyncio.create_task(_both(jobs_listed, pods_listed))
    await asyncio.wait([*tasks, ready], return_when=asyncio.FIRST_COMPLETED)
    args.ready.write_text("ready")
    finished, _ = await asyncio.wait([*tasks, done], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in finished:
        if task is not done:
            task.result()  # a crashed watch or read fails the observer loudly
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--config", type=Path, required=True, help="the daemon's config file")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True, help="touched once watching")
    args = parser.parse_args()
    seen = asyncio.run(observe(args))
    args.out.write_text(json.dumps(seen.as_json()))


if __name__ == "__main__":
    main()
