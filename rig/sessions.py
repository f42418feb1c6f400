"""Live sessions: the record of each broadcast of a stream (docs/agent-protocol.md#sessions).

A session opens when a claim is granted, takes the facts of every heartbeat (the
ingest's, merged field by field; each destination's, merged by id, so a destination
removed mid-session stays in the report, and so does its last error after it recovered:
the session says whether a destination got the whole broadcast) and ends on release
(the agent's reason and final figures), on expiry (`expired`), on a kick by rig (`key
changed`, `deactivated`) or when another agent takes a holding stream over (`taken
over`). Deleting a stream deletes its sessions. Everything is in PostgreSQL: the
numbers survive a rig restart, and any rig replica answers for any session.

The agent's counters (INGEST_COUNTERS, DESTINATION_COUNTERS) are cumulative since its
process started relaying the publish; a publish continued by a new process (a crashed
worker, a restarted agent, the publisher back within the claim TTL) counts again from 0
under the same claim. The session keeps its counters cumulative over the whole
broadcast: when one of a source's (the ingest's, one destination's) counters is lower
than last reported, that source's counting restarted, and what it reports from then on
is added to what the session had counted before (`counted`). The last reported values
are kept under REPORTED.

What the agent reports is sanitised here once more: only the known fields, with the
right types, strings cut to 200 characters, so one odd report cannot spoil a session.
"""

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from rig.diagnostics import diagnose
from rig.shapes import Destination, Session, SessionDestination, SessionIngest

TEXT_MAX = 200
# A claim's holding time so far, the current holding period included
# (sql/0006_disconnect_protection.sql).
CLAIM_HOLDING = (
    "holding_seconds + CASE WHEN ingest_state = 'holding'"
    " THEN extract(epoch FROM now() - state_since) ELSE 0 END"
)
# Ingest facts kept, with their JSON types (docs/agent-protocol.md#heartbeat-health).
INGEST_FACTS: dict[str, type] = {
    "videoCodec": str,
    "audioCodec": str,
    "width": int,
    "height": int,
    "frameRate": float,
    "keyframeInterval": float,
    "audioSampleRate": int,
    "audioChannels": int,
    "bytesIn": int,
    "bitrate": int,
    "profile": str,
    "level": str,
    "pixelFormat": str,
}
DESTINATION_FACTS: dict[str, type] = {
    "service": str,
    "bytesSent": int,
    "liveSeconds": float,
    "reconnects": int,
    "lastError": str,
}
# The cumulative counters among the facts (the others are gauges or facts of the media).
INGEST_COUNTERS = ("bytesIn",)
DESTINATION_COUNTERS = ("bytesSent", "liveSeconds", "reconnects")
# The key, in the session's ingest and in each destination, of the counters as last
# reported (not part of the answer: session_payload reads the known fields only).
REPORTED = "reported"


def fact(value: Any, kind: type) -> Any:
    """`value` if it is a sane `kind` (None otherwise): finite, non-negative numbers;
    strings without control characters, cut to TEXT_MAX."""
    if kind is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # a level may come as 41 or "4.1"
        if not isinstance(value, str):
            return None
        return "".join(c for c in value if c.isprintable())[:TEXT_MAX]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value) if kind is int else float(value)


def _facts(source: Any, fields: Mapping[str, type]) -> dict[str, Any]:
    if not isinstance(source, dict):
        return {}
    picked = {name: fact(source.get(name), kind) for name, kind in fields.items()}
    return {name: value for name, value in picked.items() if value is not None}


