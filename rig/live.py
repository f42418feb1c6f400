"""Live state: which agent has which stream live, renewed by heartbeat.

A *claim* says "stream S is live on agent A since T, until E". The primary key on
`stream_claims.stream_id` makes one live agent per stream a database fact: a claim is
granted by one atomic INSERT ... ON CONFLICT, never check-then-act. Agents renew all
their claims with one heartbeat every few seconds; a claim not renewed expires
(RIG_CLAIM_TTL, default 15 s) and the sweeper deletes it, so a crashed agent frees its
keys without an operator. Rotating a stream's key, deactivating or deleting the
stream deletes its claim: the agent's next heartbeat learns the claim is revoked and
ends the publish.

Disconnect protection and backup ingest (issue 15): a stream has a primary and
optionally a backup key; both are claimed here, and the claim is the stream's *broadcast*
on one agent. A claim by the agent that already holds the stream answers that same claim
(a backup joining as standby, the primary coming back during the grace), so the agent
routes every publisher of the stream into one relay. A claim on another agent is refused
(1009, details say where the stream is held) unless the holding agent last reported
`ingestState: "holding"` (nothing but the slate feeds the destinations): then the new
agent takes the stream over and the old one is revoked at its next heartbeat. Heartbeats
report `ingestState`; each change emits `stream.interrupted` or `stream.resumed`.
"""

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
from aiohttp import web

from rig import webhooks
from rig.api import ApiRoutes
from rig.appkeys import POOL, RATE_LIMITS, SETTINGS
from rig.auth import agent_claims, require_agent
from rig.background import OUTAGE_ERRORS, PauseLog, worker
from rig.body import read_body, read_optional_body, validate
from rig.errors import ApiError, InUse, MissingInput, NotFound
from rig.health import INGEST_STATES, sanitise_health
from rig.payloads import disconnect_protection, fetch_destinations
from rig.sessions import CLAIM_HOLDING, end_sessions, fact, open_session, record_health
from rig.shapes import (
    INGEST_URL_MAX,
    ClaimAnswer,
    ClaimBeat,
    Claimed,
    ClaimRequest,
    Heartbeat,
    HeartbeatAnswer,
    IngestState,
    InvalidClaimAnswer,
    Release,
)
from rig.thumbnails import picture_wanted

log = logging.getLogger(__name__)
routes = ApiRoutes()
AGENTS = {"tag": "agents", "auth": "agent"}

SWEEP_SECONDS = 1.0
# A heartbeat's body: 100 claims with full health for 10 destinations each are ~420 KB
# (tests/api/test_heartbeat_batches.py); the API's other bodies stay within 64 KiB.
HEARTBEAT_BODY_MAX = 2 * 1024 * 1024
FAILING_STATES = ("backoff", "failed")
# What feeds the destinations when a broadcast starts with a publisher of this key.
STATE_OF_ROLE: dict[str, IngestState] = {"primary": "live", "backup": "backup"}


async def stream_of_key(
    conn: asyncpg.Connection, stream_key: str, *, lock: bool = False
) -> asyncpg.Record | None:
    """The active stream an ingest key (primary or backup) belongs to, with the key's
    `role` and the stream's disconnect protection. `lock` holds the stream's row until
    the transaction ends, so the claims of one stream are decided one at a time."""
    if "\x00" in stream_key:  # PostgreSQL text cannot hold NUL: no stream has this key
        return None
    return await conn.fetchrow(
        """SELECT s.id, k.role, s.backup_stream_key, s.protection_enabled, s.grace_seconds
             FROM ingest_keys k JOIN streams s ON s.id = k.stream_id
            WHERE k.key = $1 AND s.is_active"""
        + (" FOR NO KEY UPDATE OF s" if lock else ""),
        stream_key,
    )


async def grant_claim(
    conn: asyncpg.Connection,
    stream_id: uuid.UUID,
    claim_id: uuid.UUID,
    agent_id: uuid.UUID,
    ingest_url: str,
    ttl: int,
    state: IngestState = "live",
    *,
    take_over_holding: bool = False,
) -> asyncpg.Record | None:
    """Atomically claim a stream as a new broadcast; None when another agent holds a
    live claim (and, with `take_over_holding`, is not holding).

    An expired claim, or one held by the same agent, is replaced.
    """
    return await conn.fetchrow(
        """INSERT INTO stream_claims
                  (stream_id, claim_id, agent_id, ingest_url, expires_at, ingest_state)
           VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second', $6)
           ON CONFLICT (stream_id) DO UPDATE
              SET claim_id = EXCLUDED.claim_id, agent_id = EXCLUDED.agent_id,
                  ingest_url = EXCLUDED.ingest_url, since = now(),
                  expires_at = EXCLUDED.expires_at, health = NULL,
                  ingest_state = EXCLUDED.ingest_state, state_since = now(),
                  holding_seconds = 0
            WHERE stream_claims.expires_at <= now()
               OR stream_claims.agent_id = EXCLUDED.agent_id
               OR ($7 AND stream_claims.ingest_state = 'holding')
           RETURNING claim_id, since, expires_at""",
        stream_id,
        claim_id,
        agent_id,
        ingest_url,
        ttl,
        state,
        take_over_holding,
    )


