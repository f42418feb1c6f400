"""Thumbnails of live streams (docs/agent-protocol.md#thumbnail-upload).

The agent decodes the ingest's latest keyframe (at most every 10 s per live stream, off
the relay's path) into a JPEG whose longest side is 320 px and PUTs it here with its
agent token; rig keeps the latest per stream in PostgreSQL. The stream's owner GETs it
as `image/jpeg` while the stream is live and the picture is at most 15 s old.

Pictures are made only while someone looks: each GET marks the stream's picture wanted
for `WANTED_SECONDS` (`thumbnail_wanted`), and rig's claim and heartbeat answers say so
to the agent (`thumbnailWanted`), which decodes keyframes of wanted streams only. A
stream nobody has looked at for a minute costs its agent no decoding; the first GET
after that waits (up to `WAIT_SECONDS`) for the agent's next heartbeat and its picture.

rig checks what it stores: `Content-Type: image/jpeg`, at most 256 KiB, a JPEG (Pillow
reads its header: no decoding) whose longest side is at most 320 px, and at most one
picture per 5 s per stream (half the agent's interval: room for jitter, none for a loop).
"""

import asyncio
import io
import json
import uuid
from email.utils import format_datetime

import asyncpg
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from rig.api import ApiRoutes
from rig.appkeys import POOL
from rig.auth import require_agent
from rig.errors import ApiError, InvalidInput, NotFound, UnsupportedContentType
from rig.shapes import ThumbnailStored
from rig.streams import owned_stream, parse_uuid

routes = ApiRoutes()

JPEG = "image/jpeg"
MAX_BYTES = 256 * 1024
MAX_SIDE = 320
MAX_AGE_SECONDS = 15
MIN_INTERVAL_SECONDS = 5
# A GET keeps the stream's pictures coming this long (the dashboard asks every 10 s).
WANTED_SECONDS = 60
# How long a GET waits for a fresh picture: the agent hears that one is wanted at its
# next heartbeat (every 5 s by default), then makes and uploads it within a second or so.
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.25  # how often a waiting GET looks for the picture


class TooSoon(ApiError):
    """errorCode 1010: the stream's last picture is too recent."""

    status, error_code, default_message = 429, 1010, "Too many requests"


async def read_jpeg(request: web.Request) -> tuple[bytes, int, int]:
    """The request's JPEG and its size, or the error saying what is wrong with it."""
    if request.content_type != JPEG:
        raise UnsupportedContentType("Content-Type must be image/jpeg")
    if (request.content_length or 0) > MAX_BYTES:
        raise InvalidInput("Thumbnail over 256 KiB", status=413)
    # Read past the app's 64 KiB JSON limit, but never more than MAX_BYTES.
    data = await request.content.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise InvalidInput("Thumbnail over 256 KiB", status=413)
    if not data.startswith(b"\xff\xd8"):
        raise _not_a_jpeg("not a JPEG (no FF D8 start of image)")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _not_a_jpeg("not a readable JPEG") from exc
    if max(width, height) > MAX_SIDE or min(width, height) < 1:
        raise _not_a_jpeg(f"{width}x{height}: the longest side must be 1 to {MAX_SIDE} px")
    return data, width, height


def _not_a_jpeg(reason: str) -> InvalidInput:
    return InvalidInput(f"Invalid thumbnail: {reason}", details={"field": "body", "reason": reason})


