"""Disconnect protection and backup ingest (issue 15), rig's side, through the HTTP routes
as a user and as agents use them: the stream setting, the backup key, claims of either key
on the same and on another agent, ingestState from heartbeats, the takeover of a holding
stream by another agent, and the stream.interrupted / stream.resumed webhooks."""

import asyncio
import base64
import json
import re
import uuid

import aiohttp
import asyncpg
import pytest

from rig.appkeys import POOL
from rig.migrations import available_migrations, migrate
from rig.webhooks import deliver_due

STREAM_KEY = re.compile(r"^[A-Za-z0-9_-]{22}$")
DEFAULT = {"enabled": True, "graceSeconds": 30}
EDGE_A = "rtmp://edge-a.example.net/live"
EDGE_B = "rtmp://edge-b.example.net/live"


async def patch_stream(api, account, stream_id, body):
    return await api.client.patch(f"/streams/{stream_id}", json=body, headers=account.headers)


async def new_backup_key(api, account, stream_id, expect_ok):
    resp = await api.client.post(f"/streams/{stream_id}/backupKey", headers=account.headers)
    return await expect_ok(resp, "New backup stream key")


async def stats(api, account, stream_id, expect_ok):
    resp = await api.client.get(f"/streams/{stream_id}/stats", headers=account.headers)
    return await expect_ok(resp, "Stream statistics")


async def ingest_state(api, account, stream_id, expect_ok):
    """The stream's ingestState as the detail, the list and the statistics say it: one value."""
    detail = await api.detail(account, stream_id)
    resp = await api.client.get("/streams/", headers=account.headers)
    (listed,) = [s for s in await expect_ok(resp, "Stream list for user") if s["id"] == stream_id]
    states = {detail["ingestState"], listed["ingestState"]}
    states.add((await stats(api, account, stream_id, expect_ok))["ingestState"])
    assert len(states) == 1, states
    return states.pop()


def beat_of(claim, key, state=None, **extra):
    """One heartbeat entry; `state` None leaves ingestState out (an agent before issue 15)."""
    health = {"ingestUrl": EDGE_A}
    if state is not None:
        health["ingestState"] = state
    return {"claimId": claim["claimId"], "streamKey": key, "health": health, **extra}


