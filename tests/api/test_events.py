"""Live updates (`GET /streams/{streamID}/events`): server-sent events fed by PostgreSQL
notifications, on a real database."""

import asyncio
import json
import uuid
from dataclasses import replace
from typing import Any

import pytest

from rig import events
from rig.app import create_app
from rig.events import WATCHERS

EVENT_WAIT = 5.0  # a notification arrives in milliseconds; this is the failure bound


async def next_event(resp: Any, timeout: float = EVENT_WAIT) -> tuple[str, Any]:
    """The next event (name, parsed data), skipping comments and the retry hint."""
    async with asyncio.timeout(timeout):
        while True:
            block = (await resp.content.readuntil(b"\n\n")).decode()
            fields = [line.partition(": ") for line in block.strip().split("\n")]
            named = {name: value for name, _, value in fields if name in ("event", "data")}
            if named:
                return named["event"], json.loads(named["data"])


async def next_stats(resp: Any) -> Any:
    """The next event, which must be `stats`: its data."""
    name, data = await next_event(resp)
    assert name == "stats", (name, data)
    return data


async def listening(app: Any) -> None:
    """Wait until the app's LISTEN connection is up."""
    hub = app[WATCHERS]
    async with asyncio.timeout(EVENT_WAIT):
        while not hub.listening:
            await asyncio.sleep(0.02)


async def open_events(client: Any, stream_id: str, headers: dict[str, str]) -> Any:
    resp = await client.get(f"/streams/{stream_id}/events", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"].startswith("no-cache")
    return resp


async def test_events_follow_destinations_and_live_health(api, make_agent, expect_ok, monkeypatch):
    # Only notifications can deliver the changes below in time: no fallback reads.
    monkeypatch.setattr(events, "FALLBACK_SECONDS", 60.0)
    monkeypatch.setattr(events, "REFRESH_SECONDS", 60.0)
    account = await api.account()
    stream = await api.stream(account)
    resp = await open_events(api.client, stream["id"], account.headers)
    first = await resp.content.readuntil(b"\n\n")
    assert first == b"retry: 3000\n\n"
    await listening(api.client.server.app)

    stats = await next_stats(resp)
    stats_route = await expect_ok(
        await api.client.get(f"/streams/{stream['id']}/stats", headers=account.headers),
        "Stream statistics",
    )
    assert stats == stats_route  # one shape: the stats route's payload
    assert stats["isStreaming"] is False and stats["destinations"] == []

    youtube = await api.destination(account, stream["id"], "YouTube", "yt-key")
    stats = await next_stats(resp)
    assert [(d["id"], d["state"]) for d in stats["destinations"]] == [(youtube["id"], "off")]
    assert "yt-key" not in json.dumps(stats)  # statistics never carry keys

    agent = await make_agent("edge-7")
    claim = await agent.claimed(stream["streamKey"], "rtmp://edge-7.example/live")
    stats = await next_stats(resp)
    assert stats["isStreaming"] is True
    assert stats["provisionStatus"]["agent"] == "edge-7"

    health = {
        "ingestUrl": "rtmp://edge-7.example/live",
        "ingest": {"bitrate": 4_500_000, "frameRate": 30.0, "uptime": 5.0, "bytesIn": 2_800_000},
        "destinations": [
            {"id": youtube["id"], "state": "backoff", "lastError": "Connection refused"}
        ],
    }
    await agent.beat(
        [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}]
    )
    stats = await next_stats(resp)
    assert stats["ingest"]["bitrate"] == 4_500_000
    assert stats["destinations"][0]["state"] == "backoff"
    assert stats["destinations"][0]["lastError"] == "Connection refused"

    assert (await agent.release(claim["claimId"])).status == 200
    stats = await next_stats(resp)
    assert stats["isStreaming"] is False
    resp.close()


async def test_deleting_the_stream_ends_the_events_with_1000(api):
    account = await api.account()
    stream = await api.stream(account)
    resp = await open_events(api.client, stream["id"], account.headers)
    await next_event(resp)
    deleted = await api.client.delete(f"/streams/{stream['id']}", headers=account.headers)
    assert deleted.status == 200
    name, envelope = await next_event(resp)
    assert name == "error"
    assert envelope["errorCode"] == 1000 and set(envelope) == {"message", "errorCode", "details"}
    async with asyncio.timeout(EVENT_WAIT):
        assert await resp.content.read() == b""  # and the response ends


