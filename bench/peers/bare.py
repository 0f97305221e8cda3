"""(a) The floor: list, then read each watch stream line by line and ``json.loads`` it.

    python -m bench.peers.bare --url URL --expect N

Nothing else: no projection, no state, no output. Same HTTP client (aiohttp) and the same
four watches and selectors as the daemon.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from bench.peers.common import PATHS, arguments, say


async def _watch(
    session: aiohttp.ClientSession, url: str, selector: str, counted: list[int], done: asyncio.Event
) -> None:
    params = {"labelSelector": selector} if selector else {}
    async with session.get(url, params=params) as resp:
        rv = (await resp.json(loads=json.loads))["metadata"]["resourceVersion"]
    watch = {**params, "watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"}
    async with session.get(url, params=watch) as resp:
        counted[1] += 1
        while line := await resp.content.readline():
            event = json.loads(line)
            if event["type"] != "BOOKMARK":
                counted[0] += 1
                if counted[0] >= counted[2]:
                    done.set()


async def main() -> None:
    args = arguments(__doc__)
    done = asyncio.Event()
    counted = [0, 0, args.expect]  # events read, watches open, events expected
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [
            asyncio.create_task(_watch(session, args.url + path, selector, counted, done))
            for path, selector in PATHS.values()
        ]
        await done.wait()
        say(done=True, events=counted[0])
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
