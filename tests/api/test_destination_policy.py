"""Server-side request forgery and amplification (issue 12, item 8): callbackUrl and
Custom rtmpUrl refuse non-public addresses when saved and when connected to; a stream
has at most RIG_MAX_DESTINATIONS destinations."""

import asyncio
from dataclasses import replace

import pytest

from rig.app import create_app
from rig.appkeys import POOL
from rig.webhooks import deliver_due, webhook_http_session

NON_PUBLIC_HOSTS = [
    "127.0.0.1",
    "127.1",
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "10.0.0.7",
    "192.168.1.1",
    "172.16.0.1",
    "[fd00::1]",
    "[fe80::1]",
    "224.0.0.1",
    "[ff02::1]",
    "0.0.0.0",  # noqa: S104 (an address refused, not bound)
    "[::]",
]
# Saved as they are: a public address, or a name that does not resolve now.
ACCEPTED_HOSTS = ["8.8.8.8", "[2606:4700:4700::1111]", "hooks.example"]


@pytest.fixture
async def public_only(aiohttp_client, settings, db):
    """rig as it runs by default: users' destinations must be public."""
    return await aiohttp_client(create_app(replace(settings, allow_private_destinations=False)))


async def test_callback_url_must_be_public(public_only, api, expect_error, expect_ok, case):
    account = await api.account()
    stream = await expect_ok(
        await public_only.post("/streams/", headers=account.headers), "New stream created"
    )
    path = f"/streams/{stream['id']}/webhook"
    for host in NON_PUBLIC_HOSTS:
        with case(host):
            body = {"callbackUrl": f"http://{host}:8080/hook"}
            resp = await public_only.put(path, json=body, headers=account.headers)
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == "callbackUrl"
            assert "RIG_ALLOW_PRIVATE_DESTINATIONS" in error["details"]["reason"]
    for host in ACCEPTED_HOSTS:
        with case(host):
            body = {"callbackUrl": f"https://{host}/hook"}
            resp = await public_only.put(path, json=body, headers=account.headers)
            assert (await expect_ok(resp, "Stream webhook"))["callbackUrl"] == body["callbackUrl"]


async def test_custom_rtmp_url_must_be_public(public_only, api, expect_error, expect_ok, case):
    account = await api.account()
    created = await public_only.post("/streams/", headers=account.headers)
    stream = await expect_ok(created, "New stream created")
    path = f"/streams/{stream['id']}/destination"
    for n, host in enumerate(NON_PUBLIC_HOSTS):
        with case(host):
            body = {"service": "Custom", "streamKey": f"k{n}", "rtmpUrl": f"rtmp://{host}/live"}
            resp = await public_only.post(path, json=body, headers=account.headers)
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == "rtmpUrl"
            # Both settings an operator needs to change it (rig's and the agents').
            assert "RIG_ALLOW_PRIVATE_DESTINATIONS" in error["message"]
            assert "RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS" in error["message"]
    body = {"service": "Custom", "streamKey": "k", "rtmpUrl": "rtmp://8.8.8.8/live"}
    dest = await expect_ok(
        await public_only.post(path, json=body, headers=account.headers), "Stream destination added"
    )
    # Changing it to a private address is refused as well.
    resp = await public_only.patch(
        f"{path}/{dest['id']}",
        json={"rtmpUrl": "rtmp://169.254.169.254/live"},
        headers=account.headers,
    )
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "rtmpUrl"
    # Built-in services are the operator's (RIG_SERVICE_URL_*): never checked.
    resp = await public_only.post(
        path, json={"service": "YouTube", "streamKey": "yt"}, headers=account.headers
    )
    await expect_ok(resp, "Stream destination added")


