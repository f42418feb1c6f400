"""A destination's own bounded queue of RTMP media messages.

One queue per destination, so a slow or dead destination only ever loses its own
media. Bounded by bytes and by seconds of media: when full, whole GOPs are dropped
from the head so what remains still starts on a video keyframe (as mediamtx and
nginx-rtmp do for slow readers: "too slow, discarding").
"""

import threading
from collections import deque
from dataclasses import dataclass

from agent.flv import VIDEO


@dataclass(frozen=True, slots=True)
class MediaMessage:
    """One muxed audio/video/data message, shared read-only by every destination."""

    type_id: int  # 8 audio, 9 video, 18 data (FLV tag types = RTMP message types)
    timestamp: int  # milliseconds (the packet's dts), as in FLV and RTMP
    body: bytes
    keyframe: bool = False

    @property
    def starts_gop(self) -> bool:
        """A video keyframe: a destination can start (or restart) here."""
        return self.keyframe and self.type_id == VIDEO


class MediaQueue:
    """FIFO of MediaMessage, bounded by `max_bytes` and `max_seconds` (filled and
    emptied by the relay thread; `end` may come from another thread)."""

    def __init__(self, max_bytes: int, max_seconds: float) -> None:
        self._items: deque[MediaMessage] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_ms = int(max_seconds * 1000)
        self._ended = False
        self._lock = threading.Lock()
        self.dropped_packets = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """Bytes of media waiting to be sent."""
        return self._bytes

    def put(self, message: MediaMessage) -> None:
        """Append a message, dropping the oldest GOPs if the queue is over its bounds."""
        self.put_many((message,))

    def put_many(self, messages: "tuple[MediaMessage, ...] | list[MediaMessage]") -> None:
        """Append messages in order with one wake-up of the consumer."""
        with self._lock:
            items = self._items
            for message in messages:
                items.append(message)
                self._bytes += len(message.body)
            while items and self._over_bounds():
                self._drop_gop()

    @property
    def ended(self) -> bool:
        """end() was called: the publisher stopped (messages may still be queued)."""
        return self._ended

    def end(self) -> None:
        """No more messages will come (they may still be queued)."""
        self._ended = True

    def take(self, limit: int = 1 << 30) -> list[MediaMessage]:
        """Remove and return the queued messages (at most `limit`), oldest first; never
        blocks. [] when empty: check `ended` for the end of the stream."""
        with self._lock:
            items = self._items
            count = min(limit, len(items))
            batch = [items.popleft() for _ in range(count)]
            for message in batch:
                self._bytes -= len(message.body)
            return batch

    def skip_to_latest_keyframe(self) -> None:
        """Drop everything before the newest keyframe: a reconnecting destination resumes
        live instead of replaying stale media. Without a keyframe, drop everything."""
        with self._lock:
            last_key = None
            for index, message in enumerate(self._items):
                if message.starts_gop:
                    last_key = index
            count = last_key if last_key is not None else len(self._items)
            for _ in range(count):
                self._discard_head()

    def _over_bounds(self) -> bool:
        if self._bytes > self._max_bytes:
            return True
        return self._items[-1].timestamp - self._items[0].timestamp > self._max_ms

    def _discard_head(self) -> None:
        message = self._items.popleft()
        self._bytes -= len(message.body)
        self.dropped_packets += 1
        self.dropped_bytes += len(message.body)

    def _drop_gop(self) -> None:
        """Drop the head message and everything up to the next keyframe."""
        self._discard_head()
        while self._items and not self._items[0].starts_gop:
            self._discard_head()
