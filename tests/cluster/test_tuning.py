"""The knobs bench/loader.py turns for load reach the components: the nodes' pod capacity, the
scheduler's client QPS, the components' environment (GOGC), kwok's configuration (which, once
given, must carry kwok's defaults: kwok applies them only when there is no KwokConfiguration
at all)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.loader import job_body
from devtools.devcluster.build import ensure_binaries
from devtools.devcluster.cluster import LocalCluster
from devtools.devcluster.kubeapi import KWOK_OPTIONS, api_get, kwok_configuration
from tests.cluster.test_harness import fake_binaries


def test_kwok_configuration_keeps_kwoks_defaults_under_the_overrides() -> None:
    doc = kwok_configuration({"podPlayStageParallelism": 32})

    assert doc["kind"] == "KwokConfiguration"
    assert doc["apiVersion"] == "config.kwok.x-k8s.io/v1alpha1"
    assert doc["options"]["podPlayStageParallelism"] == 32
    # A zero here would mean no pods-on-node worker and no debugging handlers in kwok.
    assert doc["options"]["podsOnNodeSyncParallelism"] == 1
    assert doc["options"]["enableDebuggingHandlers"] is True
    assert kwok_configuration({})["options"] == KWOK_OPTIONS


def test_kwok_config_file_starts_with_the_configuration_then_the_stages(tmp_path: Path) -> None:
    binaries = fake_binaries(tmp_path / "bin")
    binaries.kwok_stages.write_text("apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\n")
    cluster = LocalCluster(
        tmp_path / "state", binaries, kwok_options={"podPlayStageParallelism": 9}
    )
    cluster.state_dir.mkdir(parents=True)

    docs = list(yaml.safe_load_all(cluster._stages_file().read_text()))

    assert docs[0]["kind"] == "KwokConfiguration"
    assert docs[0]["options"]["podPlayStageParallelism"] == 9
    kinds = {d["kind"] for d in docs[1:]}
    assert kinds == {"Stage"}
    assert len(docs) > 2  # upstream's and the project's own stages follow


def _insecure_get(url: str, token: str) -> Any:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.cluster
def test_tuned_cluster_applies_its_knobs_and_still_fails_a_job(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path / "state",
        ensure_binaries(progress=lambda _: None),
        node_pods=7,
        extra_scheduler_args=("--kube-api-qps=77", "--kube-api-burst=99"),
        kwok_options={"podPlayStageParallelism": 8},
        component_env={"GOGC": "321"},
        progress=lambda _: None,
    )
    with cluster as state:
        node = api_get(state, "/api/v1/nodes/kwok-node-0") or {}
        assert node["status"]["allocatable"]["pods"] == "7"

        sched = next(c for c in state.components if c.name == "kube-scheduler")
        argv = Path(f"/proc/{sched.pid}/cmdline").read_bytes().split(b"\0")
        port = next(a for a in argv if a.startswith(b"--secure-port=")).split(b"=")[1]
        configz = _insecure_get(f"https://127.0.0.1:{port.decode()}/configz", state.admin_token)
        client_conn = configz["componentconfig"]["clientConnection"]
        assert (client_conn["qps"], client_conn["burst"]) == (77, 99)

        for comp in state.components:
            environ = Path(f"/proc/{comp.pid}/environ").read_bytes().split(b"\0")
            assert b"GOGC=321" in environ, comp.name

        # kwok runs with the configuration document: a failing Job's pod runs, then fails.
        cluster.kubectl("create", "namespace", "tuning")
        body = json.dumps(job_body("tuned", fail_exit_code=3))
        cluster.kubectl("-n", "tuning", "create", "-f", "-", stdin=body)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = api_get(state, "/apis/batch/v1/namespaces/tuning/jobs/tuned") or {}
            conds = job.get("status", {}).get("conditions") or []
            if any(c["type"] == "Failed" and c["status"] == "True" for c in conds):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the Job never failed: {job.get('status')}")
