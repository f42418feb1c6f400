"""One publisher's RTMP connection, on the agent's event loop (an asyncio Protocol).

Bytes in go to the sans-I/O `ServerSession`; its answers go straight back. A connection
has `RIG_AGENT_HANDSHAKE_TIMEOUT` from TCP accept to `publish`; the publish is
authorised by rig before any media is accepted (reading pauses meanwhile); once
accepted, every audio/video/data message of each read goes to the stream's relay in one
call (`StreamRelay.feed`), and the end of the publish, whatever ends it (unpublish, a
closed or broken connection, the idle deadline, a kick), ends the relay (`end`) and
releases the claim. Malformed input closes this connection only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from typing import TYPE_CHECKING, cast

from agent import end_reasons
from agent.relay import StreamRelay
from agent.rig_client import RigUnavailable, StreamInUse, StreamNotFound
from agent.rtmp import ProtocolError, ServerSession
from agent.rtmp.events import MediaReceived, PublishEnded, PublishRequested

if TYPE_CHECKING:
    from agent.rtmp.message import Message
    from agent.server import IngestServer

log = logging.getLogger(__name__)

MAX_STREAM_KEY = 256
# The connection's own receive buffer: the loop reads into it (no new bytes object per
# read); the sans-I/O session copies what it keeps.
READ_BUFFER = 64 * 1024
# A publisher that does not read our acks and pings: closed once this much waits for it.
MAX_UNSENT = 1024 * 1024


def key_id(stream_key: str) -> str:
    """A short, stable, non-reversible name for a stream key, for logs."""
    return hashlib.sha256(stream_key.encode()).hexdigest()[:8]


def stream_key_of(stream_name: str) -> str:
    """The key a publisher sent, without the query string some add (`key?foo=bar`)."""
    return stream_name.partition("?")[0]


class LiveIngest:
    """A publish in progress on this agent: its claim, its relay, its statistics."""

    def __init__(self, key_id: str, connection: IngestConnection) -> None:
        self.key_id = key_id
        self.connection = connection
        self.session = connection.session
        self.peer = connection.peer
        self.relay: StreamRelay | None = None
        self.claim_id: str | None = None
        self.started = time.monotonic()
        # Bytes received and time at the previous heartbeat, for the bitrate.
        self._last_sample: tuple[float, int] = (self.started, 0)

    def kick(self, reason: str = end_reasons.KICKED) -> None:
        """End this publish: rig revoked it ("kicked"), or the agent is shutting down."""
        self.connection.close(reason)

    def health(self, ingest_url: str, final: bool = False) -> dict[str, object]:
        """Ingest facts and per-destination state, for the heartbeat (CONTRACTS.md §1).
        `final`, for the release: bitrate and frame rate over the whole publish rather
        than since the last heartbeat (a last, partial window, perhaps the idle wait
        before the publisher was dropped, says nothing of the broadcast)."""
        now = time.monotonic()
        bytes_in = self.session.bytes_received
        then, bytes_then = (self.started, 0) if final else self._last_sample
        self._last_sample = (now, bytes_in)
        elapsed = now - then
        ingest: dict[str, object] = {
            "bytesIn": bytes_in,
            "bitrate": round((bytes_in - bytes_then) * 8 / elapsed) if elapsed > 0 else 0,
            "uptime": round(now - self.started, 1),
        }
        if self.relay is not None:
            ingest.update(self.relay.ingest_facts(final))
        return {"ingestUrl": ingest_url, "ingest": ingest, "destinations": self.destinations()}

    def destinations(self) -> list[dict[str, object]]:
        """Every destination's state and figures (CONTRACTS.md §1, `destinations`)."""
        if self.relay is None:
            return []
        destinations = self.relay.destination_health(asyncio.get_running_loop().time())
        for destination in destinations:
            destination["lastError"] = peer_text(destination.get("lastError"))
        return destinations


