"""One publisher's RTMP connection, on the agent's event loop (an asyncio Protocol).

Bytes in go to the sans-I/O `ServerSession`; its answers go straight back. Until its
publish is accepted a connection is a stranger's (`agent.limits`): it is admitted only
within the per-address limits, has `RIG_AGENT_HANDSHAKE_TIMEOUT` from TCP accept to the
end of the handshake and `RIG_AGENT_PUBLISH_TIMEOUT` from there to `publish` (rig's
answer has a deadline of its own), may send only small messages and buffer little (all
such connections together are bounded too), and its refusals are logged at a bounded
rate. A publish from an address that failed too often, or with a key rig refused a
moment ago, is refused without asking rig.

The publish is authorised by rig before any media is accepted (reading pauses
meanwhile); once accepted, every audio/video/data message of each read goes to the
stream's relay in one call (`StreamRelay.feed`), and the end of the publish, whatever
ends it (unpublish, a closed or broken connection, the idle deadline, a kick), ends the
relay (`end`) and releases the claim. Malformed input closes this connection only.
Whatever the peer sent is escaped in logs (`agent.logsafe`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import socket
import time
from typing import TYPE_CHECKING, Final, cast

from agent import end_reasons, handoff
from agent.broadcast import BACKUP, LIVE, Broadcast, Protection, Source
from agent.handoff import HandoffError
from agent.limits import address_of
from agent.logsafe import clean, escape, loggable_path
from agent.relay import StreamRelay
from agent.rig_client import RigUnavailable, StreamInUse, StreamNotFound
from agent.rtmp import ProtocolError, ServerSession
from agent.rtmp.events import Event, PublishEnded, PublishRequested

if TYPE_CHECKING:
    from agent.rig_client import Claim
    from agent.rtmp.message import Message
    from agent.server import IngestServer

log: Final = logging.getLogger(__name__)

MAX_STREAM_KEY: Final = 256
# rig's words (1009 details) when a backup key is claimed on an agent not holding it.
BACKUP_ELSEWHERE: Final = "the backup must publish to the agent that holds the stream"
# A publisher that does not read our acks and pings: closed once this much waits for it
# (a stranger's connection, once a little does: our answers to commands are small).
MAX_UNSENT: Final = 1024 * 1024
MAX_UNSENT_UNAUTHENTICATED: Final = 64 * 1024


def key_id(stream_key: str) -> str:
    """A short, stable, non-reversible name for a stream key, for logs."""
    return hashlib.sha256(stream_key.encode()).hexdigest()[:8]


def stream_key_of(stream_name: str) -> str:
    """The key a publisher sent, without the query string some add (`key?foo=bar`)."""
    return stream_name.partition("?")[0]


class LiveIngest:
    """A broadcast in progress on this agent: its claim, its relay, its publishers (one, or
    more with disconnect protection and backup ingest: `agent.broadcast`), its figures.

    It is registered in the server's `live` under every key a publisher of it used (the
    primary key, the backup key) until it ends, also while it holds for a publisher that
    is gone: a publish of one of those keys joins it (`join`)."""

    def __init__(self, key: str, connection: IngestConnection) -> None:
        self.key = key  # the key it was claimed with
        self.key_id = key_id(key)
        self.server = connection.server
        self.connection = connection  # the publisher that started it
        self.session = connection.session
        self.peer = connection.peer
        self.relay: StreamRelay | None = None
        self.claim_id: str | None = None
        self.stream_id = ""  # rig's id of the stream (or the claim's), once claimed
        self.thumbnail_wanted = True  # rig's thumbnailWanted: someone looks at its pictures
        self.broadcast: Broadcast | None = None
        self.keys: set[str] = set()  # under which it is in the server's `live`
        self.connections: dict[Source, IngestConnection] = {}  # its publishers now
        self._roles: dict[str, str] = {}  # of its keys
        self.started = time.monotonic()
        self._bytes_gone = 0  # received by publishers that have left
        # Bytes received and time at the previous heartbeat, for the bitrate.
        self._last_sample: tuple[float, int] = (self.started, 0)

    @property
    def bytes_in(self) -> int:
        """Bytes received from every publisher of this broadcast."""
        if not self.connections and self.broadcast is None:
            return self.session.bytes_received
        current = sum(c.session.bytes_received for c in self.connections.values())
        return self._bytes_gone + current

    def start(self, key: str, claim: Claim, relay: StreamRelay) -> Source:
        """The claim was granted: the broadcast starts with this publisher feeding it."""
        server = self.server
        self.relay = relay
        self.stream_id = claim.stream_id or claim.claim_id
        settings = server.settings
        self.broadcast = Broadcast(
            relay,
            server.slates,
            Protection.of(claim.protection) or Protection(),
            self._state_changed,
            self._ended,
            f"stream {self.key_id}",
            settings.queue_bytes,
            int(settings.queue_seconds * 1000),
        )
        return self.join(self.connection, claim.role, key)

    def may_join(self, key: str, now: float) -> bool:
        """Whether a new publish of `key` may join (`now`: the loop's clock): unless a
        publisher of that key sent something within `RIG_AGENT_STALL_TIMEOUT` (an active
        duplicate). One that has been silent longer is hung and is replaced; one that is
        gone (the broadcast holds for it) comes back."""
        broadcast = self.broadcast
        if broadcast is None or broadcast.ended:
            return False
        stall = self.server.settings.stall_timeout
        return not any(
            s.key == key and now - c.last_data < stall for s, c in self.connections.items()
        )

    def role_of(self, key: str) -> str | None:
        """The role (primary, backup) a key of this broadcast was claimed with."""
        return self._roles.get(key)

    def join(self, connection: IngestConnection, role: str, key: str) -> Source:
        """A publisher of this broadcast, accepted: it feeds or waits (agent.broadcast). A
        hung publisher of the same key (may_join) is replaced: its connection closed."""
        assert self.broadcast is not None
        for source, old in list(self.connections.items()):
            if source.key == key:
                log.info(
                    "stream %s: the publish from %s replaces %s, which sent nothing for %.1f s",
                    self.key_id,
                    connection.peer,
                    old.peer,
                    connection.now() - old.last_data,
                )
                self.server.stats.replaced += 1
                old.close_now(f"{end_reasons.REPLACED} from {connection.peer}")
        source = self.broadcast.join(role, key, time.monotonic())
        self._roles[key] = role
        self.connections[source] = connection
        connection.ingest, connection.source, connection.stream_key = self, source, key
        self.keys.add(key)
        self.server.live[key] = self
        return source

    def left(self, connection: IngestConnection, reason: str, deliberate: bool) -> None:
        """A publisher's connection ended (`deliberate`: it unpublished)."""
        source = connection.source
        connection.ingest, connection.source, connection.stream_key = None, None, None
        if source is None or self.connections.pop(source, None) is None:
            return
        self._bytes_gone += connection.session.bytes_received
        assert self.broadcast is not None
        if reason in (end_reasons.KICKED, end_reasons.SHUTDOWN):
            self.broadcast.end(reason)
        elif deliberate:
            self.broadcast.unpublished(source, time.monotonic(), reason)
        else:
            self.broadcast.gone(source, time.monotonic(), reason)

    def kick(self, reason: str = end_reasons.KICKED) -> None:
        """End this broadcast: rig revoked it ("kicked"), or the agent is shutting down."""
        if self.broadcast is None:
            self.connection.close(reason)
        else:
            self.broadcast.end(reason)

    def end_backup(self, key: str) -> None:
        """rig says `key` is no longer the stream's backup key: end that publisher only."""
        for source, connection in list(self.connections.items()):
            if source.role == BACKUP and source.key == key:
                log.warning("stream %s: the backup key was rotated, ending it", self.key_id)
                connection.close(end_reasons.BACKUP_REVOKED)

    def _state_changed(self, state: str) -> None:
        self.server.ingest_state_changed(self)

    def _ended(self, reason: str) -> None:
        """The broadcast is over: its destinations end, its claim is released (with why),
        the publishers still connected are closed."""
        server = self.server
        if self.relay is not None:
            self.relay.end(reason)
            log.info("stream %s ended: %s", self.key_id, reason)
        if self.claim_id is not None:
            server.release_claim(self, end_reasons.end_reason(reason))
            self.claim_id = None
        for key in self.keys:
            if server.live.get(key) is self:
                del server.live[key]
                server.placement.released(key)
        for source, connection in list(self.connections.items()):
            del self.connections[source]
            self._bytes_gone += connection.session.bytes_received
            connection.ingest, connection.source, connection.stream_key = None, None, None
            connection.close(reason)

    @property
    def ingest_state(self) -> str:
        """The heartbeat's `ingestState`: live, backup or holding
        (docs/agent-protocol.md#heartbeat-health)."""
        state = self.broadcast.state if self.broadcast is not None else None
        return state or LIVE

    def heartbeat_entry(self, ingest_url: str) -> dict[str, object]:
        """This broadcast's entry in a heartbeat
        (docs/agent-protocol.md#disconnect-protection-claim-rules): the key that names
        it (its primary key once a primary joined, else the backup key), its health, and
        the backup publisher's key when one is attached."""
        broadcast = self.broadcast
        assert broadcast is not None
        name = broadcast.primary_key or next(iter(self.keys))
        entry: dict[str, object] = {
            "claimId": self.claim_id,
            "streamKey": name,
            "health": self.health(ingest_url),
        }
        backup = broadcast.source_of(BACKUP)
        if backup is not None:
            entry["backupStreamKey"] = backup.key
        return entry

    def health(self, ingest_url: str, final: bool = False) -> dict[str, object]:
        """Ingest facts and per-destination state, for the heartbeat
        (docs/agent-protocol.md#heartbeat-health). `final`, for the release: bitrate and frame
        rate over the whole publish rather than since the last heartbeat (a last, partial
        window, perhaps the idle wait before the publisher was dropped, says nothing of
        the broadcast)."""
        now = time.monotonic()
        bytes_in = self.bytes_in
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
        return {
            "ingestUrl": ingest_url,
            "ingestState": self.ingest_state,
            "ingest": ingest,
            "destinations": self.destinations(),
        }

    def destinations(self) -> list[dict[str, object]]:
        """Every destination's state and figures (docs/agent-protocol.md#heartbeat-health,
        `destinations`)."""
        if self.relay is None:
            return []
        # Strings are cleaned and cut where the health is sent (agent.heartbeat.bounded).
        return self.relay.destination_health(asyncio.get_running_loop().time())


class IngestConnection(asyncio.Protocol):
    """One RTMP connection from a publisher.

    A plain Protocol: the loop hands over each read as a bytes object (uvloop reads
    into one buffer of its own for every socket), which the chunk reader parses as it
    is. Reading into a buffer of ours (BufferedProtocol) cost a Python call per read
    to hand the buffer over, and the reader copied the read to bytes all the same."""

    def __init__(self, server: IngestServer, session: ServerSession | None = None) -> None:
        self.server = server
        settings = server.settings
        self.session = session or ServerSession(
            max_message_size=settings.max_message_bytes,
            max_message_size_before_publish=settings.unauthenticated_max_message_bytes,
        )
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.address = ""  # what the per-address limits count by (agent.limits.address_of)
        self.ingest: LiveIngest | None = None
        self.source: Source | None = None  # once the publish is accepted: what it feeds
        self.stream_key: str | None = None
        self.last_data = 0.0
        # Until the publish is accepted the connection is a stranger's: deadlines run,
        # and the bytes it makes us buffer are charged to the shared budget.
        self.authenticated = False
        self._charged = 0
        self.handoffs = 0  # times this connection went from one worker to another
        self._loop = asyncio.get_running_loop()
        # The deadline of the step before the publish (loop time), and its name.
        self._deadline = 0.0
        self._deadline_kind = "handshake_timeout"
        self._authorising: asyncio.Task[None] | None = None
        self._close_reason: str | None = None
        self._admitted = False
        self._closed = False
        # A socket handed over by another worker, until this worker starts reading it.
        self._unattached: socket.socket | None = None

    @classmethod
    def adopt(
        cls, server: IngestServer, session: ServerSession, sock: socket.socket, handoffs: int
    ) -> IngestConnection | None:
        """A connection another worker handed over with its publish pending
        (agent/handoff.py): authorise the publish here, then read on. Reading starts
        once the answer is decided; until then the peer's bytes wait in the socket.
        None if this worker's limits refuse it (its address's connections, the
        strangers' buffer budget)."""
        connection = cls(server, session)
        try:
            host, port = sock.getpeername()[:2]
        except OSError:
            return None
        connection.peer, connection.address = f"{host}:{port}", address_of(str(host))
        if server.admission.admit(connection.address) is not None:
            return None
        buffered = session.buffered_bytes
        if buffered and not server.admission.charge(buffered):
            server.admission.left(connection.address, authenticated=False)
            return None
        connection._admitted, connection._charged = True, buffered
        server.connections.add(connection)
        connection.handoffs = handoffs
        connection._unattached = sock
        connection.last_data = connection.now()
        connection._deadline = connection.last_data + server.settings.publish_timeout
        connection._deadline_kind = "publish_timeout"
        event = PublishRequested(session.stream_name or "", session.publish_type or "live")
        connection._authorising = connection._loop.create_task(
            connection._authorise(event), name="authorise"
        )
        return connection

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.address = address_of(str(peer[0]))
        server = self.server
        if not self._admitted:  # (one handed over was admitted when it came)
            refusal = server.admission.admit(self.address)
            if refusal is not None:
                self._closed = True
                transport.abort()
                server.stats.refuse_connection(refusal)
                server.refusals.refused(
                    refusal,
                    "refusing RTMP connection from %s: %s",
                    self.peer,
                    _ADMISSION_WORDS[refusal],
                )
                return
            self._admitted = True
            server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_data = self._loop.time()
        self._deadline = self.last_data + server.settings.handshake_timeout

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_data = self._loop.time()
        if not self.authenticated:
            self._stranger_data(data)
            return
        try:
            media, events = self.session.receive_media(data)
        except ProtocolError as exc:
            self._fail(f"protocol error: {escape(exc)}", "protocol_error")
            return
        self._handle(media, events)

    def _stranger_data(self, data: bytes) -> None:
        """Bytes before the publish is accepted: the next step's deadline once the
        handshake is over, and what the connection buffers charged to the shared budget."""
        session = self.session
        handshaking = not session.handshake_done
        try:
            media, events = session.receive_media(data)
        except ProtocolError as exc:
            self._fail(f"protocol error: {escape(exc)}", "protocol_error")
            return
        if handshaking and session.handshake_done:
            self._deadline = self.last_data + self.server.settings.publish_timeout
            self._deadline_kind = "publish_timeout"
        if self._charge():
            self._handle(media, events)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._authorising is not None:
            self._authorising.cancel()
        server = self.server
        if self._admitted:
            self._admitted = False
            server.connections.discard(self)
            server.admission.left(self.address, authenticated=self.authenticated)
            server.admission.charge(-self._charged)
            self._charged = 0
        if exc is not None and self._close_reason is None:
            if self.authenticated:
                log.info("RTMP connection from %s lost: %s", self.peer, escape(exc))
            self._close_reason = end_reasons.CONNECTION_LOST
        self._end_publish(self._close_reason or end_reasons.CONNECTION_CLOSED)

    # -------------------------------------------------------------- for the server

    def close(self, reason: str) -> None:
        """End the connection (and its publish, for `reason`)."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._unattached is not None:  # handed over, not read yet
            self._unattached.close()
            self._unattached = None
            self.connection_lost(None)
            return
        if self.transport is not None and not self._closed:
            self._flush()
            self.transport.close()

    def close_now(self, reason: str) -> None:
        """End the connection at once, without waiting for its peer to read what is
        queued (a hung publisher being replaced never would)."""
        if self._close_reason is None:
            self._close_reason = reason
        if self.transport is not None and not self._closed:
            log.info("closing RTMP connection from %s: %s", self.peer, reason)
            self.transport.abort()

    def now(self) -> float:
        """The event loop's clock (that of `last_data`)."""
        return self._loop.time()

    def forget_publish(self) -> None:
        """Give up this publish's place (its stream is relayed by another publish): no
        claim release (the claim is the holder's), no registry change."""
        if self.ingest is not None:
            self.ingest.claim_id = None
            if self.stream_key is not None and self.server.live.get(self.stream_key) is self.ingest:
                del self.server.live[self.stream_key]
        self.ingest, self.source, self.stream_key = None, None, None

    def refuse_publish(self, reason: str, words: str, code: str, description: str) -> bool:
        """Refuse the pending publish (one of metrics.REFUSAL_REASONS), not counted as a
        failed publish of its address (the stream is busy); returns False."""
        kid = key_id(stream_key_of(self.session.stream_name or ""))
        return self._refuse(reason, words, code, description, kid, failed=False)

    async def hand_over(self) -> tuple[bytes, int]:
        """What another worker needs to continue this connection (its publish pending):
        the session's state and a duplicate of the socket's descriptor. Waits until what
        was written to the peer has left (at most a second). HandoffError if it cannot."""
        self._flush()
        transport = self.transport
        deadline = self.now() + 1.0
        while transport is not None and transport.get_write_buffer_size() and not self._closed:
            if self.now() > deadline:
                raise HandoffError("the publisher does not read what was sent to it")
            await asyncio.sleep(0.01)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if self._closed or sock is None:
            raise HandoffError("the connection closed")
        state = handoff.pack(self.session)
        return state, os.dup(sock.fileno())

    def handed_over(self, owner: int) -> None:
        """Worker `owner` continues this connection: let go of it without a word to the
        peer (closing our descriptor leaves the socket open there)."""
        self._closed = True
        log.info("RTMP connection from %s handed to worker %d", self.peer, owner)
        if self.transport is not None:
            self.transport.close()

    def check(self, now: float) -> None:
        """Periodic: before the publish is accepted, the deadline of the current step
        (handshake, then `publish`; rig's answer has one of its own); after, the idle
        deadline, and before it the stall timeout (the broadcast holds, or its backup
        takes over: agent.broadcast)."""
        if self.authenticated:
            idle = now - self.last_data
            if idle > self.server.settings.idle_timeout:
                self._fail(end_reasons.NO_DATA, "idle")
            elif idle > self.server.settings.stall_timeout and self.source is not None:
                self.source.broadcast.stalled(self.source, time.monotonic())
        elif self._authorising is None and now > self._deadline:
            self._fail(_DEADLINE_WORDS[self._deadline_kind], self._deadline_kind)

    # -------------------------------------------------------------- internals

    def _charge(self) -> bool:
        """Charge what this stranger's connection buffers now to the shared budget; close
        it (False) if all of them together buffer too much."""
        buffered = self.session.buffered_bytes
        delta, self._charged = buffered - self._charged, buffered
        if delta and not self.server.admission.charge(delta):
            self._fail("unauthenticated connections buffer too much all together", "buffer_limit")
            return False
        return True

    def _fail(self, why: str, kind: str) -> None:
        """Malformed input, a limit or a deadline: log, close this connection only.
        `why` holds nothing of the peer's unless escaped; `kind` names the refusal of a
        stranger's connection in /metrics (and its log line is rate-limited)."""
        if self._closed:
            return
        if self.authenticated:
            log.warning("closing RTMP connection from %s: %s", self.peer, why)
        else:
            self.server.stats.refuse_connection(kind)
            self.server.refusals.refused(
                kind, "closing RTMP connection from %s: %s", self.peer, why
            )
        self._close_reason = why
        if self.transport is None:  # handed over, not read yet
            self.close(why)
            return
        self.transport.abort()

    def _handle(self, media: list[Message], events: list[Event]) -> None:
        """What one read brought: the publish's media (they came before the events)."""
        source = self.source
        if media and source is not None:
            source.broadcast.feed(source, media, time.monotonic())
        for event in events:
            if isinstance(event, PublishRequested):
                self._start_authorising(event)
            elif isinstance(event, PublishEnded):
                self._end_publish(event.reason or end_reasons.UNPUBLISHED, deliberate=True)
        session = self.session
        if events or session.has_data_to_send:  # answers, acks, a refusal
            self._flush()
            if session.closed and not self._closed:  # (a refusal is queued when it closes)
                self.close(end_reasons.PROTOCOL_CLOSED)

    def _flush(self) -> None:
        data = self.session.data_to_send()
        transport = self.transport
        if not data or transport is None or self._closed:
            return
        transport.write(data)
        limit = MAX_UNSENT if self.authenticated else MAX_UNSENT_UNAUTHENTICATED
        if transport.get_write_buffer_size() > limit:
            self._fail(end_reasons.STOPPED_READING, "not_reading")

    def _start_authorising(self, event: PublishRequested) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # nothing more until rig has answered
        self._authorising = self._loop.create_task(self._authorise(event), name="authorise")

    async def _authorise(self, event: PublishRequested) -> None:
        """Ask rig what this key is for; accept or refuse before any media flows."""
        try:
            accepted = await self._claim(event)
        finally:
            self._authorising = None
        if self._closed:
            return
        if self._unattached is not None:  # handed over: read it from now on
            sock, self._unattached = self._unattached, None
            try:
                await self._loop.connect_accepted_socket(lambda: self, sock)
            except OSError as exc:
                sock.close()
                self._close_reason = f"connection lost: {exc.strerror or exc}"
                self.connection_lost(None)
                return
            if self._closed:
                return
        if accepted:
            self._authenticated()
        try:
            media, events = self.session.receive_media(b"")  # what was sent meanwhile
        except ProtocolError as exc:
            self._fail(f"protocol error: {escape(exc)}", "protocol_error")
            return
        self._handle(media, events)
        if not self._closed and self.transport is not None:
            self.transport.resume_reading()

    def _authenticated(self) -> None:
        """The publish was accepted: from now on the normal limits apply."""
        self.authenticated = True
        self.server.admission.authenticated(self.address)
        self.server.admission.charge(-self._charged)
        self._charged = 0

    async def _claim(self, event: PublishRequested) -> bool:
        server = self.server
        session = self.session
        key = stream_key_of(event.stream_name)
        kid = key_id(key)
        app = (session.app or "").partition("?")[0].strip("/")
        wait = server.failed_publishes.wait(self.address)
        if wait:
            seconds = math.ceil(wait)
            return self._refuse(
                "throttled", f"too many refused publishes from this address (next in {seconds} s)",
                "NetStream.Publish.Denied",
                f"Too many refused publishes; try again in {seconds} s.", None, failed=False,
            )  # fmt: skip
        if app != server.settings.rtmp_app:
            return self._refuse(
                "unknown_application",
                f'unknown application "{loggable_path(app)}" (this agent serves'
                f' "{server.settings.rtmp_app}")',
                "NetStream.Publish.BadName",
                f"Unknown application; publish to {server.ingest_url}/<stream key>.", None,
            )  # fmt: skip
        if not key or len(key) > MAX_STREAM_KEY:
            return self._refuse(
                "malformed_key", "malformed stream key", "NetStream.Publish.BadName",
                "Invalid stream key.", None,
            )  # fmt: skip
        if key in server.refused_keys:
            return self._refuse(
                "unknown_key_cached", "unknown or inactive key (refused a moment ago)",
                "NetStream.Publish.BadName", "Unknown or inactive stream key.", kid,
            )  # fmt: skip
        placed = await server.placement.before_claim(self, key)
        if placed is not None:  # joined a relay here, refused, or handed to another worker
            return placed
        ingest = LiveIngest(key, self)
        server.live[key] = ingest  # the registry reserved the key while rig answers
        self.ingest, self.stream_key = ingest, key
        try:
            await server.released(key)  # the previous publish of this key, if any
            claim = await server.rig.claim(key, server.ingest_url)
        except StreamInUse as exc:
            self._release()
            return self._refuse_elsewhere(exc.details, kid)
        except StreamNotFound:
            self._release()
            server.refused_keys.add(key)
            return self._refuse(
                "unknown_key", "unknown or inactive key", "NetStream.Publish.BadName",
                "Unknown or inactive stream key.", kid,
            )  # fmt: skip
        except RigUnavailable as exc:
            self._release()
            return self._refuse(
                "rig_unavailable", str(exc), "NetStream.Publish.Denied",
                "Service unavailable, try again.", kid, level=logging.ERROR, failed=False,
            )  # fmt: skip
        except asyncio.CancelledError:
            self._release()  # the connection closed while rig answered
            raise
        ingest.claim_id = claim.claim_id
        ingest.stream_id = claim.stream_id or claim.claim_id
        ingest.thumbnail_wanted = claim.thumbnail_wanted
        placed = await server.placement.after_claim(self, key, claim)
        if placed is not None:  # another key of the stream is relayed already
            return placed
        if self._closed:  # gone while rig answered: give the claim back at once
            self._end_publish(end_reasons.CONNECTION_CLOSED)
            return False
        relay = server.new_relay(f"stream {kid}", claim.destinations)
        ingest.start(key, claim, relay)
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

    def _refuse_elsewhere(self, details: dict[str, object], kid: str) -> bool:
        """rig says the stream is held by another agent (1009): say which, so a backup
        encoder can be pointed there (an agent's name and public URL are no secret)."""
        url, name = details.get("ingestUrl"), details.get("agent")
        where = clean(url) if isinstance(url, str) else ""
        agent = clean(name) if isinstance(name, str) else ""
        if not where:
            return self._refuse(
                "live_elsewhere", "live on another agent", "NetStream.Publish.Denied",
                "Stream already publishing.", kid, failed=False,
            )  # fmt: skip
        if details.get("reason") == BACKUP_ELSEWHERE:
            description = f"Publish the backup to the agent that holds the stream: {where}"
        else:
            description = f"Stream already publishing on {where}"
        if agent:
            description += f" (agent {agent})."
        words = f"live on another agent ({escape(agent)}, {escape(where)})"
        if details.get("reason") == BACKUP_ELSEWHERE:
            words = "a backup key of a stream " + words
        return self._refuse(
            "live_elsewhere", words, "NetStream.Publish.Denied", description, kid, failed=False
        )  # fmt: skip

    def _refuse(
        self,
        reason: str,
        words: str,
        code: str,
        description: str,
        kid: str | None,
        level: int = logging.WARNING,
        failed: bool = True,
    ) -> bool:
        """Refuse the pending publish. `failed`: it costs the address a token of its
        budget of refused publishes (a wrong key or application, not a busy stream or rig
        down, nor a publish refused because the budget is spent)."""
        server = self.server
        if failed:
            server.failed_publishes.failed(self.address)
        server.stats.refuse(reason)
        if kid is None:
            server.refusals.refused(
                reason, "refused publish from %s: %s", self.peer, words, level=level
            )
        else:
            server.refusals.refused(
                reason, "refused publish of stream %s from %s: %s", kid, self.peer, words,
                level=level,
            )  # fmt: skip
        self.session.reject_publish(code, description)
        return False

    def _release(self) -> None:
        server = self.server
        if self.stream_key is not None and server.live.get(self.stream_key) is self.ingest:
            del server.live[self.stream_key]
            server.placement.released(self.stream_key)
        self.ingest, self.source, self.stream_key = None, None, None

    def _end_publish(self, reason: str, deliberate: bool = False) -> None:
        """This connection's publish is over (`deliberate`: it unpublished): its
        broadcast decides what that means (agent.broadcast). A publish whose claim rig
        granted but that had not started (the connection closed meanwhile) gives the
        claim back at once."""
        ingest = self.ingest
        if ingest is None:
            return
        if self.source is None:
            if ingest.claim_id is not None:
                assert self.stream_key is not None
                ingest.keys.add(self.stream_key)
                self.server.release_claim(ingest, end_reasons.end_reason(reason))
                ingest.claim_id = None
            self._release()
            return
        log.info("stream %s: publish from %s ended: %s", ingest.key_id, self.peer, reason)
        ingest.left(self, reason, deliberate)


# How a connection that missed the deadline of a step before its publish is named.
_DEADLINE_WORDS: Final = {
    "handshake_timeout": "no handshake in time",
    "publish_timeout": "did not publish in time",
}
# How a refused connection is named in the log.
_ADMISSION_WORDS: Final = {
    "server_full": "as many connections as allowed already (RIG_AGENT_MAX_CONNECTIONS)",
    "address_connections": "as many connections from this address as allowed already",
    "address_unauthenticated": "as many connections from this address not publishing yet as"
    " allowed already",
}
