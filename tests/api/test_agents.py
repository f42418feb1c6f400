"""Agents: API key -> agent token (`POST /agents/auth`), `GET /agents/config/{streamKey}`."""

import re
import time
from dataclasses import replace
from datetime import datetime

import jwt
import pytest

from rig.agents import create_agent
from rig.app import create_app

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
DESTINATION_FIELDS = {"id", "service", "streamKey", "rtmpUrl", "isActive"}


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def check_agent_auth(client, api_key, ttl, expect_ok) -> str:
    before = time.time()
    resp = await client.post("/agents/auth", json={"apiKey": api_key})
    payload = await expect_ok(resp, "Agent authenticated")
    after = time.time()
    assert set(payload) == {"token", "expiresAt"}
    assert ISO_Z.match(payload["expiresAt"]), payload
    expires = datetime.fromisoformat(payload["expiresAt"]).timestamp()
    assert expires > after
    assert int(before) + ttl - 1 <= expires <= after + ttl + 1
    exp_claim = jwt.decode(payload["token"], options={"verify_signature": False})["exp"]
    assert exp_claim == int(expires)
    return payload["token"]


async def test_agent_auth(api, settings, expect_ok):
    agent_id, api_key = await create_agent(api.db, "edge-1")
    token = await check_agent_auth(api.client, api_key, settings.agent_token_ttl, expect_ok)
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == str(agent_id)
    # Only a hash of the key is stored.
    row = await api.db.fetchrow("SELECT * FROM agents WHERE id = $1", agent_id)
    assert all(api_key not in str(value) for value in row.values())
    assert all(api_key.encode() != value for value in row.values())


async def test_agent_token_lifetime_follows_the_setting(aiohttp_client, settings, db, expect_ok):
    client = await aiohttp_client(create_app(replace(settings, agent_token_ttl=120)))
    _agent_id, api_key = await create_agent(db, "edge-short")
    await check_agent_auth(client, api_key, 120, expect_ok)


@pytest.mark.parametrize("api_key", ["", "rigagent_wrong", "WRONG-CASE", "KEY-PREFIX", "KEY+x"])
async def test_bad_api_key_is_1003(api, expect_error, api_key):
    real = await api.agent_key()
    api_key = {"WRONG-CASE": real.upper(), "KEY-PREFIX": real[:-1], "KEY+x": real + "x"}.get(
        api_key, api_key
    )
    resp = await api.client.post("/agents/auth", json={"apiKey": api_key})
    await expect_error(resp, 1003, 401)


async def test_missing_api_key_is_1004(client, expect_error):
    resp = await client.post("/agents/auth", json={"key": "rigagent_x"})
    error = await expect_error(resp, 1004, 400)
    assert error["details"]["field"] == "apiKey"


async def test_stream_config_lists_active_and_inactive_destinations(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt-key")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw-key")
    await api.db.execute("UPDATE destinations SET is_active = false WHERE id = $1", twitch["id"])
    token = await api.agent_token()
    resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=auth(token))
    config = await expect_ok(resp, "Stream Config")
    assert isinstance(config, list)
    by_service = {d["service"]: d for d in config}
    assert len(config) == 2
    assert all(set(d) == DESTINATION_FIELDS for d in config)
    assert by_service["YouTube"] == youtube
    assert by_service["Twitch"] == {**twitch, "isActive": False}
    assert by_service["YouTube"]["rtmpUrl"] == "rtmp://a.rtmp.youtube.com/live2/yt-key"
    assert by_service["Twitch"]["rtmpUrl"] == "rtmp://live.twitch.tv/app/tw-key"
    # The client sees the same destinations.
    detail = await api.detail(account, stream["id"])
    assert sorted(detail["destinations"], key=lambda d: d["id"]) == sorted(
        config, key=lambda d: d["id"]
    )


async def test_stream_config_without_destinations_is_empty(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    token = await api.agent_token()
    resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=auth(token))
    assert await expect_ok(resp, "Stream Config") == []


