"""Live updates of one stream: `GET /streams/{streamID}/events`, server-sent events.

The dashboard's live view reads this with `fetch()` (so its token travels in the
`Authorization` header, never in a URL, as `EventSource` would need). Each event is

    event: stats
    data: <the payload of GET /streams/{streamID}/stats, one line of JSON>

sent on connecting and whenever the statistics change; `: keepalive` comments keep idle
connections (and the proxies in front of them) from timing out. When the caller's token
stops working or the stream is deleted, a last `event: error` carries the error envelope
(errorCode 1003 or 1000) and the stream ends.

rig is stateless and may run as several replicas, so changes come from PostgreSQL:
triggers (`sql/0004_stream_events.sql`) NOTIFY `rig_stream_changed` with the stream's id
on every change to a stream, its destinations or its live claim (each heartbeat). Each
rig process LISTENs on one connection of its own, opened by its first watcher, and wakes
the connections watching that stream; they read the statistics again and send them if
they changed. While that connection is down (database restarting), watchers read every
`FALLBACK_SECONDS` instead, so updates come late but never stop. Every connection also
reads every `REFRESH_SECONDS` whatever happens, which re-checks its token.

Connections are bounded per user (`RIG_EVENTS_PER_USER`, per rig process, as the rate
limits are): one more answers 429, errorCode 1010.
"""

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
from aiohttp import web
from pydantic_core import to_json

from rig.api import ApiRoutes
from rig.appkeys import POOL, SETTINGS
from rig.auth import require_user
from rig.errors import ApiError, error_envelope
from rig.operations import long_lived
from rig.payloads import fetch_destinations, stats_payload
from rig.ratelimit import TooManyRequests
from rig.shapes import StreamStats
from rig.streams import owned_stream

log = logging.getLogger(__name__)
routes = ApiRoutes()

CHANNEL = "rig_stream_changed"
REFRESH_SECONDS = 15.0  # read (and re-check the token) at least this often; keepalive
FALLBACK_SECONDS = 2.0  # how often to read while no notifications arrive
DISCONNECT_CHECK_SECONDS = 1.0  # how soon a closed connection frees its slot
RECONNECT_MAX_SECONDS = 10.0
RETRY_MS = 3000  # what EventSource-style clients wait before reconnecting
EVENT_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",  # nginx in front: do not buffer the stream
}


class Watch:
    """One connection's interest in one stream: set when the stream may have changed."""

    def __init__(self, hub: "StreamWatchers") -> None:
        self._hub = hub
        self.changed = asyncio.Event()

    async def next_change(self, request: web.Request) -> None:
        """Return when the stream may have changed, or when it is time to read anyway.

        Raises ConnectionResetError as soon as the client is gone, so that its slot is
        freed within DISCONNECT_CHECK_SECONDS rather than at the next write.
        """
        loop = asyncio.get_running_loop()
        wait = REFRESH_SECONDS if self._hub.listening else FALLBACK_SECONDS
        deadline = loop.time() + wait
        while not self._hub.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(DISCONNECT_CHECK_SECONDS, remaining)):
                    await self.changed.wait()
            if self.changed.is_set():
                self.changed.clear()
                return
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("client gone")


