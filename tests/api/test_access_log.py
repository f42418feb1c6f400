"""rig's access log: one line per request, the route pattern and never the path; the
agents' routine traffic (heartbeats every few seconds, every second while a broadcast is
held; thumbnails every 10 s per stream) at DEBUG, so an operator's INFO log shows what
people did."""

import logging

from aiohttp import web

from rig.app import AccessLogger


async def ok(request: web.Request) -> web.Response:
    return web.json_response({})


async def refused(request: web.Request) -> web.Response:
    return web.json_response({}, status=401)


async def test_routine_agent_requests_are_logged_at_debug(aiohttp_server, aiohttp_client, caplog):
    app = web.Application()
    app.router.add_post("/agents/heartbeat", ok)
    app.router.add_put("/agents/claims/{claimID}/thumbnail", ok)
    app.router.add_post("/agents/streams/{streamKey}/claim", ok)
    app.router.add_get("/streams/", ok)
    app.router.add_post("/agents/auth", refused)
    server = await aiohttp_server(app, access_log_class=AccessLogger)
    client = await aiohttp_client(server)
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    await client.post("/agents/heartbeat", json={})
    await client.put("/agents/claims/c-1/thumbnail", data=b"jpeg")
    await client.post("/agents/streams/SECRETKEY/claim", json={})
    await client.get("/streams/")
    await client.post("/agents/auth", json={})
    levels = {
        record.getMessage().split(" -> ")[0]: record.levelname
        for record in caplog.records
        if record.name == "aiohttp.access"
    }
    assert levels == {
        "POST /agents/heartbeat": "DEBUG",
        "PUT /agents/claims/{claimID}/thumbnail": "DEBUG",
        "POST /agents/streams/{streamKey}/claim": "INFO",  # a publish starting
        "GET /streams/": "INFO",
        "POST /agents/auth": "INFO",
    }
    assert "SECRETKEY" not in caplog.text
