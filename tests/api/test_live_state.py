"""Live state: claims (`/agents/streams/{key}/claim`), release, expiry and heartbeats."""

import asyncio
import re
import time
import uuid
from dataclasses import replace
from datetime import datetime

import pytest

from rig.agents import create_agent
from rig.app import create_app
from rig.appkeys import POOL
from rig.live import sweep_expired

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
INGEST = "rtmp://edge-1.example.net:1935/live"
# What a heartbeat answers beside the destinations of a live claim (the default setting;
# nobody has asked for the stream's picture).
PROTECTED = {
    "disconnectProtection": {"enabled": True, "graceSeconds": 30},
    "thumbnailWanted": False,
}


def parse_iso(value: str) -> float:
    assert ISO_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def claim_row(db, stream_id):
    return await db.fetchrow(
        "SELECT * FROM stream_claims WHERE stream_id = $1", uuid.UUID(stream_id)
    )


async def expire_claims(db):
    """Make every claim expired, as if its agent stopped heartbeating a while ago."""
    await db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 second'")


async def listed(api, account, expect_ok, stream_id):
    resp = await api.client.get("/streams/", headers=account.headers)
    streams = await expect_ok(resp, "Stream list for user")
    (stream,) = [s for s in streams if s["id"] == stream_id]
    return stream


# ---------------------------------------------------------------- claim


async def test_claim_makes_the_stream_live(api, settings, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt-key")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw-key")
    # A real agent: API key exchanged for a token at POST /agents/auth.
    agent_id, api_key = await create_agent(api.db, "edge-1")
    token = await api.agent_token(api_key)

    before = time.time()
    resp = await api.client.post(
        f"/agents/streams/{stream['streamKey']}/claim",
        json={"ingestUrl": INGEST},
        headers={"Authorization": f"Bearer {token}"},
    )
    claim = await expect_ok(resp, "Stream claimed")
    after = time.time()
    assert set(claim) == {
        *("claimId", "streamId", "expiresAt", "destinations"),
        *("role", "disconnectProtection", "thumbnailWanted"),
    }
    assert claim["role"] == "primary"
    assert claim["thumbnailWanted"] is False
    assert claim["disconnectProtection"] == {"enabled": True, "graceSeconds": 30}
    assert UUID4.match(claim["claimId"])
    assert claim["streamId"] == stream["id"]
    expires = parse_iso(claim["expiresAt"])
    assert before + settings.claim_ttl - 1 <= expires <= after + settings.claim_ttl + 1
    assert claim["destinations"] == [youtube, twitch]

    row = await claim_row(api.db, stream["id"])
    assert str(row["claim_id"]) == claim["claimId"]
    assert row["agent_id"] == agent_id
    assert row["ingest_url"] == INGEST
    assert row["health"] is None

    detail = await api.detail(account, stream["id"])
    assert detail["isStreaming"] is True
    status = detail["provisionStatus"]
    assert set(status) == {"agent", "ingestUrl", "since"}
    assert status["agent"] == "edge-1"
    assert status["ingestUrl"] == INGEST
    assert before - 1 <= parse_iso(status["since"]) <= after + 1
    assert detail["health"] == {}  # live, no heartbeat yet
    assert detail["destinations"] == [youtube, twitch]

    in_list = await listed(api, account, expect_ok, stream["id"])
    assert in_list["isStreaming"] is True
    assert in_list["provisionStatus"] is None  # spec: null in the list; the detail says where
    assert in_list["destinations"] is None