class StreamWatchers:
    """The connections of this rig process watching streams, and the one PostgreSQL
    connection that LISTENs for changes on their behalf."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._watches: dict[uuid.UUID, set[Watch]] = {}
        self._per_user: Counter[uuid.UUID] = Counter()
        self._listener: asyncio.Task | None = None
        self.listening = False
        self.closing = False

    @contextlib.contextmanager
    def watch(self, user_id: uuid.UUID, stream_id: uuid.UUID, per_user: int) -> Iterator[Watch]:
        """Register a watch for the duration of a connection; 1010 over `per_user`."""
        if self._per_user[user_id] >= per_user:
            raise TooManyRequests(
                "Too many live connections for this user",
                details={"reason": "live connections", "retryAfter": int(REFRESH_SECONDS)},
                headers={"Retry-After": str(int(REFRESH_SECONDS))},
            )
        self._start_listening()
        watch = Watch(self)
        self._per_user[user_id] += 1
        self._watches.setdefault(stream_id, set()).add(watch)
        try:
            yield watch
        finally:
            self._per_user[user_id] -= 1
            if not self._per_user[user_id]:
                del self._per_user[user_id]
            watches = self._watches[stream_id]
            watches.discard(watch)
            if not watches:
                del self._watches[stream_id]

    @property
    def count(self) -> int:
        """Connections watching now (in this process)."""
        return sum(len(watches) for watches in self._watches.values())

    def notify(self, stream_id: uuid.UUID) -> None:
        """Wake every watch of one stream."""
        for watch in self._watches.get(stream_id, ()):
            watch.changed.set()

    def notify_all(self) -> None:
        """Wake every watch (notifications may have been missed, or we are closing)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.changed.set()

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            stream_id = uuid.UUID(payload)
        except ValueError:
            return
        self.notify(stream_id)

    def _start_listening(self) -> None:
        if self._listener is None and not self.closing:
            self._listener = asyncio.create_task(self._listen(), name="stream-events-listener")

    async def _listen(self) -> None:
        """Keep one LISTEN connection open for as long as the app runs."""
        delay = 0.5
        while not self.closing:
            conn = None
            try:
                conn = await asyncpg.connect(self._database_url, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                self.listening = True
                delay = 0.5
                self.notify_all()  # whatever changed while we were not listening
                await lost.wait()
                log.warning("stream events: the LISTEN connection was lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("stream events: cannot LISTEN (%s); retrying in %.1f s", exc, delay)
            finally:
                self.listening = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(OSError, asyncpg.InterfaceError, TimeoutError):
                        await conn.close(timeout=2)
            self.notify_all()  # watchers fall back to reading every FALLBACK_SECONDS
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def close(self) -> None:
        """End every watch (their connections finish) and stop listening."""
        self.closing = True
        self.notify_all()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener


WATCHERS = web.AppKey("stream_watchers", StreamWatchers)


async def stream_watchers(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the process's watchers; their connections end on shutdown."""
    hub = StreamWatchers(app[SETTINGS].database_url or "")
    app[WATCHERS] = hub

    async def end_watches(_app: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(end_watches)  # before aiohttp waits for running handlers
    yield
    await hub.close()


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + to_json(data) + b"\n\n"


async def _read_stats(request: web.Request) -> StreamStats:
    """The stream's statistics, checking the caller's token and ownership again."""
    row = await owned_stream(request)
    destinations = await fetch_destinations(
        request.app[POOL], row["id"], request.app[SETTINGS].service_urls
    )
    return stats_payload(row, destinations)


@routes.get(
    "/streams/{streamID}/events",
    "getStreamEvents",
    tag="streams",
    auth="user",
    errors=("404", "429"),
    summary="The stream's live statistics as server-sent events (extension)",
    description=(
        "`text/event-stream`: an `event: stats` whose `data` is the payload of"
        " GET /streams/{streamID}/stats, on connecting and at every change (a heartbeat,"
        " a destination changed, the stream going live or offline); `: keepalive` comments"
        " at least every 15 s. When the token stops working or the stream is deleted, a"
        " last `event: error` carries the error envelope (errorCode 1003 or 1000) and the"
        " stream ends. At most RIG_EVENTS_PER_USER connections per user (1010)."
    ),
    message=None,
    payload=None,
    content_types=("text/event-stream",),
)
@long_lived
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Extension: the stream's statistics as server-sent events (see the module doc)."""
    user = await require_user(request)
    stats = await _read_stats(request)  # 1000 / 1003 answered as usual, before streaming
    hub = request.app[WATCHERS]
    stream_id = uuid.UUID(request.match_info["streamID"])
    with hub.watch(user.id, stream_id, request.app[SETTINGS].events_per_user) as watch:
        response = web.StreamResponse(headers=EVENT_HEADERS)
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            sent = None
            last_write = loop.time()
            while not hub.closing:
                if stats != sent:  # pydantic models compare by their fields
                    await response.write(_event("stats", stats))
                    sent, last_write = stats, loop.time()
                elif loop.time() - last_write >= REFRESH_SECONDS:
                    await response.write(b": keepalive\n\n")
                    last_write = loop.time()
                await watch.next_change(request)
                try:
                    stats = await _read_stats(request)
                except ApiError as error:  # token revoked or expired, stream deleted
                    await response.write(_event("error", error_envelope(error)))
                    break
        except ConnectionResetError:  # the client went away
            pass
    return response
