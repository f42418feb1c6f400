"""Streams and their destinations (`/streams/...`), owned by one user each.

A stream that belongs to someone else answers 1000, exactly like one that does not
exist. Besides the spec's routes, these extensions: update and delete a stream,
update and delete a destination, `Custom` destinations with their own server URL,
live statistics, and the stream's webhook.
"""

import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from rig import webhooks
from rig.appkeys import POOL, SETTINGS
from rig.auth import require_user
from rig.body import invalid, read_json
from rig.errors import CreateFailed, MissingInput, NotFound, UpdateFailed, success
from rig.payloads import (
    DESTINATION_COLUMNS,
    STREAM_COLUMNS,
    STREAM_FROM,
    destination_payload,
    fetch_destinations,
    health_of,
    provision_status,
    stream_payload,
)
from rig.services import CUSTOM, rtmp_server_url_problem

routes = web.RouteTableDef()

DESTINATION_KEY_MAX = 512
CALLBACK_URL_MAX = 2048


def new_stream_key() -> str:
    """128 bits from the OS CSPRNG, URL-safe base64 without padding: 22 characters."""
    return secrets.token_urlsafe(16)


def parse_uuid(request: web.Request, name: str, what: str) -> uuid.UUID:
    """A UUID path parameter; a malformed one is simply not found."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError as exc:
        raise NotFound(f"{what} not found") from exc


async def owned_stream(request: web.Request) -> asyncpg.Record:
    """The stream named in the path, with its live state, if the caller owns it."""
    user = await require_user(request)
    row = await request.app[POOL].fetchrow(
        f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM} WHERE s.id = $1 AND s.user_id = $2",
        parse_uuid(request, "streamID", "Stream"),
        user.id,
    )
    if row is None:
        raise NotFound("Stream not found")
    return row


def check_destination_key(key: Any) -> str:
    """1-512 characters, no whitespace or control characters."""
    if (
        not isinstance(key, str)
        or not key
        or len(key) > DESTINATION_KEY_MAX
        or any(c.isspace() or ord(c) < 32 for c in key)
    ):
        raise invalid("streamKey", f"1 to {DESTINATION_KEY_MAX} characters, no spaces")
    return key


def check_server_url(url: Any) -> str:
    """A Custom destination's server URL: rtmp:// or rtmps://, host, application."""
    if not isinstance(url, str):
        raise invalid("rtmpUrl", "must be a string")
    problem = rtmp_server_url_problem(url)
    if problem:
        raise invalid("rtmpUrl", problem)
    return url.rstrip("/")


def optional_bool(body: dict, name: str) -> bool | None:
    """A boolean field that may be absent."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(name, "must be true or false")
    return value


async def revoke_live_claim(conn: asyncpg.Connection, stream_id: uuid.UUID, reason: str) -> None:
    """End the stream's live session: its agent learns at the next heartbeat and kicks
    the publisher (a leaked key, once rotated, must throw the intruder out)."""
    ended = await conn.fetchval(
        "DELETE FROM stream_claims WHERE stream_id = $1 RETURNING stream_id", stream_id
    )
    if ended is not None:
        await webhooks.enqueue(conn, stream_id, "stream.offline", {"reason": reason})


@routes.post("/streams/")
async def create_stream(request: web.Request) -> web.Response:
    """A new stream with a fresh ingest key. Takes no body."""
    user = await require_user(request)
    stream_id = uuid.uuid4()
    await request.app[POOL].execute(
        "INSERT INTO streams (id, user_id, stream_key, webhook_secret) VALUES ($1, $2, $3, $4)",
        stream_id,
        user.id,
        new_stream_key(),
        webhooks.new_webhook_secret(),
    )
    row = await request.app[POOL].fetchrow(
        f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM} WHERE s.id = $1", stream_id
    )
    return success("New stream created", stream_payload(row, None))


@routes.get("/streams/")
async def list_streams(request: web.Request) -> web.Response:
    """The caller's streams, oldest first, without destinations."""
    user = await require_user(request)
    rows = await request.app[POOL].fetch(
        f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM} WHERE s.user_id = $1"
        " ORDER BY s.created_at, s.id",
        user.id,
    )
    payload = [stream_payload(row, None, listing=True) for row in rows]
    return success("Stream list for user", payload)


@routes.get("/streams/{streamID}")
async def stream_detail(request: web.Request) -> web.Response:
    """One stream with its destinations and (extension) its live `health`."""
    row = await owned_stream(request)
    destinations = await fetch_destinations(
        request.app[POOL], row["id"], request.app[SETTINGS].service_urls
    )
    payload = stream_payload(row, destinations)
    payload["health"] = health_of(row)
    return success("Stream detail", payload)


