"""Heartbeats at scale, against a real rig on the test database (issue 12, item 1).

2,000 streams claimed by one agent (made through rig's API: no publishers needed), each
heartbeat entry with the health an agent with three destinations reports. One request
for all of them is over rig's body limit, so every claim would expire; in batches every
claim is renewed. A claim whose health carries a hostile destination's 100 KB status
text, and one whose health rig cannot take at all, fail nothing else.
"""

import asyncio
import collections
import json
import secrets

import aiohttp

from agent.heartbeat import MAX_CLAIMS_PER_BATCH, HeartbeatSender
from agent.rig_client import RigClient
from rig.agents import create_agent
from rig.app import create_app

STREAMS = 2000
INGEST_URL = "rtmp://edge-1.example.org:1935/live"
HOSTILE = ("\r\n2026-01-01 00:00:00,000 ERROR forged: line\x00\x1b[31m" * 2000)[:100_000]


def health(n: int) -> dict:
    """What an agent reports for a stream with three destinations (one retrying)."""
    return {
        "ingestUrl": INGEST_URL,
        "ingest": {
            "bytesIn": 1_000_000 + n,
            "bitrate": 6_000_000,
            "uptime": 3600.5,
            "frameRate": 60.0,
            "keyframeInterval": 2.0,
            "videoCodec": "h264",
            "width": 1920,
            "height": 1080,
            "pixelFormat": "yuv420p",
            "profile": "High",
            "level": 42,
            "audioCodec": "aac",
            "audioSampleRate": 48000,
            "audioChannels": 2,
            "unclassifiedMessages": 0,
        },
        "destinations": [
            {
                "id": 3 * n + i,
                "service": service,
                "state": "backoff" if i == 2 else "live",
                "lastError": (
                    "cannot connect to rtmp://ingest.example.org:1935/app: Connection refused"
                    if i == 2
                    else None
                ),
                "retryIn": 4.2 if i == 2 else None,
                "bytesSent": 900_000 + n,
                "reconnects": i,
                "liveSeconds": 3500.0,
                "droppedPackets": 0,
            }
            for i, service in enumerate(("YouTube", "Twitch", "Custom"))
        ],
    }


async def make_streams(http: aiohttp.ClientSession, rig_url: str, count: int) -> list[str]:
    """`count` streams of a new user, made over rig's REST API; their keys."""
    user = {"username": "many", "password": "a password for many streams", "email": "m@x.org"}
    async with http.post(f"{rig_url}/accounts/", json=user) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(f"{rig_url}/accounts/auth/local", json=user) as resp:
        token = (await resp.json())["payload"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    limit = asyncio.Semaphore(16)

    async def one() -> str:
        async with limit, http.post(f"{rig_url}/streams/", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["payload"]["streamKey"]

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_thousands_of_claims_are_renewed_and_bad_health_fails_no_other_claim(
    aiohttp_server, settings, db
):
    rig_server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    rig_url = str(rig_server.make_url("")).rstrip("/")
    _agent_id, api_key = await create_agent(db, "big-edge")
    async with aiohttp.ClientSession() as http:
        keys = await make_streams(http, rig_url, STREAMS)

    async with RigClient(rig_url, api_key, timeout=30) as rig:
        limit = asyncio.Semaphore(16)

        async def claim(key: str) -> str:
            async with limit:
                return (await rig.claim(key, INGEST_URL)).claim_id

        claim_ids = await asyncio.gather(*(claim(key) for key in keys))
        entries = [
            {"claimId": claim_id, "streamKey": key, "health": health(n)}
            for n, (claim_id, key) in enumerate(zip(claim_ids, keys, strict=True))
        ]
        # A hostile destination's status code and description reached this one's health...
        hostile = entries[7]
        hostile["health"]["destinations"][2]["lastError"] = HOSTILE
        hostile["health"]["destinations"][2]["service"] = HOSTILE
        # ... and this one's health is something rig refuses: the whole batch (an older
        # rig), or this claim alone (`invalid`, for a state that is not one).
        bad = entries[1234]
        bad["health"]["destinations"] = {"not": "an array"}
        bad["health"]["ingestState"] = "on fire"
        # Every claim is about to expire: only a heartbeat keeps it.
        await db.execute("UPDATE stream_claims SET expires_at = now() + interval '2 seconds'")
        started = await db.fetchval("SELECT clock_timestamp()")

        result = await HeartbeatSender(rig).send(entries)

    assert result.failed == []
    statuses = collections.Counter(answer["status"] for answer in result.answers)
    assert statuses == {"live": STREAMS}, statuses
    assert len({answer["claimId"] for answer in result.answers}) == STREAMS
    assert result.batches >= STREAMS // MAX_CLAIMS_PER_BATCH
    renewed = await db.fetchval(
        "SELECT count(*) FROM stream_claims"
        " WHERE expires_at > $1::timestamptz + interval '10 seconds'",
        started,
    )
    assert renewed == STREAMS

    stored = {
        str(row["claim_id"]): json.loads(row["health"])
        for row in await db.fetch("SELECT claim_id, health FROM stream_claims")
    }
    # The hostile text arrived cut to 200 characters, without control characters.
    hostile_dest = stored[hostile["claimId"]]["destinations"][2]
    for field in ("lastError", "service"):
        assert len(hostile_dest[field]) == 200
        assert hostile_dest[field].isprintable()
    # The refused health was replaced by what renews the claim; the claim is live.
    assert stored[bad["claimId"]]["ingestUrl"] == INGEST_URL
    assert not stored[bad["claimId"]].get("ingest")
    # Claims batched with neither of them kept their whole health.
    last, kept = entries[-1]["health"], stored[entries[-1]["claimId"]]
    assert kept["ingest"]["bytesIn"] == last["ingest"]["bytesIn"]
    errors = [d["lastError"] for d in kept["destinations"]]
    assert errors == [d["lastError"] for d in last["destinations"]]
    cut_down = sum(1 for h in stored.values() if "ingest" not in h)
    assert cut_down <= MAX_CLAIMS_PER_BATCH  # at most the bad claim's batch (an older rig)


async def test_a_batch_that_fails_does_not_fail_the_others(aiohttp_server, settings, db):
    """One batch holds a claim id that is not one: rig refuses that whole batch (or,
    with per-claim answers, that claim alone); every other claim is renewed."""
    rig_server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    rig_url = str(rig_server.make_url("")).rstrip("/")
    _agent_id, api_key = await create_agent(db, "edge")
    async with aiohttp.ClientSession() as http:
        keys = await make_streams(http, rig_url, 150)
    async with RigClient(rig_url, api_key) as rig:
        claim_ids = [(await rig.claim(key, INGEST_URL)).claim_id for key in keys]
        entries = [  # small health: 100 claims to a batch
            {"claimId": c, "streamKey": k, "health": {"ingestUrl": INGEST_URL}}
            for c, k in zip(claim_ids, keys, strict=True)
        ]
        # The first batch (100 claims) is malformed beyond repair: its first claim id.
        entries[0]["claimId"] = "not-a-claim-" + secrets.token_hex(4)
        result = await HeartbeatSender(rig).send(entries)
    live = {a["claimId"] for a in result.answers if a["status"] == "live"}
    assert result.batches >= 2
    if result.failed:  # the first batch, refused as a whole: the others are renewed
        assert len(result.failed) == 1
        assert live == set(claim_ids[MAX_CLAIMS_PER_BATCH:])
    else:  # rig answered the bad claim alone
        assert live == set(claim_ids[1:])