async def events(api, receiver):
    """Deliver the outbox to the receiver; (event, data) of everything received so far."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while await deliver_due(api.client.server.app[POOL], http):
            pass
    bodies = [json.loads(hook.body) for hook in receiver.received]
    assert all(
        hook.headers["X-Rig-Event"] == b["event"]
        for hook, b in zip(receiver.received, bodies, strict=True)
    )
    return [(b["event"], b["data"]) for b in bodies]


@pytest.fixture
async def hooked(api, webhook_receiver, expect_ok):
    """An account and a stream whose callbackUrl is the receiver."""
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.put(
        f"/streams/{stream['id']}/webhook",
        json={"callbackUrl": webhook_receiver.url},
        headers=account.headers,
    )
    await expect_ok(resp, "Stream webhook")
    return account, stream


# ---------------------------------------------------------------- the stream setting


async def test_protection_is_on_for_30_s_by_default(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    assert stream["disconnectProtection"] == DEFAULT
    assert stream["backupStreamKey"] is None
    assert stream["ingestState"] == "offline"
    detail = await api.detail(account, stream["id"])
    assert (detail["disconnectProtection"], detail["backupStreamKey"]) == (DEFAULT, None)
    assert await ingest_state(api, account, stream["id"], expect_ok) == "offline"


async def test_patch_changes_either_field_alone(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    changes = [
        ({"graceSeconds": 120}, {"enabled": True, "graceSeconds": 120}),
        ({"enabled": False}, {"enabled": False, "graceSeconds": 120}),
        ({"graceSeconds": 0}, {"enabled": False, "graceSeconds": 0}),
        ({"enabled": True, "graceSeconds": 600}, {"enabled": True, "graceSeconds": 600}),
    ]
    for change, expected in changes:
        resp = await patch_stream(api, account, stream["id"], {"disconnectProtection": change})
        updated = await expect_ok(resp, "Stream updated")
        assert updated["disconnectProtection"] == expected, change
        assert updated["isActive"] is True
        assert (await api.detail(account, stream["id"]))["disconnectProtection"] == expected
    # With isActive in the same body, both apply.
    body = {"isActive": False, "disconnectProtection": {"graceSeconds": 45}}
    updated = await expect_ok(
        await patch_stream(api, account, stream["id"], body), "Stream updated"
    )
    assert (updated["isActive"], updated["disconnectProtection"]["graceSeconds"]) == (False, 45)


async def test_a_live_agent_learns_the_setting_at_its_next_heartbeat(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    assert claim["disconnectProtection"] == DEFAULT
    body = {"disconnectProtection": {"enabled": False, "graceSeconds": 5}}
    await expect_ok(await patch_stream(api, account, stream["id"], body), "Stream updated")
    (answer,) = await agent.beat([beat_of(claim, stream["streamKey"])])
    assert answer["status"] == "live"
    assert answer["disconnectProtection"] == {"enabled": False, "graceSeconds": 5}


INVALID_PROTECTION = [
    ({"disconnectProtection": {"graceSeconds": -1}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"graceSeconds": 601}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"graceSeconds": "30"}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"graceSeconds": 30.5}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"graceSeconds": 30.0}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"graceSeconds": True}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"graceSeconds": 10**30}}, 1005, "graceSeconds"),
    ({"disconnectProtection": {"enabled": "yes"}}, 1005, "enabled"),
    ({"disconnectProtection": {"enabled": 1}}, 1005, "enabled"),
    ({"disconnectProtection": 30}, 1005, "disconnectProtection"),
    ({"disconnectProtection": [True]}, 1005, "disconnectProtection"),
    ({"disconnectProtection": "on"}, 1005, "disconnectProtection"),
    ({"disconnectProtection": {}}, 1004, "disconnectProtection"),
    ({"disconnectProtection": {"graceSeconds": None}}, 1004, "disconnectProtection"),
    ({"disconnectProtection": {"grace": 30}}, 1004, "disconnectProtection"),
    ({"disconnectProtection": None}, 1004, "isActive"),
    ({"graceSeconds": 30}, 1004, "isActive"),
    ({"isActive": True, "disconnectProtection": {"graceSeconds": 601}}, 1005, "graceSeconds"),
]


async def test_invalid_protection_is_refused_and_changes_nothing(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    for body, code, field in INVALID_PROTECTION:
        with case(body):
            resp = await patch_stream(api, account, stream["id"], body)
            error = await expect_error(resp, code, 400)
            assert error["details"]["field"] == field
    detail = await api.detail(account, stream["id"])
    assert (detail["disconnectProtection"], detail["isActive"]) == (DEFAULT, True)


async def test_the_database_refuses_a_grace_out_of_range(api):
    account = await api.account()
    stream = await api.stream(account)
    for grace in (-1, 601):
        with pytest.raises(asyncpg.CheckViolationError):
            await api.db.execute(
                "UPDATE streams SET grace_seconds = $2 WHERE id = $1",
                uuid.UUID(stream["id"]),
                grace,
            )


# ---------------------------------------------------------------- the backup key


async def test_backup_key_is_created_then_rotated(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    created = await new_backup_key(api, account, stream["id"], expect_ok)
    key = created["backupStreamKey"]
    assert STREAM_KEY.match(key)
    assert len(base64.urlsafe_b64decode(key + "==")) == 16  # 128 bits
    assert key != stream["streamKey"]
    assert created["streamKey"] == stream["streamKey"]  # the primary is untouched
    assert created["id"] == stream["id"]
    assert (await api.detail(account, stream["id"]))["backupStreamKey"] == key
    assert created["destinations"] is None  # none yet, as the detail says
    await api.destination(account, stream["id"])
    rotated = await new_backup_key(api, account, stream["id"], expect_ok)
    assert rotated["backupStreamKey"] not in (key, stream["streamKey"])
    # The stream object as the detail has it, destinations too (they were null before).
    detail = await api.detail(account, stream["id"])
    assert rotated["destinations"] == detail["destinations"]
    assert len(rotated["destinations"]) == 1
    assert STREAM_KEY.match(rotated["backupStreamKey"])
    # Changing the primary keeps the backup.
    resp = await api.client.post(f"/streams/{stream['id']}/changeKey", headers=account.headers)
    await expect_ok(resp, "New stream key")
    detail = await api.detail(account, stream["id"])
    assert detail["backupStreamKey"] == rotated["backupStreamKey"]
    # Someone else's stream, or none, is not found.
    other = await api.account()
    for stream_id, headers in ((stream["id"], other.headers), (uuid.uuid4(), account.headers)):
        resp = await api.client.post(f"/streams/{stream_id}/backupKey", headers=headers)
        await expect_error(resp, 1000, 404)
    assert (await api.detail(account, stream["id"]))["backupStreamKey"] == rotated[
        "backupStreamKey"
    ]


async def test_keys_are_unique_across_primary_and_backup_keys(api, expect_ok):
    """The database refuses a key that is already any stream's primary or backup key."""
    account = await api.account()
    one, two = await api.stream(account), await api.stream(account)
    backup = (await new_backup_key(api, account, one["id"], expect_ok))["backupStreamKey"]
    clashes = [
        ("backup_stream_key", two["id"], one["streamKey"]),  # another stream's primary
        ("backup_stream_key", two["id"], backup),  # another stream's backup
        ("stream_key", two["id"], backup),  # a primary equal to another stream's backup
        ("backup_stream_key", one["id"], one["streamKey"]),  # its own primary
        ("stream_key", one["id"], backup),  # its own backup
    ]
    for column, stream_id, key in clashes:
        with pytest.raises(asyncpg.UniqueViolationError):
            await api.db.execute(
                f"UPDATE streams SET {column} = $2 WHERE id = $1", uuid.UUID(stream_id), key
            )
    keys = await api.db.fetch("SELECT key, role FROM ingest_keys ORDER BY role, key")
    assert sorted((r["key"], r["role"]) for r in keys) == sorted(
        [(one["streamKey"], "primary"), (two["streamKey"], "primary"), (backup, "backup")]
    )


