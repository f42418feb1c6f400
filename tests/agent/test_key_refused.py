"""An agent whose key rig refuses says so in its log: one ERROR line naming
RIG_AGENT_KEY (never the key), again only after rig accepted it in between."""

import asyncio
import contextlib
import logging
import re
import secrets
import signal

import aiohttp
import pytest
from aiohttp import web

from agent.rig_client import RigClient, RigUnavailable
from rig.app import create_app

from .test_agent_ops import agent_env, start_agent_process, wait_for_line

REFUSED = "rig refused this agent's key"


def refusals(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if REFUSED in r.getMessage()]


async def test_a_refused_key_is_logged_once_and_never_shown(aiohttp_server, settings, caplog):
    rig_server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    wrong = "rigagent_" + secrets.token_urlsafe(32)
    caplog.set_level(logging.INFO)
    async with RigClient(str(rig_server.make_url("")), wrong) as rig:
        for _ in range(3):  # /readyz probes, say
            with pytest.raises(RigUnavailable, match="agent authentication failed: errorCode 1003"):
                await rig.check()
    [line] = refusals(caplog.records)
    assert line.levelno == logging.ERROR
    assert "RIG_AGENT_KEY" in line.getMessage()
    assert all(wrong not in r.getMessage() for r in caplog.records)


async def test_a_key_refused_accepted_and_refused_again_is_logged_at_each_change(
    aiohttp_server, caplog
):
    answers: list[int] = []

    async def auth(request: web.Request) -> web.Response:
        status = answers.pop(0)
        if status == 200:
            payload = {"token": "t", "expiresAt": "2099-01-01T00:00:00Z"}
            return web.json_response({"success": True, "payload": payload})
        return web.json_response({"success": False, "errorCode": 1003}, status=status)

    app = web.Application()
    app.router.add_post("/agents/auth", auth)
    server = await aiohttp_server(app, host="127.0.0.1")
    caplog.set_level(logging.INFO)
    # refused twice, a 503 (no verdict on the key), accepted twice, refused again
    answers += [401, 401, 503, 200, 200, 401]
    async with RigClient(str(server.make_url("")), "rigagent_secret") as rig:
        for _ in range(len(answers)):
            with contextlib.suppress(RigUnavailable):
                await rig.token(force=True)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("agent")]
    assert [level for level, _ in lines] == ["ERROR", "INFO", "ERROR"], lines
    assert REFUSED in lines[0][1] and REFUSED in lines[2][1]
    assert "accepts this agent's key" in lines[1][1]
    assert all("rigagent_secret" not in text for _, text in lines)


async def test_rig_agent_with_a_wrong_key_says_so_at_start_once(aiohttp_server, settings, tmp_path):
    """The process, two workers: the ERROR line comes without any publish, and the
    /readyz probes after it do not repeat it."""
    rig_server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    env = agent_env(RIG_AGENT_HTTP_LISTEN="127.0.0.1:0", RIG_AGENT_WORKERS="2")
    env["RIG_URL"] = str(rig_server.make_url("")).rstrip("/")
    log_path = tmp_path / "agent.log"
    proc = start_agent_process(env, log_path)
    try:
        match = await wait_for_line(log_path, r"metrics and health on http://127.0.0.1:(\d+)", proc)
        await wait_for_line(log_path, r"ERROR agent\S*: " + re.escape(REFUSED), proc)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"http://127.0.0.1:{match.group(1)}/readyz") as resp:
                    assert resp.status == 503
                    assert "errorCode 1003" in await resp.text()
        await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    text = log_path.read_text()
    assert text.count(REFUSED) == 1, text
    assert "RIG_AGENT_KEY" in text
    assert env["RIG_AGENT_KEY"] not in text