def ingest_facts(health: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ingest facts of one health report (None: it had none)."""
    facts = _facts(health.get("ingest"), INGEST_FACTS)
    return facts or None


def destination_facts(
    health: Mapping[str, Any], known: Iterable[Destination] = ()
) -> dict[str, dict[str, Any]]:
    """Destination id (as text) -> its figures; the service from rig's own records when
    the destination still exists (rig knows its services), else as reported."""
    services = {dest.id: dest.service for dest in known}
    merged: dict[str, dict[str, Any]] = {}
    reported = health.get("destinations")
    for item in reported if isinstance(reported, list) else []:
        if not isinstance(item, dict):
            continue
        dest_id = item.get("id")
        if isinstance(dest_id, bool) or not isinstance(dest_id, int):
            continue  # only rig's destination ids mean anything here
        facts = _facts(item, DESTINATION_FACTS)
        if dest_id in services:
            facts["service"] = services[dest_id]
        merged[str(dest_id)] = facts
    return merged


def counted(
    old: Mapping[str, Any], new: Mapping[str, Any], counters: Iterable[str]
) -> dict[str, Any]:
    """A source's facts in the session: `new` merged over `old` field by field, and its
    counters cumulative over the session (see the module docstring): the session's total
    is what it had counted before the reporting process started counting, plus what that
    process reports. Counters that only rise give the reported values unchanged."""
    last = old.get(REPORTED, old)  # a session stored before REPORTED: its totals
    restarted = any(new[name] < last.get(name, 0) for name in counters if name in new)
    merged = {**old, **new}
    reported = {} if restarted else {name: last[name] for name in counters if name in last}
    for name in counters:
        if name in new:
            before = old.get(name, 0) - (0 if restarted else last.get(name, 0))
            merged[name] = before + new[name]
            reported[name] = new[name]
    merged[REPORTED] = reported
    return merged


async def open_session(
    conn: asyncpg.Connection,
    stream_id: uuid.UUID,
    claim_id: uuid.UUID,
    agent_name: str | None,
    ingest_url: str | None,
) -> None:
    """A claim was granted: its session starts. A claim granted again under the same id
    (an agent renewing after rig expired it) continues its session. A session of the
    stream still open belonged to an expired claim: it ends as `expired`."""
    await conn.execute(
        "UPDATE stream_sessions SET ended_at = now(), end_reason = 'expired'"
        " WHERE stream_id = $1 AND ended_at IS NULL AND claim_id <> $2",
        stream_id,
        claim_id,
    )
    reopened = await conn.fetchval(
        """UPDATE stream_sessions SET ended_at = NULL, end_reason = NULL
            WHERE id = (SELECT id FROM stream_sessions
                         WHERE claim_id = $1 AND stream_id = $2
                         ORDER BY started_at DESC LIMIT 1)
              AND (ended_at IS NULL OR end_reason = 'expired')
        RETURNING id""",
        claim_id,
        stream_id,
    )
    if reopened is None:
        await conn.execute(
            "INSERT INTO stream_sessions (id, stream_id, claim_id, agent_name, ingest_url)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4(),
            stream_id,
            claim_id,
            agent_name,
            ingest_url,
        )


async def record_health(
    conn: asyncpg.Connection,
    claim_id: uuid.UUID,
    health: Mapping[str, Any],
    known: Iterable[Destination] = (),
) -> None:
    """A heartbeat's (or a release's) figures into the claim's open session, and the
    claim's holding time (read before the claim row goes). The ingest's facts merged
    field by field; each destination's by id, so a report without lastError (the
    destination recovered) keeps the session's last error; counters kept cumulative."""
    session = await conn.fetchrow(
        "SELECT id, ingest, destinations FROM stream_sessions"
        " WHERE claim_id = $1 AND ended_at IS NULL FOR UPDATE",
        claim_id,
    )
    if session is None:
        return
    ingest = json.loads(session["ingest"]) if session["ingest"] else None
    if facts := ingest_facts(health):
        ingest = counted(ingest or {}, facts, INGEST_COUNTERS)
    destinations = json.loads(session["destinations"])
    for dest_id, facts in destination_facts(health, known).items():
        destinations[dest_id] = counted(destinations.get(dest_id, {}), facts, DESTINATION_COUNTERS)
    await conn.execute(
        f"""UPDATE stream_sessions s
               SET ingest = $2::jsonb, destinations = $3::jsonb,
                   holding_seconds = coalesce(
                       (SELECT {CLAIM_HOLDING} FROM stream_claims WHERE claim_id = $4),
                       s.holding_seconds)
             WHERE s.id = $1""",
        session["id"],
        None if ingest is None else json.dumps(ingest),
        json.dumps(destinations),
        claim_id,
    )


async def end_sessions(
    conn: asyncpg.Connection, claims: Iterable[Mapping[str, Any]], reason: str
) -> None:
    """End the sessions of claims that are gone. Each item has `claim_id` and `holding`
    (the claim's CLAIM_HOLDING, read as it was deleted)."""
    claims = list(claims)
    if not claims:
        return
    await conn.execute(
        """UPDATE stream_sessions s
              SET ended_at = now(), end_reason = $3, holding_seconds = gone.holding
             FROM unnest($1::uuid[], $2::float8[]) AS gone (claim_id, holding)
            WHERE s.claim_id = gone.claim_id AND s.ended_at IS NULL""",
        [c["claim_id"] for c in claims],
        [float(c["holding"] or 0) for c in claims],
        reason,
    )


SESSION_COLUMNS = (
    "id, started_at, ended_at, end_reason, agent_name, ingest, destinations, holding_seconds"
)


def session_payload(row: Mapping[str, Any], now: datetime | None = None) -> Session:
    """The session answer: averageBitrate = bytesIn * 8 / duration (to its end, or now)."""
    ingest = json.loads(row["ingest"]) if row["ingest"] else {}
    end = row["ended_at"] or now or datetime.now(UTC)
    duration = (end - row["started_at"]).total_seconds()
    bytes_in = ingest.get("bytesIn", 0)
    destinations = json.loads(row["destinations"]) if row["destinations"] else {}
    average = round(bytes_in * 8 / duration) if duration > 0 else 0
    services = [facts["service"] for facts in destinations.values() if facts.get("service")]
    found = diagnose({**ingest, "bitrate": average}, services)
    return Session(
        id=row["id"],
        startedAt=row["started_at"],
        endedAt=row["ended_at"],
        endReason=row["end_reason"],
        agent=row["agent_name"],
        ingest=SessionIngest(
            videoCodec=ingest.get("videoCodec"),
            audioCodec=ingest.get("audioCodec"),
            width=ingest.get("width"),
            height=ingest.get("height"),
            frameRate=ingest.get("frameRate"),
            audioSampleRate=ingest.get("audioSampleRate"),
            audioChannels=ingest.get("audioChannels"),
            keyframeInterval=ingest.get("keyframeInterval"),
            bytesIn=bytes_in,
            averageBitrate=average,
        ),
        destinations=[
            SessionDestination(
                id=int(dest_id),
                service=facts.get("service"),
                bytesSent=facts.get("bytesSent", 0),
                liveSeconds=facts.get("liveSeconds", 0.0),
                reconnects=facts.get("reconnects", 0),
                lastError=facts.get("lastError"),
            )
            for dest_id, facts in sorted(destinations.items(), key=lambda item: int(item[0]))
        ],
        holdingSeconds=round(row["holding_seconds"], 1),
        diagnostics=found,
    )
