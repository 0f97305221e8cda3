"""The few direct Kubernetes API calls the daemon makes besides watching, as raw JSON.

Creating a client (kubeconfig or in-cluster), reading one Job, deleting a stuck Job, and
writing a Warning Event on a Job whose kube-dlq.io/ annotations are malformed. API errors
leave this module as KubeAPIError.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from watcher.core.errors import KubeAPIError
from watcher.core.model import JobRef

RawObject = dict[str, Any]
COMPONENT = "kube-dlq"


async def api_client(kubeconfig: str | None, context: str | None = None) -> client.ApiClient:
    """A client from a kubeconfig file, or the in-cluster ServiceAccount when none is given."""
    if kubeconfig:
        return await config.new_client_from_config(config_file=kubeconfig, context=context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    return await config.new_client_from_config(context=context)


class KubeAPI:
    def __init__(self, api: client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self.api = api
        self.timeout = request_timeout_s
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    async def get_job(self, namespace: str, name: str) -> RawObject | None:
        status, body = await _call(
            self.batch.read_namespaced_job(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            ),
            "reading Job",
            kind="Job",
            namespace=namespace,
            name=name,
        )
        if status == 404:
            return None
        _raise_for_status(status, body, "reading Job", kind="Job", namespace=namespace, name=name)
        return body

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods. False if it was already gone."""
        status, body = await _call(
            self.batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Background",
                _preload_content=False,
                _request_timeout=self.timeout,
            ),
            "deleting Job",
            kind="Job",
            namespace=namespace,
            name=name,
        )
        if status == 404:
            return False
        _raise_for_status(status, body, "deleting Job", kind="Job", namespace=namespace, name=name)
        return True

    async def list_raw(self, path: str, **query: str) -> RawObject:
        """GET every page of a list endpoint as raw JSON (used by the one-shot sweep)."""
        items: list[RawObject] = []
        params: dict[str, str] = {"limit": "500", **query}
        while True:
            status, body = await _call(
                self.api.call_api(
                    path,
                    "GET",
                    query_params=list(params.items()),
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=self.timeout,
                ),
                f"listing {path}",
            )
            _raise_for_status(status, body, f"listing {path}")
            items.extend(body.get("items") or [])
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                body["items"] = items
                return body
            params["continue"] = cont

    async def warn_on_job(self, job: JobRef, reason: str, message: str) -> None:
        """A Warning Event on the Job, visible in `kubectl describe job`."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: Any = {
            "metadata": {"name": f"{job.name}.{uuid.uuid4().hex[:10]}", "namespace": job.namespace},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.name,
                "namespace": job.namespace,
                "uid": job.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        status, reply = await _call(
            self.core.create_namespaced_event(
                job.namespace, body, _preload_content=False, _request_timeout=self.timeout
            ),
            "writing Event",
            kind="Job",
            namespace=job.namespace,
            name=job.name,
        )
        _raise_for_status(
            status, reply, "writing Event", kind="Job", namespace=job.namespace, name=job.name
        )


async def _call(
    call: Any, what: str, *, kind: str = "", namespace: str = "", name: str = ""
) -> tuple[int, RawObject]:
    """Await a request made with _preload_content=False: (HTTP status, decoded JSON body).

    With _preload_content=False kubernetes_asyncio does not raise for error statuses, so
    every caller checks the status; transport failures become KubeAPIError here.
    """
    try:
        resp = await call
    except ApiException as exc:
        raise KubeAPIError.from_exception(
            what, exc, kind=kind, namespace=namespace, name=name
        ) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KubeAPIError(f"{what}: {exc!r}", kind=kind, namespace=namespace, name=name) from exc
    if isinstance(resp, tuple):  # call_api returns (response, status, headers)
        resp = resp[0]
    try:
        raw = await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KubeAPIError(
            f"{what}: {exc!r}", status=resp.status, kind=kind, namespace=namespace, name=name
        ) from exc
    finally:
        resp.release()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"message": raw[:200].decode(errors="replace")}
    return int(resp.status), body if isinstance(body, dict) else {}


def _raise_for_status(
    status: int,
    body: Mapping[str, Any],
    what: str,
    *,
    kind: str = "",
    namespace: str = "",
    name: str = "",
) -> None:
    if status < 400:
        return
    message = str(body.get("message") or body.get("reason") or "")
    raise KubeAPIError(
        f"{what}: HTTP {status}: {message}",
        status=status,
        reason=str(body.get("reason") or ""),
        kind=kind,
        namespace=namespace,
        name=name,
    )
