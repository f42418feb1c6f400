"""The agent's RTMP ingest server: the asyncio layer around the sans-I/O ServerSession.

This module only moves bytes and enforces deadlines; the protocol lives in
`agent.rtmp`. Each connection has a deadline to get from TCP accept to `publish`, an
idle deadline afterwards, and a write deadline; a malformed or oversized input closes
that connection only. A publish is authorised by rig before any media is accepted;
once accepted, the connection is handed to the ingest's relay thread, which reads the
publisher itself (`agent.ingest_reader`) until the publish ends, and this task waits
for that end to release the claim.
"""

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.destination import EgressSettings
from agent.fanout import IngestTooSlow, Relay
from agent.metrics import AgentStats
from agent.rig_client import (
    RigClient,
    RigUnavailable,
    StreamInUse,
    StreamNotFound,
    destinations_from,
)
from agent.rtmp import ProtocolError, ServerSession
from agent.rtmp.events import MediaReceived, PublishEnded, PublishRequested
from agent.rtmp.message import AGGREGATE, split_aggregate
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
MAX_STREAM_KEY = 256


def key_id(stream_key: str) -> str:
    """A short, stable, non-reversible name for a stream key, for logs."""
    return hashlib.sha256(stream_key.encode()).hexdigest()[:8]


def stream_key_of(stream_name: str) -> str:
    """The key a publisher sent, without the query string some add (`key?foo=bar`)."""
    return stream_name.partition("?")[0]


@dataclass
class LiveIngest:
    """A publish in progress on this agent."""

    key_id: str
    session: ServerSession
    relay: Relay | None = None
    claim_id: str | None = None
    peer: str = ""
    started: float = field(default_factory=time.monotonic)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    kick_reason: str = "kicked"
    # Wakes the connection's pending read (set by its IngestConnection).
    wake_reader: Callable[[], None] | None = None
    # Counters at the previous heartbeat, for rates.
    last_sample: tuple[float, int, int] = (0.0, 0, 0)

    def kick(self, reason: str = "kicked") -> None:
        """End this publish: rig revoked it ("kicked"), or the agent is shutting down."""
        self.kick_reason = reason
        self.closing.set()
        if self.wake_reader is not None:
            self.wake_reader()

    def health(self, ingest_url: str) -> dict[str, object]:
        """Ingest statistics and per-destination state, for the heartbeat."""
        now = time.monotonic()
        relay = self.relay
        bytes_in = self.session.bytes_received
        frames = relay.video_packets if relay else 0
        then, bytes_then, frames_then = self.last_sample
        elapsed = now - then if then else now - self.started
        self.last_sample = (now, bytes_in, frames)
        ingest: dict[str, object] = {
            "bitrate": round((bytes_in - bytes_then) * 8 / elapsed) if elapsed > 0 else 0,
            "frameRate": round((frames - frames_then) / elapsed, 2) if elapsed > 0 else 0,
            "uptime": round(now - self.started, 1),
            "bytesIn": bytes_in,
        }
        if relay is not None:
            ingest.update(relay.ingest_info)
        destinations = [w.health() for w in relay.workers.values()] if relay else []
        return {"ingestUrl": ingest_url, "ingest": ingest, "destinations": destinations}


