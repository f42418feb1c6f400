"""A publish that ends while a heartbeat naming its claim is on its way to rig.

rig renews (and re-grants) the claims a heartbeat names, so a heartbeat that reaches rig
after the release would make the stream live again and open a second session. Here a
proxy between the agent and rig holds every heartbeat for 0.8 s (a slow network, a busy
rig) and the publisher stops while one is held: the release must reach rig after it."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from .test_sessions import live_stack, relayed, stream_media

HELD = 0.8  # seconds each heartbeat spends in the proxy


class SlowHeartbeats:
    """An HTTP proxy to rig that delays POST /agents/heartbeat."""

    def __init__(self, aiohttp_server) -> None:
        self._aiohttp_server = aiohttp_server
        self.holding = asyncio.Event()  # a heartbeat is being held now
        self._rig_url = ""
        self._http: aiohttp.ClientSession | None = None

    async def start(self, rig_url: str) -> str:
        self._rig_url = rig_url
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        server = await self._aiohttp_server(app, host="127.0.0.1")
        return str(server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        if request.path == "/agents/heartbeat":
            self.holding.set()
            await asyncio.sleep(HELD)
            self.holding.clear()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with self._http.request(
            request.method, self._rig_url + request.path_qs, headers=headers,
            data=await request.read(),
        ) as resp:  # fmt: skip
            return web.Response(
                status=resp.status, body=await resp.read(), content_type=resp.content_type
            )


async def test_a_release_does_not_cross_a_heartbeat_in_flight(aiohttp_server, settings, db):
    proxy = SlowHeartbeats(aiohttp_server)
    try:
        async with live_stack(aiohttp_server, settings, db, via=proxy.start) as live:
            publisher = await live.publisher()
            await publisher.send(stream_media())
            await relayed(live)
            async with asyncio.timeout(5):
                await proxy.holding.wait()  # a heartbeat naming the claim is on its way
            await publisher.stop()
            session = await live.ended_session()
            assert session["endReason"] == "ended"
            await asyncio.sleep(HELD + 0.5)  # the held heartbeat has reached rig by now
            sessions = await live.sessions()
            assert [s["id"] for s in sessions] == [session["id"]], sessions
            status, detail, _ = await live.get(f"/streams/{live.stream['id']}")
            assert status == 200
            assert detail["payload"]["isStreaming"] is False  # type: ignore[index]
    finally:
        await proxy.close()
