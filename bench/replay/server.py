"""A replay apiserver: serves a scaled `Corpus` over the Kubernetes list and watch protocol.

    python -m bench.replay.server --copies 100 --port 0 --port-file FILE

Enough of the protocol for kube-dlq's watcher, kubernetes_asyncio and kopf: discovery
(/api, /apis, their resource lists), cluster-wide and namespaced lists (labelSelector,
simple fieldSelector), single-object GETs, and watches from a resourceVersion with
``allowWatchBookmarks`` as one chunked stream of JSON lines. Cluster-wide lists answer with
the state before the stream (nothing) at rv 1; a namespaced list answers with the final state
of the matching objects (how a kopf handler reads a failed Job's pods). Writes
(POST, PUT, PATCH, DELETE: an Event, a retry Job) are accepted and echoed, and change nothing.

Benchmark control, one consumer at a time: ``POST /bench/reset`` opens a new session whose
watches get their headers at once and their events only after ``POST /bench/go``; ``GET
/bench/status`` counts the session's watch connections per resource and the events served.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.replay.scenarios import JOB_PODS_LABEL, RESOURCES, Corpus, Stored, build_corpus

CHUNK_BYTES = 64 * 1024
WATCHED_SELECTORS = {"pods": JOB_PODS_LABEL}
"""The daemon's (and so every peer's) label selectors, whose streams are encoded at start."""
IDLE_BOOKMARK_S = 30.0

_KINDS = {
    "jobs": ("Job", "batch/v1", True),
    "pods": ("Pod", "v1", True),
    "events": ("Event", "v1", True),
    "nodes": ("Node", "v1", False),
    # Empty, for kopf: it waits for both in discovery and lists and watches CRDs.
    "namespaces": ("Namespace", "v1", False),
    "customresourcedefinitions": ("CustomResourceDefinition", "apiextensions.k8s.io/v1", False),
}


@dataclass(slots=True)
class Session:
    go: asyncio.Event = field(default_factory=asyncio.Event)
    watches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    served: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    writes: int = 0


def _selector_terms(selector: str) -> list[tuple[str, str, str | None]]:
    """``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v`` terms -> (op, key, value)."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in raw:
            key, value = raw.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif raw.startswith("!"):
            terms.append(("!", raw[1:].strip(), None))
        else:
            terms.append(("exists", raw, None))
    return terms


def _field(obj: dict[str, Any], path: str) -> object:
    value: object = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def matches(obj: dict[str, Any], labels: str, fields: str, namespace: str | None) -> bool:
    meta = obj.get("metadata") or {}
    if namespace is not None and meta.get("namespace") != namespace:
        return False
    have = meta.get("labels") or {}
    for op, key, value in _selector_terms(labels):
        if (
            (op == "exists" and key not in have)
            or (op == "!" and key in have)
            or (op == "=" and have.get(key) != value)
            or (op == "!=" and have.get(key) == value)
        ):
            return False
    for op, key, value in _selector_terms(fields):
        got = _field(obj, key)
        got = "" if got is None else str(got)
        if (op == "=" and got != value) or (op == "!=" and got == value):
            return False
    return True


class Replay:
    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.session = Session()
        self._lines: dict[tuple[str, str, str, str | None], tuple[list[int], list[bytes]]] = {}

    def stream(
        self, resource: str, labels: str, fields: str, namespace: str | None
    ) -> tuple[list[int], list[bytes]]:
        """The (rvs, JSON lines) of one resource's watch with these selectors, cached."""
        key = (resource, labels, fields, namespace)
        if key not in self._lines:
            chosen = [
                s
                for s in self.corpus.streams.get(resource, ())
                if matches(s.obj, labels, fields, namespace)
            ]
            lines = [
                json.dumps({"type": s.type, "object": s.obj}, separators=(",", ":")).encode()
                + b"\n"
                for s in chosen
            ]
            self._lines[key] = ([s.rv for s in chosen], lines)
        return self._lines[key]

    def final_state(
        self, resource: str, labels: str, fields: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        last: dict[str, Stored] = {}
        for s in self.corpus.streams.get(resource, ()):
            if matches(s.obj, labels, fields, namespace):
                last[s.obj["metadata"].get("uid") or s.obj["metadata"]["name"]] = s
        return [s.obj for s in last.values() if s.type != "DELETED"]


def _bookmark(resource: str, rv: int) -> bytes:
    kind, api_version, _ = _KINDS[resource]
    obj = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(rv)}}
    return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"


