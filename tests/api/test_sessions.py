"""Live sessions through the agent routes over HTTP, as an agent drives them, on the real
PostgreSQL: opened by a claim, filled by heartbeats, ended by release (reason and final
figures), expiry and rig's kicks; listed newest first with pages; kept across a restart."""

import uuid
from datetime import datetime
from types import SimpleNamespace

from rig.app import create_app
from rig.appkeys import POOL
from rig.live import sweep_expired

INGEST_URL = "rtmp://edge-1.example.net/live"


def health(bytes_in: int, destinations: list[dict], **ingest) -> dict:
    """A health report as docs/agent-protocol.md#heartbeat-health has it."""
    facts = {
        "bytesIn": bytes_in,
        "bitrate": 4_500_000,
        "uptime": 10.0,
        "frameRate": 30.0,
        "keyframeInterval": 2.0,
        "videoCodec": "h264",
        "width": 1280,
        "height": 720,
        "audioCodec": "aac",
        "audioSampleRate": 48000,
        "audioChannels": 2,
        **ingest,
    }
    return {"ingestUrl": INGEST_URL, "ingest": facts, "destinations": destinations}


def dest(dest_id: int, sent: int, live: float = 0.0, **extra) -> dict:
    return {
        "id": dest_id,
        "service": "YouTube",
        "state": "live",
        "lastError": None,
        "bytesSent": sent,
        "reconnects": 0,
        "liveSeconds": live,
        **extra,
    }


async def sessions(api, account, stream_id, query="", expect=200):
    resp = await api.client.get(f"/streams/{stream_id}/sessions{query}", headers=account.headers)
    body = await resp.json()
    assert resp.status == expect, body
    if expect == 200:
        assert body["message"] == "Stream sessions"
        return body["payload"], resp.headers
    return body, resp.headers


async def live_stream(api, make_agent, agent=None):
    """A user's stream with a YouTube and a Twitch destination, claimed by an agent."""
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt-key")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw-key")
    agent = agent or await make_agent()
    claim = await agent.claimed(stream["streamKey"], INGEST_URL)
    beat = {"claimId": claim["claimId"], "streamKey": stream["streamKey"]}
    return SimpleNamespace(
        account=account,
        stream=stream,
        youtube=youtube,
        twitch=twitch,
        agent=agent,
        claim=claim,
        beat=beat,
    )


async def test_a_session_from_claim_to_release(api, make_agent, expect_ok):
    t = await live_stream(api, make_agent)
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    assert set(current) == {
        "id",
        "startedAt",
        "endedAt",
        "endReason",
        "agent",
        "ingest",
        "destinations",
        "holdingSeconds",
        "diagnostics",
    }
    assert current["endedAt"] is None and current["endReason"] is None
    assert current["agent"] == t.agent.name
    assert current["ingest"]["bytesIn"] == 0 and current["ingest"]["videoCodec"] is None
    assert current["destinations"] == []

    await t.agent.beat(
        [
            {
                **t.beat,
                "health": health(
                    1_000_000,
                    [dest(t.youtube["id"], 900_000, 1.9), dest(t.twitch["id"], 800_000, 1.5)],
                ),
            }
        ]
    )
    # Twitch removed mid-session: it stays in the report with its last figures.
    await t.agent.beat(
        [{**t.beat, "health": health(3_000_000, [dest(t.youtube["id"], 2_900_000, 5.9)])}]
    )
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    assert current["endedAt"] is None
    assert current["ingest"] | {"averageBitrate": 0} == {
        "videoCodec": "h264",
        "audioCodec": "aac",
        "width": 1280,
        "height": 720,
        "frameRate": 30.0,
        "audioSampleRate": 48000,
        "audioChannels": 2,
        "keyframeInterval": 2.0,
        "bytesIn": 3_000_000,
        "averageBitrate": 0,
    }
    assert current["ingest"]["averageBitrate"] > 0
    by_id = {d["id"]: d for d in current["destinations"]}
    assert by_id[t.youtube["id"]] == {
        "id": t.youtube["id"],
        "service": "YouTube",
        "bytesSent": 2_900_000,
        "liveSeconds": 5.9,
        "reconnects": 0,
        "lastError": None,
    }
    assert by_id[t.twitch["id"]]["bytesSent"] == 800_000
    assert by_id[t.twitch["id"]]["service"] == "Twitch"  # rig's record, not the agent's word

    final = health(
        3_500_000,
        [dest(t.youtube["id"], 3_400_000, 7.0, reconnects=1, lastError="connection reset")],
    )
    resp = await t.agent.release(t.claim["claimId"], {"reason": "ended", "health": final})
    await expect_ok(resp, "Claim released")
    (ended,), _ = await sessions(api, t.account, t.stream["id"])
    assert ended["id"] == current["id"]
    assert ended["endReason"] == "ended" and ended["endedAt"] is not None
    assert ended["ingest"]["bytesIn"] == 3_500_000  # the final figures, not the last beat's
    yt = next(d for d in ended["destinations"] if d["id"] == t.youtube["id"])
    assert (yt["bytesSent"], yt["reconnects"], yt["lastError"]) == (
        3_400_000,
        1,
        "connection reset",
    )
    row = await api.db.fetchrow(
        "SELECT started_at, ended_at FROM stream_sessions WHERE id = $1::uuid", ended["id"]
    )
    duration = (row["ended_at"] - row["started_at"]).total_seconds()
    assert ended["ingest"]["averageBitrate"] == round(3_500_000 * 8 / duration)
    assert datetime.fromisoformat(ended["endedAt"]) == row["ended_at"]