async def test_stream_config_reflects_service_url_overrides(
    aiohttp_client, settings, db, expect_ok
):
    urls = {"YouTube": "rtmp://127.0.0.1:1/yt", "Twitch": "rtmp://127.0.0.1:1/tw"}
    client = await aiohttp_client(create_app(replace(settings, service_urls=urls)))
    user_id = await db.fetchval(
        "INSERT INTO users (id, username, email, password_hash)"
        " VALUES (gen_random_uuid(), 'olga', 'o@x.io', 'x') RETURNING id"
    )
    await db.execute(
        "INSERT INTO streams (id, user_id, stream_key) VALUES (gen_random_uuid(), $1, 'olga-key')",
        user_id,
    )
    stream_id = await db.fetchval("SELECT id FROM streams")
    await db.execute(
        "INSERT INTO destinations (stream_id, service, stream_key)"
        " VALUES ($1, 'YouTube', 'yt'), ($1, 'Twitch', 'tw')",
        stream_id,
    )
    _agent_id, api_key = await create_agent(db, "edge")
    resp = await client.post("/agents/auth", json={"apiKey": api_key})
    token = (await expect_ok(resp, "Agent authenticated"))["token"]
    resp = await client.get("/agents/config/olga-key", headers=auth(token))
    config = await expect_ok(resp, "Stream Config")
    assert sorted(d["rtmpUrl"] for d in config) == [
        "rtmp://127.0.0.1:1/tw/tw",
        "rtmp://127.0.0.1:1/yt/yt",
    ]


@pytest.mark.parametrize(
    "key", ["AAAAAAAAAAAAAAAAAAAAAA", "unknown", "x" * 3000, "a%00b", "%E2%82%AC", "a%20b"]
)
async def test_unknown_stream_key_is_1000(api, expect_error, key):
    account = await api.account()
    await api.stream(account)
    token = await api.agent_token()
    resp = await api.client.get(f"/agents/config/{key}", headers=auth(token))
    await expect_error(resp, 1000, 404)


async def test_inactive_stream_is_1000(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    await api.destination(account, stream["id"])
    token = await api.agent_token()
    path = f"/agents/config/{stream['streamKey']}"
    assert (
        len(await expect_ok(await api.client.get(path, headers=auth(token)), "Stream Config")) == 1
    )
    await api.db.execute("UPDATE streams SET is_active = false")
    await expect_error(await api.client.get(path, headers=auth(token)), 1000, 404)


async def test_change_key_retires_the_old_key_at_once(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    destination = await api.destination(account, stream["id"], "Twitch", "tw-key")
    token = await api.agent_token()
    old = f"/agents/config/{stream['streamKey']}"
    assert await expect_ok(await api.client.get(old, headers=auth(token)), "Stream Config") == [
        destination
    ]
    resp = await api.client.post(f"/streams/{stream['id']}/changeKey", headers=account.headers)
    new_key = (await expect_ok(resp, "New stream key"))["key"]
    await expect_error(await api.client.get(old, headers=auth(token)), 1000, 404)
    resp = await api.client.get(f"/agents/config/{new_key}", headers=auth(token))
    assert await expect_ok(resp, "Stream Config") == [destination]


async def test_agents_see_every_users_streams(api, expect_ok):
    alice, bob = await api.account(), await api.account()
    streams = [await api.stream(alice), await api.stream(bob)]
    token = await api.agent_token()
    for stream in streams:
        resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=auth(token))
        await expect_ok(resp, "Stream Config")


async def test_revoked_agent_is_refused_even_with_a_valid_token(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    agent_id, api_key = await create_agent(api.db, "edge-1")
    resp = await api.client.post("/agents/auth", json={"apiKey": api_key})
    token = (await expect_ok(resp, "Agent authenticated"))["token"]
    path = f"/agents/config/{stream['streamKey']}"
    await expect_ok(await api.client.get(path, headers=auth(token)), "Stream Config")
    await api.db.execute("UPDATE agents SET revoked_at = now() WHERE id = $1", agent_id)
    await expect_error(await api.client.get(path, headers=auth(token)), 1003, 401)
    resp = await api.client.post("/agents/auth", json={"apiKey": api_key})
    await expect_error(resp, 1003, 401)
    # Another agent is unaffected, and the name can be reused once revoked.
    _other_id, other_key = await create_agent(api.db, "edge-1")
    other = await api.agent_token(other_key)
    await expect_ok(await api.client.get(path, headers=auth(other)), "Stream Config")
