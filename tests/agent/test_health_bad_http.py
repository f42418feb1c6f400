"""The agent's HTTP listener (/metrics, /healthz, /readyz) given requests aiohttp cannot
parse: answered in JSON without an echo, logged in one line without what was sent.

Its routes take no credentials, but a client (a probe, a scraper, a browser) may send
any header it has, and aiohttp's own log of a parse error prints the raw line."""

import logging
import secrets
from types import SimpleNamespace

from agent.health import HealthServer
from tests.api.test_bad_http import check_answer, malformed_requests, raw_exchange


async def no_metrics() -> bytes:
    return b""


async def test_malformed_requests_to_the_agent_listener(caplog):
    caplog.set_level(logging.DEBUG)
    server = SimpleNamespace(serving=True)
    health = HealthServer("127.0.0.1:0", server, rig=None, metrics=no_metrics)  # type: ignore[arg-type]
    await health.start()
    api_key = "rigkey_" + secrets.token_urlsafe(24)
    token = "eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(32) + "." + secrets.token_urlsafe(32)
    stream_key = "sk_" + secrets.token_urlsafe(24)
    requests = malformed_requests(api_key, token, stream_key)
    try:
        for name, request in requests.items():
            status, headers, body = await raw_exchange(health.port, request)
            for secret in (api_key, token, stream_key):
                check_answer(name, status, headers, body, secret)
    finally:
        await health.close()

    for secret in (api_key, token, stream_key):
        assert secret not in caplog.text, (secret, caplog.text)
    assert "Unhandled exception" not in caplog.text, caplog.text
    assert "Error handling request" not in caplog.text, caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    bad = [r.getMessage() for r in caplog.records if "bad HTTP request" in r.getMessage()]
    assert len(bad) == len(requests), caplog.text