async def test_the_webhook_sender_checks_the_address_it_connects_to(
    api, webhook_receiver, expect_ok
):
    """A callbackUrl that became non-public after it was saved (DNS changed, or it was
    saved while the setting was on): nothing reaches the receiver."""
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.put(
        f"/streams/{stream['id']}/webhook",
        json={"callbackUrl": webhook_receiver.url.replace("127.0.0.1", "localhost")},
        headers=account.headers,
    )
    await expect_ok(resp, "Stream webhook")
    agent_key = await api.agent_key()
    token = await api.agent_token(agent_key)
    resp = await api.client.post(
        f"/agents/streams/{stream['streamKey']}/claim",
        json={"ingestUrl": "rtmp://edge.example/live"},
        headers={"Authorization": f"Bearer {token}"},
    )
    await expect_ok(resp, "Stream claimed")
    async with webhook_http_session(allow_private=False) as http:
        assert await deliver_due(api.client.server.app[POOL], http) == 1
    assert webhook_receiver.received == []
    row = await api.db.fetchrow("SELECT * FROM webhook_deliveries")
    assert row["last_error"] == "the receiver's address is not public"
    # With the setting on, the same event goes through.
    await api.db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    async with webhook_http_session(allow_private=True) as http:
        assert await deliver_due(api.client.server.app[POOL], http) == 1
    assert len(webhook_receiver.received) == 1


async def test_redirects_are_not_followed(aiohttp_server, api, expect_ok):
    from aiohttp import web

    landed = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        landed.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    server = await aiohttp_server(app, host="127.0.0.1")
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.put(
        f"/streams/{stream['id']}/webhook",
        json={"callbackUrl": str(server.make_url("/hook"))},
        headers=account.headers,
    )
    await expect_ok(resp, "Stream webhook")
    token = await api.agent_token()
    resp = await api.client.post(
        f"/agents/streams/{stream['streamKey']}/claim",
        json={"ingestUrl": "rtmp://edge.example/live"},
        headers={"Authorization": f"Bearer {token}"},
    )
    await expect_ok(resp, "Stream claimed")
    async with webhook_http_session(allow_private=True) as http:
        assert await deliver_due(api.client.server.app[POOL], http) == 1
    assert landed == []
    assert await api.db.fetchval("SELECT last_error FROM webhook_deliveries") == "HTTP 307"


async def test_destinations_per_stream_are_capped(
    aiohttp_client, settings, db, api, expect_error, expect_ok
):
    client = await aiohttp_client(create_app(replace(settings, max_destinations=3)))
    account = await api.account()
    stream = await expect_ok(
        await client.post("/streams/", headers=account.headers), "New stream created"
    )
    path = f"/streams/{stream['id']}/destination"

    async def add(n: int):
        body = {
            "service": "Custom",
            "streamKey": f"key{n}",
            "rtmpUrl": "rtmp://ingest.example/live",
        }
        return await client.post(path, json=body, headers=account.headers)

    # Concurrent adds: exactly the cap gets in.
    answers = await asyncio.gather(*(add(n) for n in range(6)))
    assert sorted(resp.status for resp in answers) == [200, 200, 200, 409, 409, 409]
    error = await expect_error(await add(99), 1006, 409)
    assert error["message"] == "Unable to add destination: a stream has at most 3 destinations"
    assert error["details"] == {
        "field": "destinations",
        "reason": "at most 3 destinations per stream",
    }
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 3
    # Another stream has its own allowance; removing one makes room.
    other = await expect_ok(
        await client.post("/streams/", headers=account.headers), "New stream created"
    )
    resp = await client.post(
        f"/streams/{other['id']}/destination",
        json={"service": "YouTube", "streamKey": "yt"},
        headers=account.headers,
    )
    await expect_ok(resp, "Stream destination added")
    first = (
        await api.db.fetchrow(
            "SELECT id FROM destinations WHERE stream_id = $1 ORDER BY id",
            __import__("uuid").UUID(stream["id"]),
        )
    )["id"]
    await expect_ok(
        await client.delete(f"{path}/{first}", headers=account.headers),
        "Stream destination deleted",
    )
    await expect_ok(await add(100), "Stream destination added")