async def test_release_reasons_and_a_release_without_body(api, make_agent, expect_ok, case):
    for reason in ("kicked", "idle", "error", "shutdown", "grace expired", None):
        with case(reason):
            t = await live_stream(api, make_agent)
            body = None if reason is None else {"reason": reason}
            await expect_ok(await t.agent.release(t.claim["claimId"], body), "Claim released")
            (ended,), _ = await sessions(api, t.account, t.stream["id"])
            assert ended["endReason"] == (reason or "ended")


async def test_a_bad_release_body_changes_nothing(api, make_agent, expect_error, case):
    t = await live_stream(api, make_agent)
    for body, field in [({"reason": "bored"}, "reason"), ({"reason": 5}, "reason")]:
        with case(body):
            error = await expect_error(await t.agent.release(t.claim["claimId"], body), 1005, 400)
            assert error["details"]["field"] == field
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    assert current["endedAt"] is None
    assert (await api.detail(t.account, t.stream["id"]))["isStreaming"] is True


async def test_expiry_and_kicks_end_the_session_with_rig_s_reason(api, make_agent, case):
    t = await live_stream(api, make_agent)
    await api.db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 second'")
    assert await sweep_expired(api.client.server.app[POOL]) == 1
    (ended,), _ = await sessions(api, t.account, t.stream["id"])
    assert ended["endReason"] == "expired"
    for name, call in [
        (
            "key changed",
            lambda: api.client.post(
                f"/streams/{t.stream['id']}/changeKey", headers=t.account.headers
            ),
        ),
        (
            "deactivated",
            lambda: api.client.patch(
                f"/streams/{t.stream['id']}", json={"isActive": False}, headers=t.account.headers
            ),
        ),
    ]:
        with case(name):
            key = (await api.detail(t.account, t.stream["id"]))["streamKey"]
            await api.client.patch(
                f"/streams/{t.stream['id']}", json={"isActive": True}, headers=t.account.headers
            )
            await t.agent.claimed(key, INGEST_URL)
            assert (await call()).status == 200
            latest = (await sessions(api, t.account, t.stream["id"]))[0][0]
            assert latest["endReason"] == name and latest["endedAt"] is not None
    listed, _ = await sessions(api, t.account, t.stream["id"])
    assert [s["endReason"] for s in listed] == ["deactivated", "key changed", "expired"]


async def test_an_agent_renewing_after_expiry_continues_its_session(api, make_agent):
    t = await live_stream(api, make_agent)
    await t.agent.beat([{**t.beat, "health": health(1000, [dest(t.youtube["id"], 900)])}])
    await api.db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 second'")
    await sweep_expired(api.client.server.app[POOL])
    answers = await t.agent.beat(
        [{**t.beat, "health": health(2000, [dest(t.youtube["id"], 1900)])}]
    )
    assert answers[0]["status"] == "live"
    (session,), _ = await sessions(api, t.account, t.stream["id"])
    assert session["endedAt"] is None and session["endReason"] is None
    assert session["ingest"]["bytesIn"] == 2000


