"""Throughput of the classify + decide path on objects captured from a real control plane.

    python bench/bench_classify.py [--seconds 3]

Replays every watch event of every scenario in tests/data/captured/ through what the daemon
does per event (JSON bytes -> projection -> correlate) and, for each failed Job, classify ->
policy -> decide. Prints events/s on one core and, as ratios measured in the same run:

  vs json.loads      the floor: decoding the same bytes and nothing else
  vs client models   kubernetes_asyncio model deserialization of the same objects, which
                     the daemon avoids on its hot path

Ratios, not absolute numbers, are what to compare between machines and runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kubernetes_asyncio.client import ApiClient

from watcher.core import snapshot
from watcher.core.classify import DEFAULT_RULES, classify
from watcher.core.correlate import Correlator
from watcher.core.decide import decide
from watcher.core.policy import RetryPolicy, policy_for
from watcher.core.settings import LimitsSettings

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "captured"
MODEL = {"jobs": "V1Job", "pods": "V1Pod", "events": "CoreV1Event", "nodes": "V1Node"}


def load_events() -> list[tuple[str, str, bytes]]:
    events = []
    for path in sorted(DATA.glob("*.json")):
        for item in json.loads(path.read_text())["watch"]:
            events.append((item["resource"], item["type"], json.dumps(item["object"]).encode()))
    if not events:
        raise SystemExit(f"no captured scenarios under {DATA}")
    return events


def pipeline_pass(events: list[tuple[str, str, bytes]]) -> int:
    """One replay of every event through projection, correlation, classify and decide."""
    correlator = Correlator(LimitsSettings())
    policy = RetryPolicy()
    rng = random.Random(1)
    decided = 0
    for resource, kind, body in events:
        raw = json.loads(body)
        if resource == "jobs":
            job = snapshot.job_snapshot(raw)
            correlator.observe_job(job)
            if job.condition("Failed"):
                report = correlator.report(job.ref.uid)
                assert report is not None
                verdict = classify(report, DEFAULT_RULES)
                job_policy, _ = policy_for(job, policy)
                decide(
                    verdict,
                    job_policy,
                    (),
                    attempt=1,
                    now=0.0,
                    first_failed_at=0.0,
                    pod_failure_policy_failed=False,
                    rng=rng,
                )
                decided += 1
        elif resource == "pods":
            uid = snapshot.job_uid_of_pod(raw)
            if uid:
                correlator.observe_pod(
                    uid,
                    raw["metadata"].get("namespace", ""),
                    snapshot.pod_snapshot(raw, deleted=kind == "DELETED"),
                )
        elif resource == "events":
            correlator.observe_event(
                raw["metadata"].get("namespace", ""), snapshot.event_record(raw)
            )
        elif kind == "DELETED":
            correlator.node_deleted(raw["metadata"]["name"])
        else:
            correlator.observe_node(snapshot.node_state(raw))
    return decided


def json_only(events: list[tuple[str, str, bytes]]) -> int:
    for _, _, body in events:
        json.loads(body)
    return 0


def client_models(events: list[tuple[str, str, bytes]], api: ApiClient) -> int:
    for resource, _, body in events:
        api.deserialize(SimpleNamespace(data=body.decode()), MODEL[resource])
    return 0


async def _models_rate(events: list[tuple[str, str, bytes]], seconds: float) -> float:
    async with ApiClient() as api:  # it needs a running loop for its HTTP session
        return rate(lambda: client_models(events, api), len(events), seconds)


def rate(fn: Callable[[], Any], n_events: int, seconds: float) -> float:
    fn()  # warm up
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        fn()
        runs += 1
    return runs * n_events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    events = load_events()
    failed_jobs = pipeline_pass(events)
    ours = rate(lambda: pipeline_pass(events), len(events), args.seconds)
    floor = rate(lambda: json_only(events), len(events), args.seconds)
    models = asyncio.run(_models_rate(events, args.seconds))
    print(f"captured: {len(events)} watch events, {failed_jobs} failed-Job decisions per pass")
    print(f"classify+decide path : {ours:10,.0f} events/s (one core)")
    print(
        f"json.loads only      : {floor:10,.0f} events/s  -> path costs {floor / ours:.1f}x "
        "the bare decode"
    )
    print(
        f"client models        : {models:10,.0f} events/s  -> path is {ours / models:.1f}x "
        "faster than model deserialization alone"
    )


if __name__ == "__main__":
    main()
