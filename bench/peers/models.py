"""(d) kubernetes_asyncio's ``Watch`` with model deserialization, as its docs show it.

    python -m bench.peers.models --url URL --kubeconfig FILE --expect N

List each kind through the generated API, then ``Watch().stream()`` from the list's
resourceVersion; every event's object becomes a model (V1Job, V1Pod, CoreV1Event, V1Node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, config, watch

from bench.peers.common import PATHS, arguments, say


async def _watch(
    list_fn: Callable[..., Any], selector: str, counted: list[int], done: asyncio.Event
) -> None:
    kwargs = {"label_selector": selector} if selector else {}
    listed = await list_fn(**kwargs)
    rv = listed.metadata.resource_version
    async with watch.Watch().stream(
        list_fn, resource_version=rv, allow_watch_bookmarks=True, **kwargs
    ) as stream:
        counted[1] += 1
        async for event in stream:
            if event["type"] != "BOOKMARK":
                counted[0] += 1
                if counted[0] >= counted[2]:
                    done.set()


async def main() -> None:
    args = arguments(__doc__)
    done = asyncio.Event()
    counted = [0, 0, args.expect]
    async with await config.new_client_from_config(config_file=args.kubeconfig) as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        fns: dict[str, Callable[..., Any]] = {
            "jobs": batch.list_job_for_all_namespaces,
            "pods": core.list_pod_for_all_namespaces,
            "events": core.list_event_for_all_namespaces,
            "nodes": core.list_node,
        }
        tasks = [
            asyncio.create_task(_watch(fns[name], selector, counted, done))
            for name, (_, selector) in PATHS.items()
        ]
        await done.wait()
        say(done=True, events=counted[0])
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