async def test_backup_key_claims_a_stream_that_nothing_publishes(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent("edge-a")
    claim = await agent.claimed(backup, EDGE_A)
    assert claim["role"] == "backup"
    assert claim["streamId"] == stream["id"]
    assert claim["destinations"] == [youtube]
    assert claim["disconnectProtection"] == DEFAULT
    assert await ingest_state(api, account, stream["id"], expect_ok) == "backup"
    assert (await api.detail(account, stream["id"]))["provisionStatus"]["ingestUrl"] == EDGE_A
    # Heartbeats may name the claim by its backup key.
    (answer,) = await agent.beat([beat_of(claim, backup, "backup")])
    assert answer["status"] == "live"
    assert await ingest_state(api, account, stream["id"], expect_ok) == "backup"


async def test_old_and_unknown_backup_keys_are_not_found(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    old = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    await new_backup_key(api, account, stream["id"], expect_ok)
    agent = await make_agent()
    await expect_error(await agent.claim(old), 1000, 404)
    # A deactivated stream's backup key is refused as its primary is.
    current = (await api.detail(account, stream["id"]))["backupStreamKey"]
    await expect_ok(
        await patch_stream(api, account, stream["id"], {"isActive": False}), "Stream updated"
    )
    await expect_error(await agent.claim(current), 1000, 404)
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 0


# ---------------------------------------------------------------- claims: same agent


async def test_backup_on_the_holding_agent_joins_the_broadcast(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent("edge-a")
    primary = await agent.claimed(stream["streamKey"], EDGE_A)
    assert primary["role"] == "primary"
    joined = await agent.claimed(backup, "rtmps://edge-a.example.net:443/live")
    assert joined["role"] == "backup"
    assert joined["claimId"] == primary["claimId"]  # one broadcast: one relay on the agent
    assert joined["streamId"] == stream["id"]
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 1
    # The backup waits as standby: the primary still feeds, and its URL is the claim's.
    assert await ingest_state(api, account, stream["id"], expect_ok) == "live"
    assert (await api.detail(account, stream["id"]))["provisionStatus"]["ingestUrl"] == EDGE_A
    (answer,) = await agent.beat(
        [beat_of(primary, stream["streamKey"], "live", backupStreamKey=backup)]
    )
    assert (answer["status"], answer["backupStatus"]) == ("live", "live")


async def test_primary_coming_back_to_the_holding_agent_gets_the_claim(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"], EDGE_A)
    await agent.beat([beat_of(claim, stream["streamKey"], "holding")])
    assert await ingest_state(api, account, stream["id"], expect_ok) == "holding"
    again = await agent.claimed(stream["streamKey"], EDGE_A)
    assert again["claimId"] == claim["claimId"]
    # The state is what the agent reports: it changes with the heartbeat after the takeover.
    assert await ingest_state(api, account, stream["id"], expect_ok) == "holding"
    await agent.beat([beat_of(claim, stream["streamKey"], "live")])
    assert await ingest_state(api, account, stream["id"], expect_ok) == "live"


async def test_primary_and_backup_claimed_at_once_on_one_agent(api, make_agent, expect_ok):
    """Both publishers arriving together on one agent end up in one broadcast."""
    account = await api.account()
    stream = await api.stream(account)
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent()
    responses = await asyncio.gather(agent.claim(stream["streamKey"]), agent.claim(backup))
    claims = [await expect_ok(resp, "Stream claimed") for resp in responses]
    assert claims[0]["claimId"] == claims[1]["claimId"]
    assert [c["role"] for c in claims] == ["primary", "backup"]
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 1


# ---------------------------------------------------------------- claims: another agent


async def test_backup_on_another_agent_is_told_where_the_stream_is(
    api, make_agent, expect_ok, expect_error
):
    account = await api.account()
    stream = await api.stream(account)
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    first, second = await make_agent("edge-a"), await make_agent("edge-b")
    claim = await first.claimed(stream["streamKey"], EDGE_A)
    for state in ("live", "backup"):
        await first.beat([beat_of(claim, stream["streamKey"], state)])
        error = await expect_error(await second.claim(backup, EDGE_B), 1009, 409)
        assert error["message"] == "Stream already live on another agent"
        assert error["details"] == {
            "reason": "the backup must publish to the agent that holds the stream",
            "agent": "edge-a",
            "ingestUrl": EDGE_A,
            "ingestState": state,
        }
        # The primary key on another agent is refused too while a publisher feeds.
        error = await expect_error(await second.claim(stream["streamKey"], EDGE_B), 1009, 409)
        assert error["details"]["reason"] == "the stream is live on another agent"
        assert error["details"]["ingestState"] == state
    row = await api.db.fetchrow("SELECT claim_id, agent_id FROM stream_claims")
    assert (str(row["claim_id"]), row["agent_id"]) == (claim["claimId"], first.id)


@pytest.mark.parametrize("key_kind", ["primary", "backup"])
async def test_another_agent_takes_over_a_holding_stream(
    api, make_agent, expect_ok, expect_error, key_kind
):
    """Issue 15 item 5: the streamer comes back through another agent (DNS round robin)
    while the first one holds the stream: the new agent takes the claim, the old one is
    revoked at its next heartbeat and ends its destinations."""
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    key = stream["streamKey"] if key_kind == "primary" else backup
    first, second = await make_agent("edge-a"), await make_agent("edge-b")
    old = await first.claimed(stream["streamKey"], EDGE_A)
    await first.beat([beat_of(old, stream["streamKey"], "holding")])

    new = await second.claimed(key, EDGE_B)
    assert new["claimId"] != old["claimId"]
    assert new["role"] == key_kind
    assert new["destinations"] == [youtube]
    detail = await api.detail(account, stream["id"])
    assert (detail["provisionStatus"]["agent"], detail["provisionStatus"]["ingestUrl"]) == (
        "edge-b",
        EDGE_B,
    )
    assert detail["health"] == {}  # the old agent's figures are not the new one's
    expected_state = "live" if key_kind == "primary" else "backup"
    assert await ingest_state(api, account, stream["id"], expect_ok) == expected_state

    answers = await first.beat([beat_of(old, stream["streamKey"], "holding")])
    assert answers == [{"claimId": old["claimId"], "status": "revoked"}]
    await expect_error(await first.release(old["claimId"]), 1000, 404)
    (answer,) = await second.beat([beat_of(new, key, expected_state)])
    assert answer["status"] == "live"
    row = await api.db.fetchrow("SELECT claim_id, agent_id FROM stream_claims")
    assert (str(row["claim_id"]), row["agent_id"]) == (new["claimId"], second.id)


async def test_only_one_of_two_agents_takes_over(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    holder = await make_agent()
    claim = await holder.claimed(stream["streamKey"])
    await holder.beat([beat_of(claim, stream["streamKey"], "holding")])
    contenders = [await make_agent() for _ in range(4)]
    responses = await asyncio.gather(*(a.claim(stream["streamKey"]) for a in contenders))
    statuses = sorted(resp.status for resp in responses)
    assert statuses == [200, 409, 409, 409], statuses
    for resp in responses:
        if resp.status == 409:
            error = await expect_error(resp, 1009, 409)
            assert error["details"]["ingestState"] == "live"  # the winner's broadcast


# ---------------------------------------------------------------- ingestState and webhooks


async def test_ingest_state_follows_the_heartbeats(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    assert await ingest_state(api, account, stream["id"], expect_ok) == "live"
    for reported, shown in [
        ("holding", "holding"),
        ("backup", "backup"),
        (None, "live"),  # absent: live (an agent that knows nothing of issue 15)
        ("holding", "holding"),
        ("live", "live"),
    ]:
        await agent.beat([beat_of(claim, stream["streamKey"], reported)])
        assert await ingest_state(api, account, stream["id"], expect_ok) == shown, reported
    await expect_ok(await agent.release(claim["claimId"]), "Claim released")
    assert await ingest_state(api, account, stream["id"], expect_ok) == "offline"


async def test_an_unknown_ingest_state_is_refused(api, make_agent, expect_error, expect_ok, case):
    """That entry is answered invalid (issue 12 item 1: the heartbeat's others renew)."""
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    await agent.beat([beat_of(claim, stream["streamKey"], "holding")])
    for state in ("offline", "LIVE", "", 1, ["live"], {"state": "live"}):
        with case(state):
            (answer,) = await agent.beat([beat_of(claim, stream["streamKey"], state)])
            assert answer["status"] == "invalid"
            assert "ingestState" in answer["reason"]
    assert await ingest_state(api, account, stream["id"], expect_ok) == "holding"


async def test_interrupted_and_resumed_once_per_transition(
    api, hooked, webhook_receiver, make_agent, expect_ok
):
    account, stream = hooked
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent("edge-a")
    claim = await agent.claimed(stream["streamKey"], EDGE_A)
    for state in [
        "live",
        "holding",
        "holding",
        "holding",
        "backup",
        "live",
        None,
        "holding",
        "live",
    ]:
        await agent.beat([beat_of(claim, stream["streamKey"], state, backupStreamKey=backup)])
    await expect_ok(await agent.release(claim["claimId"]), "Claim released")
    assert await events(api, webhook_receiver) == [
        ("stream.live", {"agent": "edge-a", "ingestUrl": EDGE_A}),
        ("stream.interrupted", {"from": "live", "to": "holding", "agent": "edge-a"}),
        ("stream.resumed", {"from": "holding", "to": "backup", "agent": "edge-a"}),
        ("stream.interrupted", {"from": "live", "to": "holding", "agent": "edge-a"}),
        ("stream.resumed", {"from": "holding", "to": "live", "agent": "edge-a"}),
        ("stream.offline", {"reason": "ended"}),
    ]


async def test_takeover_reports_resumed_on_the_new_agent(
    api, hooked, webhook_receiver, make_agent, expect_ok
):
    _account, stream = hooked
    first, second = await make_agent("edge-a"), await make_agent("edge-b")
    old = await first.claimed(stream["streamKey"], EDGE_A)
    await first.beat([beat_of(old, stream["streamKey"], "holding")])
    new = await second.claimed(stream["streamKey"], EDGE_B)
    await first.beat([beat_of(old, stream["streamKey"], "holding")])  # revoked: no event
    await second.beat([beat_of(new, stream["streamKey"], "live")])
    assert await events(api, webhook_receiver) == [
        ("stream.live", {"agent": "edge-a", "ingestUrl": EDGE_A}),
        ("stream.interrupted", {"from": "live", "to": "holding", "agent": "edge-a"}),
        ("stream.resumed", {"from": "holding", "to": "live", "agent": "edge-b"}),
    ]


async def test_a_regranted_claim_that_is_holding_reports_interrupted(
    api, hooked, webhook_receiver, make_agent
):
    """A claim that expired (rig unreachable) and comes back with a holding report."""
    _account, stream = hooked
    agent = await make_agent("edge-a")
    claim = await agent.claimed(stream["streamKey"], EDGE_A)
    await api.db.execute("DELETE FROM stream_claims")
    (answer,) = await agent.beat([beat_of(claim, stream["streamKey"], "holding")])
    assert answer["status"] == "live"
    assert [event for event, _ in await events(api, webhook_receiver)] == [
        "stream.live",
        "stream.live",
        "stream.interrupted",
    ]


async def test_holding_time_in_the_session_history(api, make_agent, expect_ok):
    """holdingSeconds sums every holding period of a session, the current one included;
    a takeover ends the holder's session with its holding time, the new one starts at 0."""
    account = await api.account()
    stream = await api.stream(account)
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent, other = await make_agent("edge-a"), await make_agent("edge-b")
    claim = await agent.claimed(stream["streamKey"])

    async def hold_for(seconds, then=None):
        """Report holding, make it `seconds` old without waiting, report it again, then
        `then` (None: stay holding)."""
        await agent.beat([beat_of(claim, stream["streamKey"], "holding")])
        await api.db.execute(
            "UPDATE stream_claims SET state_since = state_since - $1 * interval '1 second'",
            seconds,
        )
        await agent.beat([beat_of(claim, stream["streamKey"], "holding")])
        if then is not None:
            await agent.beat([beat_of(claim, stream["streamKey"], then)])

    async def history():
        resp = await api.client.get(f"/streams/{stream['id']}/sessions", headers=account.headers)
        listed = await expect_ok(resp, "Stream sessions")
        return [(s["agent"], s["endReason"], s["holdingSeconds"]) for s in listed]

    await hold_for(6, then="live")
    await hold_for(20, then="backup")
    await agent.beat([beat_of(claim, stream["streamKey"], "live")])  # no hold: no time
    ((name, reason, held),) = await history()
    assert (name, reason) == ("edge-a", None)
    assert 26 <= held < 28, held
    await hold_for(4)  # holding now: counted up to the last heartbeat
    ((_, _, held),) = await history()
    assert 30 <= held < 32, held

    await other.claimed(backup, EDGE_B)  # takes the holding stream over
    (new, old) = await history()
    assert new == ("edge-b", None, 0.0)
    assert old[:2] == ("edge-a", "taken over")
    assert 30 <= old[2] < 32, old


# ---------------------------------------------------------------- the backup key rotated


async def test_rotating_the_backup_key_kicks_the_backup_only(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    old = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    await agent.claimed(old)
    entry = beat_of(claim, stream["streamKey"], "live", backupStreamKey=old)
    (answer,) = await agent.beat([entry])
    assert answer["backupStatus"] == "live"
    new = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    (answer,) = await agent.beat([entry])
    assert (answer["status"], answer["backupStatus"]) == ("live", "revoked")
    assert await ingest_state(api, account, stream["id"], expect_ok) == "live"
    # The new key joins the same broadcast; an entry without a backup says nothing of it.
    assert (await agent.claimed(new))["claimId"] == claim["claimId"]
    (answer,) = await agent.beat([{**entry, "backupStreamKey": new}])
    assert answer["backupStatus"] == "live"
    (answer,) = await agent.beat([beat_of(claim, stream["streamKey"], "live")])
    assert "backupStatus" not in answer


async def test_rotating_the_key_of_the_only_publisher_ends_the_broadcast(
    api, make_agent, expect_ok
):
    """A broadcast fed by its backup alone is named by the backup key: rotating it revokes
    the claim, as changeKey does for the primary."""
    account = await api.account()
    stream = await api.stream(account)
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent()
    claim = await agent.claimed(backup)
    await new_backup_key(api, account, stream["id"], expect_ok)
    answers = await agent.beat([beat_of(claim, backup, "backup", backupStreamKey=backup)])
    assert answers == [{"claimId": claim["claimId"], "status": "revoked"}]


async def test_change_key_ends_a_broadcast_fed_by_both(api, make_agent, expect_ok):
    """The entry names the broadcast by its primary key once a primary joined it
    (docs/agent-protocol.md#disconnect-protection-claim-rules): rotating that key revokes
    the whole claim, the backup included."""
    account = await api.account()
    stream = await api.stream(account)
    backup = (await new_backup_key(api, account, stream["id"], expect_ok))["backupStreamKey"]
    agent = await make_agent()
    claim = await agent.claimed(backup)
    await agent.claimed(stream["streamKey"])
    resp = await api.client.post(f"/streams/{stream['id']}/changeKey", headers=account.headers)
    await expect_ok(resp, "New stream key")
    entry = beat_of(claim, stream["streamKey"], "live", backupStreamKey=backup)
    assert await agent.beat([entry]) == [{"claimId": claim["claimId"], "status": "revoked"}]
    assert await ingest_state(api, account, stream["id"], expect_ok) == "offline"


# ---------------------------------------------------------------- upgrade


async def test_upgrade_makes_existing_keys_claimable(make_database):
    """Streams created before the migration keep working: their keys are in ingest_keys."""
    conn = await asyncpg.connect(make_database())
    try:
        mine = next(v for v, _ in available_migrations() if v.endswith("_disconnect_protection"))
        earlier = [(v, sql) for v, sql in available_migrations() if v < mine]
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
        for version, sql in earlier:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1)", version)
        user = uuid.uuid4()
        await conn.execute(
            "INSERT INTO users (id, username, email, password_hash)"
            " VALUES ($1, 'old', 'old@example.org', 'x')",
            user,
        )
        await conn.execute(
            "INSERT INTO streams (id, user_id, stream_key)"
            " VALUES (gen_random_uuid(), $1, 'old-key')",
            user,
        )
        assert mine in await migrate(conn)
        row = await conn.fetchrow(
            "SELECT k.role, s.protection_enabled, s.grace_seconds, s.backup_stream_key"
            " FROM ingest_keys k JOIN streams s ON s.id = k.stream_id WHERE k.key = 'old-key'"
        )
        assert dict(row) == {
            "role": "primary",
            "protection_enabled": True,
            "grace_seconds": 30,
            "backup_stream_key": None,
        }
    finally:
        await conn.close()