@routes.patch("/streams/{streamID}")
async def update_stream(request: web.Request) -> web.Response:
    """Extension: activate or deactivate a stream. Deactivating ends its live session."""
    row = await owned_stream(request)
    body = await read_json(request, ())
    is_active = optional_bool(body, "isActive")
    if is_active is None:
        raise MissingInput("Missing required field: isActive", details={"field": "isActive"})
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await conn.execute("UPDATE streams SET is_active = $2 WHERE id = $1", row["id"], is_active)
        if not is_active:
            await revoke_live_claim(conn, row["id"], "deactivated")
        updated = await conn.fetchrow(
            f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM} WHERE s.id = $1", row["id"]
        )
    return success("Stream updated", stream_payload(updated, None))


@routes.delete("/streams/{streamID}")
async def delete_stream(request: web.Request) -> web.Response:
    """Extension: delete a stream and its destinations; a live publish is ended."""
    row = await owned_stream(request)
    await request.app[POOL].execute("DELETE FROM streams WHERE id = $1", row["id"])
    return success("Stream deleted", {"streamID": str(row["id"])})


@routes.post("/streams/{streamID}/destination")
async def add_destination(request: web.Request) -> web.Response:
    """Add a destination: a service and that service's stream key (Custom: + rtmpUrl)."""
    row = await owned_stream(request)
    body = await read_json(request, ("service", "streamKey"))
    service_urls = request.app[SETTINGS].service_urls
    service = body["service"]
    server_url = None
    if service == CUSTOM:
        if body.get("rtmpUrl") is None:
            raise MissingInput("Missing required field: rtmpUrl", details={"field": "rtmpUrl"})
        server_url = check_server_url(body["rtmpUrl"])
    elif service not in service_urls:
        known = ", ".join([*sorted(service_urls), CUSTOM])
        raise invalid("service", f"unknown service; one of {known}")
    key = check_destination_key(body["streamKey"])
    try:
        dest = await request.app[POOL].fetchrow(
            "INSERT INTO destinations (stream_id, service, stream_key, server_url)"
            f" VALUES ($1, $2, $3, $4) RETURNING {DESTINATION_COLUMNS}",
            row["id"],
            service,
            key,
            server_url,
        )
    except asyncpg.UniqueViolationError as exc:
        raise CreateFailed(
            "Unable to add destination: it already exists",
            details={"field": "streamKey", "reason": "duplicate destination"},
        ) from exc
    except asyncpg.ForeignKeyViolationError as exc:  # the stream was deleted meanwhile
        raise NotFound("Stream not found") from exc
    return success("Stream destination added", destination_payload(dest, service_urls))


async def owned_destination(request: web.Request) -> tuple[asyncpg.Record, asyncpg.Record]:
    """(stream, destination) named in the path, if the caller owns the stream."""
    stream = await owned_stream(request)
    raw_id = request.match_info["destinationID"]
    if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 18:  # bigint ids
        raise NotFound("Destination not found")
    destination_id = int(raw_id)
    dest = await request.app[POOL].fetchrow(
        f"SELECT {DESTINATION_COLUMNS} FROM destinations WHERE id = $1 AND stream_id = $2",
        destination_id,
        stream["id"],
    )
    if dest is None:
        raise NotFound("Destination not found")
    return stream, dest


@routes.patch("/streams/{streamID}/destination/{destinationID}")
async def update_destination(request: web.Request) -> web.Response:
    """Extension: change a destination's `streamKey`, `isActive` or (Custom) `rtmpUrl`.

    A live stream's agent applies the change within one heartbeat, restarting only
    this destination.
    """
    _stream, dest = await owned_destination(request)
    body = await read_json(request, ())
    changes: dict[str, Any] = {}
    if body.get("streamKey") is not None:
        changes["stream_key"] = check_destination_key(body["streamKey"])
    if (is_active := optional_bool(body, "isActive")) is not None:
        changes["is_active"] = is_active
    if body.get("rtmpUrl") is not None:
        if dest["service"] != CUSTOM:
            raise invalid("rtmpUrl", "only Custom destinations have their own rtmpUrl")
        changes["server_url"] = check_server_url(body["rtmpUrl"])
    if not changes:
        raise MissingInput(
            "Nothing to update: give streamKey, isActive or rtmpUrl",
            details={"field": "streamKey"},
        )
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    try:
        updated = await request.app[POOL].fetchrow(
            f"UPDATE destinations SET {assignments} WHERE id = $1 RETURNING {DESTINATION_COLUMNS}",
            dest["id"],
            *changes.values(),
        )
    except asyncpg.UniqueViolationError as exc:
        raise UpdateFailed(
            "Unable to update destination: the same destination already exists",
            details={"field": "streamKey", "reason": "duplicate destination"},
        ) from exc
    if updated is None:
        raise NotFound("Destination not found")
    return success(
        "Stream destination updated",
        destination_payload(updated, request.app[SETTINGS].service_urls),
    )


