"""Webhooks: the stream's callbackUrl, the outbox, signed delivery with retries."""

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from dataclasses import replace

import aiohttp
import pytest

from rig.app import create_app
from rig.appkeys import POOL
from rig.live import sweep_expired
from rig.webhooks import (
    MAX_ATTEMPTS,
    WEBHOOK_RECEIVER_CONCURRENCY,
    claim_due,
    deliver_due,
    retry_delay,
    sign,
)

SECRET = re.compile(r"^whsec_[A-Za-z0-9_-]{43}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
INGEST = "rtmp://edge.example/live"


async def set_webhook(api, account, stream_id, url, expect_ok):
    resp = await api.client.put(
        f"/streams/{stream_id}/webhook", json={"callbackUrl": url}, headers=account.headers
    )
    return await expect_ok(resp, "Stream webhook")


async def deliver(api) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        return await deliver_due(api.client.server.app[POOL], http)


async def delivered(api, webhook_receiver, secret, count: int) -> list[dict]:
    """Deliver what is due, expecting `count` webhooks; their verified bodies, in order."""
    assert await deliver(api) == count
    return [verified(hook, secret) for hook in webhook_receiver.received]


async def outbox(api):
    return await api.db.fetch("SELECT * FROM webhook_deliveries ORDER BY id")


def verified(hook, secret):
    """Check one received POST's headers and signature; return its JSON body."""
    headers = hook.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "rig-webhooks/1"
    timestamp = headers["X-Rig-Timestamp"]
    assert re.fullmatch(r"\d+", timestamp)
    assert abs(int(timestamp) - time.time()) < 10
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + hook.body, hashlib.sha256)
    assert headers["X-Rig-Signature"] == "sha256=" + expected.hexdigest()
    assert hmac.compare_digest(headers["X-Rig-Signature"], sign(secret, int(timestamp), hook.body))
    body = json.loads(hook.body)
    assert set(body) == {"id", "event", "streamId", "occurredAt", "data"}
    assert headers["X-Rig-Event"] == body["event"]
    assert headers["X-Rig-Delivery"] == body["id"]
    assert uuid.UUID(body["id"])
    assert ISO_Z.match(body["occurredAt"])
    return body


@pytest.fixture
async def hooked(api, webhook_receiver, make_agent, expect_ok):
    """An account, a stream whose callbackUrl is the receiver, its secret, an agent."""
    account = await api.account()
    stream = await api.stream(account)
    webhook = await set_webhook(api, account, stream["id"], webhook_receiver.url, expect_ok)
    agent = await make_agent("edge-hook")
    return account, stream, webhook["secret"], agent


# ---------------------------------------------------------------- the webhook setting


