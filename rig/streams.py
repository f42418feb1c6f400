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
from rig.api import ApiRoutes
from rig.appkeys import POOL, SETTINGS
from rig.auth import require_any_stream, require_user
from rig.body import invalid, missing, read_body, read_optional_body
from rig.errors import CreateFailed, MissingInput, NotFound, UpdateFailed, success
from rig.netpolicy import host_problem
from rig.pages import paged, read_page
from rig.payloads import (
    DESTINATION_COLUMNS,
    STREAM_COLUMNS,
    STREAM_FROM,
    destination_payload,
    fetch_destinations,
    stats_payload,
    stream_detail_payload,
    stream_payload,
)
from rig.services import CUSTOM
from rig.sessions import CLAIM_HOLDING, SESSION_COLUMNS, end_sessions, session_payload
from rig.shapes import (
    Destination,
    DestinationChange,
    DestinationDeleted,
    KeyChanged,
    NewDestination,
    NewStream,
    Page,
    Session,
    Stream,
    StreamChange,
    StreamDeleted,
    StreamDetail,
    StreamStats,
    Webhook,
    WebhookChange,
)

routes = ApiRoutes()
STREAMS = {"tag": "streams", "auth": "user"}
ONE_STREAM = {**STREAMS, "errors": ("404",)}


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
    """The stream named in the path, with its live state, if the caller owns it (and,
    with an API key restricted to one stream, if it is that stream)."""
    user = await require_user(request)
    stream_id = parse_uuid(request, "streamID", "Stream")
    row = await request.app[POOL].fetchrow(
        f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM} WHERE s.id = $1 AND s.user_id = $2",
        stream_id,
        user.id,
    )
    if row is None or not user.may_see(stream_id):
        raise NotFound("Stream not found")
    return row


async def stream_row(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: uuid.UUID
) -> asyncpg.Record:
    """The stream with its live state (a stream deleted meanwhile is not found)."""
    row = await conn.fetchrow(
        f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM} WHERE s.id = $1", stream_id
    )
    if row is None:
        raise NotFound("Stream not found")
    return row


async def revoke_live_claim(conn: asyncpg.Connection, stream_id: uuid.UUID, reason: str) -> None:
    """End the stream's live session: its agent learns at the next heartbeat and kicks
    the publisher (a leaked key, once rotated, must throw the intruder out)."""
    ended = await conn.fetchrow(
        "DELETE FROM stream_claims WHERE stream_id = $1"
        f" RETURNING stream_id, claim_id, {CLAIM_HOLDING} AS holding",
        stream_id,
    )
    if ended is not None:
        await end_sessions(conn, [ended], reason)
        await webhooks.enqueue(conn, stream_id, "stream.offline", {"reason": reason})


@routes.post(
    "/streams/",
    "createStream",
    **STREAMS,
    summary="Create a stream with a fresh 128-bit ingest key (optional body: its name)",
    message="New stream created",
    payload=Stream,
    body=NewStream,
    body_required=False,
    description="Without a body it works exactly as in v1 (no Content-Type needed).",
)
async def create_stream(request: web.Request) -> Stream:
    """A new stream with a fresh ingest key, and (extension) the name in the body."""
    user = await require_user(request)
    require_any_stream(user)
    body = await read_optional_body(request, NewStream)
    stream_id = uuid.uuid4()
    await request.app[POOL].execute(
        "INSERT INTO streams (id, user_id, stream_key, webhook_secret, name)"
        " VALUES ($1, $2, $3, $4, $5)",
        stream_id,
        user.id,
        new_stream_key(),
        webhooks.new_webhook_secret(),
        body.name if body else None,
    )
    return stream_payload(await stream_row(request.app[POOL], stream_id), None)


@routes.get(
    "/streams/",
    "listStreams",
    **STREAMS,
    summary="The caller's streams, oldest first (without destinations); pages with limit",
    message="Stream list for user",
    payload=list[Stream],
    query=Page,
    response_headers=("X-Total-Count",),
    description="With `limit` (and `page`, from 1) one page of the list, still an array;"
    " the `X-Total-Count` header has the total. A page past the end is an empty array.",
)
async def list_streams(request: web.Request) -> web.StreamResponse | list[Stream]:
    """The caller's streams, oldest first, without destinations; (extension) a page."""
    user = await require_user(request)
    paging = read_page(request)
    only = user.grant.stream_id if user.grant else None
    rows = await request.app[POOL].fetch(
        f"SELECT {STREAM_COLUMNS} FROM {STREAM_FROM}"
        " WHERE s.user_id = $1 AND ($2::uuid IS NULL OR s.id = $2)"
        " ORDER BY s.created_at, s.id LIMIT $3 OFFSET $4",
        user.id,
        only,
        paging.limit,
        paging.offset,
    )
    streams = [stream_payload(row, None, listing=True) for row in rows]
    if paging.limit is None:
        return streams
    total = await request.app[POOL].fetchval(
        "SELECT count(*) FROM streams WHERE user_id = $1 AND ($2::uuid IS NULL OR id = $2)",
        user.id,
        only,
    )
    return paged(success("Stream list for user", streams), total)


