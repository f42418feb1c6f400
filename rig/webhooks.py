"""Webhooks: signed JSON events POSTed to a stream's callbackUrl, at least once.

Events are written to the `webhook_deliveries` outbox in the same transaction as the
change they report, so none is lost when rig stops. A background task in every rig
process delivers due events (`FOR UPDATE SKIP LOCKED`, so replicas share the work),
retrying failures with exponential backoff. Nothing here ever blocks an API request
or an agent.

Each POST carries:
- `X-Rig-Event`: the event name (`stream.live`, `stream.offline`,
  `destination.failed`, `destination.recovered`);
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
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from rig.appkeys import POOL

log = logging.getLogger(__name__)

EVENTS = ("stream.live", "stream.offline", "destination.failed", "destination.recovered")
MAX_ATTEMPTS = 10
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
POLL_SECONDS = 0.5
DELIVERY_TIMEOUT = 5.0


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


async def deliver_due(pool: asyncpg.Pool, http: aiohttp.ClientSession) -> int:
    """Deliver the events that are due; returns how many were attempted."""
    attempted = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT d.id, d.event, d.body, d.attempts, s.callback_url, s.webhook_secret
                 FROM webhook_deliveries d JOIN streams s ON s.id = d.stream_id
                WHERE d.delivered_at IS NULL AND d.failed_at IS NULL
                  AND d.next_attempt_at <= now()
                ORDER BY d.id
                LIMIT 20
                FOR UPDATE OF d SKIP LOCKED"""
        )
        for row in rows:
            attempted += 1
            error = await _post(http, row)
            if error is None:
                await conn.execute(
                    "UPDATE webhook_deliveries SET delivered_at = now(), attempts = attempts + 1,"
                    " last_error = NULL WHERE id = $1",
                    row["id"],
                )
                continue
            attempts = row["attempts"] + 1
            give_up = attempts >= MAX_ATTEMPTS or row["callback_url"] is None
            await conn.execute(
                """UPDATE webhook_deliveries
                      SET attempts = $2, last_error = $3,
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
        async with http.post(row["callback_url"], data=body, headers=headers) as resp:
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def webhook_sender(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: deliver webhooks in the background while the app runs."""
    timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
    http = aiohttp.ClientSession(timeout=timeout)

    async def loop() -> None:
        while True:
            try:
                if await deliver_due(app[POOL], http) == 0:
                    await asyncio.sleep(POLL_SECONDS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook delivery paused: %s", exc)
                await asyncio.sleep(POLL_SECONDS * 4)

    task = asyncio.create_task(loop(), name="webhook-sender")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await http.close()