async def test_set_show_and_remove_the_webhook(api, webhook_receiver, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    path = f"/streams/{stream['id']}/webhook"
    initial = await expect_ok(await api.client.get(path, headers=account.headers), "Stream webhook")
    assert initial["callbackUrl"] is None
    assert SECRET.match(initial["secret"])

    webhook = await set_webhook(api, account, stream["id"], webhook_receiver.url, expect_ok)
    assert webhook == {"callbackUrl": webhook_receiver.url, "secret": initial["secret"]}
    assert await expect_ok(
        await api.client.get(path, headers=account.headers), "Stream webhook"
    ) == (webhook)
    other = await api.stream(account)
    other_hook = await set_webhook(api, account, other["id"], webhook_receiver.url, expect_ok)
    assert other_hook["secret"] != webhook["secret"]  # one secret per stream

    removed = await set_webhook(api, account, stream["id"], None, expect_ok)
    assert removed == {"callbackUrl": None, "secret": initial["secret"]}
    assert await expect_ok(
        await api.client.get(path, headers=account.headers), "Stream webhook"
    ) == (removed)

    # Someone else's stream: 1000 for both, nothing changed.
    bob = await api.account()
    await expect_error(await api.client.get(path, headers=bob.headers), 1000, 404)
    resp = await api.client.put(
        path, json={"callbackUrl": "https://x.example/"}, headers=bob.headers
    )
    await expect_error(resp, 1000, 404)
    assert (await expect_ok(await api.client.get(path, headers=account.headers), "Stream webhook"))[
        "callbackUrl"
    ] is None


INVALID_CALLBACK_URLS = [
    "",
    "ftp://hooks.example/x",
    "hooks.example/x",
    "rtmp://hooks.example/x",
    "https://hooks example/x",
    "https://hooks.example/x\ny",
    "https://hooks.example/x\x00",
    "http://",
    "https:///path",
    "https://hooks.example/" + "a" * 2027,  # 2049 characters
    5,
    True,
    ["https://hooks.example/x"],
]


async def test_invalid_callback_url_is_1005(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    for url in INVALID_CALLBACK_URLS:
        with case(url):
            resp = await api.client.put(
                f"/streams/{stream['id']}/webhook",
                json={"callbackUrl": url},
                headers=account.headers,
            )
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == "callbackUrl"
    assert await api.db.fetchval("SELECT count(*) FROM streams WHERE callback_url IS NOT NULL") == 0


async def test_longest_callback_url_is_accepted(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    url = "https://hooks.example/" + "a" * 2026  # 2048 characters
    assert (await set_webhook(api, account, stream["id"], url, expect_ok))["callbackUrl"] == url


async def test_missing_callback_url_is_1004(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    for body in ({}, {"url": "https://hooks.example/x"}):
        with case(body):
            resp = await api.client.put(
                f"/streams/{stream['id']}/webhook", json=body, headers=account.headers
            )
            error = await expect_error(resp, 1004, 400)
            assert error["details"] == {"field": "callbackUrl"}


# ---------------------------------------------------------------- delivery


async def test_live_and_offline_events_are_signed_and_delivered(
    api, hooked, webhook_receiver, expect_ok
):
    _account, stream, secret, agent = hooked
    claim = await agent.claimed(stream["streamKey"], INGEST)
    assert webhook_receiver.received == []  # nothing is sent from the request itself
    assert await deliver(api) == 1
    assert len(webhook_receiver.received) == 1
    live = verified(webhook_receiver.received[0], secret)
    assert live["event"] == "stream.live"
    assert live["streamId"] == stream["id"]
    assert live["data"] == {"agent": "edge-hook", "ingestUrl": INGEST}
    (row,) = await outbox(api)
    assert row["event"] == "stream.live"
    assert row["attempts"] == 1
    assert row["delivered_at"] is not None
    assert (row["failed_at"], row["last_error"]) == (None, None)
    assert await deliver(api) == 0  # delivered once, not again

    await expect_ok(await agent.release(claim["claimId"]), "Claim released")
    assert await deliver(api) == 1
    offline = verified(webhook_receiver.received[1], secret)
    assert offline["event"] == "stream.offline"
    assert offline["streamId"] == stream["id"]
    assert offline["data"] == {"reason": "ended"}
    assert offline["id"] != live["id"]


async def test_offline_reasons(api, hooked, webhook_receiver, make_agent, expect_ok):
    account, stream, secret, agent = hooked
    await agent.claimed(stream["streamKey"])
    await api.db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 second'")
    assert await sweep_expired(api.client.server.app[POOL]) == 1
    await agent.claimed(stream["streamKey"])
    resp = await api.client.post(f"/streams/{stream['id']}/changeKey", headers=account.headers)
    new_key = (await expect_ok(resp, "New stream key"))["key"]
    await agent.claimed(new_key)
    resp = await api.client.patch(
        f"/streams/{stream['id']}", json={"isActive": False}, headers=account.headers
    )
    await expect_ok(resp, "Stream updated")
    # Deactivating a stream that is not live reports nothing.
    resp = await api.client.patch(
        f"/streams/{stream['id']}", json={"isActive": False}, headers=account.headers
    )
    await expect_ok(resp, "Stream updated")
    events = await delivered(api, webhook_receiver, secret, 6)
    assert [(e["event"], e["data"].get("reason")) for e in events] == [
        ("stream.live", None),
        ("stream.offline", "expired"),
        ("stream.live", None),
        ("stream.offline", "key changed"),
        ("stream.live", None),
        ("stream.offline", "deactivated"),
    ]


async def test_failed_delivery_is_retried_with_the_same_id(api, hooked, webhook_receiver):
    _account, stream, secret, agent = hooked
    webhook_receiver.statuses = [500]
    await agent.claimed(stream["streamKey"])
    assert await deliver(api) == 1
    (row,) = await outbox(api)
    assert row["attempts"] == 1
    assert row["last_error"] == "HTTP 500"
    assert (row["delivered_at"], row["failed_at"]) == (None, None)
    wait = await api.db.fetchval(
        "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM webhook_deliveries"
    )
    assert 0 < wait <= retry_delay(1)
    assert await deliver(api) == 0  # not due yet
    assert len(webhook_receiver.received) == 1

    await api.db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    assert await deliver(api) == 1
    (row,) = await outbox(api)
    assert row["attempts"] == 2
    assert row["delivered_at"] is not None
    assert (row["last_error"], row["failed_at"]) == (None, None)
    first, second = (verified(hook, secret) for hook in webhook_receiver.received)
    assert first == second
    assert [h.headers["X-Rig-Delivery"] for h in webhook_receiver.received] == [first["id"]] * 2
    assert webhook_receiver.received[0].body == webhook_receiver.received[1].body


async def test_delivery_gives_up_after_max_attempts(api, hooked, webhook_receiver):
    _account, stream, _secret, agent = hooked
    webhook_receiver.statuses = [503] * MAX_ATTEMPTS
    await agent.claimed(stream["streamKey"])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await deliver(api) == 1
        row = await api.db.fetchrow(
            "SELECT *, extract(epoch FROM next_attempt_at - now())::float8 AS wait"
            " FROM webhook_deliveries"
        )
        wait = row["wait"]
        assert row["attempts"] == attempt
        assert row["last_error"] == "HTTP 503"
        assert row["delivered_at"] is None
        if attempt < MAX_ATTEMPTS:
            assert row["failed_at"] is None
            assert retry_delay(attempt) - 1 < wait <= retry_delay(attempt)
            await api.db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
        else:
            assert row["failed_at"] is not None
    assert len(webhook_receiver.received) == MAX_ATTEMPTS
    await api.db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    assert await deliver(api) == 0  # given up: never sent again
    assert len(webhook_receiver.received) == MAX_ATTEMPTS


def test_retry_delay_doubles_up_to_five_minutes():
    assert [retry_delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert retry_delay(50) == 300


async def test_unreachable_receiver_is_retried(api, make_agent, expect_ok, free_port):
    account = await api.account()
    stream = await api.stream(account)
    url = f"http://127.0.0.1:{free_port()}/hook?token=s3cret"  # nothing listens there
    await set_webhook(api, account, stream["id"], url, expect_ok)
    agent = await make_agent()
    await agent.claimed(stream["streamKey"])
    assert await deliver(api) == 1
    (row,) = await outbox(api)
    assert row["attempts"] == 1
    assert row["last_error"]
    assert "s3cret" not in row["last_error"]  # the URL may hold a token: never logged
    assert (row["delivered_at"], row["failed_at"]) == (None, None)


async def test_callback_removed_before_delivery(api, hooked, webhook_receiver, expect_ok):
    account, stream, _secret, agent = hooked
    await agent.claimed(stream["streamKey"])
    await set_webhook(api, account, stream["id"], None, expect_ok)
    assert await deliver(api) == 1
    (row,) = await outbox(api)
    assert row["last_error"] == "the stream no longer has a callbackUrl"
    assert row["failed_at"] is not None
    assert webhook_receiver.received == []


async def test_no_callback_url_enqueues_nothing(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    destination = await api.destination(account, stream["id"], "YouTube", "yt")
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    health = {"destinations": [{"id": destination["id"], "state": "backoff"}]}
    await agent.beat(
        [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}]
    )
    await expect_ok(await agent.release(claim["claimId"]), "Claim released")
    assert await api.db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    assert await deliver(api) == 0


async def test_destination_failed_and_recovered(api, hooked, webhook_receiver):
    account, stream, secret, agent = hooked
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw")
    claim = await agent.claimed(stream["streamKey"])

    async def beat(yt_state, tw_state, yt_error=None, tw_error=None):
        health = {
            "destinations": [
                {"id": youtube["id"], "state": yt_state, "lastError": yt_error},
                {"id": twitch["id"], "state": tw_state, "lastError": tw_error},
            ]
        }
        answers = await agent.beat(
            [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}]
        )
        assert answers[0]["status"] == "live"

    await beat("connecting", "connecting")
    await beat("live", "live")
    await beat("backoff", "live", "connection reset")
    await beat("failed", "live", "connection refused")  # still failing: no new event
    await beat("backoff", "live", "connection refused")
    await beat("live", "live")
    await beat("live", "live")
    await beat("live", "failed", tw_error="auth")  # first report of a destination already failing
    events = await delivered(api, webhook_receiver, secret, 4)
    assert [e["event"] for e in events] == [
        "stream.live",
        "destination.failed",
        "destination.recovered",
        "destination.failed",
    ]
    assert all(e["streamId"] == stream["id"] for e in events)
    assert events[1]["data"] == {
        "destinationId": youtube["id"],
        "state": "backoff",
        "error": "connection reset",
    }
    assert events[2]["data"] == {"destinationId": youtube["id"], "state": "live", "error": None}
    assert events[3]["data"] == {"destinationId": twitch["id"], "state": "failed", "error": "auth"}


async def test_a_destination_retrying_is_one_failure_until_it_recovers(
    api, hooked, webhook_receiver
):
    # The agent's cycle for a destination it cannot reach: backoff, connecting (its
    # lastError kept), backoff again... One destination.failed for it, not one a cycle.
    account, stream, secret, agent = hooked
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    claim = await agent.claimed(stream["streamKey"])

    async def beat(state, error=None):
        health = {"destinations": [{"id": youtube["id"], "state": state, "lastError": error}]}
        answers = await agent.beat(
            [{"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": health}]
        )
        assert answers[0]["status"] == "live"

    await beat("connecting")
    await beat("backoff", "connection refused")
    for _ in range(3):
        await beat("connecting", "connection refused")
        await beat("backoff", "connection refused")
    await beat("connecting", "connection refused")
    await beat("live")
    await beat("backoff", "connection reset")
    events = await delivered(api, webhook_receiver, secret, 4)
    assert [e["event"] for e in events] == [
        "stream.live",
        "destination.failed",
        "destination.recovered",
        "destination.failed",
    ]


async def test_regranted_claim_reports_live_again(api, hooked, webhook_receiver):
    _account, stream, secret, agent = hooked
    claim = await agent.claimed(stream["streamKey"])
    await api.db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 second'")
    assert await sweep_expired(api.client.server.app[POOL]) == 1
    answers = await agent.beat([{"claimId": claim["claimId"], "streamKey": stream["streamKey"]}])
    assert answers[0]["status"] == "live"
    events = await delivered(api, webhook_receiver, secret, 3)
    assert [(e["event"], e["data"]) for e in events] == [
        ("stream.live", {"agent": "edge-hook", "ingestUrl": INGEST}),
        ("stream.offline", {"reason": "expired"}),
        ("stream.live", {"agent": "edge-hook"}),
    ]


async def test_background_sender_delivers(
    aiohttp_client, settings, db, api, make_agent, webhook_receiver, expect_ok
):
    """With background tasks on (as `rig serve` runs), events arrive with no manual call."""
    client = await aiohttp_client(create_app(replace(settings, background_tasks=True)))
    account = await api.account()
    stream = await api.stream(account)
    webhook = await set_webhook(api, account, stream["id"], webhook_receiver.url, expect_ok)
    agent = await make_agent(client=client)
    await agent.claimed(stream["streamKey"])
    deadline = time.monotonic() + 5
    while not webhook_receiver.received and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    (hook,) = webhook_receiver.received
    assert verified(hook, webhook["secret"])["event"] == "stream.live"


# ---------------------------------------------------------------- head-of-line blocking


async def test_a_slow_receiver_never_delays_another_receivers_events(
    aiohttp_client, aiohttp_server, settings, db, api, make_agent, webhook_receiver, expect_ok
):
    """One user's receiver holds every request; another user's event still arrives, and
    no transaction stays open while a delivery is in flight (issue 12, item 11)."""
    from aiohttp import web

    release = asyncio.Event()
    held: list[str] = []

    async def stuck(request: web.Request) -> web.Response:
        held.append(request.headers["X-Rig-Delivery"])
        await release.wait()
        return web.Response(text="ok")

    slow_app = web.Application()
    slow_app.router.add_post("/hook", stuck)
    slow = await aiohttp_server(slow_app, host="127.0.0.1")
    client = await aiohttp_client(create_app(replace(settings, background_tasks=True)))
    agent = await make_agent(client=client)

    # The slow receiver's stream has many events queued before the fast one's.
    slow_owner = await api.account()
    slow_streams = [await api.stream(slow_owner) for _ in range(6)]
    for stream in slow_streams:
        await set_webhook(api, slow_owner, stream["id"], str(slow.make_url("/hook")), expect_ok)
        await agent.claimed(stream["streamKey"])
    fast_owner = await api.account()
    fast_stream = await api.stream(fast_owner)
    await set_webhook(api, fast_owner, fast_stream["id"], webhook_receiver.url, expect_ok)
    await agent.claimed(fast_stream["streamKey"])

    try:
        deadline = time.monotonic() + 10
        while not webhook_receiver.received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(webhook_receiver.received) == 1, "the fast receiver's event was held up"
        assert held, "the slow receiver got nothing"
        # Per-receiver limit: the slow receiver holds at most WEBHOOK_RECEIVER_CONCURRENCY.
        assert len(held) <= WEBHOOK_RECEIVER_CONCURRENCY
        # Deliveries run outside any transaction: nothing is idle in one meanwhile.
        idle_in_transaction = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert idle_in_transaction == 0
        # The held rows are leased: not due again while their delivery is in flight.
        leased = await db.fetchval(
            "SELECT count(*) FROM webhook_deliveries"
            " WHERE delivered_at IS NULL AND leased_until > now()"
        )
        assert leased >= len(held)
    finally:
        release.set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (
            await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL")
            == 0
        ):
            break
        await asyncio.sleep(0.05)
    assert len(set(held)) == len(slow_streams)  # every slow event delivered once in the end


async def test_a_lease_that_ran_out_is_delivered_again(api, hooked, webhook_receiver):
    """A rig process that died mid-delivery leaves a lease: nobody sends the event while
    the lease holds, any process sends it once it has run out (at least once)."""
    _account, stream, secret, agent = hooked
    await agent.claimed(stream["streamKey"])
    (leased,) = await claim_due(api.client.server.app[POOL], 10)  # ... and the process dies
    assert await deliver(api) == 0
    await api.db.execute("UPDATE webhook_deliveries SET leased_until = now() - interval '1 s'")
    assert await deliver(api) == 1
    (hook,) = webhook_receiver.received
    assert verified(hook, secret)["id"] == json.loads(leased["body"])["id"]
    (row,) = await outbox(api)
    assert (row["attempts"], row["leased_until"]) == (1, None)
    assert row["delivered_at"] is not None