class IngestServer:
    """Accepts RTMP publishers and relays each one through a Relay."""

    def __init__(self, settings: AgentSettings, rig: RigClient, egress: EgressSettings) -> None:
        self.settings = settings
        self.rig = rig
        self.egress = egress
        self.live: dict[str, LiveIngest] = {}  # by stream key
        self.relays: set[Relay] = set()
        self._connections: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._heartbeats: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.stats = AgentStats()  # publishes accepted and refused, for agent/metrics.py

    @property
    def ingest_url(self) -> str:
        """The URL streamers publish to (announced to rig with each claim)."""
        if self.settings.public_url:
            return self.settings.public_url
        host = self.settings.listen_host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104
            host = socket.gethostname()
        return f"rtmp://{host}:{self.port}/{self.settings.rtmp_app}"

    def spawn(self, coroutine: object, name: str) -> None:
        """Run a background task we keep a reference to until it ends."""
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _heartbeat_loop(self) -> None:
        """Renew our claims; kick revoked publishes; apply destination changes."""
        failing = False
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            live = [i for i in self.live.values() if i.claim_id and i.relay]
            if not live:
                continue
            claims = [
                {"claimId": i.claim_id, "streamKey": key, "health": i.health(self.ingest_url)}
                for key, i in self.live.items()
                if i in live
            ]
            try:
                answers = await self.rig.heartbeat(claims)
            except (RigUnavailable, StreamNotFound, StreamInUse) as exc:
                if not failing:
                    log.warning("heartbeat failed, streaming on from cached config: %s", exc)
                failing = True
                continue
            if failing:
                log.info("heartbeat to rig works again")
            failing = False
            self.apply_heartbeat(answers)

    def apply_heartbeat(self, answers: list[dict]) -> None:
        """Act on rig's answer to a heartbeat."""
        by_claim = {i.claim_id: i for i in self.live.values() if i.claim_id}
        for answer in answers:
            ingest = by_claim.get(answer.get("claimId"))
            if ingest is None:
                continue
            if answer.get("status") == "revoked":
                log.warning("stream %s: rig revoked the claim, ending the publish", ingest.key_id)
                ingest.claim_id = None  # nothing to release: rig already ended it
                ingest.kick()
            elif ingest.relay is not None:
                ingest.relay.apply_destinations(destinations_from(answer.get("destinations")))

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Listen for publishers."""
        self._server = await asyncio.start_server(
            self._accept, self.settings.listen_host, self.settings.listen_port, limit=READ_SIZE
        )
        log.info("RTMP ingest listening on %s:%s", self.settings.listen_host, self.port)
        self._heartbeats = asyncio.create_task(self._heartbeat_loop(), name="heartbeats")

    async def close(self) -> None:
        """Stop accepting, end every ingest, let destinations drain, then stop them."""
        if self._server is not None:
            self._server.close()
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        for ingest in list(self.live.values()):
            ingest.kick("shutdown")
        if self._connections:
            await asyncio.wait(self._connections, timeout=2.0)
        for task in self._connections:
            task.cancel()
        relays = list(self.relays)
        deadline = self.settings.shutdown_timeout
        drained = await asyncio.gather(*(asyncio.to_thread(r.join, deadline) for r in relays))
        for relay, done in zip(relays, drained, strict=True):
            if not done:
                relay.stop()
                await asyncio.to_thread(relay.join, 2.0)
        if self._background:  # claim releases
            await asyncio.wait(self._background, timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        if len(self._connections) >= self.settings.max_connections:
            log.warning("refusing %s: %d connections already", peer, len(self._connections))
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await IngestConnection(self, reader, writer, peer).run()
        finally:
            self._connections.discard(task)


class IngestConnection:
    """One RTMP connection from a publisher."""

    def __init__(
        self,
        server: IngestServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.session = ServerSession(max_message_size=server.settings.max_message_bytes)
        self.ingest: LiveIngest | None = None
        self.stream_key: str | None = None

    async def run(self) -> None:
        """Serve the connection until it ends; never raises."""
        settings = self.server.settings
        loop = asyncio.get_running_loop()
        publish_deadline = loop.time() + settings.handshake_timeout
        try:
            while not self.session.closed:
                if self.ingest is not None and self.ingest.closing.is_set():
                    break
                if self.session.publishing:
                    timeout = settings.idle_timeout
                else:
                    timeout = publish_deadline - loop.time()
                    if timeout <= 0:
                        raise TimeoutError("did not publish in time")
                data = await self._read(timeout)
                if not data:
                    break
                await self._handle(self.session.receive_data(data))
                relay = self.ingest.relay if self.ingest is not None else None
                if relay is not None:
                    relay.flush()
                await self._flush()
                if relay is not None and self.session.publishing:
                    self._end_publish(await self._hand_over(relay))
                    break
        except ProtocolError as exc:
            log.warning("closing RTMP connection from %s: %s", self.peer, exc)
        except TimeoutError as exc:
            log.warning("closing RTMP connection from %s: %s", self.peer, exc or "timed out")
        except IngestTooSlow as exc:
            log.error("closing RTMP connection from %s: %s", self.peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("RTMP connection from %s lost: %s", self.peer, exc)
        finally:
            self._end_publish("connection closed")
            self.writer.close()

    async def _read(self, timeout: float) -> bytes:  # noqa: ASYNC109 (per-read deadline)
        """The next bytes from the publisher; b"" at its end or when the publish is kicked.

        One plain read under a deadline: no extra futures per read (this runs for every
        few kilobytes of every ingest). A kick wakes it through `_wake_reader`.
        """
        if self.ingest is not None and self.ingest.closing.is_set():
            return b""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            raise TimeoutError("no data in time") from None

    async def _hand_over(self, relay: Relay) -> str:
        """The publish is accepted: from now on the ingest's relay thread reads the
        publisher itself (agent.ingest_reader). Wait until it says the publish is over."""
        assert self.ingest is not None
        self.writer.transport.pause_reading()
        self.reader.feed_eof()
        buffered = await self.reader.read()  # what arrived since the last read, at once
        sock = self.writer.get_extra_info("socket").dup()
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[str] = loop.create_future()

        def resolve(reason: str) -> None:
            if not ended.done():
                ended.set_result(reason)

        def on_end(reason: str) -> None:  # called in the relay thread
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(resolve, reason)

        ingest = self.ingest
        ingest.wake_reader = lambda: relay.kick(ingest.kick_reason)
        relay.attach_ingest(sock, self.session, buffered, self.server.settings.idle_timeout, on_end)
        if ingest.closing.is_set():
            relay.kick(ingest.kick_reason)
        return await ended

    def _wake_reader(self) -> None:
        """Make the pending read return b"": stop taking data, then signal end of input."""
        self.writer.transport.pause_reading()
        self.reader.feed_eof()

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.server.settings.write_timeout)

    async def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, MediaReceived):
                message = event.message
                relay = self.ingest.relay if self.ingest else None
                if relay is None:
                    continue
                if message.type_id == AGGREGATE:
                    for sub in split_aggregate(message):
                        relay.feed(sub.type_id, sub.timestamp, bytes(sub.payload))
                else:
                    relay.feed(message.type_id, message.timestamp, bytes(message.payload))
            elif isinstance(event, PublishRequested):
                await self._authorise(event)
            elif isinstance(event, PublishEnded):
                self._end_publish(event.reason or "unpublished")

    async def _authorise(self, event: PublishRequested) -> None:
        """Ask rig what this key is for; accept or refuse before any media flows."""
        server = self.server
        session = self.session
        key = stream_key_of(event.stream_name)
        kid = key_id(key)
        app = (session.app or "").partition("?")[0].strip("/")
        if app != server.settings.rtmp_app:
            log.warning("refused publish from %s: unknown application", self.peer)
            server.stats.refuse("unknown_application")
            session.reject_publish("NetStream.Publish.BadName", "Unknown application.")
            return
        if not key or len(key) > MAX_STREAM_KEY:
            log.warning("refused publish from %s: malformed stream key", self.peer)
            server.stats.refuse("malformed_key")
            session.reject_publish("NetStream.Publish.BadName", "Invalid stream key.")
            return
        if key in server.live:
            log.warning("refused publish of stream %s from %s: already live here", kid, self.peer)
            server.stats.refuse("already_live_here")
            session.reject_publish("NetStream.Publish.Denied", "Stream already publishing.")
            return
        ingest = LiveIngest(key_id=kid, session=session, peer=self.peer)
        ingest.wake_reader = self._wake_reader
        server.live[key] = ingest  # reserve the key while rig answers
        self.ingest, self.stream_key = ingest, key
        try:
            claim = await server.rig.claim(key, server.ingest_url)
        except StreamInUse:
            log.warning(
                "refused publish of stream %s from %s: live on another agent", kid, self.peer
            )
            self._release()
            server.stats.refuse("live_elsewhere")
            session.reject_publish("NetStream.Publish.Denied", "Stream already publishing.")
            return
        except StreamNotFound:
            log.warning("refused publish of stream %s from %s: unknown key", kid, self.peer)
            self._release()
            server.stats.refuse("unknown_key")
            session.reject_publish("NetStream.Publish.BadName", "Unknown or inactive stream key.")
            return
        except RigUnavailable as exc:
            log.error("refused publish of stream %s from %s: %s", kid, self.peer, exc)
            self._release()
            server.stats.refuse("rig_unavailable")
            session.reject_publish("NetStream.Publish.Denied", "Service unavailable, try again.")
            return
        destinations = claim.destinations
        ingest.claim_id = claim.claim_id
        relay = Relay(f"stream {kid}", destinations, server.egress)
        ingest.relay = relay
        server.relays = {r for r in server.relays if not r.done}
        server.relays.add(relay)
        relay.start()
        server.stats.accept(ingest)
        session.accept_publish()
        log.info(
            "publish of stream %s from %s accepted: %d destination(s)",
            kid,
            self.peer,
            len(destinations),
        )
        await self._handle(session.receive_data(b""))  # media held while rig answered

    def _release(self) -> None:
        if self.stream_key is not None and self.server.live.get(self.stream_key) is self.ingest:
            del self.server.live[self.stream_key]
        self.ingest, self.stream_key = None, None

    def _end_publish(self, reason: str) -> None:
        ingest = self.ingest
        if ingest is None:
            return
        if ingest.relay is not None:
            ingest.relay.finish()
            log.info("stream %s from %s ended: %s", ingest.key_id, self.peer, reason)
        if ingest.claim_id is not None:
            release = self._release_claim(ingest.key_id, ingest.claim_id)
            self.server.spawn(release, f"release-{ingest.key_id}")
            ingest.claim_id = None
        self._release()

    async def _release_claim(self, kid: str, claim_id: str) -> None:
        try:
            await self.server.rig.release(claim_id)
        except (RigUnavailable, StreamInUse) as exc:
            # The claim expires on its own once heartbeats stop mentioning it.
            log.warning("stream %s: could not release the claim: %s", kid, exc)