async def test_a_recovered_destination_keeps_its_last_error_in_the_session(api, make_agent):
    """The live figures say a destination is fine again; the session still says it failed
    once, with what went wrong: a streamer reads whether it got the whole broadcast."""
    t = await live_stream(api, make_agent)
    failed = dest(t.youtube["id"], 900, 1.0, state="backoff", lastError="connection refused")
    await t.agent.beat([{**t.beat, "health": health(1000, [failed])}])
    recovered = dest(t.youtube["id"], 1900, 2.0, reconnects=1)
    await t.agent.beat([{**t.beat, "health": health(2000, [recovered])}])
    (session,), _ = await sessions(api, t.account, t.stream["id"])
    (youtube,) = session["destinations"]
    assert (youtube["bytesSent"], youtube["reconnects"], youtube["lastError"]) == (
        1900,
        1,
        "connection refused",
    )


async def test_sessions_are_newest_first_in_pages(api, make_agent, expect_ok):
    t = await live_stream(api, make_agent)
    ids = []
    for _ in range(3):
        ids.append((await sessions(api, t.account, t.stream["id"]))[0][0]["id"])
        await expect_ok(await t.agent.release(t.claim["claimId"]), "Claim released")
        t.claim = await t.agent.claimed(t.stream["streamKey"], INGEST_URL)
    current = (await sessions(api, t.account, t.stream["id"]))[0][0]
    newest_first = [current["id"], *reversed(ids)]
    listed, headers = await sessions(api, t.account, t.stream["id"])
    assert [s["id"] for s in listed] == newest_first
    assert "X-Total-Count" not in headers
    assert [s["endedAt"] is None for s in listed] == [True, False, False, False]
    for query, expected in [
        ("?limit=2", newest_first[:2]),
        ("?limit=2&page=2", newest_first[2:]),
        ("?limit=2&page=3", []),
    ]:
        page, headers = await sessions(api, t.account, t.stream["id"], query)
        assert [s["id"] for s in page] == expected
        assert headers["X-Total-Count"] == "4"
    error, _ = await sessions(api, t.account, t.stream["id"], "?limit=0", expect=400)
    assert (error["errorCode"], error["details"]["field"]) == (1005, "limit")


async def test_sessions_survive_a_restart(api, make_agent, settings, aiohttp_client):
    t = await live_stream(api, make_agent)
    await t.agent.beat([{**t.beat, "health": health(5000, [dest(t.youtube["id"], 4000, 2.0)])}])
    before, _ = await sessions(api, t.account, t.stream["id"])
    await api.client.close()  # rig stops
    restarted = await aiohttp_client(create_app(settings))
    resp = await restarted.get(f"/streams/{t.stream['id']}/sessions", headers=t.account.headers)
    after = (await resp.json())["payload"]
    assert [s["id"] for s in after] == [s["id"] for s in before]
    assert after[0]["ingest"]["bytesIn"] == 5000
    assert after[0]["destinations"][0]["bytesSent"] == 4000


async def test_holding_time_is_recorded(api, make_agent, expect_ok):
    t = await live_stream(api, make_agent)
    await t.agent.beat([{**t.beat, "health": {"ingestState": "holding"}}])
    # 12 s of holding, without waiting for them.
    await api.db.execute("UPDATE stream_claims SET state_since = now() - interval '12 seconds'")
    await t.agent.beat([{**t.beat, "health": {"ingestState": "live"}}])
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    assert 12 <= current["holdingSeconds"] < 14
    await expect_ok(await t.agent.release(t.claim["claimId"]), "Claim released")
    (ended,), _ = await sessions(api, t.account, t.stream["id"])
    assert 12 <= ended["holdingSeconds"] < 14


async def test_a_holding_stream_taken_over_by_another_agent(api, make_agent):
    t = await live_stream(api, make_agent)
    await t.agent.beat([{**t.beat, "health": {"ingestState": "holding"}}])
    other = await make_agent()
    await other.claimed(t.stream["streamKey"], "rtmp://edge-2.example.net/live")
    listed, _ = await sessions(api, t.account, t.stream["id"])
    assert [(s["agent"], s["endReason"]) for s in listed] == [
        (other.name, None),
        (t.agent.name, "taken over"),
    ]


async def test_odd_reports_are_sanitised_not_stored(api, make_agent):
    t = await live_stream(api, make_agent)
    odd = {
        "ingest": {
            "bytesIn": -5,
            "width": "wide",
            "height": True,
            "frameRate": -30,
            "videoCodec": "h264\x07" + "x" * 300,
            "extra": {"deep": [1, 2]},
        },
        "destinations": [
            {"id": t.youtube["id"], "bytesSent": "lots", "lastError": "e" * 500},
            {"id": "not-a-number", "bytesSent": 5},
            {"id": True, "bytesSent": 5},
        ],
    }
    answers = await t.agent.beat([{**t.beat, "health": odd}])
    assert answers[0]["status"] == "live"
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    ingest = current["ingest"]
    assert ingest["bytesIn"] == 0 and ingest["width"] is None and ingest["height"] is None
    assert ingest["frameRate"] is None
    assert ingest["videoCodec"] == "h264" + "x" * 196  # control character out, 200 kept
    (only,) = current["destinations"]
    assert only["id"] == t.youtube["id"] and only["bytesSent"] == 0
    assert only["lastError"] == "e" * 200


