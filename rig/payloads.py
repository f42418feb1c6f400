"""Stream and destination answers (models of rig/shapes.py) built from database rows,
and the queries that feed them."""

import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from rig.diagnostics import diagnose
from rig.services import CUSTOM, ingest_url
from rig.sessions import fact
from rig.shapes import (
    Destination,
    DestinationStats,
    DisconnectProtection,
    ProvisionStatus,
    Stream,
    StreamDetail,
    StreamStats,
)

# A stream joined with its live claim (if any): everything a stream payload needs.
STREAM_COLUMNS = """s.id, s.name, s.stream_key, s.is_active, s.backup_stream_key,
       s.protection_enabled, s.grace_seconds,
       c.claim_id, c.ingest_url, c.since, c.health, c.ingest_state, a.name AS agent_name"""
STREAM_FROM = """streams s
       LEFT JOIN stream_claims c ON c.stream_id = s.id AND c.expires_at > now()
       LEFT JOIN agents a ON a.id = c.agent_id"""


def provision_status(row: Mapping[str, Any]) -> ProvisionStatus | None:
    """Where the stream is live (agent, ingest URL, since), or None when offline."""
    if row["claim_id"] is None:
        return None
    return ProvisionStatus(agent=row["agent_name"], ingestUrl=row["ingest_url"], since=row["since"])


def ingest_state(row: Mapping[str, Any]) -> str:
    """What feeds the destinations: `offline` without a live claim, else the state its
    agent last reported (`live`, `backup`, `holding`)."""
    return "offline" if row["claim_id"] is None else row["ingest_state"]


def disconnect_protection(row: Mapping[str, Any]) -> DisconnectProtection:
    """The stream's setting, from a row with protection_enabled and grace_seconds."""
    return DisconnectProtection(
        enabled=row["protection_enabled"], graceSeconds=row["grace_seconds"]
    )


def health_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live stream's last reported health, or None when offline."""
    if row["claim_id"] is None:
        return None
    return json.loads(row["health"]) if row["health"] else {}


def _stream_fields(
    row: Mapping[str, Any], destinations: list[Destination] | None, listing: bool
) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "streamKey": row["stream_key"],
        "destinations": destinations or None,
        "provisionStatus": None if listing else provision_status(row),
        "isStreaming": row["claim_id"] is not None,
        "isActive": row["is_active"],
        "backupStreamKey": row["backup_stream_key"],
        "disconnectProtection": disconnect_protection(row),
        "ingestState": ingest_state(row),
    }


def stream_payload(
    row: Mapping[str, Any], destinations: list[Destination] | None, *, listing: bool = False
) -> Stream:
    """The spec's stream object; isStreaming and provisionStatus come from live claims.

    In a listing the spec has provisionStatus null (as destinations); isStreaming still
    tells what is live, and the detail says where.
    """
    return Stream(**_stream_fields(row, destinations, listing))


def stream_detail_payload(row: Mapping[str, Any], destinations: list[Destination]) -> StreamDetail:
    """The stream object with (extension) its live `health`."""
    return StreamDetail(**_stream_fields(row, destinations, False), health=health_of(row))


def destination_payload(row: Mapping[str, Any], service_urls: Mapping[str, str]) -> Destination:
    """The spec's destination object, with the full ingest URL."""
    base = row["server_url"] if row["service"] == CUSTOM else service_urls.get(row["service"])
    return Destination(
        id=row["id"],
        service=row["service"],
        streamKey=row["stream_key"],
        rtmpUrl=ingest_url(base, row["stream_key"]) if base else None,
        isActive=row["is_active"],
    )


def stats_payload(row: Mapping[str, Any], destinations: list[Destination]) -> StreamStats:
    """A stream's live statistics (`GET /streams/{id}/stats`, and each event of
    `GET /streams/{id}/events`): the ingest and, per destination, its state (`off` when
    the stream is offline or the destination inactive)."""
    health = health_of(row) or {}
    reported = {d.get("id"): d for d in health.get("destinations", []) if isinstance(d, dict)}
    per_destination = []
    for dest in destinations:
        # What the agent reported, each figure checked (a bad report shows as nothing).
        live = (reported.get(dest.id) if dest.isActive else None) or {}
        state = fact(live.get("state"), str) or "off"
        per_destination.append(
            DestinationStats(
                id=dest.id,
                service=dest.service,
                isActive=dest.isActive,
                state=state,
                lastError=fact(live.get("lastError"), str),
                bytesSent=fact(live.get("bytesSent"), int) or 0,
                reconnects=fact(live.get("reconnects"), int) or 0,
                retryIn=fact(live.get("retryIn"), float) if state == "backoff" else None,
                liveSeconds=fact(live.get("liveSeconds"), float),
                droppedPackets=fact(live.get("droppedPackets"), int) or 0,
            )
        )
    ingest = health.get("ingest")
    services = [dest.service for dest in destinations if dest.isActive]
    return StreamStats(
        isStreaming=row["claim_id"] is not None,
        provisionStatus=provision_status(row),
        ingestState=ingest_state(row),
        ingest=ingest,
        destinations=per_destination,
        diagnostics=diagnose(ingest, services),
    )


DESTINATION_COLUMNS = "id, service, stream_key, is_active, server_url"


async def fetch_destinations(
    conn: asyncpg.Pool | asyncpg.Connection, stream_id: uuid.UUID, service_urls: Mapping[str, str]
) -> list[Destination]:
    """Every destination of a stream, active or not, oldest first."""
    rows = await conn.fetch(
        f"SELECT {DESTINATION_COLUMNS} FROM destinations WHERE stream_id = $1 ORDER BY id",
        stream_id,
    )
    return [destination_payload(row, service_urls) for row in rows]
