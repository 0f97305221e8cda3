"""Whoever can write to Redis cannot make the daemon create a Job (issue 7 item 13).

The daemon runs in-process against the real control plane as its own ServiceAccount (bound
to deploy/manifests/rbac.yaml, so it *could* create Jobs anywhere), with ``scope.namespaces``
set to the test's namespace and a signing key, as in production. Tickets are written straight
into its Redis keys the way an attacker would.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from kubernetes_asyncio import client
from redis.asyncio import Redis

from tests.support.daemon import StartDaemon
from tests.support.kube import eventually, job_manifest
from tests.support.workloads import list_jobs
from watcher.adapters.redis import codec
from watcher.adapters.redis.store import RedisStore
from watcher.app.sealing import build_seal
from watcher.core.manifest import replayable_manifest
from watcher.core.model import FailureClass, JobRef, RetryTicket

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

FORGED = "kube_dlq_forged_entries_total"
REFUSED = "kube_dlq_out_of_scope_refused_total"

PRIVILEGED: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "pwn", "namespace": "kube-system"},
    "spec": {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "serviceAccountName": "replicaset-controller",
                "hostPID": True,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "x",
                        "image": "busybox",
                        "command": ["nsenter", "-t", "1", "-a", "sh"],
                        "securityContext": {"privileged": True},
                        "volumeMounts": [{"name": "root", "mountPath": "/host"}],
                    }
                ],
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            }
        },
    },
}


def ticket(namespace: str, name: str, manifest: dict[str, Any]) -> RetryTicket:
    return RetryTicket(
        job=JobRef(namespace, name, str(uuid.uuid4())),
        attempt=2,
        due_at=time.time() - 1,
        failure_class=FailureClass.NODE_LOST,
        reason="node lost",
        manifest=replayable_manifest(manifest),
    )


async def plant(redis: Redis, store: RedisStore, ticket_id: str, body: bytes) -> None:
    await redis.hset(store.keys.retry_tickets, ticket_id, body)
    await redis.zadd(store.keys.retry_due, {ticket_id: int(time.time() * 1000) - 1000})


async def job_names(api: client.ApiClient, namespace: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in await list_jobs(api, namespace))


async def test_forged_tickets_create_no_job_and_are_quarantined_and_counted(
    start_daemon: StartDaemon, admin_api: client.ApiClient, namespace: str, dlq_redis: Redis
) -> None:
    # Given a running daemon scoped to the test's namespace, with a signing key
    running = await start_daemon()
    store = running.store
    # And, written straight into Redis, a ticket for a privileged hostPID Job in kube-system
    # with a hostPath / mount and another controller's ServiceAccount: once unsigned (as the
    # previous version wrote them), once with a made-up signature, once aimed at the test's
    # own namespace (in scope, so only the missing signature stops it)
    evil = ticket("kube-system", "pwn", PRIVILEGED)
    in_scope = replace(evil, job=replace(evil.job, namespace=namespace, uid=str(uuid.uuid4())))
    unsigned = codec.encode_retry_ticket(evil)
    made_up = {
        "v": 2,
        "kind": "retry_ticket",
        "kid": "k1",
        "sig": "A" * 43 + "=",
        "enc": "",
        "payload": unsigned.decode(),
    }
    await plant(dlq_redis, store, "unsigned", unsigned)
    await plant(dlq_redis, store, "made-up", json.dumps(made_up).encode())
    await plant(dlq_redis, store, "in-scope", codec.encode_retry_ticket(in_scope))
    # And one genuine ticket in scope, so the loop is seen to be firing
    genuine = ticket(namespace, "report", job_manifest("report"))
    assert (await store.schedule_retry(genuine)).written

    # When the retry loop has fired the genuine one
    async def fired() -> bool:
        return await job_names(admin_api, namespace) == ["report-r2"]

    await eventually(fired, within=30, what="the genuine ticket's retry Job")

    # Then the forged ones were quarantined and counted, and no Job was created from them
    assert await running.metric(FORGED, {"kind": "retry_ticket"}) == 3
    assert set(await store.corrupt_retries()) == {"unsigned", "made-up", "in-scope"}
    assert "pwn-r2" not in await job_names(admin_api, "kube-system")
    assert await job_names(admin_api, namespace) == ["report-r2"]
    assert await store.pending_retries() == 0


async def test_a_signed_ticket_outside_scope_is_dead_lettered_with_the_reason(
    start_daemon: StartDaemon, admin_api: client.ApiClient, namespace: str
) -> None:
    # Given a running daemon scoped to the test's namespace
    running = await start_daemon()
    # And a ticket signed with the daemon's own key for a namespace not in its scope (written
    # when the scope was wider, or by anyone holding the key)
    seal = build_seal(running.daemon.settings.security)
    signer = RedisStore(
        running.redis,
        running.daemon.settings.redis,
        cluster_name=running.daemon.settings.cluster_name,
        seal=seal,
    )
    outside = ticket("default", f"elsewhere-{uuid.uuid4().hex[:6]}", job_manifest("x"))
    assert (await signer.schedule_retry(outside)).written

    # When the retry loop fires it, then it ends as a dead letter that says why
    async def dead_lettered() -> Any:
        letters = await running.dead_letters()
        return letters or None

    [(_, letter)] = await eventually(dead_lettered, within=30, what="the refused ticket's letter")
    assert letter.job == outside.job
    assert "outside kube-dlq's scope" in letter.reason
    # And it was refused before any API call, counted, with no Job created
    assert await running.metric(REFUSED, {"action": "create"}) == 1
    assert f"{outside.job.name}-r2" not in await job_names(admin_api, "default")
    assert await running.store.pending_retries() == 0