async def test_only_the_owner_reads_sessions(api, make_agent, expect_error):
    t = await live_stream(api, make_agent)
    stranger = await api.account()
    resp = await api.client.get(f"/streams/{t.stream['id']}/sessions", headers=stranger.headers)
    await expect_error(resp, 1000, 404)
    resp = await api.client.get(f"/streams/{uuid.uuid4()}/sessions", headers=t.account.headers)
    await expect_error(resp, 1000, 404)
    key = await api.api_key(t.account, scope="read", streamId=t.stream["id"])
    resp = await api.client.get(
        f"/streams/{t.stream['id']}/sessions", headers={"X-Api-Key": key["apiKey"]}
    )
    assert resp.status == 200


async def test_diagnostics_in_stats_and_sessions(api, make_agent, expect_ok):
    """The ingest against the stream's services: Twitch wants a keyframe every 2 s."""
    t = await live_stream(api, make_agent)  # YouTube and Twitch destinations
    report = health(
        3_000_000,
        [dest(t.youtube["id"], 2_900_000), dest(t.twitch["id"], 2_900_000)],
        keyframeInterval=8.3,
    )
    await t.agent.beat([{**t.beat, "health": report}])
    resp = await api.client.get(f"/streams/{t.stream['id']}/stats", headers=t.account.headers)
    stats = await expect_ok(resp, "Stream statistics")
    found = {(d["service"], d["severity"], d["code"]) for d in stats["diagnostics"]}
    assert found == {
        ("Twitch", "warning", "keyframe-interval"),
        ("YouTube", "warning", "keyframe-interval"),
    }
    assert all("8.3 s" in d["message"] for d in stats["diagnostics"])
    # Twitch switched off: only YouTube's remains in the live stats.
    await api.client.patch(
        f"/streams/{t.stream['id']}/destination/{t.twitch['id']}",
        json={"isActive": False},
        headers=t.account.headers,
    )
    stats = await expect_ok(
        await api.client.get(f"/streams/{t.stream['id']}/stats", headers=t.account.headers),
        "Stream statistics",
    )
    assert {d["service"] for d in stats["diagnostics"]} == {"YouTube"}
    # The session judges the whole broadcast against every service it went to.
    (session,), _ = await sessions(api, t.account, t.stream["id"])
    assert {(d["service"], d["code"]) for d in session["diagnostics"]} >= {
        ("Twitch", "keyframe-interval"),
        ("YouTube", "keyframe-interval"),
    }
    # A good ingest: nothing to say.
    good = health(1, [], keyframeInterval=2.0)
    await t.agent.beat([{**t.beat, "health": {**good, "ingest": {**good["ingest"]}}}])
    stats = await expect_ok(
        await api.client.get(f"/streams/{t.stream['id']}/stats", headers=t.account.headers),
        "Stream statistics",
    )
    assert stats["diagnostics"] == []


