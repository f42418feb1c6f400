"""Heartbeats answer per claim, bound and sanitise health, and take batches of 100
claims with full health (issue 12, item 1, rig's side; docs/agent-protocol.md#heartbeat)."""

import io
import json
import uuid

from rig.health import HEALTH_DESTINATIONS_MAX

PROTECTED = {"disconnectProtection": {"enabled": True, "graceSeconds": 30}}
LONG = "x" * 1000


def full_health(ingest_url: str, destination_ids: list[int]) -> dict:
    """A health report with every field of the contract, strings as long as the agent
    may send them (200 characters)."""
    text = "e" * 200
    return {
        "ingestUrl": ingest_url,
        "ingestState": "live",
        "ingest": {
            "bytesIn": 123_456_789, "bitrate": 4_500_000, "uptime": 3600.5,
            "frameRate": 29.97, "keyframeInterval": 2.0, "videoCodec": "h264",
            "width": 1920, "height": 1080, "pixelFormat": "yuv420p", "profile": "High",
            "level": "4.1", "audioCodec": "aac", "audioSampleRate": 48000,
            "audioChannels": 2, "unclassifiedMessages": 0,
        },
        "destinations": [
            {
                "id": dest_id, "service": "Custom", "state": "backoff", "lastError": text,
                "retryIn": 4.5, "bytesSent": 987_654_321, "reconnects": 12,
                "liveSeconds": 3500.2, "droppedPackets": 34,
            }
            for dest_id in destination_ids
        ],
    }  # fmt: skip


async def test_one_invalid_entry_never_fails_the_others(api, make_agent):
    account = await api.account()
    first, second = await api.stream(account), await api.stream(account)
    agent = await make_agent()
    one = await agent.claimed(first["streamKey"])
    two = await agent.claimed(second["streamKey"])
    answers = await agent.beat(
        [
            {"claimId": one["claimId"], "streamKey": first["streamKey"]},
            {"claimId": "not-a-claim-id", "streamKey": first["streamKey"]},
            5,
            {"claimId": two["claimId"]},  # no streamKey
            {"claimId": str(uuid.uuid4()), "streamKey": 7},
            {"claimId": ["a"], "streamKey": "k"},
            {"claimId": "y" * 5000, "streamKey": "k"},
            {"claimId": two["claimId"], "streamKey": second["streamKey"], "health": [1, 2]},
        ]
    )
    assert [a["status"] for a in answers] == ["live"] + ["invalid"] * 6 + ["live"]
    assert answers[0]["claimId"] == one["claimId"]
    assert answers[7]["claimId"] == two["claimId"]
    invalid = answers[1:7]
    assert all(set(a) == {"claimId", "status", "reason"} for a in invalid), invalid
    assert [a["claimId"] for a in invalid] == [
        "not-a-claim-id",
        None,
        two["claimId"],
        invalid[3]["claimId"],
        None,
        "y" * 200,
    ]
    assert invalid[0]["reason"] == "claimId: a claim id from the claim answer"
    assert invalid[1]["reason"] == "each claim is an object"
    assert invalid[2]["reason"] == "streamKey: missing"
    assert invalid[3]["reason"].startswith("streamKey: ")
    assert all(len(a["reason"]) <= 200 for a in invalid)
    # Both live claims were renewed; the health that was not an object counts as none.
    rows = await api.db.fetch("SELECT health FROM stream_claims ORDER BY since")
    assert [json.loads(row["health"]) for row in rows] == [{}, {}]


