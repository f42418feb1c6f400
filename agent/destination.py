"""One destination of one ingest: its own queue, its own thread, its own connection.

The worker connects (RtmpPublisher) and sends the ingest's media messages, muxed once
for every destination by the fan-out (`agent.remux`), taking everything queued in one
write. A destination that fails is retried with capped exponential backoff and
jitter; each (re)connection starts with the publisher's metadata and the current
codec configuration (AVC/HEVC/AAC sequence headers), then media from a keyframe.
Nothing a destination does can block the ingest or another destination: the fan-out
only ever appends to this worker's bounded MediaQueue.
"""

import enum
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.egress import EgressError, RtmpPublisher, RtmpTarget, parse_target
from agent.flv import SCRIPT, add_set_data_frame
from agent.media_queue import MediaMessage, MediaQueue

if TYPE_CHECKING:
    from agent.remux import Remuxer

log = logging.getLogger(__name__)


class DestinationState(enum.StrEnum):
    """What a destination is doing, as reported to operators and users."""

    CONNECTING = "connecting"
    LIVE = "live"
    BACKOFF = "backoff"
    FAILED = "failed"
    OFF = "off"


@dataclass(frozen=True)
class Destination:
    """A destination as rig describes it. `url` embeds the destination's stream key."""

    id: int
    service: str
    url: str

    def __repr__(self) -> str:  # keep the key out of any accidental log line
        return f"Destination(id={self.id}, service={self.service!r})"


@dataclass(frozen=True)
class EgressSettings:
    """Limits and timings shared by every destination worker."""

    queue_bytes: int = 64 * 1024 * 1024
    queue_seconds: float = 10.0
    connect_timeout: float = 10.0
    write_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    tls_context: ssl.SSLContext | None = None


class InputStreams:
    """What every connection of an ingest starts with, published once by the fan-out."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.has_video = False
        # The current codec configuration (sequence headers), replaced whole by the
        # demux thread when the publisher sends a new one.
        self.headers: list[MediaMessage] = []
        # The publisher's latest onMetaData as an FLV script body (set by the fan-out).
        self.script: bytes | None = None
        self.ended_early = False

    def publish(self, remuxer: "Remuxer | None") -> None:
        """The ingest's tracks are known (None: it ended before any); wake the workers."""
        if remuxer is None:
            self.ended_early = True
        else:
            self.has_video = remuxer.has_video
            self.headers = remuxer.headers()
        self._ready.set()

    @property
    def ready(self) -> bool:
        """The tracks are known (or the ingest ended before any)."""
        return self._ready.is_set()