@routes.put(
    "/agents/claims/{claimID}/thumbnail",
    "putThumbnail",
    tag="agents",
    auth="agent",
    summary="The live stream's latest picture: a JPEG, longest side 320 px (extension)",
    message="Thumbnail stored",
    payload=ThumbnailStored,
    raw_body=JPEG,
    errors=("404", "429"),
    description="At most 256 KiB, at most one per 5 s per stream (the agent sends one"
    " every 10 s). The claim must be live and the agent's.",
)
async def put_thumbnail(request: web.Request) -> ThumbnailStored:
    agent = await require_agent(request)
    claim_id = parse_uuid(request, "claimID", "Claim")
    data, width, height = await read_jpeg(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        stream_id = await conn.fetchval(
            "SELECT stream_id FROM stream_claims"
            " WHERE claim_id = $1 AND agent_id = $2 AND expires_at > now()",
            claim_id,
            agent.id,
        )
        if stream_id is None:
            raise NotFound("Claim not found")
        stored = await _store(conn, stream_id, claim_id, data, width, height)
    if stored is None:
        raise TooSoon(
            f"At most one thumbnail per {MIN_INTERVAL_SECONDS} s",
            details={"reason": "too soon", "retryAfter": MIN_INTERVAL_SECONDS},
            headers={"Retry-After": str(MIN_INTERVAL_SECONDS)},
        )
    return ThumbnailStored(width=width, height=height, takenAt=stored)


async def _store(
    conn: asyncpg.Connection,
    stream_id: uuid.UUID,
    claim_id: uuid.UUID,
    data: bytes,
    width: int,
    height: int,
) -> object:
    """Upsert the stream's picture unless the last one is too recent; its time, or None."""
    return await conn.fetchval(
        """INSERT INTO stream_thumbnails (stream_id, claim_id, image, width, height)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (stream_id) DO UPDATE
              SET claim_id = EXCLUDED.claim_id, image = EXCLUDED.image,
                  width = EXCLUDED.width, height = EXCLUDED.height, taken_at = now()
            WHERE stream_thumbnails.taken_at <= now() - $6 * interval '1 second'
               OR stream_thumbnails.claim_id <> EXCLUDED.claim_id
        RETURNING taken_at""",
        stream_id,
        claim_id,
        data,
        width,
        height,
        MIN_INTERVAL_SECONDS,
    )


@routes.get(
    "/streams/{streamID}/thumbnail",
    "getThumbnail",
    tag="streams",
    auth="user",
    summary="A picture of the live ingest, at most 15 s old (extension)",
    message=None,
    payload=None,
    content_types=(JPEG,),
    errors=("404",),
    description="`image/jpeg`, longest side 320 px; `Last-Modified` says when it was"
    " taken. The agent makes pictures only while someone asks for them (each request keeps"
    " them coming for a minute), so the first request after a while waits up to 10 s for"
    " one. errorCode 1000 when the stream is not live, has no video, or no picture of"
    " the current broadcast at most 15 s old came within those 10 s.",
)
async def get_thumbnail(request: web.Request) -> web.Response:
    stream = await owned_stream(request)
    if stream["claim_id"] is None:
        raise NotFound("No thumbnail: the stream is not live")
    pool = request.app[POOL]
    await pool.execute(
        """INSERT INTO thumbnail_wanted (stream_id, wanted_until)
           VALUES ($1, now() + $2 * interval '1 second')
           ON CONFLICT (stream_id) DO UPDATE SET wanted_until = EXCLUDED.wanted_until""",
        stream["id"],
        WANTED_SECONDS,
    )
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        row = await pool.fetchrow(
            """SELECT t.image, t.taken_at, c.health -> 'ingest' AS ingest
                 FROM stream_claims c
                 LEFT JOIN stream_thumbnails t
                   ON t.stream_id = c.stream_id AND t.claim_id = c.claim_id
                  AND t.taken_at > now() - $3 * interval '1 second'
                WHERE c.stream_id = $1 AND c.claim_id = $2""",
            stream["id"],
            stream["claim_id"],
            MAX_AGE_SECONDS,
        )
        if row is None:
            raise NotFound("No thumbnail: the stream is not live")
        if row["image"] is not None:
            break
        if _without_video(row["ingest"]):
            raise NotFound("No thumbnail: the stream has no video")
        if asyncio.get_running_loop().time() >= deadline:
            raise NotFound("No thumbnail: no picture of this broadcast in the last 15 s")
        await asyncio.sleep(POLL_SECONDS)
    return web.Response(
        body=row["image"],
        content_type=JPEG,
        headers={
            "Cache-Control": "private, no-cache",
            "Last-Modified": format_datetime(row["taken_at"], usegmt=True),
        },
    )


def _without_video(ingest: str | None) -> bool:
    """Whether the agent's last heartbeat said the ingest has audio and no video (then no
    picture will come: answered at once rather than after the wait). rig keeps only the
    facts that are known (rig/health.py), so no video is a missing `videoCodec`."""
    facts = json.loads(ingest) if ingest else None
    return isinstance(facts, dict) and "audioCodec" in facts and "videoCodec" not in facts


async def picture_wanted(conn: asyncpg.Connection, stream_id: uuid.UUID) -> bool:
    """Whether someone asked for the stream's picture within the last WANTED_SECONDS
    (rig's claim and heartbeat answers: `thumbnailWanted`)."""
    return bool(
        await conn.fetchval(
            "SELECT wanted_until > now() FROM thumbnail_wanted WHERE stream_id = $1", stream_id
        )
    )