async def join_claim(
    conn: asyncpg.Connection, claim_id: uuid.UUID, ingest_url: str | None, ttl: int
) -> asyncpg.Record:
    """Another publisher of the stream on the agent that holds it: the same claim,
    renewed; a primary publisher's ingest URL becomes the claim's."""
    return await conn.fetchrow(
        """UPDATE stream_claims
              SET expires_at = now() + $3 * interval '1 second',
                  ingest_url = coalesce($2, ingest_url)
            WHERE claim_id = $1
        RETURNING claim_id, since, expires_at""",
        claim_id,
        ingest_url,
        ttl,
    )


def state_transition(
    old: str, new: str, agent_name: str | None
) -> tuple[str, dict[str, Any]] | None:
    """The webhook for a change of ingestState: the slate started feeding the
    destinations (`stream.interrupted`) or a publisher took over from it
    (`stream.resumed`). A switch between primary and backup is neither."""
    data = {"from": old, "to": new, "agent": agent_name}
    if new == "holding" and old != "holding":
        return "stream.interrupted", data
    if old == "holding" and new != "holding":
        return "stream.resumed", data
    return None


def in_use(role: str, held: asyncpg.Record) -> InUse:
    """1009 for a claim on an agent that does not hold the stream, saying where it is held
    (an agent name and its public ingest URL: no secrets)."""
    if role == "backup":
        reason = "the backup must publish to the agent that holds the stream"
    else:
        reason = "the stream is live on another agent"
    details = {
        "reason": reason,
        "agent": held["agent_name"],
        "ingestUrl": held["ingest_url"],
        "ingestState": held["ingest_state"],
    }
    return InUse("Stream already live on another agent", details=details)


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
    errors=("404", "429"),
    conflicts=(1009,),
    description="Unknown keys are limited per agent (429: RIG_RATE_LIMIT_AGENT_MISSES).",
)
async def claim(request: web.Request) -> Claimed:
    """Claim a stream key (primary or backup) for a publish starting on this agent;
    returns the stream's broadcast on this agent (see the module docstring)."""
    lookup = request.app[RATE_LIMITS].key_lookup(agent_claims(request).subject)
    agent = await require_agent(request)
    ingest_url = (await read_body(request, ClaimRequest)).ingestUrl
    ttl = request.app[SETTINGS].claim_ttl
    async with request.app[POOL].acquire() as conn, conn.transaction():
        stream = await stream_of_key(conn, request.match_info["streamKey"], lock=True)
        if stream is None:
            raise NotFound("Stream not found")
        request.app[RATE_LIMITS].guessed_right(lookup)
        role, state = stream["role"], STATE_OF_ROLE[stream["role"]]
        held = await conn.fetchrow(
            f"""SELECT c.claim_id, c.agent_id, c.ingest_url, c.ingest_state,
                       c.expires_at > now() AS live, a.name AS agent_name,
                       {CLAIM_HOLDING} AS holding
                  FROM stream_claims c JOIN agents a ON a.id = c.agent_id
                 WHERE c.stream_id = $1""",
            stream["id"],
        )
        if held is not None and held["agent_id"] == agent.id:
            primary_url = ingest_url if role == "primary" else None
            granted = await join_claim(conn, held["claim_id"], primary_url, ttl)
        else:
            taking_over = held is not None and held["live"]
            if taking_over and held["ingest_state"] != "holding":
                raise in_use(role, held)
            if held is not None:  # its broadcast is over: expired, or holding and taken over
                await end_sessions(conn, [held], "taken over" if taking_over else "expired")
            granted = await grant_claim(
                conn,
                stream["id"],
                uuid.uuid4(),
                agent.id,
                ingest_url,
                ttl,
                state,
                take_over_holding=True,
            )
            if granted is None:  # a heartbeat re-granted another agent's claim meanwhile
                raise InUse("Stream already live on another agent")
            await open_session(conn, stream["id"], granted["claim_id"], agent.name, ingest_url)
            if taking_over:
                event, data = (
                    "stream.resumed",
                    {"from": "holding", "to": state, "agent": agent.name},
                )
            else:
                event, data = "stream.live", {"agent": agent.name, "ingestUrl": ingest_url}
            await webhooks.enqueue(conn, stream["id"], event, data)
        destinations = await fetch_destinations(
            conn, stream["id"], request.app[SETTINGS].service_urls
        )
        wanted = await picture_wanted(conn, stream["id"])
    return Claimed(
        claimId=granted["claim_id"],
        streamId=stream["id"],
        expiresAt=granted["expires_at"],
        destinations=destinations,
        role=role,
        disconnectProtection=disconnect_protection(stream),
        thumbnailWanted=wanted,
    )