@routes.get(
    "/streams/{streamID}",
    "getStream",
    **ONE_STREAM,
    summary="One stream with its destinations and live health",
    message="Stream detail",
    payload=StreamDetail,
)
async def stream_detail(request: web.Request) -> StreamDetail:
    """One stream with its destinations and (extension) its live `health`."""
    row = await owned_stream(request)
    destinations = await fetch_destinations(
        request.app[POOL], row["id"], request.app[SETTINGS].service_urls
    )
    return stream_detail_payload(row, destinations)


def stream_changes(body: StreamChange) -> dict[str, Any]:
    """The streams columns a PATCH body changes (none: 1004)."""
    changes: dict[str, Any] = {}
    if "name" in body.model_fields_set:  # given, even as null (which removes the name)
        changes["name"] = body.name
    if body.isActive is not None:
        changes["is_active"] = body.isActive
    protection = body.disconnectProtection
    if protection is not None:
        if protection.enabled is None and protection.graceSeconds is None:
            raise MissingInput(
                "Nothing to update: give disconnectProtection.enabled or .graceSeconds",
                details={"field": "disconnectProtection"},
            )
        if protection.enabled is not None:
            changes["protection_enabled"] = protection.enabled
        if protection.graceSeconds is not None:
            changes["grace_seconds"] = protection.graceSeconds
    if not changes:
        raise MissingInput(
            "Nothing to update: give name, isActive or disconnectProtection",
            details={"field": "isActive"},
        )
    return changes


@routes.patch(
    "/streams/{streamID}",
    "updateStream",
    **ONE_STREAM,
    summary="Activate or deactivate a stream; change its disconnect protection (extension)",
    message="Stream updated",
    payload=Stream,
    body=StreamChange,
    description="Deactivating ends a live publish within one agent heartbeat; a changed"
    " disconnectProtection reaches a live stream's agent with its next heartbeat.",
)
async def update_stream(request: web.Request) -> Stream:
    """Extension: activate or deactivate a stream, change its disconnect protection
    (partial). Deactivating ends its live session."""
    row = await owned_stream(request)
    changes = stream_changes(await read_body(request, StreamChange))
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await conn.execute(
            f"UPDATE streams SET {assignments} WHERE id = $1", row["id"], *changes.values()
        )
        if changes.get("is_active") is False:
            await revoke_live_claim(conn, row["id"], "deactivated")
        updated = await stream_row(conn, row["id"])
        destinations = await fetch_destinations(conn, row["id"], request.app[SETTINGS].service_urls)
    return stream_payload(updated, destinations)


@routes.delete(
    "/streams/{streamID}",
    "deleteStream",
    **ONE_STREAM,
    summary="Delete a stream and its destinations (extension)",
    message="Stream deleted",
    payload=StreamDeleted,
)
async def delete_stream(request: web.Request) -> StreamDeleted:
    """Extension: delete a stream and its destinations; a live publish is ended."""
    row = await owned_stream(request)
    await request.app[POOL].execute("DELETE FROM streams WHERE id = $1", row["id"])
    return StreamDeleted(streamID=row["id"])


@routes.post(
    "/streams/{streamID}/destination",
    "addDestination",
    **ONE_STREAM,
    summary="Add a destination: a service and its stream key (Custom: + rtmpUrl)",
    message="Stream destination added",
    payload=Destination,
    body=NewDestination,
    conflicts=(1006,),
)
async def add_destination(request: web.Request) -> Destination:
    """Add a destination: a service and that service's stream key (Custom: + rtmpUrl)."""
    row = await owned_stream(request)
    body = await read_body(request, NewDestination)
    if body.service == CUSTOM and body.rtmpUrl is None:
        raise missing("rtmpUrl")
    server_url = body.rtmpUrl if body.service == CUSTOM else None
    if server_url is not None:
        await check_public(request, "rtmpUrl", server_url)
    limit = request.app[SETTINGS].max_destinations
    async with request.app[POOL].acquire() as conn, conn.transaction():
        # The stream's row lock makes "at most `limit`" hold for concurrent adds too.
        locked = await conn.fetchval("SELECT 1 FROM streams WHERE id = $1 FOR UPDATE", row["id"])
        if locked is None:  # the stream was deleted meanwhile
            raise NotFound("Stream not found")
        count = await conn.fetchval(
            "SELECT count(*) FROM destinations WHERE stream_id = $1", row["id"]
        )
        if count >= limit:
            raise CreateFailed(
                f"Unable to add destination: a stream has at most {limit} destinations",
                details={
                    "field": "destinations",
                    "reason": f"at most {limit} destinations per stream",
                },
            )
        # ON CONFLICT DO NOTHING: a duplicate raises no error, so PostgreSQL logs nothing
        # about it (an error's DETAIL would print the key; sql/0007).
        dest = await conn.fetchrow(
            "INSERT INTO destinations (stream_id, service, stream_key, server_url)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
            f" RETURNING {DESTINATION_COLUMNS}",
            row["id"],
            body.service,
            body.streamKey,
            server_url,
        )
    if dest is None:
        raise CreateFailed(
            "Unable to add destination: it already exists",
            details={"field": "streamKey", "reason": "duplicate destination"},
        )
    return destination_payload(dest, request.app[SETTINGS].service_urls)