async def test_health_is_bounded_and_sanitised(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    dest = await api.destination(account, stream["id"], "YouTube", "yt")
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    report = {
        "ingestUrl": "rtmp://edge.example/live",
        "ingestState": None,  # absent: live
        "extra": {"deep": [LONG] * 100},  # unknown: dropped
        "ingest": {
            "videoCodec": "h264\n2026-11-30 ERROR forged log line\x00" + LONG,
            "width": "1920",  # wrong type: dropped
            "height": 1080,
            "frameRate": 30.0,
            "bitrate": -5,  # not a sane figure: dropped
            "secret": "unknown",  # unknown: dropped
        },
        "destinations": [
            {"id": dest["id"], "state": "backoff", "lastError": "\x1b[31mred\x1b[0m" + LONG,
             "bytesSent": 10, "retryIn": "soon", "note": "unknown"},
            {"id": "1", "state": "live"},  # not rig's id: dropped
            "not an object",
        ]
        + [{"id": n, "state": "live"} for n in range(1000, 1000 + 2 * HEALTH_DESTINATIONS_MAX)],
    }  # fmt: skip
    (answer,) = await agent.beat(
        [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": report}]
    )
    assert answer["status"] == "live"
    stored = json.loads(await api.db.fetchval("SELECT health FROM stream_claims"))
    assert set(stored) == {"ingestUrl", "ingest", "destinations"}
    codec = stored["ingest"]["videoCodec"]
    assert len(codec) == 200
    assert codec.startswith("h2642026-11-30 ERROR forged log line")
    assert all(c.isprintable() for c in codec)
    assert stored["ingest"] == {"videoCodec": codec, "height": 1080, "frameRate": 30.0}
    first = stored["destinations"][0]
    assert first == {
        "id": dest["id"], "state": "backoff", "bytesSent": 10,
        "lastError": ("[31mred[0m" + LONG)[:200], "retryIn": None,
    }  # fmt: skip
    assert len(stored["destinations"]) <= HEALTH_DESTINATIONS_MAX
    assert len(json.dumps(stored)) < 20_000
    resp = await api.client.get(f"/streams/{stream['id']}/stats", headers=account.headers)
    stats = (await resp.json())["payload"]
    assert stats["destinations"][0]["lastError"] == first["lastError"]


async def test_a_batch_of_100_claims_with_full_health_is_accepted(api, make_agent):
    """Over the API's 64 KiB: the heartbeat route has a limit of its own."""
    account = await api.account()
    agent = await make_agent()
    beats = []
    for _ in range(100):
        stream = await api.stream(account)
        ids = [
            (await api.destination(account, stream["id"], "Custom", f"k{n}"))["id"]
            for n in range(0)
        ]
        claim = await agent.claimed(stream["streamKey"])
        health = full_health("rtmp://edge.example/live", ids or list(range(1, 11)))
        beats.append(
            {"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}
        )
    size = len(json.dumps({"claims": beats}))
    assert size > 400_000  # far above 64 KiB
    answers = await agent.beat(beats)
    assert [a["status"] for a in answers] == ["live"] * 100


async def test_the_heartbeat_limit_still_refuses_huge_bodies(api, make_agent, expect_error):
    agent = await make_agent()
    body = json.dumps({"claims": [], "padding": "p" * (2 * 1024 * 1024)}).encode()
    resp = await api.client.post(
        "/agents/heartbeat",
        data=io.BytesIO(body),
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    await expect_error(resp, 1005, 413)
    # Other routes keep the API's 64 KiB.
    resp = await api.client.post(
        "/agents/auth",
        data=json.dumps({"apiKey": "k" * 70_000}),
        headers={"Content-Type": "application/json"},
    )
    await expect_error(resp, 1005, 413)


async def test_a_claim_the_database_cannot_renew_fails_alone(api, make_agent):
    """A database error renewing one claim (here a trigger refusing its row) is that
    claim's answer only; the others are renewed."""
    account = await api.account()
    first, second = await api.stream(account), await api.stream(account)
    agent = await make_agent()
    one = await agent.claimed(first["streamKey"])
    two = await agent.claimed(second["streamKey"])
    await api.db.execute(
        f"""CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.claim_id = '{one["claimId"]}' THEN RAISE EXCEPTION 'refused'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_one BEFORE UPDATE ON stream_claims
              FOR EACH ROW EXECUTE FUNCTION refuse_one();"""
    )
    try:
        answers = await agent.beat(
            [
                {"claimId": one["claimId"], "streamKey": first["streamKey"]},
                {"claimId": two["claimId"], "streamKey": second["streamKey"]},
            ]
        )
    finally:
        await api.db.execute("DROP TRIGGER refuse_one ON stream_claims; DROP FUNCTION refuse_one")
    assert answers[0] == {
        "claimId": one["claimId"],
        "status": "invalid",
        "reason": "could not be renewed",
    }
    assert answers[1]["status"] == "live"