async def _watch(
    request: web.Request, replay: Replay, resource: str, namespace: str | None
) -> web.StreamResponse:
    q = request.query
    since = int(q.get("resourceVersion") or 0)
    timeout_s = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
    rvs, lines = replay.stream(
        resource, q.get("labelSelector", ""), q.get("fieldSelector", ""), namespace
    )
    session = replay.session
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)  # headers at once, as the apiserver sends them
    session.watches[resource] += 1
    try:
        await session.go.wait()
        start = bisect.bisect_right(rvs, since)
        chunk: list[bytes] = []
        size = 0
        for line in lines[start:]:
            chunk.append(line)
            size += len(line)
            if size >= CHUNK_BYTES:
                await resp.write(b"".join(chunk))
                chunk, size = [], 0
        chunk.append(_bookmark(resource, max(replay.corpus.last_rv, since)))
        await resp.write(b"".join(chunk))
        session.served[resource] += len(lines) - start
        # Then an idle watch: bookmarks now and then, ended by the client or timeoutSeconds.
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while deadline is None or loop.time() < deadline:
            left = IDLE_BOOKMARK_S if deadline is None else deadline - loop.time()
            await asyncio.sleep(max(0.0, min(IDLE_BOOKMARK_S, left)))
            await resp.write(_bookmark(resource, max(replay.corpus.last_rv, since)))
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the consumer went away
    finally:
        session.watches[resource] -= 1
    return resp


def _resource_of(request: web.Request) -> tuple[str, str | None, str | None]:
    info = request.match_info
    return info["resource"], info.get("namespace"), info.get("name")


async def _get(request: web.Request) -> web.StreamResponse:
    replay: Replay = request.app["replay"]
    resource, namespace, name = _resource_of(request)
    if resource not in _KINDS:
        raise web.HTTPNotFound()
    if request.query.get("watch", "").lower() in ("true", "1") and name is None:
        return await _watch(request, replay, resource, namespace)
    labels = request.query.get("labelSelector", "")
    fields = request.query.get("fieldSelector", "")
    kind, api_version, _ = _KINDS[resource]
    if name is not None:
        for obj in replay.final_state(resource, "", f"metadata.name={name}", namespace):
            return web.json_response(obj)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 404,
                "reason": "NotFound",
                "message": f'{resource} "{name}" not found',
            },
            status=404,
        )
    # A cluster-wide list is the one before the stream, empty: everything comes by the
    # watch. A namespaced list is a read during the stream (a handler reading a Job's pods)
    # and answers with what the stream ends at.
    narrowed = namespace is not None
    items = replay.final_state(resource, labels, fields, namespace) if narrowed else []
    rv = replay.corpus.last_rv if narrowed else 1
    return web.json_response(
        {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }
    )


async def _write(request: web.Request) -> web.Response:
    replay: Replay = request.app["replay"]
    replay.session.writes += 1
    body: Any = {}
    if request.can_read_body:
        try:
            body = await request.json(loads=json.loads)
        except ValueError:
            body = {}
    if not isinstance(body, dict):
        body = {}
    status = 201 if request.method == "POST" else 200
    return web.json_response(body or {"kind": "Status", "status": "Success"}, status=status)