async def check_public(request: web.Request, field: str, url: str) -> None:
    """1005 when a user's URL points at a non-public address (rig/netpolicy.py): checked
    again, on the address connected to, by the webhook sender and the agent."""
    host = urlsplit(url).hostname or ""
    problem = await host_problem(host, request.app[SETTINGS].allow_private_destinations)
    if problem:
        raise invalid(
            field,
            f"{problem}: rig connects only to public addresses for you (the operator can"
            " allow others with RIG_ALLOW_PRIVATE_DESTINATIONS, and the agents with"
            " RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS)",
        )


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


@routes.patch(
    "/streams/{streamID}/destination/{destinationID}",
    "updateDestination",
    **ONE_STREAM,
    summary="Change a destination's streamKey, isActive or (Custom) rtmpUrl (extension)",
    message="Stream destination updated",
    payload=Destination,
    body=DestinationChange,
    conflicts=(1007,),
    description="A live stream's agent applies the change within one heartbeat.",
)
async def update_destination(request: web.Request) -> Destination:
    """Extension: change a destination's `streamKey`, `isActive` or (Custom) `rtmpUrl`.

    A live stream's agent applies the change within one heartbeat, restarting only
    this destination.
    """
    _stream, dest = await owned_destination(request)
    body = await read_body(request, DestinationChange)
    changes: dict[str, Any] = {}
    if body.streamKey is not None:
        changes["stream_key"] = body.streamKey
    if body.isActive is not None:
        changes["is_active"] = body.isActive
    if body.rtmpUrl is not None:
        if dest["service"] != CUSTOM:
            raise invalid("rtmpUrl", "only Custom destinations have their own rtmpUrl")
        await check_public(request, "rtmpUrl", body.rtmpUrl)
        changes["server_url"] = body.rtmpUrl
    if not changes:
        raise MissingInput(
            "Nothing to update: give streamKey, isActive or rtmpUrl",
            details={"field": "streamKey"},
        )
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=4))
    try:
        # The duplicate check is part of the UPDATE, so a duplicate raises no error for
        # PostgreSQL to log with the key; only a concurrent change can still hit the
        # unique index, whose DETAIL shows a digest of the key (sql/0007).
        updated = await request.app[POOL].fetchrow(
            f"UPDATE destinations d SET {assignments} WHERE d.id = $1 AND NOT EXISTS ("
            "SELECT 1 FROM destinations o WHERE o.stream_id = d.stream_id AND o.id <> d.id"
            " AND o.service = d.service AND o.stream_key = $2"
            " AND coalesce(o.server_url, '') = coalesce($3, ''))"
            f" RETURNING {DESTINATION_COLUMNS}",
            dest["id"],
            changes.get("stream_key", dest["stream_key"]),
            changes.get("server_url", dest["server_url"]),
            *changes.values(),
        )
    except asyncpg.UniqueViolationError as exc:
        raise duplicate_destination() from exc
    if updated is None:
        if await request.app[POOL].fetchval("SELECT 1 FROM destinations WHERE id = $1", dest["id"]):
            raise duplicate_destination()
        raise NotFound("Destination not found")
    return destination_payload(updated, request.app[SETTINGS].service_urls)


def duplicate_destination() -> UpdateFailed:
    return UpdateFailed(
        "Unable to update destination: the same destination already exists",
        details={"field": "streamKey", "reason": "duplicate destination"},
    )


@routes.delete(
    "/streams/{streamID}/destination/{destinationID}",
    "deleteDestination",
    **ONE_STREAM,
    summary="Remove a destination (extension)",
    message="Stream destination deleted",
    payload=DestinationDeleted,
)
async def delete_destination(request: web.Request) -> DestinationDeleted:
    """Extension: remove a destination (a live stream stops sending there)."""
    _stream, dest = await owned_destination(request)
    await request.app[POOL].execute("DELETE FROM destinations WHERE id = $1", dest["id"])
    return DestinationDeleted(id=dest["id"])