def peer_text(value: object, limit: int = 200) -> object:
    """A string that may hold a peer's bytes, made safe to report: control characters
    removed, at most `limit` characters."""
    if not isinstance(value, str):
        return value
    return "".join(c for c in value if c.isprintable())[:limit]


class IngestConnection(asyncio.BufferedProtocol):
    """One RTMP connection from a publisher."""

    def __init__(self, server: IngestServer) -> None:
        self.server = server
        settings = server.settings
        self.session = ServerSession(max_message_size=settings.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.ingest: LiveIngest | None = None
        self.relay: StreamRelay | None = None  # once the publish is accepted
        self.stream_key: str | None = None
        self.last_data = 0.0
        self._loop = asyncio.get_running_loop()
        self._publish_by = 0.0  # loop time: the deadline to send `publish`
        self._authorising: asyncio.Task[None] | None = None
        self._close_reason: str | None = None
        self._closed = False
        self._buffer = memoryview(bytearray(READ_BUFFER))

    # -------------------------------------------------------------- asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        server = self.server
        if len(server.connections) >= server.settings.max_connections:
            log.warning("refusing %s: %d connections already", self.peer, len(server.connections))
            self._closed = True
            transport.abort()
            return
        server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_data = self._loop.time()
        self._publish_by = self.last_data + server.settings.handshake_timeout

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:
            return
        self.last_data = self._loop.time()
        try:
            events = self.session.receive_data(self._buffer[:nbytes])
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        self._handle(events)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._authorising is not None:
            self._authorising.cancel()
        self.server.connections.discard(self)
        if exc is not None and self._close_reason is None:
            log.info("RTMP connection from %s lost: %s", self.peer, exc)
            self._close_reason = end_reasons.CONNECTION_LOST
        self._end_publish(self._close_reason or end_reasons.CONNECTION_CLOSED)

    # -------------------------------------------------------------- for the server

    def close(self, reason: str) -> None:
        """End the connection (and its publish, for `reason`)."""
        if self._close_reason is None:
            self._close_reason = reason
        if self.transport is not None and not self._closed:
            self._flush()
            self.transport.close()

    def check(self, now: float) -> None:
        """Periodic: the deadline to publish (rig's answer has one of its own), then the
        idle deadline while publishing."""
        if self.session.publishing:
            if now - self.last_data > self.server.settings.idle_timeout:
                self._fail(end_reasons.NO_DATA)
        elif self._authorising is None and now > self._publish_by:
            self._fail("did not publish in time")

    # -------------------------------------------------------------- internals

    def _fail(self, why: str) -> None:
        """Malformed input or a deadline: log, close this connection only."""
        if self._closed:
            return
        log.warning("closing RTMP connection from %s: %s", self.peer, why)
        self._close_reason = why
        assert self.transport is not None
        self.transport.abort()

    def _handle(self, events: list) -> None:
        media: list[Message] = []
        relay = self.relay
        for event in events:
            if type(event) is MediaReceived:
                media.append(event.message)
                continue
            if media and relay is not None:
                relay.feed(media)
                media = []
            if isinstance(event, PublishRequested):
                self._start_authorising(event)
            elif isinstance(event, PublishEnded):
                self._end_publish(event.reason or end_reasons.UNPUBLISHED)
            relay = self.relay
        if media and relay is not None:
            relay.feed(media)
        self._flush()
        if self.session.closed and not self._closed:
            self.close(end_reasons.PROTOCOL_CLOSED)

    def _flush(self) -> None:
        data = self.session.data_to_send()
        transport = self.transport
        if not data or transport is None or self._closed:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_UNSENT:
            self._fail(end_reasons.STOPPED_READING)

    def _start_authorising(self, event: PublishRequested) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # nothing more until rig has answered
        self._authorising = self._loop.create_task(self._authorise(event), name="authorise")

    async def _authorise(self, event: PublishRequested) -> None:
        """Ask rig what this key is for; accept or refuse before any media flows."""
        try:
            await self._claim(event)
        finally:
            self._authorising = None
        if self._closed:
            return
        self._handle(self.session.receive_data(b""))  # the answer, media held meanwhile
        if not self._closed and self.transport is not None:
            self.transport.resume_reading()

    async def _claim(self, event: PublishRequested) -> bool:
        server = self.server
        session = self.session
        key = stream_key_of(event.stream_name)
        kid = key_id(key)
        app = (session.app or "").partition("?")[0].strip("/")
        if app != server.settings.rtmp_app:
            return self._refuse(
                "unknown_application", "unknown application", "NetStream.Publish.BadName",
                "Unknown application.", None,
            )  # fmt: skip
        if not key or len(key) > MAX_STREAM_KEY:
            return self._refuse(
                "malformed_key", "malformed stream key", "NetStream.Publish.BadName",
                "Invalid stream key.", None,
            )  # fmt: skip
        if key in server.live:
            return self._refuse(
                "already_live_here", "already live here", "NetStream.Publish.Denied",
                "Stream already publishing.", kid,
            )  # fmt: skip
        ingest = LiveIngest(kid, self)
        server.live[key] = ingest  # reserve the key while rig answers
        self.ingest, self.stream_key = ingest, key
        try:
            await server.released(key)  # the previous publish of this key, if any
            claim = await server.rig.claim(key, server.ingest_url)
        except StreamInUse:
            self._release()
            return self._refuse(
                "live_elsewhere", "live on another agent", "NetStream.Publish.Denied",
                "Stream already publishing.", kid,
            )  # fmt: skip
        except StreamNotFound:
            self._release()
            return self._refuse(
                "unknown_key", "unknown key", "NetStream.Publish.BadName",
                "Unknown or inactive stream key.", kid,
            )  # fmt: skip
        except RigUnavailable as exc:
            self._release()
            return self._refuse(
                "rig_unavailable", str(exc), "NetStream.Publish.Denied",
                "Service unavailable, try again.", kid, level=logging.ERROR,
            )  # fmt: skip
        except asyncio.CancelledError:
            self._release()  # the connection closed while rig answered
            raise
        ingest.claim_id = claim.claim_id
        if self._closed:  # gone while rig answered: give the claim back at once
            self._end_publish(end_reasons.CONNECTION_CLOSED)
            return False
        relay = server.new_relay(f"stream {kid}", claim.destinations)
        ingest.relay = self.relay = relay
        relay.start()
        server.stats.accept(ingest)
        session.accept_publish()
        log.info(
            "publish of stream %s from %s accepted: %d destination(s)",
            kid,
            self.peer,
            len(claim.destinations),
        )
        return True

    def _refuse(
        self,
        reason: str,
        words: str,
        code: str,
        description: str,
        kid: str | None,
        level: int = logging.WARNING,
    ) -> bool:
        if kid is None:
            log.log(level, "refused publish from %s: %s", self.peer, words)
        else:
            log.log(level, "refused publish of stream %s from %s: %s", kid, self.peer, words)
        self.server.stats.refuse(reason)
        self.session.reject_publish(code, description)
        return False

    def _release(self) -> None:
        server = self.server
        if self.stream_key is not None and server.live.get(self.stream_key) is self.ingest:
            del server.live[self.stream_key]
        self.ingest, self.relay, self.stream_key = None, None, None

    def _end_publish(self, reason: str) -> None:
        ingest = self.ingest
        if ingest is None:
            return
        if ingest.relay is not None:
            ingest.relay.end(reason)
            log.info("stream %s from %s ended: %s", ingest.key_id, self.peer, reason)
        if ingest.claim_id is not None:
            assert self.stream_key is not None
            self.server.release_claim(self.stream_key, ingest, end_reasons.end_reason(reason))
            ingest.claim_id = None
        self._release()
