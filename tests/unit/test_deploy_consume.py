"""deploy/consume/ is consistent with the code: its args parse, its handler is mounted where
the command runs it, its pod is hardened like the daemon's and can open signed entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from watcher.app.config import parse_config
from watcher.cli.main import build_parser
from watcher.service.command import CommandRunner

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _pod() -> dict[str, Any]:
    [deployment] = _docs("consume/deployment.yaml")
    assert deployment["kind"] == "Deployment"
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_the_args_parse_and_run_the_shipped_handler_from_its_configmap() -> None:
    pod = _pod()
    [container] = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.dlq_command, args.group) == ("dlq", "consume", "slack")
    handler = [a for a in args.handler if a != "--"]
    assert handler[0] == "python3"
    mount = next(m for m in container["volumeMounts"] if handler[1].startswith(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    [kustomization] = _docs("consume/kustomization.yaml")
    [generated] = kustomization["configMapGenerator"]
    assert volume["configMap"]["name"] == generated["name"]
    assert Path(handler[1]).name in generated["files"]
    assert "deployment.yaml" in kustomization["resources"]
    # And the grace lets the handler finish, then be stopped, before the kubelet's SIGKILL
    assert pod["terminationGracePeriodSeconds"] > args.grace + CommandRunner(["x"]).kill_after_s


def test_the_pod_is_hardened_and_holds_no_api_token() -> None:
    pod = _pod()
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    # The webhook URL and the Redis URL are credentials: from Secrets, never literal
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["KUBE_DLQ_WEBHOOK_URL"]["valueFrom"]
    assert "secretKeyRef" in env["KUBE_DLQ_REDIS_URL"]["valueFrom"]


def test_the_signing_secret_is_mounted_where_the_shared_config_reads_it() -> None:
    configmap = next(d for d in _docs("manifests/deployment.yaml") if d["kind"] == "ConfigMap")
    security = parse_config(yaml.safe_load(configmap["data"]["kube-dlq.yaml"])).security
    pod = _pod()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert volumes[mounts[security.signing_keys_dir]]["secret"]["secretName"] == "kube-dlq-signing"
    assert volumes[mounts["/etc/kube-dlq"]]["configMap"]["name"] == configmap["metadata"]["name"]
