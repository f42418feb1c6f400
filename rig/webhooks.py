"""Webhooks: signed JSON events POSTed to a stream's callbackUrl, at least once.

Events are written to the `webhook_deliveries` outbox in the same transaction as the
change they report, so none is lost when rig stops. A background task in every rig
process leases due events (`FOR UPDATE SKIP LOCKED`, so replicas share the work) and
delivers them concurrently, outside any transaction, at most a few at a time to one
receiver, so one slow receiver never delays another's events. Failures are retried
with exponential backoff. Nothing here ever blocks an API request or an agent.

Each POST carries:
- `X-Rig-Event`: the event name (`stream.live`, `stream.offline`, `stream.interrupted`,
  `stream.resumed`, `destination.failed`, `destination.recovered`);
- `X-Rig-Delivery`: the delivery id (the same on every retry of one event: deduplicate on it);
- `X-Rig-Timestamp`: Unix time of this attempt;
- `X-Rig-Signature`: `sha256=` + hex HMAC-SHA256 keyed with the stream's webhook
  secret over `"{timestamp}.{body}"`.
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from rig.appkeys import POOL, SETTINGS
from rig.background import OUTAGE_ERRORS, PauseLog, worker
from rig.netpolicy import AddressNotAllowed, address_problem

log = logging.getLogger(__name__)

EVENTS = (
    "stream.live",
    "stream.offline",
    "stream.interrupted",
    "stream.resumed",
    "destination.failed",
    "destination.recovered",
)
MAX_ATTEMPTS = 10
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
POLL_SECONDS = 0.5
DELIVERY_TIMEOUT = 5.0
# Deliveries in flight per rig process, and per receiver across all rig processes: one
# slow receiver holds at most WEBHOOK_RECEIVER_CONCURRENCY of the sender's slots.
WEBHOOK_CONCURRENCY = 64
WEBHOOK_RECEIVER_CONCURRENCY = 4
# A leased delivery is not due again for this long: well above DELIVERY_TIMEOUT, so
# only a rig process that died mid-delivery lets a lease run out.
LEASE_SECONDS = 30.0


def new_webhook_secret() -> str:
    """256 random bits, URL-safe."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Rig-Signature value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def enqueue(
    conn: asyncpg.Connection, stream_id: uuid.UUID, event: str, data: dict[str, Any]
) -> None:
    """Record an event for the stream's callbackUrl (no-op when it has none).

    Call inside the transaction that makes the change the event reports.
    """
    has_callback = await conn.fetchval(
        "SELECT callback_url IS NOT NULL FROM streams WHERE id = $1", stream_id
    )
    if not has_callback:
        return
    body = {
        "id": str(uuid.uuid4()),
        "event": event,
        "streamId": str(stream_id),
        "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    await conn.execute(
        "INSERT INTO webhook_deliveries (stream_id, event, body) VALUES ($1, $2, $3)",
        stream_id,
        event,
        json.dumps(body, separators=(",", ":")),
    )


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failures: 1, 2, 4 ... 300."""
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1))


# A receiver is the callbackUrl's scheme://host:port: the per-receiver limit counts
# deliveries to it, whatever the path. '' for a stream whose callbackUrl was removed.
RECEIVER = r"lower(coalesce(substring(s.callback_url from '^[A-Za-z]+://[^/?#]*'), ''))"
PENDING = "d.delivered_at IS NULL AND d.failed_at IS NULL"
DUE = f"{PENDING} AND d.next_attempt_at <= now() AND coalesce(d.leased_until <= now(), true)"

# Claim what may start now, and lease it. Rules, so that no receiver delays another's:
# - one delivery in flight per stream (its events go out one at a time, oldest first;
#   a failed one is retried later without holding the next ones back);
# - at most $2 in flight per receiver, counting those leased by every rig process;
# - at most $1 rows per call (the caller's free slots).
# FOR UPDATE SKIP LOCKED plus the re-checked DUE condition: two rig processes never
# lease the same row. The lease is all the transaction does: it commits at once.
CLAIM_DUE = f"""
WITH in_flight AS (
    SELECT d.stream_id, {RECEIVER} AS receiver
      FROM webhook_deliveries d JOIN streams s ON s.id = d.stream_id
     WHERE {PENDING} AND d.leased_until > now()
), oldest_due AS (
    SELECT DISTINCT ON (d.stream_id) d.id, {RECEIVER} AS receiver
      FROM webhook_deliveries d JOIN streams s ON s.id = d.stream_id
     WHERE {DUE} AND d.stream_id NOT IN (SELECT stream_id FROM in_flight)
     ORDER BY d.stream_id, d.id
), allowed AS (
    SELECT o.id
      FROM (SELECT id, receiver, row_number() OVER (PARTITION BY receiver ORDER BY id) AS n
              FROM oldest_due) o
     WHERE o.n + (SELECT count(*) FROM in_flight f WHERE f.receiver = o.receiver) <= $2
), picked AS (
    SELECT d.id FROM webhook_deliveries d
     WHERE d.id IN (SELECT id FROM allowed) AND {DUE}
     ORDER BY d.id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
   SET leased_until = now() + $3 * interval '1 second'
  FROM picked, streams s
 WHERE d.id = picked.id AND s.id = d.stream_id
RETURNING d.id, d.event, d.body, d.attempts, s.callback_url, s.webhook_secret
"""


async def claim_due(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """Lease up to `limit` due deliveries that may start now (see CLAIM_DUE)."""
    return await pool.fetch(CLAIM_DUE, limit, WEBHOOK_RECEIVER_CONCURRENCY, LEASE_SECONDS)


async def deliver(pool: asyncpg.Pool, http: aiohttp.ClientSession, row: asyncpg.Record) -> None:
    """POST one leased delivery (no transaction open meanwhile), then record the outcome."""
    error = await _post(http, row)
    if error is None:
        await pool.execute(
            "UPDATE webhook_deliveries SET delivered_at = now(), attempts = attempts + 1,"
            " last_error = NULL, leased_until = NULL WHERE id = $1",
            row["id"],
        )
        return
    attempts = row["attempts"] + 1
    give_up = attempts >= MAX_ATTEMPTS or row["callback_url"] is None
    await pool.execute(
        """UPDATE webhook_deliveries
              SET attempts = $2, last_error = $3, leased_until = NULL,
                  next_attempt_at = now() + $4 * interval '1 second',
                  failed_at = CASE WHEN $5 THEN now() END
            WHERE id = $1""",
        row["id"],
        attempts,
        error,
        retry_delay(attempts),
        give_up,
    )
    log.warning(
        "webhook %s delivery %s attempt %d failed: %s%s",
        row["event"],
        row["id"],
        attempts,
        error,
        " (giving up)" if give_up else "",
    )


async def deliver_due(pool: asyncpg.Pool, http: aiohttp.ClientSession) -> int:
    """Deliver everything due until nothing is (concurrently, within the limits);
    returns how many deliveries were attempted. The background sender runs continuously
    instead; this is for tests and one-off use."""
    attempted = 0
    while rows := await claim_due(pool, WEBHOOK_CONCURRENCY):
        await asyncio.gather(*(deliver(pool, http, row) for row in rows))
        attempted += len(rows)
    return attempted


async def _post(http: aiohttp.ClientSession, row: asyncpg.Record) -> str | None:
    """POST one event; None on a 2xx answer, else the reason (no URL: it may hold a token)."""
    if row["callback_url"] is None:
        return "the stream no longer has a callbackUrl"
    body = row["body"].encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "rig-webhooks/1",
        "X-Rig-Event": row["event"],
        "X-Rig-Delivery": json.loads(body)["id"],
        "X-Rig-Timestamp": str(timestamp),
        "X-Rig-Signature": sign(row["webhook_secret"] or "", timestamp, body),
    }
    try:
        # Redirects are not followed: a receiver answers 2xx itself, or the delivery failed.
        async with http.post(
            row["callback_url"], data=body, headers=headers, allow_redirects=False
        ) as resp:
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return delivery_error(exc)


def delivery_error(exc: BaseException) -> str:
    """What went wrong, in words for the stream's owner (never the receiver's bytes)."""
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else None
    if isinstance(os_error, AddressNotAllowed):
        return "the receiver's address is not public"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS failed"
    if isinstance(os_error, socket.gaierror):
        return "host not found"
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    return type(exc).__name__


def _public_socket(addr_info: tuple) -> socket.socket:
    """aiohttp's socket factory: refuses (before connecting) any address that is not
    public, whether the URL named it or DNS answered it (rig/netpolicy.py)."""
    family, kind, proto, _name, address = addr_info
    if address_problem(address[0]) is not None:
        raise AddressNotAllowed()
    return socket.socket(family, kind, proto)


def webhook_http_session(*, allow_private: bool) -> aiohttp.ClientSession:
    """The HTTP client of webhook deliveries: connect-time address policy, no proxies
    from the environment, DELIVERY_TIMEOUT per delivery."""
    connector = aiohttp.TCPConnector(socket_factory=None if allow_private else _public_socket)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
    )


async def webhook_sender(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: deliver webhooks in the background while the app runs.

    Up to WEBHOOK_CONCURRENCY deliveries are in flight at once, each in a task of its
    own; a finished one makes room for the next at once. On the way out, deliveries in
    flight are cancelled: their leases run out and any rig process sends them again.
    """
    http = webhook_http_session(allow_private=app[SETTINGS].allow_private_destinations)
    in_flight: set[asyncio.Task] = set()
    room = asyncio.Event()
    pauses = PauseLog(log, "webhook sender")

    def finished(task: asyncio.Task) -> None:
        in_flight.discard(task)
        room.set()

    async def loop() -> None:
        while True:
            room.clear()
            free = WEBHOOK_CONCURRENCY - len(in_flight)
            try:
                rows = await claim_due(app[POOL], free) if free > 0 else []
                pauses.succeeded()
            except OUTAGE_ERRORS as exc:
                pauses.failed(exc)
                await asyncio.sleep(POLL_SECONDS * 4)
                continue
            for row in rows:
                task = asyncio.create_task(_deliver_logged(app[POOL], http, row))
                in_flight.add(task)
                task.add_done_callback(finished)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await room.wait()

    async with worker(app, "webhook sender", loop):
        yield
    for delivery in list(in_flight):
        delivery.cancel()
    await asyncio.gather(*in_flight, return_exceptions=True)
    await http.close()


async def _deliver_logged(pool: asyncpg.Pool, http: aiohttp.ClientSession, row: asyncpg.Record):
    """`deliver`, with a database failure while recording logged (the lease runs out and
    the event is sent again)."""
    try:
        await deliver(pool, http, row)
    except OUTAGE_ERRORS as exc:
        log.warning("webhook delivery %s not recorded: %s", row["id"], exc)