async def test_claim_of_a_stream_without_destinations(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    assert claim["destinations"] == []


async def test_second_agent_is_refused_with_1009(api, make_agent, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    first, second = await make_agent("edge-a"), await make_agent("edge-b")
    claim = await first.claimed(stream["streamKey"])
    error = await expect_error(await second.claim(stream["streamKey"]), 1009, 409)
    assert error["message"] == "Stream already live on another agent"
    row = await claim_row(api.db, stream["id"])
    assert str(row["claim_id"]) == claim["claimId"]
    assert row["agent_id"] == first.id
    assert (await api.detail(account, stream["id"]))["provisionStatus"]["agent"] == "edge-a"


async def test_same_agent_claiming_again_gets_its_claim_back(api, make_agent, expect_ok):
    """The claim is the stream's broadcast on an agent: claiming again from the agent that
    holds it (the publisher back during the grace, or after an agent restart) answers the
    same claim, renewed; the primary's new ingest URL becomes the claim's."""
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    first = await agent.claimed(stream["streamKey"], "rtmp://edge.example/live")
    await api.db.execute("UPDATE stream_claims SET expires_at = now() + interval '1 second'")
    before = await claim_row(api.db, stream["id"])
    second = await agent.claimed(stream["streamKey"], "rtmps://edge.example:443/live")
    assert second["claimId"] == first["claimId"]
    assert second["role"] == "primary"
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 1
    row = await claim_row(api.db, stream["id"])
    assert row["ingest_url"] == "rtmps://edge.example:443/live"
    assert row["since"] == before["since"]
    assert (row["expires_at"] - before["expires_at"]).total_seconds() >= 10  # renewed
    await expect_ok(await agent.release(first["claimId"]), "Claim released")
    assert (await api.detail(account, stream["id"]))["isStreaming"] is False


async def test_claim_of_unknown_or_inactive_key_is_1000(api, make_agent, expect_error, case):
    account = await api.account()
    inactive, rotated, deleted = [await api.stream(account) for _ in range(3)]
    resp = await api.client.patch(
        f"/streams/{inactive['id']}", json={"isActive": False}, headers=account.headers
    )
    assert resp.status == 200
    resp = await api.client.post(f"/streams/{rotated['id']}/changeKey", headers=account.headers)
    assert resp.status == 200
    resp = await api.client.delete(f"/streams/{deleted['id']}", headers=account.headers)
    assert resp.status == 200
    agent = await make_agent()
    keys = {
        "unknown": "AAAAAAAAAAAAAAAAAAAAAA",
        "inactive": inactive["streamKey"],
        "old-key": rotated["streamKey"],
        "deleted": deleted["streamKey"],
        "nul": "%00",
    }
    for name, key in keys.items():
        with case(name):
            error = await expect_error(await agent.claim(key), 1000, 404)
            assert error["message"] == "Stream not found"
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 0


BAD_INGEST_URLS = [
    "",
    "http://edge.example/live",
    "edge.example/live",
    "RTMP://edge.example/live",
    "rtmp://" + "e" * 506,  # 513 characters
    5,
    ["rtmp://edge.example/live"],
]


async def test_bad_ingest_url_is_1005(api, make_agent, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    for ingest_url in BAD_INGEST_URLS:
        with case(ingest_url):
            resp = await agent.claim(stream["streamKey"], ingest_url)
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == "ingestUrl"
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 0


async def test_longest_ingest_url_is_accepted(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    url = "rtmps://" + "e" * 504  # 512 characters
    await agent.claimed(stream["streamKey"], url)
    assert (await claim_row(api.db, stream["id"]))["ingest_url"] == url


async def test_missing_ingest_url_is_1004(api, make_agent, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    for body in ({}, {"ingestUrl": None}, {"ingest": INGEST}):
        with case(body):
            resp = await api.client.post(
                f"/agents/streams/{stream['streamKey']}/claim", json=body, headers=agent.headers
            )
            error = await expect_error(resp, 1004, 400)
            assert error["details"] == {"field": "ingestUrl"}


async def test_live_routes_need_an_agent_token(api, make_agent, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    user = account.headers
    calls = [
        ("POST", f"/agents/streams/{stream['streamKey']}/claim", {"ingestUrl": INGEST}),
        ("POST", "/agents/heartbeat", {"claims": []}),
        ("DELETE", f"/agents/claims/{claim['claimId']}", None),
    ]
    for method, path, body in calls:
        resp = await api.client.request(method, path, json=body, headers=user)
        error = await expect_error(resp, 1003, 403)
        assert error["details"] == {"reason": "wrong token type"}
        assert error["message"] == "This route needs an agent token"
        resp = await api.client.request(method, path, json=body)
        await expect_error(resp, 1003, 401)
    row = await claim_row(api.db, stream["id"])
    assert str(row["claim_id"]) == claim["claimId"]
    # ...and an agent token cannot use the client routes.
    resp = await api.client.get(f"/streams/{stream['id']}", headers=agent.headers)
    await expect_error(resp, 1003, 403)


@pytest.mark.parametrize("agents", [2, 10])
async def test_concurrent_claims_grant_exactly_one(api, make_agent, expect_error, agents):
    account = await api.account()
    stream = await api.stream(account)
    contenders = [await make_agent() for _ in range(agents)]
    responses = await asyncio.gather(*(a.claim(stream["streamKey"]) for a in contenders))
    winners = [a for a, r in zip(contenders, responses, strict=True) if r.status == 200]
    assert len(winners) == 1, [r.status for r in responses]
    for agent, resp in zip(contenders, responses, strict=True):
        if agent is winners[0]:
            claim = (await resp.json())["payload"]
        else:
            await expect_error(resp, 1009, 409)
    rows = await api.db.fetch("SELECT * FROM stream_claims")
    assert len(rows) == 1
    assert rows[0]["agent_id"] == winners[0].id
    assert str(rows[0]["claim_id"]) == claim["claimId"]
    detail = await api.detail(account, stream["id"])
    assert detail["provisionStatus"]["agent"] == winners[0].name


# ---------------------------------------------------------------- release


async def test_release_ends_the_live_state(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    assert await expect_ok(await agent.release(claim["claimId"]), "Claim released") is None
    assert await claim_row(api.db, stream["id"]) is None
    detail = await api.detail(account, stream["id"])
    assert detail["isStreaming"] is False
    assert detail["provisionStatus"] is None
    assert detail["health"] is None
    in_list = await listed(api, account, expect_ok, stream["id"])
    assert (in_list["isStreaming"], in_list["provisionStatus"]) == (False, None)
    # Releasing twice: already gone.
    error = await expect_error(await agent.release(claim["claimId"]), 1000, 404)
    assert error["message"] == "Claim not found"
    # The key is free again, for any agent.
    other = await make_agent()
    await other.claimed(stream["streamKey"])


async def test_release_of_another_agents_claim_is_1000(api, make_agent, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    owner, intruder = await make_agent(), await make_agent()
    claim = await owner.claimed(stream["streamKey"])
    await expect_error(await intruder.release(claim["claimId"]), 1000, 404)
    await expect_error(await intruder.release(str(uuid.uuid4())), 1000, 404)
    assert str((await claim_row(api.db, stream["id"]))["claim_id"]) == claim["claimId"]
    assert (await api.detail(account, stream["id"]))["isStreaming"] is True


async def test_release_of_a_malformed_claim_id_is_1000(api, make_agent, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    await agent.claimed(stream["streamKey"])
    for claim_id in ("not-a-uuid", "123", "00000000-0000-0000-0000", "%00"):
        with case(claim_id):
            await expect_error(await agent.release(claim_id), 1000, 404)
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 1


# ---------------------------------------------------------------- expiry


async def test_claims_expire_without_heartbeat(
    aiohttp_client, settings, db, api, make_agent, expect_error
):
    client = await aiohttp_client(create_app(replace(settings, claim_ttl=1)))
    account = await api.account()  # users and tokens: the same database and JWT secret
    first = await make_agent("edge-a", client=client)
    second = await make_agent("edge-b", client=client)
    swept_stream, taken_stream = await api.stream(account), await api.stream(account)
    claim = await first.claimed(swept_stream["streamKey"])
    await first.claimed(taken_stream["streamKey"])
    assert parse_iso(claim["expiresAt"]) <= time.time() + 2
    await expect_error(await second.claim(swept_stream["streamKey"]), 1009, 409)

    await asyncio.sleep(1.2)
    # Not renewed: offline at once, before any sweep (the join ignores expired claims).
    assert await db.fetchval("SELECT count(*) FROM stream_claims") == 2
    for stream in (swept_stream, taken_stream):
        detail = await api.detail(account, stream["id"])
        assert (detail["isStreaming"], detail["provisionStatus"], detail["health"]) == (
            False,
            None,
            None,
        )
    # An expired claim is taken over even before the sweep...
    await second.claimed(taken_stream["streamKey"])
    # ...and the sweep deletes only the expired one.
    assert await sweep_expired(client.server.app[POOL]) == 1
    assert await claim_row(db, swept_stream["id"]) is None
    assert (await claim_row(db, taken_stream["id"]))["agent_id"] == second.id
    assert await sweep_expired(client.server.app[POOL]) == 0
    await second.claimed(swept_stream["streamKey"])
    detail = await api.detail(account, swept_stream["id"])
    assert detail["isStreaming"] is True
    assert detail["provisionStatus"]["agent"] == "edge-b"


# ---------------------------------------------------------------- heartbeat


def health_report(ingest_url, destinations):
    return {
        "ingestUrl": ingest_url,
        "ingest": {"bitrate": 6_000_000, "frameRate": 30.0, "uptime": 12.5, "bytesIn": 9_000},
        "destinations": destinations,
    }


async def test_heartbeat_renews_and_stores_health(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt-key")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw-key")
    kick = await api.destination(account, stream["id"], "Kick", "kick-key")
    resp = await api.client.patch(
        f"/streams/{stream['id']}/destination/{twitch['id']}",
        json={"isActive": False},
        headers=account.headers,
    )
    twitch = await expect_ok(resp, "Stream destination updated")
    agent = await make_agent("edge-9")
    claim = await agent.claimed(stream["streamKey"], INGEST)
    await api.db.execute("UPDATE stream_claims SET expires_at = now() + interval '1 second'")
    before = await claim_row(api.db, stream["id"])

    health = health_report(
        INGEST,
        [
            {
                "id": youtube["id"],
                "service": "YouTube",
                "state": "live",
                "lastError": None,
                "bytesSent": 123_456,
                "reconnects": 0,
                "droppedPackets": 0,
                "liveSeconds": 12.0,
                "retryIn": 4.0,  # not in backoff: not shown
            },
            {
                "id": kick["id"],
                "service": "Kick",
                "state": "backoff",
                "lastError": "connection refused",
                "bytesSent": 10,
                "reconnects": 3,
                "droppedPackets": 7,
                "retryIn": 2.5,
                "liveSeconds": "soon",  # not a number: not shown
            },
            # Reported for an inactive destination (e.g. just switched off): shown "off".
            {"id": twitch["id"], "service": "Twitch", "state": "live", "bytesSent": 99},
        ],
    )
    answers = await agent.beat(
        [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}]
    )
    assert answers == [
        {
            "claimId": claim["claimId"],
            "status": "live",
            "destinations": [youtube, twitch, kick],
            **PROTECTED,
        }
    ]
    after = await claim_row(api.db, stream["id"])
    assert after["claim_id"] == before["claim_id"]
    renewal = (after["expires_at"] - before["expires_at"]).total_seconds()
    assert 13 <= renewal <= 20  # now + 15 s instead of now + 1 s
    assert after["since"] == before["since"]

    detail = await api.detail(account, stream["id"])
    # Stored as rig sanitised it (rig/health.py): the wrong-typed figure is dropped, and
    # every destination says lastError and retryIn, null when it had none.
    stored = {**health, "destinations": [dict(d) for d in health["destinations"]]}
    del stored["destinations"][1]["liveSeconds"]
    stored["destinations"][2].update(lastError=None, retryIn=None)
    assert detail["health"] == stored
    assert detail["provisionStatus"]["agent"] == "edge-9"

    resp = await api.client.get(f"/streams/{stream['id']}/stats", headers=account.headers)
    stats = await expect_ok(resp, "Stream statistics")
    assert stats == {
        "isStreaming": True,
        "provisionStatus": detail["provisionStatus"],
        "ingestState": "live",
        "ingest": health["ingest"],
        "destinations": [
            {
                "id": youtube["id"],
                "service": "YouTube",
                "isActive": True,
                "state": "live",
                "lastError": None,
                "bytesSent": 123_456,
                "reconnects": 0,
                "retryIn": None,
                "liveSeconds": 12.0,
                "droppedPackets": 0,
            },
            {
                "id": twitch["id"],
                "service": "Twitch",
                "isActive": False,
                "state": "off",
                "lastError": None,
                "bytesSent": 0,
                "reconnects": 0,
                "retryIn": None,
                "liveSeconds": None,
                "droppedPackets": 0,
            },
            {
                "id": kick["id"],
                "service": "Kick",
                "isActive": True,
                "state": "backoff",
                "lastError": "connection refused",
                "bytesSent": 10,
                "reconnects": 3,
                "retryIn": 2.5,
                "liveSeconds": None,
                "droppedPackets": 7,
            },
        ],
        "diagnostics": [],  # 6 Mbit/s is within Kick's 8; nothing else measured to judge
    }


async def test_stats_of_an_offline_stream(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt-key")
    resp = await api.client.get(f"/streams/{stream['id']}/stats", headers=account.headers)
    assert await expect_ok(resp, "Stream statistics") == {
        "isStreaming": False,
        "provisionStatus": None,
        "ingestState": "offline",
        "ingest": None,
        "destinations": [
            {
                "id": youtube["id"],
                "service": "YouTube",
                "isActive": True,
                "state": "off",
                "lastError": None,
                "bytesSent": 0,
                "reconnects": 0,
                "retryIn": None,
                "liveSeconds": None,
                "droppedPackets": 0,
            }
        ],
        "diagnostics": [],
    }
    other = await api.account()
    resp = await api.client.get(f"/streams/{stream['id']}/stats", headers=other.headers)
    await expect_error(resp, 1000, 404)
    resp = await api.client.get(f"/streams/{uuid.uuid4()}/stats", headers=account.headers)
    await expect_error(resp, 1000, 404)


async def test_heartbeat_answers_current_destinations(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    beat = [{"claimId": claim["claimId"], "streamKey": stream["streamKey"]}]
    assert await agent.beat(beat) == [
        {"claimId": claim["claimId"], "status": "live", "destinations": [], **PROTECTED}
    ]
    added = await api.destination(account, stream["id"], "Twitch", "tw-new")
    assert await agent.beat(beat) == [
        {"claimId": claim["claimId"], "status": "live", "destinations": [added], **PROTECTED}
    ]
    # No health given: stored as an empty object.
    assert (await api.detail(account, stream["id"]))["health"] == {}
    assert await agent.beat([]) == []


@pytest.mark.parametrize("change", ["changeKey", "deactivate", "delete"])
async def test_heartbeat_revokes_claims_of_changed_streams(api, make_agent, expect_ok, change):
    account = await api.account()
    stream, bystander = await api.stream(account), await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    kept = await agent.claimed(bystander["streamKey"])
    if change == "changeKey":
        resp = await api.client.post(f"/streams/{stream['id']}/changeKey", headers=account.headers)
        await expect_ok(resp, "New stream key")
    elif change == "deactivate":
        resp = await api.client.patch(
            f"/streams/{stream['id']}", json={"isActive": False}, headers=account.headers
        )
        await expect_ok(resp, "Stream updated")
    else:
        resp = await api.client.delete(f"/streams/{stream['id']}", headers=account.headers)
        await expect_ok(resp, "Stream deleted")
    # The claim row is gone at once, not only at the next heartbeat.
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 1
    answers = await agent.beat(
        [
            {"claimId": claim["claimId"], "streamKey": stream["streamKey"]},
            {"claimId": kept["claimId"], "streamKey": bystander["streamKey"]},
        ]
    )
    assert answers == [
        {"claimId": claim["claimId"], "status": "revoked"},
        {"claimId": kept["claimId"], "status": "live", "destinations": [], **PROTECTED},
    ]
    rows = await api.db.fetch("SELECT claim_id FROM stream_claims")
    assert [str(r["claim_id"]) for r in rows] == [kept["claimId"]]


async def test_heartbeat_regrants_an_expired_swept_claim(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent("edge-back")
    claim = await agent.claimed(stream["streamKey"], INGEST)
    await expire_claims(api.db)
    assert await sweep_expired(api.client.server.app[POOL]) == 1
    assert (await api.detail(account, stream["id"]))["isStreaming"] is False

    health = health_report("rtmp://edge-back.example/live", [])
    answers = await agent.beat(
        [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}]
    )
    assert answers == [
        {"claimId": claim["claimId"], "status": "live", "destinations": [], **PROTECTED}
    ]
    row = await claim_row(api.db, stream["id"])
    assert str(row["claim_id"]) == claim["claimId"]
    assert row["agent_id"] == agent.id
    assert row["ingest_url"] == "rtmp://edge-back.example/live"
    detail = await api.detail(account, stream["id"])
    assert detail["isStreaming"] is True
    assert detail["provisionStatus"]["agent"] == "edge-back"
    assert detail["health"] == health


async def test_heartbeat_renews_an_expired_unswept_claim(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    await expire_claims(api.db)
    answers = await agent.beat([{"claimId": claim["claimId"], "streamKey": stream["streamKey"]}])
    assert answers[0]["status"] == "live"
    assert await sweep_expired(api.client.server.app[POOL]) == 0
    assert (await api.detail(account, stream["id"]))["isStreaming"] is True


async def test_heartbeat_of_a_claim_taken_over_is_revoked(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    first, second = await make_agent(), await make_agent()
    old = await first.claimed(stream["streamKey"])
    await expire_claims(api.db)
    new = await second.claimed(stream["streamKey"])
    answers = await first.beat([{"claimId": old["claimId"], "streamKey": stream["streamKey"]}])
    assert answers == [{"claimId": old["claimId"], "status": "revoked"}]
    row = await claim_row(api.db, stream["id"])
    assert (str(row["claim_id"]), row["agent_id"]) == (new["claimId"], second.id)
    # Another agent naming the live claim does not get it either.
    answers = await first.beat([{"claimId": new["claimId"], "streamKey": stream["streamKey"]}])
    assert answers == [{"claimId": new["claimId"], "status": "revoked"}]
    assert (await claim_row(api.db, stream["id"]))["agent_id"] == second.id


async def test_heartbeat_naming_another_streams_key_is_revoked(api, make_agent):
    """A claim id listed with the key of a different stream is not that stream's claim;
    one confused entry must not fail the whole heartbeat (every other claim would expire)."""
    account = await api.account()
    stream, other = await api.stream(account), await api.stream(account)
    agent, rival = await make_agent(), await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    theirs = await rival.claimed(other["streamKey"])
    answers = await agent.beat(
        [
            {"claimId": claim["claimId"], "streamKey": other["streamKey"]},
            {"claimId": claim["claimId"], "streamKey": stream["streamKey"]},
        ]
    )
    assert answers == [
        {"claimId": claim["claimId"], "status": "revoked"},
        {"claimId": claim["claimId"], "status": "live", "destinations": [], **PROTECTED},
    ]
    assert str((await claim_row(api.db, stream["id"]))["claim_id"]) == claim["claimId"]
    assert str((await claim_row(api.db, other["id"]))["claim_id"]) == theirs["claimId"]


async def test_heartbeat_with_a_live_claim_id_on_a_free_stream_is_revoked(api, make_agent):
    account = await api.account()
    stream, free = await api.stream(account), await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    answers = await agent.beat([{"claimId": claim["claimId"], "streamKey": free["streamKey"]}])
    assert answers == [{"claimId": claim["claimId"], "status": "revoked"}]
    assert await claim_row(api.db, free["id"]) is None
    assert str((await claim_row(api.db, stream["id"]))["claim_id"]) == claim["claimId"]


CLAIM = "11111111-1111-4111-8111-111111111111"


INVALID_HEARTBEATS = [
    ({}, 1004, "claims"),
    ({"claims": None}, 1004, "claims"),
    ({"claims": "all"}, 1005, "claims"),
    ({"claims": {"claimId": CLAIM}}, 1005, "claims"),
    ({"claims": [{}] * 1001}, 1005, "claims"),
]


async def test_invalid_heartbeat_is_refused(api, make_agent, expect_error, case):
    agent = await make_agent()
    for body, code, field in INVALID_HEARTBEATS:
        with case(body if len(str(body)) < 200 else "1001 claims"):
            resp = await api.client.post("/agents/heartbeat", json=body, headers=agent.headers)
            error = await expect_error(resp, code, 400)
            assert error["details"]["field"] == field
    # Raw bodies: wrong Content-Type, not JSON, not an object.
    raw = [("text/plain", "{}", 1002), ("application/json", "{nope", 1005)]
    raw.append(("application/json", "[]", 1005))
    for content_type, data, code in raw:
        with case(data):
            resp = await api.client.post(
                "/agents/heartbeat",
                data=data,
                headers={**agent.headers, "Content-Type": content_type},
            )
            await expect_error(resp, code, 400)


# An entry rig cannot read is answered on its own (docs/agent-protocol.md#heartbeat).
INVALID_ENTRIES = [
    (1, "each claim is an object"),
    ({"streamKey": "k"}, "claimId: missing"),
    ({"claimId": CLAIM}, "streamKey: missing"),
    ({"claimId": "nope", "streamKey": "k"}, "claimId: a claim id from the claim answer"),
    ({"claimId": 5, "streamKey": "k"}, "claimId: "),
    ({"claimId": CLAIM, "streamKey": 5}, "streamKey: "),
    ({"claimId": CLAIM, "streamKey": "k\x00"}, "streamKey: "),
]


async def test_invalid_entries_are_answered_invalid(api, make_agent, case):
    agent = await make_agent()
    for entry, reason in INVALID_ENTRIES:
        with case(entry):
            (answer,) = await agent.beat([entry])
            assert answer["status"] == "invalid"
            assert answer["reason"].startswith(reason), answer
            claim_id = entry.get("claimId") if isinstance(entry, dict) else None
            assert answer["claimId"] == (claim_id if isinstance(claim_id, str) else None)


ODD_HEALTH = [
    "ok",
    [1],
    {"destinations": 5},
    {"destinations": "live"},
    {"destinations": [1]},
    {"destinations": [{"id": [1], "state": "live"}]},
    {"ingest": 5},
    {"ingest": {"videoCodec": "h264\x00"}},
    {"ingestUrl": 5},
    {"ingestUrl": "http://edge.example/live"},
    {"note\x00": 1},
    {"destinations": [{"id": 1, "state": "live", "lastError": "bad\x00"}]},
]


async def test_odd_health_is_sanitised_not_refused(api, make_agent, expect_ok, case):
    """What rig cannot use of a report is dropped; the claim is renewed all the same."""
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    beat = {"claimId": claim["claimId"], "streamKey": stream["streamKey"]}
    for health in ODD_HEALTH:
        with case(health):
            (answer,) = await agent.beat([{**beat, "health": health}])
            assert answer["status"] == "live"
            stored = (await api.detail(account, stream["id"]))["health"]
            assert "\x00" not in str(stored)
            assert "ingestUrl" not in stored
            assert "note\x00" not in stored
    # The last report as kept: its destination, the error without the NUL.
    assert (await api.detail(account, stream["id"]))["health"] == {
        "destinations": [{"id": 1, "state": "live", "lastError": "bad", "retryIn": None}]
    }
    resp = await api.client.get(f"/streams/{stream['id']}/stats", headers=account.headers)
    await expect_ok(resp, "Stream statistics")


async def test_a_release_with_odd_health_still_releases(api, make_agent, expect_ok):
    """The final figures are sanitised like a heartbeat's: the claim is released anyway
    (refusing it would leave the stream live until the claim expired)."""
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    resp = await agent.client.delete(
        f"/agents/claims/{claim['claimId']}",
        json={"reason": "ended", "health": {"ingest": 5, "destinations": [{"id": "x\x00"}]}},
        headers=agent.headers,
    )
    await expect_ok(resp, "Claim released")
    assert (await api.detail(account, stream["id"]))["isStreaming"] is False