@routes.delete(
    "/agents/claims/{claimID}",
    "releaseClaim",
    **AGENTS,
    summary="The publish ended: release the claim, with the final figures (extension)",
    message="Claim released",
    payload=None,
    body=Release,
    body_required=False,
    errors=("404",),
    description="Without a body the reason is `ended`. With one, its `health` (as in a"
    " heartbeat) goes into the session before it ends with `reason`.",
)
async def release(request: web.Request) -> None:
    """The publish ended: release the claim (stream goes offline at once) and end its
    session with the agent's reason and final figures."""
    agent = await require_agent(request)
    try:
        claim_id = uuid.UUID(request.match_info["claimID"])
    except ValueError as exc:
        raise NotFound("Claim not found") from exc
    body = await read_optional_body(request, Release) or Release()
    health = sanitise_health(body.health)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if health:
            await record_health(conn, claim_id, health)
        gone = await conn.fetchrow(
            f"DELETE FROM stream_claims WHERE claim_id = $1 AND agent_id = $2"
            f" RETURNING stream_id, claim_id, {CLAIM_HOLDING} AS holding",
            claim_id,
            agent.id,
        )
        if gone is None:
            raise NotFound("Claim not found")
        await end_sessions(conn, [gone], body.reason)
        await webhooks.enqueue(conn, gone["stream_id"], "stream.offline", {"reason": body.reason})


def claim_entry(raw: Any) -> tuple[ClaimBeat, dict] | InvalidClaimAnswer:
    """One heartbeat entry read on its own: the claim and its sanitised health, or the
    answer for an entry rig cannot read (the other entries are renewed all the same)."""
    if not isinstance(raw, dict):
        return InvalidClaimAnswer(claimId=None, status="invalid", reason="each claim is an object")
    claim_id = raw.get("claimId")
    claim_text = fact(claim_id, str) if isinstance(claim_id, str) else None
    try:
        item = validate(ClaimBeat, {**raw, "health": None})
    except ApiError as error:
        reason = fact(_reason(error), str) or "invalid"
        return InvalidClaimAnswer(claimId=claim_text, status="invalid", reason=reason)
    health = raw.get("health")
    if isinstance(health, dict) and health.get("ingestState") not in (None, *INGEST_STATES):
        # Not a figure to drop: it decides holding and takeovers. Nothing changes.
        reason = "health.ingestState: live, backup or holding"
        return InvalidClaimAnswer(claimId=claim_text, status="invalid", reason=reason)
    return item, sanitise_health(health)


