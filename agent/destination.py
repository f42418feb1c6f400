"""One destination of one ingest: its own queue, its own thread, its own PyAV muxer.

The worker connects (RtmpPublisher), muxes the ingest's packets with a PyAV FLV muxer
into a file-like object whose bytes are cut back into FLV tags and sent as RTMP
messages. A destination that fails is retried with capped exponential backoff and
jitter; each (re)connection gets a fresh muxer, so codec configuration (AVC/HEVC/AAC
sequence headers, metadata) is sent again and media restarts on a keyframe. Nothing a
destination does can block the ingest or another destination: the fan-out only ever
appends to this worker's bounded MediaQueue.
"""

import contextlib
import enum
import logging
import random
import ssl
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from agent.egress import EgressError, RtmpPublisher, parse_target
from agent.flv import SCRIPT, FlvTagReader, add_set_data_frame
from agent.media_queue import END_OF_STREAM, MediaPacket, MediaQueue

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)  # FLV and RTMP timestamps are milliseconds
# Muxer options: no seeking back to patch duration (the output is a live socket);
# no interleaving hold-back (av_interleaved_write_frame would otherwise keep a packet
# until every stream has one); one write per packet so nothing waits in AVIO's buffer.
MUXER_OPTIONS = {
    "flvflags": "no_duration_filesize",
    "max_interleave_delta": "1",
    "flush_packets": "1",
}


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
    """The ingest's demuxed streams (PyAV templates), published once by the fan-out."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.streams: list[Any] | None = None
        self.metadata: dict[str, str] = {}
        # The publisher's latest onMetaData as an FLV script body (set by the fan-out).
        self.script: bytes | None = None

    def publish(self, streams: list[Any] | None, metadata: dict[str, str]) -> None:
        """Set the streams (None: the ingest ended before any) and wake the workers."""
        self.streams, self.metadata = streams, metadata
        self._ready.set()

    def wait(self, stop: threading.Event) -> list[Any] | None:
        """Block until published or `stop` is set."""
        while not self._ready.wait(0.1):
            if stop.is_set():
                return None
        return self.streams


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


class _TagSender:
    """File-like sink for one PyAV FLV muxer: cuts its bytes into tags and sends them.

    The muxer's own script tag (its regenerated onMetaData) is dropped: the worker sends
    the publisher's original metadata instead, once per connection.
    """

    def __init__(self, publisher: RtmpPublisher) -> None:
        self._publisher = publisher
        self._reader = FlvTagReader()
        self.error: Exception | None = None

    def write(self, data: bytes) -> int:
        messages = [tag for tag in self._reader.feed(data) if tag[0] != SCRIPT]
        if messages:
            try:
                self._publisher.send(messages)
            except EgressError as exc:
                self.error = exc  # PyAV reports an I/O error; the worker re-raises this one
                raise
        return len(data)


class _TrackMuxer:
    """A PyAV FLV muxer for one track (audio or video) of one destination connection.

    One muxer per track, not one for both: with two streams, FFmpeg's interleaver
    (av_interleaved_write_frame) holds every packet until the other track has a later
    one, which delays each packet by one packet interval (~15 ms measured) whatever
    `max_interleave_delta` says. With one stream per muxer every packet is written at
    once; packets reach the connection in the order the publisher sent them.
    """

    def __init__(self, template: Any, publisher: RtmpPublisher) -> None:
        self.sink = _TagSender(publisher)
        self.container = av.open(self.sink, "w", format="flv", options=MUXER_OPTIONS)
        self.stream = self.container.add_stream_from_template(template)
        self.container.start_encoding()  # the header now: the sequence header goes first
        self.closed = False

    def mux(self, packet: MediaPacket) -> None:
        av_packet = av.Packet(packet.data)
        av_packet.stream = self.stream
        av_packet.time_base = MS
        av_packet.dts = packet.dts
        av_packet.pts = packet.pts
        av_packet.is_keyframe = packet.is_keyframe
        try:
            self.container.mux(av_packet)
        except Exception:
            if self.sink.error is not None:
                raise self.sink.error from None
            raise

    def close(self) -> None:
        """Write what the muxer still holds (its trailer: the end-of-sequence tag)."""
        self.closed = True
        self.container.close()

    def discard(self) -> None:
        """Release a muxer whose connection already failed (its trailer has nowhere to go)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(av.FFmpegError, EgressError, OSError, ValueError):
                self.container.close()