@routes.post(
    "/streams/{streamID}/changeKey",
    "changeStreamKey",
    **ONE_STREAM,
    summary="Rotate the ingest key; a live publish with the old key is ended",
    message="New stream key",
    payload=KeyChanged,
)
async def change_key(request: web.Request) -> KeyChanged:
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
    return KeyChanged(key=key, streamID=row["id"])


@routes.post(
    "/streams/{streamID}/backupKey",
    "createBackupKey",
    **ONE_STREAM,
    summary="Create or rotate the backup ingest key; a live backup publish with the old key"
    " is ended (extension)",
    message="New backup stream key",
    payload=Stream,
    description="Takes no body. The answer is the stream with its new `backupStreamKey`. A"
    " backup publisher still live on the old key is ended within one agent heartbeat; the"
    " broadcast goes on.",
)
async def create_backup_key(request: web.Request) -> Stream:
    """Extension: a fresh backup key (128 bits, as stream keys). The agent learns at its
    next heartbeat that the old one is gone (backupStatus `revoked`) and ends that
    publisher only."""
    row = await owned_stream(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE streams SET backup_stream_key = $2 WHERE id = $1", row["id"], new_stream_key()
        )
        updated = await stream_row(conn, row["id"])
        destinations = await fetch_destinations(conn, row["id"], request.app[SETTINGS].service_urls)
    return stream_payload(updated, destinations)


@routes.get(
    "/streams/{streamID}/stats",
    "getStreamStats",
    **ONE_STREAM,
    summary="Live statistics: ingest and per destination (extension)",
    message="Stream statistics",
    payload=StreamStats,
)
async def stream_stats(request: web.Request) -> StreamStats:
    """Extension: live statistics, ingest and per destination (state `off` when offline
    or inactive)."""
    row = await owned_stream(request)
    destinations = await fetch_destinations(
        request.app[POOL], row["id"], request.app[SETTINGS].service_urls
    )
    return stats_payload(row, destinations)


@routes.get(
    "/streams/{streamID}/sessions",
    "listStreamSessions",
    **ONE_STREAM,
    summary="The stream's live sessions, newest first, the current one included (extension)",
    message="Stream sessions",
    payload=list[Session],
    query=Page,
    response_headers=("X-Total-Count",),
    description="Each broadcast from its claim to its end: when, why it ended, on which"
    " agent, the ingest's facts and every destination's bytes, live seconds, reconnects"
    " and last error. The current session has `endedAt` null. Pages as `GET /streams/`.",
)
async def list_sessions(request: web.Request) -> web.StreamResponse | list[Session]:
    row = await owned_stream(request)
    paging = read_page(request)
    rows = await request.app[POOL].fetch(
        f"SELECT {SESSION_COLUMNS}, now() AS now FROM stream_sessions WHERE stream_id = $1"
        " ORDER BY started_at DESC, id LIMIT $2 OFFSET $3",
        row["id"],
        paging.limit,
        paging.offset,
    )
    sessions = [session_payload(session, session["now"]) for session in rows]
    if paging.limit is None:
        return sessions
    total = await request.app[POOL].fetchval(
        "SELECT count(*) FROM stream_sessions WHERE stream_id = $1", row["id"]
    )
    return paged(success("Stream sessions", sessions), total)


async def _webhook(conn: Any, stream_id: uuid.UUID) -> Webhook:
    row = await conn.fetchrow(
        "SELECT callback_url, webhook_secret FROM streams WHERE id = $1", stream_id
    )
    return Webhook(callbackUrl=row["callback_url"], secret=row["webhook_secret"])


@routes.get(
    "/streams/{streamID}/webhook",
    "getWebhook",
    **ONE_STREAM,
    summary="The stream's callbackUrl and the secret that signs its events (extension)",
    message="Stream webhook",
    payload=Webhook,
)
async def get_webhook(request: web.Request) -> Webhook:
    """Extension: the stream's callbackUrl and the secret that signs its events."""
    row = await owned_stream(request)
    return await _webhook(request.app[POOL], row["id"])


@routes.put(
    "/streams/{streamID}/webhook",
    "setWebhook",
    **ONE_STREAM,
    summary="Set (or, with null, remove) the stream's callbackUrl (extension)",
    message="Stream webhook",
    payload=Webhook,
    body=WebhookChange,
)
async def set_webhook(request: web.Request) -> Webhook:
    """Extension: set (or, with null, remove) the stream's callbackUrl."""
    row = await owned_stream(request)
    body = await read_body(request, WebhookChange)
    if body.callbackUrl is not None:
        await check_public(request, "callbackUrl", body.callbackUrl)
    await request.app[POOL].execute(
        "UPDATE streams SET callback_url = $2,"
        " webhook_secret = coalesce(webhook_secret, $3) WHERE id = $1",
        row["id"],
        body.callbackUrl,
        webhooks.new_webhook_secret(),
    )
    return await _webhook(request.app[POOL], row["id"])
