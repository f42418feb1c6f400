"""Live state: which agent has which stream live, renewed by heartbeat.

A *claim* says "stream S is live on agent A since T, until E". The primary key on
`stream_claims.stream_id` makes one live agent per stream a database fact: a claim is
granted by one atomic INSERT ... ON CONFLICT, never check-then-act. Agents renew all
their claims with one heartbeat every few seconds; a claim not renewed expires
(RIG_CLAIM_TTL, default 15 s) and the sweeper deletes it, so a crashed agent frees its
keys without an operator. Rotating a stream's key, deactivating or deleting the
stream deletes its claim: the agent's next heartbeat learns the claim is revoked and
ends the publish.
"""

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
from aiohttp import web

from rig import webhooks
from rig.api import ApiRoutes
from rig.appkeys import POOL, SETTINGS
from rig.auth import require_agent
from rig.body import invalid, read_body
from rig.errors import InUse, NotFound
from rig.payloads import fetch_destinations
from rig.shapes import (
    INGEST_URL_MAX,
    ClaimAnswer,
    Claimed,
    ClaimRequest,
    Heartbeat,
    HeartbeatAnswer,
)

log = logging.getLogger(__name__)
routes = ApiRoutes()
AGENTS = {"tag": "agents", "auth": "agent"}

SWEEP_SECONDS = 1.0
FAILING_STATES = ("backoff", "failed")


async def _active_stream(conn: asyncpg.Connection, stream_key: str) -> asyncpg.Record | None:
    if "\x00" in stream_key:  # PostgreSQL text cannot hold NUL: no stream has this key
        return None
    return await conn.fetchrow(
        "SELECT id FROM streams WHERE stream_key = $1 AND is_active", stream_key
    )


async def grant_claim(
    conn: asyncpg.Connection,
    stream_id: uuid.UUID,
    claim_id: uuid.UUID,
    agent_id: uuid.UUID,
    ingest_url: str,
    ttl: int,
) -> asyncpg.Record | None:
    """Atomically claim a stream; None when another agent holds a live claim.

    An expired claim, or one held by the same agent (which knows it no longer
    publishes that key, e.g. after a restart), is taken over.
    """
    return await conn.fetchrow(
        """INSERT INTO stream_claims (stream_id, claim_id, agent_id, ingest_url, expires_at)
           VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second')
           ON CONFLICT (stream_id) DO UPDATE
              SET claim_id = EXCLUDED.claim_id, agent_id = EXCLUDED.agent_id,
                  ingest_url = EXCLUDED.ingest_url, since = now(),
                  expires_at = EXCLUDED.expires_at, health = NULL
            WHERE stream_claims.expires_at <= now()
               OR stream_claims.agent_id = EXCLUDED.agent_id
           RETURNING claim_id, since, expires_at""",
        stream_id,
        claim_id,
        agent_id,
        ingest_url,
        ttl,
    )


def _is_ingest_url(url: Any) -> bool:
    return (
        isinstance(url, str)
        and url.startswith(("rtmp://", "rtmps://"))
        and len(url) <= INGEST_URL_MAX
    )


@routes.post(
    "/agents/streams/{streamKey}/claim",
    "claimStream",
    **AGENTS,
    summary="Claim a stream key for a publish starting on this agent (extension)",
    message="Stream claimed",
    payload=Claimed,
    body=ClaimRequest,
    errors=("404",),
    conflicts=(1009,),
)
async def claim(request: web.Request) -> Claimed:
    """Claim a stream key for a publish starting on this agent; returns its destinations."""
    agent = await require_agent(request)
    ingest_url = (await read_body(request, ClaimRequest)).ingestUrl
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        stream = await _active_stream(conn, request.match_info["streamKey"])
        if stream is None:
            raise NotFound("Stream not found")
        granted = await grant_claim(
            conn, stream["id"], uuid.uuid4(), agent.id, ingest_url, settings.claim_ttl
        )
        if granted is None:
            raise InUse("Stream already live on another agent")
        await webhooks.enqueue(
            conn, stream["id"], "stream.live", {"agent": agent.name, "ingestUrl": ingest_url}
        )
        destinations = await fetch_destinations(conn, stream["id"], settings.service_urls)
    return Claimed(
        claimId=granted["claim_id"],
        streamId=stream["id"],
        expiresAt=granted["expires_at"],
        destinations=destinations,
    )


@routes.delete(
    "/agents/claims/{claimID}",
    "releaseClaim",
    **AGENTS,
    summary="The publish ended: release the claim (extension)",
    message="Claim released",
    payload=None,
    errors=("404",),
)
async def release(request: web.Request) -> None:
    """The publish ended: release the claim (stream goes offline at once)."""
    agent = await require_agent(request)
    try:
        claim_id = uuid.UUID(request.match_info["claimID"])
    except ValueError as exc:
        raise NotFound("Claim not found") from exc
    async with request.app[POOL].acquire() as conn, conn.transaction():
        stream_id = await conn.fetchval(
            "DELETE FROM stream_claims WHERE claim_id = $1 AND agent_id = $2 RETURNING stream_id",
            claim_id,
            agent.id,
        )
        if stream_id is None:
            raise NotFound("Claim not found")
        await webhooks.enqueue(conn, stream_id, "stream.offline", {"reason": "ended"})


