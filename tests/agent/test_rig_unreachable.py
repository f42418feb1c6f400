"""An agent that cannot reach rig at start says so: one WARNING naming RIG_URL's rig and
why, however many times it retries, and one INFO when rig answers; never the key."""

import asyncio
import logging
import socket

from aiohttp import web

from agent.rig_client import RigClient

KEY = "rigagent_never-in-the-log"
UNREACHABLE = "rig unreachable at"


def agent_lines(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("agent")]


def closed_port() -> socket.socket:
    """A bound socket that does not listen: connections to its port are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_rig_unreachable_at_start_is_one_warning_whatever_the_retries(caplog):
    caplog.set_level(logging.INFO)
    with closed_port() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with RigClient(url, KEY) as rig:
            check = asyncio.create_task(rig.check_key(retry=0.02))
            await asyncio.sleep(0.5)  # many retries
            assert not check.done()
            check.cancel()
    lines = agent_lines(caplog)
    assert lines == [
        (
            "WARNING",
            f"{UNREACHABLE} {url}: connection refused; publishes are refused until it answers",
        )
    ], lines
    assert all(KEY not in text for _, text in lines)


async def test_rig_answering_later_is_one_info(caplog):
    async def auth(request: web.Request) -> web.Response:
        payload = {"token": "t", "expiresAt": "2099-01-01T00:00:00Z"}
        return web.json_response({"success": True, "payload": payload})

    app = web.Application()
    app.router.add_post("/agents/auth", auth)
    runner = web.AppRunner(app)
    await runner.setup()
    caplog.set_level(logging.INFO)
    sock = closed_port()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with RigClient(url, KEY) as rig:
            check = asyncio.create_task(rig.check_key(retry=0.02))
            await asyncio.sleep(0.3)
            sock.listen()  # rig is up now
            await web.SockSite(runner, sock).start()
            async with asyncio.timeout(5):
                await check
    finally:
        await runner.cleanup()
        sock.close()
    lines = agent_lines(caplog)
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert lines[0][1].startswith(f"{UNREACHABLE} {url}: ")
    assert lines[1][1] == f"rig answers at {url} now"
    assert all(KEY not in text for _, text in lines)
