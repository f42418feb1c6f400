"""Streams and their destinations (`/streams/...`), owned by one user each.

A stream that belongs to someone else answers 1000, exactly like one that does not exist.
"""

import secrets
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from rig.appkeys import POOL, SETTINGS
from rig.auth import require_user
from rig.body import invalid, read_json
from rig.errors import CreateFailed, NotFound, success
from rig.services import ingest_url

routes = web.RouteTableDef()

DESTINATION_KEY_MAX = 512


def new_stream_key() -> str:
    """128 bits from the OS CSPRNG, URL-safe base64 without padding: 22 characters."""
    return secrets.token_urlsafe(16)


def stream_payload(row: Mapping[str, Any], destinations: list[dict] | None) -> dict[str, Any]:
    """The spec's stream object. Live state (isStreaming, provisionStatus) comes later."""
    return {
        "id": str(row["id"]),
        "streamKey": row["stream_key"],
        "destinations": destinations or None,
        "provisionStatus": None,
        "isStreaming": False,
        "isActive": row["is_active"],
    }


def destination_payload(row: Mapping[str, Any], service_urls: Mapping[str, str]) -> dict:
    """The spec's destination object, with the full ingest URL."""
    base = service_urls.get(row["service"])
    return {
        "id": row["id"],
        "service": row["service"],
        "streamKey": row["stream_key"],
        "rtmpUrl": ingest_url(base, row["stream_key"]) if base else None,
        "isActive": row["is_active"],
    }


async def fetch_destinations(
    conn: asyncpg.Pool | asyncpg.Connection, stream_id: uuid.UUID, service_urls: Mapping[str, str]
) -> list[dict]:
    """Every destination of a stream, active or not, oldest first."""
    rows = await conn.fetch(
        "SELECT id, service, stream_key, is_active FROM destinations"
        " WHERE stream_id = $1 ORDER BY id",
        stream_id,
    )
    return [destination_payload(row, service_urls) for row in rows]


def parse_stream_id(request: web.Request) -> uuid.UUID:
    """The streamID path parameter; a malformed one is simply not found."""
    try:
        return uuid.UUID(request.match_info["streamID"])
    except ValueError as exc:
        raise NotFound("Stream not found") from exc


async def owned_stream(request: web.Request) -> asyncpg.Record:
    """The stream named in the path, if the caller owns it."""
    user = await require_user(request)
    row = await request.app[POOL].fetchrow(
        "SELECT id, stream_key, is_active FROM streams WHERE id = $1 AND user_id = $2",
        parse_stream_id(request),
        user.id,
    )
    if row is None:
        raise NotFound("Stream not found")
    return row


@routes.post("/streams/")
async def create_stream(request: web.Request) -> web.Response:
    """A new stream with a fresh ingest key. Takes no body."""
    user = await require_user(request)
    row = await request.app[POOL].fetchrow(
        "INSERT INTO streams (id, user_id, stream_key) VALUES ($1, $2, $3)"
        " RETURNING id, stream_key, is_active",
        uuid.uuid4(),
        user.id,
        new_stream_key(),
    )
    return success("New stream created", stream_payload(row, None))


@routes.get("/streams/")
async def list_streams(request: web.Request) -> web.Response:
    """The caller's streams, oldest first, without destinations."""
    user = await require_user(request)
    rows = await request.app[POOL].fetch(
        "SELECT id, stream_key, is_active FROM streams WHERE user_id = $1 ORDER BY created_at, id",
        user.id,
    )
    return success("Stream list for user", [stream_payload(row, None) for row in rows])


@routes.get("/streams/{streamID}")
async def stream_detail(request: web.Request) -> web.Response:
    """One stream with its destinations."""
    row = await owned_stream(request)
    destinations = await fetch_destinations(
        request.app[POOL], row["id"], request.app[SETTINGS].service_urls
    )
    return success("Stream detail", stream_payload(row, destinations))


@routes.post("/streams/{streamID}/destination")
async def add_destination(request: web.Request) -> web.Response:
    """Add a destination (service + that service's stream key) to a stream."""
    row = await owned_stream(request)
    body = await read_json(request, ("service", "streamKey"))
    service_urls = request.app[SETTINGS].service_urls
    if body["service"] not in service_urls:
        raise invalid("service", f"unknown service; one of {', '.join(sorted(service_urls))}")
    key = body["streamKey"]
    if not key or len(key) > DESTINATION_KEY_MAX or any(c.isspace() or ord(c) < 32 for c in key):
        raise invalid("streamKey", f"1 to {DESTINATION_KEY_MAX} characters, no spaces")
    try:
        dest = await request.app[POOL].fetchrow(
            "INSERT INTO destinations (stream_id, service, stream_key) VALUES ($1, $2, $3)"
            " RETURNING id, service, stream_key, is_active",
            row["id"],
            body["service"],
            key,
        )
    except asyncpg.UniqueViolationError as exc:
        raise CreateFailed(
            "Unable to add destination: it already exists",
            details={"field": "streamKey", "reason": "duplicate destination"},
        ) from exc
    except asyncpg.ForeignKeyViolationError as exc:  # the stream was deleted meanwhile
        raise NotFound("Stream not found") from exc
    return success("Stream destination added", destination_payload(dest, service_urls))


@routes.post("/streams/{streamID}/changeKey")
async def change_key(request: web.Request) -> web.Response:
    """Rotate the ingest key; the old key stops working for new publishes at once."""
    row = await owned_stream(request)
    key = new_stream_key()
    updated = await request.app[POOL].fetchval(
        "UPDATE streams SET stream_key = $2 WHERE id = $1 RETURNING id", row["id"], key
    )
    if updated is None:
        raise NotFound("Stream not found")
    return success("New stream key", {"key": key, "streamID": str(row["id"])})
