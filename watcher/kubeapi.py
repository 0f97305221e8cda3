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

from watcher.errors import KubeAPIError
from watcher.model import JobRef

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
        try:
            return await _json(
                self.batch.read_namespaced_job(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeAPIError.from_exception(
                "reading Job", exc, kind="Job", namespace=namespace, name=name
            ) from exc

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods. False if it was already gone."""
        try:
            await _json(
                self.batch.delete_namespaced_job(
                    name,
                    namespace,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeAPIError.from_exception(
                "deleting Job", exc, kind="Job", namespace=namespace, name=name
            ) from exc

    async def list_raw(self, path: str, **query: str) -> RawObject:
        """GET a list endpoint as raw JSON (used by the one-shot sweep)."""
        items: list[RawObject] = []
        params: dict[str, str] = {"limit": "500", **query}
        while True:
            try:
                resp = await self.api.call_api(
                    path,
                    "GET",
                    query_params=list(params.items()),
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
                body = await _json_response(resp[0] if isinstance(resp, tuple) else resp)
            except ApiException as exc:
                raise KubeAPIError.from_exception(f"listing {path}", exc) from exc
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise KubeAPIError(f"listing {path}: {exc!r}", status=None) from exc
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
        try:
            await _json(
                self.core.create_namespaced_event(
                    job.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiException as exc:
            raise KubeAPIError.from_exception(
                "writing Event", exc, kind="Job", namespace=job.namespace, name=job.name
            ) from exc


async def _json(call: Any) -> RawObject:
    return await _json_response(await call)


async def _json_response(resp: Any) -> RawObject:
    try:
        body: Mapping[str, Any] = json.loads(await resp.read())
        return dict(body)
    finally:
        resp.release()
