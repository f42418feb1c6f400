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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.egress import EgressError, RtmpPublisher, parse_target
from agent.flv import SCRIPT, add_set_data_frame
from agent.media_queue import MediaMessage, MediaQueue

if TYPE_CHECKING:
    from agent.remux import Remuxer

log = logging.getLogger(__name__)

# How often an idle or busy connection reads what the destination sent (acks, pings,
# a close): not after every write, which would cost a syscall per message.
POLL_INTERVAL = 0.25


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

    def wait(self, stop: threading.Event) -> bool:
        """Block until published or `stop` is set; False if there is nothing to relay."""
        while not self._ready.wait(0.1):
            if stop.is_set():
                return False
        return not self.ended_early


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
            except (EgressError, OSError) as exc:
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
        """Send queued messages to the destination; True once the ingest ended."""
        inputs = self._inputs
        if not inputs.wait(self._stop):
            return True
        waiting_for_keyframe = inputs.has_video
        started = False
        next_poll = time.monotonic() + POLL_INTERVAL
        while not self._stop.is_set():
            try:
                batch = self.queue.get_batch(timeout=POLL_INTERVAL)
            except TimeoutError:
                publisher.poll()  # answer pings and notice a closed peer while idle
                next_poll = time.monotonic() + POLL_INTERVAL
                continue
            if not batch:  # END_OF_STREAM
                return True
            if waiting_for_keyframe:
                # Start (or restart) on a video keyframe; what precedes it is useless.
                for i, message in enumerate(batch):
                    if message.starts_gop:
                        batch = batch[i:]
                        waiting_for_keyframe = False
                        break
                else:
                    continue
            out = [(m.type_id, m.timestamp, m.body) for m in batch]
            if not started:
                # What a (re)connection starts with: the publisher's own onMetaData, then
                # each track's sequence header (with the muxer's timestamp, 0 unless the
                # publisher changed it mid-stream, as a fresh FFmpeg muxer would send it:
                # receivers such as nginx-rtmp's recorder then keep absolute timestamps);
                # then media.
                started = True
                head = []
                if inputs.script is not None:
                    script = add_set_data_frame(inputs.script)
                    head.append((SCRIPT, batch[0].timestamp, script))
                head += [(h.type_id, h.timestamp, h.body) for h in inputs.headers]
                out = head + out
            publisher.send(out)
            self.packets_sent += len(batch)
            now = time.monotonic()
            if now >= next_poll:
                publisher.poll()
                next_poll = now + POLL_INTERVAL
        return False
