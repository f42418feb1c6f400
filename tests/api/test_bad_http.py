"""Requests aiohttp cannot parse, sent over a raw socket to a real `rig serve`.

aiohttp answers them before any route or middleware runs. They must still be answered
in the JSON error envelope without an echo of the request, and logged in one line that
holds none of what the client sent: the bad byte usually sits next to an API key, a
token or a stream key (a header value, a path), and aiohttp's own log of the parse error
prints the raw line. Nothing may crash on the way (the access log looks up the route of
a request that has none).
"""

import asyncio
import json
import secrets

from tests.api.conftest import ERROR_FIELDS


def malformed_requests(api_key: str, token: str, stream_key: str) -> dict[str, bytes]:
    """A name -> the raw bytes of one malformed request, each carrying a secret."""
    long_value = b"A" * 9000  # past aiohttp's 8190-byte limit on a header line
    return {
        "DEL in an X-Api-Key": (
            b"GET /streams/ HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + api_key.encode() + b"\x7f\r\n\r\n"
        ),
        "NUL in an Authorization": (
            b"GET /streams/ HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\x00\r\n\r\n"
        ),
        "control byte in a path with a stream key": (
            b"GET /agents/config/" + stream_key.encode() + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        "header line too long": (
            b"GET /streams/ HTTP/1.1\r\nHost: x\r\n"
            b"X-Api-Key: " + api_key.encode() + long_value + b"\r\n\r\n"
        ),
    }


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read the answer until the server closes. (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()  # to EOF: a bad request closes the connection
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def check_answer(name: str, status: int, headers: dict[str, str], body: bytes, secret: str):
    # aiohttp's status is kept (400 for every parse error it raises today).
    assert status in (400, 413, 431), (name, status, body)
    assert headers.get("content-type", "").startswith("application/json"), (name, headers)
    assert secret.encode() not in body, (name, body)
    envelope = json.loads(body)
    assert set(envelope) == ERROR_FIELDS, (name, envelope)
    assert envelope["errorCode"] == 1005, (name, envelope)  # the spec's "invalid input"
    assert envelope["details"] is None, (name, envelope)


def check_log(log: str, secrets_sent: list[str]) -> None:
    for secret in secrets_sent:
        assert secret not in log, (secret, log)
    assert "Unhandled exception" not in log, log
    assert "AssertionError" not in log, log
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


async def test_malformed_requests_answered_in_the_envelope_and_logged_without_secrets(
    spawn_rig, rig_env, make_database, tmp_path
):
    env = rig_env(
        RIG_DATABASE_URL=make_database(),
        RIG_JWT_SECRET=secrets.token_urlsafe(48),
        RIG_DATA_DIR=str(tmp_path / "data"),
        RIG_LOG_LEVEL="DEBUG",
    )
    rig = spawn_rig(env)
    await rig.wait_ready()

    api_key = "rigkey_" + secrets.token_urlsafe(24)
    token = "eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(32) + "." + secrets.token_urlsafe(32)
    stream_key = "sk_" + secrets.token_urlsafe(24)
    requests = malformed_requests(api_key, token, stream_key)
    for name, request in requests.items():
        status, headers, body = await raw_exchange(rig.port, request)
        for secret in (api_key, token, stream_key):
            check_answer(name, status, headers, body, secret)

    assert rig.stop() == 0
    log = rig.log()
    check_log(log, [api_key, token, stream_key])
    # One line per bad request: who sent it and what aiohttp made of it, no bytes of it.
    assert log.count("bad HTTP request from 127.0.0.1: ") == len(requests), log
    # The access log names no route (there is none) and no path.
    assert log.count("<bad request> -> 400") == len(requests), log