def _reason(error: ApiError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    field = details.get("field")
    reason = details.get("reason") or ("missing" if isinstance(error, MissingInput) else "")
    return f"{field}: {reason}" if field and reason else error.message


def _backup_status(stream: asyncpg.Record, backup_key: str | None) -> str | None:
    """`revoked` when the backup publisher's key is no longer the stream's backup key
    (rotated): the agent ends that publisher. None when the entry named no backup."""
    if backup_key is None:
        return None
    current = stream["backup_stream_key"]
    same = current is not None and secrets.compare_digest(current.encode(), backup_key.encode())
    return "live" if same else "revoked"


def _failing(dest: Mapping[str, Any]) -> bool:
    """The destination is failing: in backoff or failed, or connecting again after a
    failure (the agent keeps its lastError until it is live again)."""
    state = dest.get("state")
    return state in FAILING_STATES or (state == "connecting" and bool(dest.get("lastError")))


def destination_transitions(old: Any, new: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """Webhook events for destinations that started failing or recovered: one
    destination.failed for a destination the agent keeps retrying, not one a retry."""
    before = {
        d.get("id"): _failing(d) for d in (old or {}).get("destinations", []) if isinstance(d, dict)
    }
    events = []
    for dest in new.get("destinations", []):
        if not isinstance(dest, dict):
            continue
        state, was_failing = dest.get("state"), before.get(dest.get("id"), False)
        data = {"destinationId": dest.get("id"), "state": state, "error": dest.get("lastError")}
        if state in FAILING_STATES and not was_failing:
            events.append(("destination.failed", data))
        elif state == "live" and was_failing:
            events.append(("destination.recovered", data))
    return events


async def _renew(
    conn: asyncpg.Connection,
    agent: Any,
    item: ClaimBeat,
    health: dict,
    ttl: int,
    service_urls: Mapping[str, str],
) -> ClaimAnswer:
    """Renew one claim (re-granting it if it expired meanwhile) or say it is revoked."""
    claim_id = item.claimId
    stream = await stream_of_key(conn, item.streamKey)
    if stream is None:  # key rotated, stream deactivated or deleted
        return ClaimAnswer(claimId=claim_id, status="revoked")
    old = await conn.fetchrow(
        "SELECT health, ingest_state FROM stream_claims WHERE claim_id = $1 AND agent_id = $2"
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
        await open_session(conn, stream["id"], claim_id, agent.name, ingest_url)
        await webhooks.enqueue(conn, stream["id"], "stream.live", {"agent": agent.name})
        old_health, old_state = None, "live"
    else:
        old_health = json.loads(old["health"]) if old["health"] else None
        old_state = old["ingest_state"]
    state = health.get("ingestState") or "live"
    # SET expressions read the row as it was: a holding period that ends here is added.
    await conn.execute(
        """UPDATE stream_claims
              SET expires_at = now() + $2 * interval '1 second', health = $3,
                  ingest_state = $4,
                  state_since = CASE WHEN ingest_state = $4 THEN state_since ELSE now() END,
                  holding_seconds = holding_seconds
                      + CASE WHEN ingest_state = 'holding' AND $4 <> 'holding'
                             THEN extract(epoch FROM now() - state_since) ELSE 0 END
            WHERE claim_id = $1""",
        claim_id,
        ttl,
        json.dumps(health),
        state,
    )
    destinations = await fetch_destinations(conn, stream["id"], service_urls)
    await record_health(conn, claim_id, health, destinations)
    events = destination_transitions(old_health, health)
    if transition := state_transition(old_state, state, agent.name):
        events.insert(0, transition)
    for event, data in events:
        await webhooks.enqueue(conn, stream["id"], event, data)
    return ClaimAnswer(
        claimId=claim_id,
        status="live",
        destinations=destinations,
        disconnectProtection=disconnect_protection(stream),
        backupStatus=_backup_status(stream, item.backupStreamKey),
        thumbnailWanted=await picture_wanted(conn, stream["id"]),
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
    # A batch of claims with their health is larger than the API's other bodies.
    batch = await read_body(request.clone(client_max_size=HEARTBEAT_BODY_MAX), Heartbeat)
    entries = [claim_entry(raw) for raw in batch.claims]
    settings = request.app[SETTINGS]
    answers: list[ClaimAnswer | InvalidClaimAnswer] = []
    async with request.app[POOL].acquire() as conn:
        for entry in entries:
            if isinstance(entry, InvalidClaimAnswer):
                answers.append(entry)
                continue
            item, health = entry
            try:
                async with conn.transaction():
                    answer = await _renew(
                        conn, agent, item, health, settings.claim_ttl, settings.service_urls
                    )
            except asyncpg.PostgresError as exc:  # this claim only (the database is up)
                log.warning("heartbeat: claim %s not renewed: %s", item.claimId, type(exc).__name__)
                answer = InvalidClaimAnswer(
                    claimId=str(item.claimId), status="invalid", reason="could not be renewed"
                )
            answers.append(answer)
    return HeartbeatAnswer(claims=answers)


async def sweep_expired(pool: asyncpg.Pool) -> int:
    """Delete expired claims, recording stream.offline for each; returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "DELETE FROM stream_claims WHERE expires_at <= now()"
            f" RETURNING stream_id, claim_id, {CLAIM_HOLDING} AS holding"
        )
        await end_sessions(conn, rows, "expired")
        for row in rows:
            await webhooks.enqueue(conn, row["stream_id"], "stream.offline", {"reason": "expired"})
    if rows:
        log.info("expired %d claim(s) not renewed by their agent", len(rows))
    return len(rows)


async def claim_sweeper(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: expire claims in the background while the app runs."""
    pauses = PauseLog(log, "claim sweeper")

    async def loop() -> None:
        while True:
            try:
                await sweep_expired(app[POOL])
                pauses.succeeded()
            except OUTAGE_ERRORS as exc:
                pauses.failed(exc)
            await asyncio.sleep(SWEEP_SECONDS)

    async with worker(app, "claim sweeper", loop):
        yield