class Backoff:
    """Capped exponential backoff with jitter: initial, doubling, at most `maximum`."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0

    def next_delay(self) -> float:
        """The next wait, with ±20 % jitter so many destinations do not retry in lockstep."""
        delay = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """Back to the initial delay after a successful connection."""
        self.attempt = 0


class DestinationWorker:
    """Relays one ingest to one destination.

    Connecting (TCP, TLS, RTMP handshake, publish: blocking, with deadlines) runs in a
    connector thread of its own, so a slow destination never holds up anything else.
    Once connected, the socket is handed to the ingest's relay thread, which calls
    `service` after every packet and whenever the socket is ready: it moves queued
    messages to the socket without blocking. Media queued meanwhile is kept (bounded)
    and sent from a keyframe.
    """

    def __init__(
        self,
        destination: Destination,
        label: str,
        inputs: InputStreams,
        settings: EgressSettings,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.destination = destination
        self.label = label
        self.queue = MediaQueue(settings.queue_bytes, settings.queue_seconds)
        self.state = DestinationState.CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self.done = False  # nothing more to do: ended, stopped or failed for good
        self._bytes_sent_before = 0  # by earlier connections
        self._inputs = inputs
        self._settings = settings
        self._wake = wake  # wakes the relay thread
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._stop = threading.Event()
        self._interrupt = threading.Event()  # ends a connector's backoff wait early
        self._connector: threading.Thread | None = None
        self._target: RtmpTarget | None = None  # parsed from the URL by start()
        self._connected: RtmpPublisher | None = None  # handed over by the connector
        self._publisher: RtmpPublisher | None = None  # driven by the relay thread
        self._attached_before = False
        self._waiting_for_keyframe = False
        self._started = False

    # ------------------------------------------------------- called from any thread

    def start(self) -> None:
        """Start connecting at once: media queues up meanwhile and is sent from a keyframe."""
        try:
            target = parse_target(self.destination.url)
        except EgressError as exc:
            self.last_error = str(exc)
            self.state = DestinationState.FAILED
            self.done = True
            log.error("%s: %s; giving up", self.label, exc)
            return
        self._target = target
        self._connect(delay=0.0)

    def finish(self) -> None:
        """The publisher stopped: send what is queued, then close cleanly."""
        self.queue.end()
        self._interrupt.set()
        self._wake()

    def stop(self) -> None:
        """Stop now, sending nothing more (agent shutdown after the drain deadline)."""
        self._stop.set()
        self.finish()

    @property
    def bytes_sent(self) -> int:
        """Bytes sent to the destination over every connection so far."""
        current = self._publisher.bytes_sent if self._publisher is not None else 0
        return self._bytes_sent_before + current

    def health(self) -> dict[str, object]:
        """The destination's state for heartbeats (no URL: it holds the key)."""
        return {
            "id": self.destination.id,
            "service": self.destination.service,
            "state": self.state.value,
            "lastError": self.last_error,
            "bytesSent": self.bytes_sent,
            "reconnects": self.reconnects,
            "droppedPackets": self.queue.dropped_packets,
        }

    @property
    def alive(self) -> bool:
        """The destination still has work: connecting, sending or draining."""
        return not self.done or self._connector_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the connector thread; True if the worker has nothing left to do."""
        connector = self._connector
        if connector is not None:
            connector.join(timeout)
        return not self.alive

    # ------------------------------------------------------- called by the relay thread

    def fileno(self) -> int | None:
        """The connected socket, for the relay thread's poll(); None when not connected."""
        return self._publisher.fileno() if self._publisher is not None else None

    @property
    def wants_write(self) -> bool:
        """Bytes are waiting for the socket to become writable."""
        return self._publisher is not None and self._publisher.pending > 0

    def on_readable(self) -> None:
        """The destination sent something (acks, pings, a close)."""
        if self._publisher is not None:
            try:
                self._publisher.read_some()
            except EgressError as exc:
                self._lost(exc)

    def service(self, now: float) -> None:
        """Move queued media to the connection without blocking; notice the end."""
        if self.done:
            return
        if self._stop.is_set():
            self._close(clean=False)
            return
        if self._publisher is None and not self._attach():
            return
        try:
            self._pump(now)
        except EgressError as exc:
            self._lost(exc)

    def _attach(self) -> bool:
        """Take over a connection the connector made, once the ingest's tracks are known."""
        if self._connected is None or not self._inputs.ready:
            return False
        publisher, self._connected = self._connected, None
        if self._inputs.ended_early:
            publisher.close(clean=True)
            self._end("the ingest ended before any media")
            return False
        if self._attached_before:
            self.queue.skip_to_latest_keyframe()  # resume live, not with stale media
        self._attached_before = True
        self._publisher = publisher
        self._waiting_for_keyframe = self._inputs.has_video
        self._started = False
        self.state = DestinationState.LIVE
        self._backoff.reset()
        log.info("%s: live on %s", self.label, publisher.target.safe_name)
        return True

    def _pump(self, now: float) -> None:
        publisher = self._publisher
        assert publisher is not None
        if publisher.pending:
            publisher.write_some(now)
            if publisher.pending:
                return  # the socket is full: media waits in the bounded queue
        batch = self.queue.take() if len(self.queue) else []
        if not batch:
            if self.queue.ended:
                self._close(clean=True)
            return
        if self._waiting_for_keyframe:
            # Start (or restart) on a video keyframe; what precedes it is useless.
            start = next((i for i, m in enumerate(batch) if m.starts_gop), None)
            if start is None:
                return
            batch = batch[start:]
            self._waiting_for_keyframe = False
        out = [(m.type_id, m.timestamp, m.body) for m in batch]
        if not self._started:
            # What a (re)connection starts with: the publisher's own onMetaData, then each
            # track's sequence header (with the muxer's timestamp, 0 unless the publisher
            # changed it mid-stream, as a fresh FFmpeg muxer would send it: receivers such
            # as nginx-rtmp's recorder then keep absolute timestamps); then media.
            self._started = True
            inputs = self._inputs
            head = []
            if inputs.script is not None:
                head.append((SCRIPT, batch[0].timestamp, add_set_data_frame(inputs.script)))
            head += [(h.type_id, h.timestamp, h.body) for h in inputs.headers]
            out = head + out
        publisher.queue(out)
        publisher.write_some(now)

    def _lost(self, exc: Exception) -> None:
        """The connection failed: close it and reconnect after a backoff delay."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close(clean=False)
            self._bytes_sent_before += publisher.bytes_sent
        self.last_error = str(exc)
        self.reconnects += 1
        if self.queue.ended:
            log.warning("%s: %s; the stream has ended, not reconnecting", self.label, exc)
            self._end(None)
            return
        self.state = DestinationState.BACKOFF
        delay = self._backoff.next_delay()
        log.warning("%s: %s; retrying in %.1f s", self.label, exc, delay)
        self._connect(delay)

    def _close(self, *, clean: bool) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close(clean=clean)
            self._bytes_sent_before += publisher.bytes_sent
        connected, self._connected = self._connected, None
        if connected is not None:
            connected.close(clean=False)
        self._end("stream ended, destination closed" if clean else None)

    def _end(self, message: str | None) -> None:
        if message:
            log.info("%s: %s", self.label, message)
        self.state = DestinationState.OFF
        self.done = True

    # ------------------------------------------------------------ connector thread

    def _connector_alive(self) -> bool:
        return self._connector is not None and self._connector.is_alive()

    def _connect(self, delay: float) -> None:
        self._connector = threading.Thread(
            target=self._connect_loop,
            args=(self._target, delay),
            name=f"connect-{self.label}",
            daemon=True,
        )
        self._connector.start()

    def _connect_loop(self, target: RtmpTarget, delay: float) -> None:
        """Connect and publish, retrying with backoff; hand the connection over."""
        settings = self._settings
        while True:
            if delay:
                self._interrupt.wait(delay)
            if self._stop.is_set():
                self._end(None)
                return
            if self.queue.ended and (self._attached_before or delay):
                # The stream ended while this destination was down: nothing live is left
                # to deliver, so stop instead of retrying forever.
                self._end("stream ended while the destination was down")
                self._wake()
                return
            self.state = DestinationState.CONNECTING
            publisher = RtmpPublisher(
                target,
                connect_timeout=settings.connect_timeout,
                write_timeout=settings.write_timeout,
                tls_context=settings.tls_context,
            )
            try:
                publisher.open()
                publisher.start_streaming()
            except (EgressError, OSError) as exc:
                publisher.close(clean=False)
                self.last_error = str(exc)
                self.reconnects += 1
                self.state = DestinationState.BACKOFF
                delay = self._backoff.next_delay()
                log.warning("%s: %s; retrying in %.1f s", self.label, exc, delay)
                continue
            self._connected = publisher
            self._wake()
            return