def _has_nul(value: Any) -> bool:
    """Whether any string (or key) in a JSON value holds NUL, which jsonb refuses."""
    stack = [value]
    while stack:  # iterative: the JSON may nest as deep as the parser allowed
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _health_problem(health: Any) -> str | None:
    """Why a claim's health report cannot be stored and read back (None if it can)."""
    if not isinstance(health, dict):
        return "an object"
    if _has_nul(health):
        return "no NUL characters"
    if health.get("ingestUrl") is not None and not _is_ingest_url(health["ingestUrl"]):
        return "ingestUrl: an rtmp:// or rtmps:// URL of at most 512 characters"
    if health.get("ingest") is not None and not isinstance(health["ingest"], dict):
        return "ingest: an object"
    destinations = health.get("destinations")
    if destinations is not None and (
        not isinstance(destinations, list)
        or not all(
            isinstance(d, dict) and (d.get("id") is None or isinstance(d["id"], int | str))
            for d in destinations
        )
    ):
        return "destinations: an array of objects, each with a numeric or string id"
    return None


def _claims_of(body: Heartbeat) -> list[tuple[uuid.UUID, str, dict]]:
    parsed = []
    for item in body.claims:
        health = item.health or {}  # absent or null: nothing reported
        if problem := _health_problem(health):
            raise invalid("health", problem)
        parsed.append((item.claimId, item.streamKey, health))
    return parsed


def destination_transitions(old: Any, new: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """Webhook events for destinations that started failing or recovered."""
    before = {d.get("id"): d.get("state") for d in (old or {}).get("destinations", [])}
    events = []
    for dest in new.get("destinations", []):
        if not isinstance(dest, dict):
            continue
        state, previous = dest.get("state"), before.get(dest.get("id"))
        data = {"destinationId": dest.get("id"), "state": state, "error": dest.get("lastError")}
        if state in FAILING_STATES and previous not in FAILING_STATES:
            events.append(("destination.failed", data))
        elif state == "live" and previous in FAILING_STATES:
            events.append(("destination.recovered", data))
    return events


async def _renew(
    conn: asyncpg.Connection,
    agent: Any,
    claim_id: uuid.UUID,
    key: str,
    health: dict,
    ttl: int,
    service_urls: Mapping[str, str],
) -> ClaimAnswer:
    """Renew one claim (re-granting it if it expired meanwhile) or say it is revoked."""
    stream = await _active_stream(conn, key)
    if stream is None:  # key rotated, stream deactivated or deleted
        return ClaimAnswer(claimId=claim_id, status="revoked")
    old = await conn.fetchrow(
        "SELECT health FROM stream_claims WHERE claim_id = $1 AND agent_id = $2"
        " AND stream_id = $3 FOR UPDATE",
        claim_id,
        agent.id,
        stream["id"],
    )
    if old is None:
        # Expired (e.g. rig or the database was unreachable for a while): take it back
        # unless another agent has it now.
        ingest_url = str(health.get("ingestUrl") or "rtmp://unknown/")
        try:
            async with conn.transaction():  # savepoint: the id may be live on another stream
                granted = await grant_claim(conn, stream["id"], claim_id, agent.id, ingest_url, ttl)
        except asyncpg.UniqueViolationError:
            granted = None
        if granted is None:
            return ClaimAnswer(claimId=claim_id, status="revoked")
        await webhooks.enqueue(conn, stream["id"], "stream.live", {"agent": agent.name})
        old_health = None
    else:
        old_health = json.loads(old["health"]) if old["health"] else None
    await conn.execute(
        "UPDATE stream_claims SET expires_at = now() + $2 * interval '1 second', health = $3"
        " WHERE claim_id = $1",
        claim_id,
        ttl,
        json.dumps(health),
    )
    for event, data in destination_transitions(old_health, health):
        await webhooks.enqueue(conn, stream["id"], event, data)
    return ClaimAnswer(
        claimId=claim_id,
        status="live",
        destinations=await fetch_destinations(conn, stream["id"], service_urls),
    )


@routes.post(
    "/agents/heartbeat",
    "heartbeat",
    **AGENTS,
    summary="Renew every claim of this agent, with each stream's health (extension)",
    message="Heartbeat accepted",
    payload=HeartbeatAnswer,
    body=Heartbeat,
)
async def heartbeat(request: web.Request) -> HeartbeatAnswer:
    """Renew every claim the agent lists, store their health, answer each one's fate.

    The answer lists, per claim, `status` (`live` or `revoked`: end that publish) and
    the stream's current destinations, so changes reach the agent within a heartbeat.
    """
    agent = await require_agent(request)
    claims = _claims_of(await read_body(request, Heartbeat))
    settings = request.app[SETTINGS]
    answers = []
    async with request.app[POOL].acquire() as conn:
        for claim_id, key, health in claims:
            async with conn.transaction():
                answers.append(
                    await _renew(
                        conn,
                        agent,
                        claim_id,
                        key,
                        health,
                        settings.claim_ttl,
                        settings.service_urls,
                    )
                )
    return HeartbeatAnswer(claims=answers)


async def sweep_expired(pool: asyncpg.Pool) -> int:
    """Delete expired claims, recording stream.offline for each; returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "DELETE FROM stream_claims WHERE expires_at <= now() RETURNING stream_id"
        )
        for row in rows:
            await webhooks.enqueue(conn, row["stream_id"], "stream.offline", {"reason": "expired"})
    if rows:
        log.info("expired %d claim(s) not renewed by their agent", len(rows))
    return len(rows)


async def claim_sweeper(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: expire claims in the background while the app runs."""

    async def loop() -> None:
        while True:
            try:
                await sweep_expired(app[POOL])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("claim sweeper paused: %s", exc)
            await asyncio.sleep(SWEEP_SECONDS)

    task = asyncio.create_task(loop(), name="claim-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
