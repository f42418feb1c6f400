"""A destination's own bounded queue of media packets.

One queue per destination, so a slow or dead destination only ever loses its own
media. Bounded by bytes and by seconds of media: when full, whole GOPs are dropped
from the head so what remains still starts on a video keyframe (as mediamtx and
nginx-rtmp do for slow readers: "too slow, discarding").
"""

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One demuxed packet, shared read-only by every destination of an ingest."""

    stream_index: int
    is_video: bool
    is_keyframe: bool
    dts: int  # milliseconds, as in FLV
    pts: int
    data: bytes

    @property
    def starts_gop(self) -> bool:
        """A video keyframe: a destination can start (or restart) here."""
        return self.is_video and self.is_keyframe


END_OF_STREAM = None  # put() by the fan-out when the publisher stops


class MediaQueue:
    """Thread-safe FIFO of MediaPacket, bounded by `max_bytes` and `max_seconds`."""

    def __init__(self, max_bytes: int, max_seconds: float) -> None:
        self._items: deque[MediaPacket] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_ms = int(max_seconds * 1000)
        self._ended = False
        self._cond = threading.Condition()
        self.dropped_packets = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """Bytes of media waiting to be sent."""
        return self._bytes

    def put(self, packet: MediaPacket) -> None:
        """Append a packet, dropping the oldest GOPs if the queue is over its bounds."""
        with self._cond:
            self._items.append(packet)
            self._bytes += len(packet.data)
            while self._items and self._over_bounds():
                self._drop_gop()
            self._cond.notify()

    @property
    def ended(self) -> bool:
        """end() was called: the publisher stopped (packets may still be queued)."""
        return self._ended

    def end(self) -> None:
        """No more packets will come: get() returns END_OF_STREAM once drained."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> MediaPacket | None:
        """The next packet; END_OF_STREAM at the end; raises TimeoutError when idle."""
        with self._cond:
            if not self._items and not self._ended:
                self._cond.wait_for(lambda: self._items or self._ended, timeout)
            if self._items:
                packet = self._items.popleft()
                self._bytes -= len(packet.data)
                return packet
            if self._ended:
                return END_OF_STREAM
            raise TimeoutError("no media")

    def skip_to_latest_keyframe(self) -> None:
        """Drop everything before the newest keyframe: a reconnecting destination resumes
        live instead of replaying stale media. Without a keyframe, drop everything."""
        with self._cond:
            last_key = None
            for index, packet in enumerate(self._items):
                if packet.starts_gop:
                    last_key = index
            count = last_key if last_key is not None else len(self._items)
            for _ in range(count):
                self._discard_head()

    def _over_bounds(self) -> bool:
        if self._bytes > self._max_bytes:
            return True
        return self._items[-1].dts - self._items[0].dts > self._max_ms

    def _discard_head(self) -> None:
        packet = self._items.popleft()
        self._bytes -= len(packet.data)
        self.dropped_packets += 1
        self.dropped_bytes += len(packet.data)

    def _drop_gop(self) -> None:
        """Drop the head packet and everything up to the next keyframe."""
        self._discard_head()
        while self._items and not self._items[0].starts_gop:
            self._discard_head()