async def test_counters_restarted_by_a_new_worker_add_up_in_the_session(api, make_agent, expect_ok):
    """A worker killed mid-broadcast, the publisher back within the claim TTL: the same
    claim, the same session, but the new worker counts from 0. The session adds what it
    counts to what was counted before (the tester's case: Twitch got 2,447,960 B before
    the crash and 1,376,450 B after)."""
    t = await live_stream(api, make_agent)
    yt, tw = t.youtube["id"], t.twitch["id"]
    first_worker = [
        health(1_000_000, [dest(yt, 900_000, 4.0), dest(tw, 800_000, 3.5, reconnects=1)]),
        health(2_600_000, [dest(yt, 2_500_000, 9.0), dest(tw, 2_447_960, 8.0, reconnects=1)]),
    ]
    second_worker = [
        health(200_000, [dest(yt, 150_000, 1.5), dest(tw, 140_000, 1.0)]),
        # A heartbeat with nothing new (a stalled destination) is no restart.
        health(200_000, [dest(yt, 150_000, 1.5), dest(tw, 140_000, 1.0)]),
        health(1_500_000, [dest(yt, 1_400_000, 12.3), dest(tw, 1_300_000, 12.0)]),
    ]
    for report in first_worker:
        await t.agent.beat([{**t.beat, "health": report}])
    # The publisher is back on another worker: the agent's claim again, the same one.
    again = await t.agent.claimed(t.stream["streamKey"], INGEST_URL)
    assert again["claimId"] == t.claim["claimId"]
    for report in second_worker:
        await t.agent.beat([{**t.beat, "health": report}])
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    assert current["ingest"]["bytesIn"] == 2_600_000 + 1_500_000
    by_id = {d["id"]: d for d in current["destinations"]}
    assert (by_id[yt]["bytesSent"], by_id[yt]["liveSeconds"], by_id[yt]["reconnects"]) == (
        2_500_000 + 1_400_000,
        9.0 + 12.3,
        0,
    )
    assert (by_id[tw]["bytesSent"], by_id[tw]["liveSeconds"], by_id[tw]["reconnects"]) == (
        2_447_960 + 1_300_000,
        8.0 + 12.0,
        1,
    )

    # The release's final figures are the second worker's totals: added up the same way.
    final = health(1_600_000, [dest(yt, 1_500_000, 13.0), dest(tw, 1_376_450, 12.3)])
    await expect_ok(
        await t.agent.release(t.claim["claimId"], {"reason": "ended", "health": final}),
        "Claim released",
    )
    (ended,), _ = await sessions(api, t.account, t.stream["id"])
    assert ended["id"] == current["id"]
    assert ended["ingest"]["bytesIn"] == 2_600_000 + 1_600_000
    by_id = {d["id"]: d for d in ended["destinations"]}
    assert by_id[tw]["bytesSent"] == 2_447_960 + 1_376_450  # every byte Twitch got
    assert by_id[tw]["liveSeconds"] == 8.0 + 12.3
    assert by_id[yt]["bytesSent"] == 2_500_000 + 1_500_000
    row = await api.db.fetchrow(
        "SELECT started_at, ended_at FROM stream_sessions WHERE id = $1::uuid", ended["id"]
    )
    duration = (row["ended_at"] - row["started_at"]).total_seconds()
    assert ended["ingest"]["averageBitrate"] == round((2_600_000 + 1_600_000) * 8 / duration)


async def test_a_counter_restart_is_told_per_destination(api, make_agent):
    """Only the destination whose figures went back restarted; the ingest and the other
    destination, still rising, are taken as reported."""
    t = await live_stream(api, make_agent)
    yt, tw = t.youtube["id"], t.twitch["id"]
    for report in [
        health(1_000_000, [dest(yt, 900_000, 4.0), dest(tw, 800_000, 3.5)]),
        health(2_000_000, [dest(yt, 1_900_000, 8.0), dest(tw, 100_000, 0.5, reconnects=0)]),
        health(3_000_000, [dest(yt, 2_900_000, 12.0), dest(tw, 1_000_000, 4.5)]),
    ]:
        await t.agent.beat([{**t.beat, "health": report}])
    (current,), _ = await sessions(api, t.account, t.stream["id"])
    assert current["ingest"]["bytesIn"] == 3_000_000
    by_id = {d["id"]: d for d in current["destinations"]}
    assert (by_id[yt]["bytesSent"], by_id[yt]["liveSeconds"]) == (2_900_000, 12.0)
    assert (by_id[tw]["bytesSent"], by_id[tw]["liveSeconds"]) == (800_000 + 1_000_000, 3.5 + 4.5)


async def test_a_restarted_agent_renewing_after_expiry_adds_up_its_counters(api, make_agent):
    """rig expired the claim, the agent renews it under its id (the claim re-granted, the
    session reopened) with counters from 0: the session's totals still add up."""
    t = await live_stream(api, make_agent)
    await t.agent.beat([{**t.beat, "health": health(5000, [dest(t.youtube["id"], 4000, 3.0)])}])
    await api.db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 second'")
    await sweep_expired(api.client.server.app[POOL])
    answers = await t.agent.beat(
        [{**t.beat, "health": health(700, [dest(t.youtube["id"], 600, 0.5)])}]
    )
    assert answers[0]["status"] == "live"
    (session,), _ = await sessions(api, t.account, t.stream["id"])
    assert session["endedAt"] is None
    assert session["ingest"]["bytesIn"] == 5700
    (youtube,) = session["destinations"]
    assert (youtube["bytesSent"], youtube["liveSeconds"]) == (4600, 3.5)