@routes.delete("/streams/{streamID}/destination/{destinationID}")
async def delete_destination(request: web.Request) -> web.Response:
    """Extension: remove a destination (a live stream stops sending there)."""
    _stream, dest = await owned_destination(request)
    await request.app[POOL].execute("DELETE FROM destinations WHERE id = $1", dest["id"])
    return success("Stream destination deleted", {"id": dest["id"]})


@routes.post("/streams/{streamID}/changeKey")
async def change_key(request: web.Request) -> web.Response:
    """Rotate the ingest key: new publishes need the new key at once, and a live
    publish with the old key is ended within one agent heartbeat."""
    row = await owned_stream(request)
    key = new_stream_key()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        updated = await conn.fetchval(
            "UPDATE streams SET stream_key = $2 WHERE id = $1 RETURNING id", row["id"], key
        )
        if updated is None:
            raise NotFound("Stream not found")
        await revoke_live_claim(conn, row["id"], "key changed")
    return success("New stream key", {"key": key, "streamID": str(row["id"])})


@routes.get("/streams/{streamID}/stats")
async def stream_stats(request: web.Request) -> web.Response:
    """Extension: live statistics, ingest and per destination (state `off` when offline
    or inactive)."""
    row = await owned_stream(request)
    destinations = await fetch_destinations(
        request.app[POOL], row["id"], request.app[SETTINGS].service_urls
    )
    health = health_of(row) or {}
    reported = {d.get("id"): d for d in health.get("destinations", []) if isinstance(d, dict)}
    per_destination = []
    for dest in destinations:
        live = reported.get(dest["id"]) if dest["isActive"] else None
        per_destination.append(
            {
                "id": dest["id"],
                "service": dest["service"],
                "isActive": dest["isActive"],
                "state": (live or {}).get("state", "off"),
                "lastError": (live or {}).get("lastError"),
                "bytesSent": (live or {}).get("bytesSent", 0),
                "reconnects": (live or {}).get("reconnects", 0),
            }
        )
    return success(
        "Stream statistics",
        {
            "isStreaming": row["claim_id"] is not None,
            "provisionStatus": provision_status(row),
            "ingest": health.get("ingest"),
            "destinations": per_destination,
        },
    )


def check_callback_url(url: Any) -> str | None:
    """http(s) URL, at most 2048 characters, or null to remove the webhook."""
    if url is None:
        return None
    if (
        not isinstance(url, str)
        or not url.startswith(("http://", "https://"))
        or len(url) > CALLBACK_URL_MAX
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url)  # NUL: 500 in text
        or not _has_host(url)
    ):
        raise invalid("callbackUrl", "an http:// or https:// URL of at most 2048 characters")
    return url


def _has_host(url: str) -> bool:
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


async def _webhook_payload(conn: Any, stream_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT callback_url, webhook_secret FROM streams WHERE id = $1", stream_id
    )
    return {"callbackUrl": row["callback_url"], "secret": row["webhook_secret"]}


@routes.get("/streams/{streamID}/webhook")
async def get_webhook(request: web.Request) -> web.Response:
    """Extension: the stream's callbackUrl and the secret that signs its events."""
    row = await owned_stream(request)
    return success("Stream webhook", await _webhook_payload(request.app[POOL], row["id"]))


@routes.put("/streams/{streamID}/webhook")
async def set_webhook(request: web.Request) -> web.Response:
    """Extension: set (or, with null, remove) the stream's callbackUrl."""
    row = await owned_stream(request)
    body = await read_json(request, ())
    if "callbackUrl" not in body:
        raise MissingInput("Missing required field: callbackUrl", details={"field": "callbackUrl"})
    url = check_callback_url(body["callbackUrl"])
    await request.app[POOL].execute(
        "UPDATE streams SET callback_url = $2,"
        " webhook_secret = coalesce(webhook_secret, $3) WHERE id = $1",
        row["id"],
        url,
        webhooks.new_webhook_secret(),
    )
    return success("Stream webhook", await _webhook_payload(request.app[POOL], row["id"]))