def _resource_list(group_version: str, names: list[str]) -> dict[str, Any]:
    resources = [
        {
            "name": name,
            "singularName": _KINDS[name][0].lower(),
            "namespaced": _KINDS[name][2],
            "kind": _KINDS[name][0],
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
        for name in names
    ]
    return {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}


async def _discovery(request: web.Request) -> web.Response:
    path = request.path.rstrip("/")
    docs: dict[str, Any] = {
        "/api": {"kind": "APIVersions", "versions": ["v1"]},
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"},
                }
                for group in ("batch", "apiextensions.k8s.io")
            ],
        },
        "/api/v1": _resource_list("v1", ["pods", "events", "nodes", "namespaces"]),
        "/apis/batch/v1": _resource_list("batch/v1", ["jobs"]),
        "/apis/apiextensions.k8s.io/v1": _resource_list(
            "apiextensions.k8s.io/v1", ["customresourcedefinitions"]
        ),
        "/version": {"major": "1", "minor": "36", "gitVersion": "v1.36.3-replay"},
    }
    if path not in docs:
        raise web.HTTPNotFound()
    return web.json_response(docs[path])


async def _reset(request: web.Request) -> web.Response:
    request.app["replay"].session = Session()
    return web.json_response({"ok": True})


async def _go(request: web.Request) -> web.Response:
    request.app["replay"].session.go.set()
    return web.json_response({"ok": True})


async def _status(request: web.Request) -> web.Response:
    replay: Replay = request.app["replay"]
    s = replay.session
    return web.json_response({"watches": s.watches, "served": s.served, "writes": s.writes})


def make_app(corpus: Corpus) -> web.Application:
    app = web.Application()
    app["replay"] = Replay(corpus)
    for prefix in ("/api/v1", "/apis/batch/v1", "/apis/apiextensions.k8s.io/v1"):
        for route in ("/{resource}", "/namespaces/{namespace}/{resource}"):
            app.router.add_get(prefix + route, _get)
            app.router.add_post(prefix + route, _write)
        item = prefix + "/namespaces/{namespace}/{resource}/{name}"
        app.router.add_get(item, _get)
        app.router.add_get(prefix + "/{resource}/{name}", _get)
        for method in ("PUT", "PATCH", "DELETE"):
            app.router.add_route(method, item, _write)
            app.router.add_route(method, prefix + "/{resource}/{name}", _write)
    for path in (
        "/api",
        "/apis",
        "/api/v1",
        "/apis/batch/v1",
        "/version",
        "/apis/apiextensions.k8s.io/v1",
    ):
        app.router.add_get(path, _discovery)
    app.router.add_post("/bench/reset", _reset)
    app.router.add_post("/bench/go", _go)
    app.router.add_get("/bench/status", _status)
    return app


def _announce(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)  # the driver sees the whole file or none


async def serve(copies: int, port: int, port_file: str | None, quiet_copies: int = 0) -> None:
    corpus = build_corpus(copies, quiet_copies=quiet_copies)
    app = make_app(corpus)
    # Encode the streams every consumer opens before listening: encoding 100,000 lines in
    # the first watch's handler would stall the server (and its /bench/status) for seconds.
    for resource in RESOURCES:
        app["replay"].stream(resource, WATCHED_SELECTORS.get(resource, ""), "", None)
        app["replay"].stream(resource, "", "", None)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, shutdown_timeout=1.0)
    await site.start()
    bound = runner.addresses[0][1]
    if port_file:
        info = {
            "port": bound,
            "events": corpus.events,
            "watched_events": corpus.watched_events,
            "job_events": len(corpus.streams["jobs"]),
            "failed_jobs": corpus.failed_jobs,
        }
        _announce(Path(port_file), info)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument(
        "--quiet-copies", type=int, default=0, help="more copies of the scenarios without a failure"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write {port, events, failed_jobs} here when up")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.copies, args.port, args.port_file, args.quiet_copies))


if __name__ == "__main__":
    main()