class DestinationWorker:
    """Relays one ingest to one destination, in a thread of its own."""

    def __init__(
        self,
        destination: Destination,
        label: str,
        inputs: InputStreams,
        settings: EgressSettings,
    ) -> None:
        self.destination = destination
        self.label = label
        self.queue = MediaQueue(settings.queue_bytes, settings.queue_seconds)
        self.state = DestinationState.CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self._bytes_sent_before = 0  # by earlier connections
        self._publisher: RtmpPublisher | None = None
        self.packets_sent = 0
        self._inputs = inputs
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dest-{label}", daemon=True)

    def start(self) -> None:
        """Start connecting at once: media queues up meanwhile and is sent from a keyframe."""
        self._thread.start()

    def finish(self) -> None:
        """The publisher stopped: send what is queued, then close cleanly."""
        self.queue.end()

    def stop(self) -> None:
        """Stop now, sending nothing more (agent shutdown after the drain deadline)."""
        self._stop.set()
        self.queue.end()

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
        """The worker thread is still running."""
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True if it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        try:
            target = parse_target(self.destination.url)
        except EgressError as exc:
            self._fail(str(exc))
            return
        first = True
        while not self._stop.is_set():
            if not first:
                if self.queue.ended:
                    # The stream ended while this destination was down: nothing live is
                    # left to deliver, so stop instead of retrying forever.
                    log.info("%s: stream ended while the destination was down", self.label)
                    break
                self.queue.skip_to_latest_keyframe()  # resume live, not with stale media
            first = False
            self.state = DestinationState.CONNECTING
            publisher = RtmpPublisher(
                target,
                connect_timeout=settings.connect_timeout,
                write_timeout=settings.write_timeout,
                tls_context=settings.tls_context,
            )
            self._publisher = publisher
            try:
                publisher.open()
                self.state = DestinationState.LIVE
                backoff.reset()
                log.info("%s: live on %s", self.label, target.safe_name)
                ended = self._pump(publisher)
                publisher.close(clean=True)
                self._retire(publisher)
                if ended:
                    log.info("%s: stream ended, destination closed", self.label)
                    self.state = DestinationState.OFF
                    return
            except (EgressError, av.FFmpegError, OSError) as exc:
                publisher.close(clean=False)
                self._retire(publisher)
                self.last_error = str(exc)
                self.reconnects += 1
                self.state = DestinationState.BACKOFF
                delay = backoff.next_delay()
                log.warning("%s: %s; retrying in %.1f s", self.label, exc, delay)
                if self._stop.wait(delay):
                    break
        self.state = DestinationState.OFF

    def _retire(self, publisher: RtmpPublisher) -> None:
        self._bytes_sent_before += publisher.bytes_sent
        self._publisher = None

    def _fail(self, error: str) -> None:
        self.last_error = error
        self.state = DestinationState.FAILED
        log.error("%s: %s; giving up", self.label, error)

    def _pump(self, publisher: RtmpPublisher) -> bool:
        """Mux queued packets to the destination; True once the ingest ended."""
        templates = self._inputs.wait(self._stop)
        if templates is None:
            return True
        by_index = {s.index: s for s in templates}
        muxers: dict[int, _TrackMuxer] = {}
        waiting_for_keyframe = any(s.type == "video" for s in templates)
        last_dts: dict[int, int] = {}
        try:
            while not self._stop.is_set():
                try:
                    packet = self.queue.get(timeout=0.5)
                except TimeoutError:
                    publisher.send([])  # answer pings and notice a closed peer while idle
                    continue
                if packet is END_OF_STREAM:
                    for muxer in muxers.values():
                        muxer.close()
                    return True
                if waiting_for_keyframe:
                    # Start (or restart) on a video keyframe; what precedes it is useless.
                    if not packet.starts_gop:
                        continue
                    waiting_for_keyframe = False
                index = packet.stream_index
                if index not in by_index or packet.dts < last_dts.get(index, -1):
                    continue  # unknown stream, or timestamps going back: FLV cannot carry it
                last_dts[index] = packet.dts
                if not muxers:
                    # What a (re)connection starts with: the publisher's own onMetaData,
                    # then each track's muxer header with its sequence header (AVC/HEVC/
                    # AAC configuration), then media from a keyframe.
                    if self._inputs.script is not None:
                        script = add_set_data_frame(self._inputs.script)
                        publisher.send([(SCRIPT, packet.dts, script)])
                    muxers = {i: _TrackMuxer(t, publisher) for i, t in by_index.items()}
                muxers[index].mux(packet)
                self.packets_sent += 1
            return False
        finally:
            for muxer in muxers.values():
                muxer.discard()