async def test_a_revoked_token_ends_the_events_with_1003(api, monkeypatch):
    monkeypatch.setattr(events, "REFRESH_SECONDS", 0.3)  # re-checked on every read
    account = await api.account()
    stream = await api.stream(account)
    resp = await open_events(api.client, stream["id"], account.headers)
    await next_event(resp)
    # A password change elsewhere revokes every earlier token.
    await api.db.execute(
        "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1",
        uuid.UUID(account.id),
    )
    name, envelope = await next_event(resp)
    assert (name, envelope["errorCode"]) == ("error", 1003)


async def test_events_need_the_owner(api, expect_error):
    owner = await api.account()
    stranger = await api.account()
    stream = await api.stream(owner)
    resp = await api.client.get(f"/streams/{stream['id']}/events")
    await expect_error(resp, 1003, 401)
    resp = await api.client.get(f"/streams/{stream['id']}/events", headers=stranger.headers)
    await expect_error(resp, 1000, 404)
    resp = await api.client.get("/streams/not-a-uuid/events", headers=owner.headers)
    await expect_error(resp, 1000, 404)
    resp = await api.client.get(f"/streams/{uuid.uuid4()}/events", headers=owner.headers)
    await expect_error(resp, 1000, 404)


@pytest.fixture
async def limited_client(aiohttp_client, settings, db):
    """An app allowing two live connections per user and one-second requests."""
    app = create_app(replace(settings, events_per_user=2, request_timeout=1.0))
    return await aiohttp_client(app)


async def test_connections_per_user_are_bounded_and_freed(
    limited_client, db, expect_error, monkeypatch
):
    from tests.api.conftest import Api

    monkeypatch.setattr(events, "DISCONNECT_CHECK_SECONDS", 0.1)
    api = Api(limited_client, db)
    account = await api.account()
    other = await api.account()
    stream = await api.stream(account)
    first = await open_events(limited_client, stream["id"], account.headers)
    second = await open_events(limited_client, stream["id"], account.headers)
    third = await limited_client.get(f"/streams/{stream['id']}/events", headers=account.headers)
    body = await expect_error(third, 1010, 429)
    assert third.headers["Retry-After"] == body["details"]["retryAfter"].__str__()
    # Another user is not affected.
    other_stream = await api.stream(other)
    (await open_events(limited_client, other_stream["id"], other.headers)).close()

    # Longer than the request deadline: the stream is not cut at 1 s.
    await asyncio.sleep(1.5)
    await next_event(first)
    first.close()  # the client goes away: its slot is free again shortly
    hub = limited_client.server.app[WATCHERS]

    async def freed() -> None:
        while hub.count > 1:
            await asyncio.sleep(0.05)

    async with asyncio.timeout(EVENT_WAIT):
        await freed()
    again = await open_events(limited_client, stream["id"], account.headers)
    again.close()
    second.close()


async def test_events_survive_a_lost_listen_connection(api, db):
    account = await api.account()
    stream = await api.stream(account)
    resp = await open_events(api.client, stream["id"], account.headers)
    await next_event(resp)
    hub = api.client.server.app[WATCHERS]
    await listening(api.client.server.app)
    # The database drops the LISTEN connection (restart, failover, idle killer).
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
    )
    assert killed == 1
    await api.destination(account, stream["id"], "Twitch", "tw-key")
    stats = await next_stats(resp)  # by fallback reads or after the reconnect
    assert [d["service"] for d in stats["destinations"]] == ["Twitch"]

    async def relistened() -> None:
        while not hub.listening:
            await asyncio.sleep(0.05)

    async with asyncio.timeout(EVENT_WAIT + events.RECONNECT_MAX_SECONDS):
        await relistened()
    await api.destination(account, stream["id"], "YouTube", "yt-key")
    stats = await next_stats(resp)
    assert [d["service"] for d in stats["destinations"]] == ["Twitch", "YouTube"]
    resp.close()


async def test_shutdown_ends_open_event_streams(aiohttp_client, settings, db):
    from tests.api.conftest import Api

    app = create_app(settings)
    client = await aiohttp_client(app)
    api = Api(client, db)
    account = await api.account()
    stream = await api.stream(account)
    resp = await open_events(client, stream["id"], account.headers)
    await next_event(resp)
    await app.shutdown()  # what aiohttp does first on SIGTERM
    async with asyncio.timeout(EVENT_WAIT):
        assert await resp.content.read() == b""
