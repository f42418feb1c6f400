"""One destination of one stream: its connection, its bounded queue, its retries.

A `DestinationWorker` is an asyncio task that connects (`agent.egress.open_publish`,
with a deadline), and once the destination accepted the publish, starts it with what
the stream's relay says a new connection needs (the publisher's latest onMetaData, the
latest sequence header of every track, then media from the newest video keyframe). From
then on the relay hands it every message (`send`), already chunked when it can share
the bytes with the other destinations. A destination that falls behind (its connection's
write buffer full) queues in its own bounded MediaQueue, which drops whole GOPs; one
that stops reading for the write deadline, refuses, or drops is retried with capped
exponential backoff and jitter, and resumes from a keyframe with the original
timestamps. Nothing here can block the ingest or another destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from agent.egress import (
    FALLBACK_CHUNK_SIZE,
    LARGE_CHUNK_SIZE,
    EgressError,
    RtmpPublish,
    RtmpTarget,
    check_public_literal,
    open_publish,
    parse_target,
)
from agent.media_queue import MediaMessage, MediaQueue
from agent.rtmp.chunk import CSID_AUDIO, CSID_DATA, CSID_VIDEO, message_chunks
from agent.tags import AUDIO, VIDEO

log: Final = logging.getLogger(__name__)

# Messages moved from a destination's queue to its connection at a time.
DRAIN_BATCH: Final = 32


class DestinationState(enum.StrEnum):
    """What a destination is doing, as reported to operators and users."""

    CONNECTING = "connecting"
    LIVE = "live"
    BACKOFF = "backoff"
    FAILED = "failed"
    OFF = "off"


@dataclass(frozen=True)
class Destination:
    """A destination as rig describes it: the service's RTMP server URL, and the stream
    key published there. The key is opaque (any characters: `/`, `#`, `?`, `%`...): it
    is never parsed out of a URL, and never logged."""

    id: int
    service: str
    server_url: str
    stream_key: str

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
    # Custom destinations are users' addresses: public ones only, unless this is set.
    allow_private_destinations: bool = False
    chunk_size: int = LARGE_CHUNK_SIZE


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


_CSID: Final = {AUDIO: CSID_AUDIO, VIDEO: CSID_VIDEO}


def encode(messages: Sequence[MediaMessage], stream_id: int, chunk_size: int) -> bytes:
    """Messages chunked for one connection (audio, video and data on their own chunk
    streams, as FFmpeg sends them)."""
    parts: list[bytes | memoryview] = []
    for m in messages:
        csid = _CSID.get(m.type_id, CSID_DATA)
        parts += message_chunks(csid, stream_id, m.type_id, m.timestamp, m.body, chunk_size)
    return b"".join(parts)


class Chunked:
    """A batch of messages, chunked at most once per (message stream id, chunk size): the
    bytes are the same for every destination sharing those (usually all of them)."""

    __slots__ = ("_first", "_first_key", "_others", "messages")

    def __init__(self, messages: list[MediaMessage]) -> None:
        self.messages = messages
        # The first key asked for and its bytes, then any other (rare: a destination
        # that refused our chunk size) in a dict: no dict made or hashed per message.
        self._first_key: tuple[int, int] | None = None
        self._first = b""
        self._others: dict[tuple[int, int], bytes] | None = None

    def for_connection(self, connection: RtmpPublish) -> bytes:
        key = connection.chunk_key
        first_key = self._first_key
        if first_key is None:
            self._first_key = key
            self._first = encode(self.messages, key[0], key[1])
            return self._first
        if key == first_key:
            return self._first
        others = self._others
        if others is None:
            others = self._others = {}
        data = others.get(key)
        if data is None:
            data = others[key] = encode(self.messages, key[0], key[1])
        return data


class StreamStart(Protocol):
    """What the relay gives a destination that (re)connects."""

    def start_messages(self, worker: DestinationWorker) -> tuple[list[MediaMessage], bool]:
        """What `worker`'s new connection starts with: the latest metadata and codec
        configuration, then media from a keyframe; and whether its video must wait for
        the next keyframe (nothing to start from)."""
        ...


class DestinationWorker:
    """Relays one stream to one destination."""

    def __init__(
        self,
        destination: Destination,
        label: str,
        stream: StreamStart,
        settings: EgressSettings,
        on_done: Callable[[DestinationWorker], None] = lambda worker: None,
    ) -> None:
        self.destination = destination
        self.label = label
        self.queue = MediaQueue(settings.queue_bytes, settings.queue_seconds)
        self.state = DestinationState.CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self._stream = stream
        self._settings = settings
        self._on_done = on_done
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._chunk_size = settings.chunk_size
        self._connection: RtmpPublish | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()  # ends a backoff wait early (the stream ended)
        self._ending = False  # the stream is over: drain, unpublish, close
        self._wait_keyframe = False
        self._retry_at: float | None = None
        self._live_since: float | None = None
        self._live_before = 0.0
        self._bytes_before = 0
        self._finished = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start connecting at once."""
        try:
            target = parse_target(self.destination.server_url, self.destination.stream_key)
            if self._public_only:
                check_public_literal(target)
        except EgressError as exc:
            self.last_error = str(exc)
            log.error("%s: %s; giving up", self.label, exc)
            self._finish(DestinationState.FAILED)
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(target), name=f"destination {self.label}"
        )

    def finish(self) -> None:
        """The stream ended: send what is queued, unpublish, close; stop retrying."""
        if self._ending:
            return
        self._ending = True
        self._wakeup.set()
        connection = self._connection
        if connection is not None:
            if not self.queue:
                connection.close(clean=True, drain_timeout=self._settings.write_timeout)
            # else: _drain closes it once the queue is sent (or the write deadline fails it)
        elif self._task is not None:
            self._task.cancel()  # connecting or waiting to retry: nothing left to deliver

    def stop(self) -> None:
        """Stop now, sending nothing more (agent shutdown after the drain deadline)."""
        self._ending = True
        self._wakeup.set()
        if self._connection is not None:
            self._connection.close(clean=False)
        if self._task is not None:
            self._task.cancel()

    @property
    def done(self) -> bool:
        """Nothing more to do: ended, stopped or failed for good."""
        return self._finished

    # ------------------------------------------------------------------ the media path

    def send(self, batch: Chunked) -> None:
        """Relay a batch of the publisher's messages (called for every batch)."""
        connection = self._connection
        if connection is None:
            return  # not live: a (re)connection starts from the relay's keyframe
        messages = batch.messages
        if self._wait_keyframe:
            messages = self._from_keyframe(messages)
            if not messages:
                return
            if messages is not batch.messages:
                batch = Chunked(messages)
        if self.queue or connection.paused:
            self.queue.put_many(messages)  # bounded: drops whole GOPs when over
            return
        connection.write(batch.for_connection(connection))

    @property
    def _public_only(self) -> bool:
        """Whether this destination may reach public addresses only: a user's Custom one,
        unless the operator allows private ones (the services' URLs are rig's own)."""
        custom = self.destination.service == "Custom"
        return custom and not self._settings.allow_private_destinations

    # ------------------------------------------------------------------ statistics

    @property
    def bytes_sent(self) -> int:
        """Bytes sent to the destination over every connection so far."""
        connection = self._connection
        return self._bytes_before + (connection.bytes_sent if connection is not None else 0)

    @property
    def dropped_packets(self) -> int:
        """Messages dropped because the destination fell behind."""
        return self.queue.dropped_packets

    def live_seconds(self, now: float) -> float:
        """Seconds live, over every connection."""
        since = self._live_since
        return self._live_before + (now - since if since is not None else 0.0)

    def health(self, now: float) -> dict[str, object]:
        """The destination's state for heartbeats (no URL: it holds the key)."""
        retry_in = None
        if self.state is DestinationState.BACKOFF and self._retry_at is not None:
            retry_in = round(max(0.0, self._retry_at - now), 1)
        return {
            "id": self.destination.id,
            "service": self.destination.service,
            "state": self.state.value,
            "lastError": self.last_error,
            "retryIn": retry_in,
            "bytesSent": self.bytes_sent,
            "reconnects": self.reconnects,
            "liveSeconds": round(self.live_seconds(now), 1),
            "droppedPackets": self.dropped_packets,
        }

    # ------------------------------------------------------------------ internals

    async def _run(self, target: RtmpTarget) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._ending:
                self.state = DestinationState.CONNECTING
                try:
                    connection = await open_publish(
                        target,
                        chunk_size=self._chunk_size,
                        timeout=self._settings.connect_timeout,
                        write_timeout=self._settings.write_timeout,
                        tls_context=self._settings.tls_context,
                        public_only=self._public_only,
                    )
                except EgressError as exc:
                    await self._retry(exc, loop, published=False)
                    continue
                error = await self._serve(connection, loop)
                if error is None:
                    break
                if self._ending:
                    log.warning("%s: %s; the stream has ended, not reconnecting", self.label, error)
                    self.last_error = str(error)
                    break
                await self._retry(error, loop, published=True)
        except asyncio.CancelledError:
            if self._connection is not None:
                self._connection.close(clean=False)
        finally:
            self._detach(loop)
            self._finish(DestinationState.OFF)

    async def _serve(
        self, connection: RtmpPublish, loop: asyncio.AbstractEventLoop
    ) -> EgressError | None:
        """Live on `connection` until it ends; returns the EgressError that ended it (None:
        we closed it)."""
        self._connection = connection
        connection.on_resume = self._drain
        self.state = DestinationState.LIVE
        self.last_error = None
        self._live_since = loop.time()
        self._backoff.reset()
        log.info("%s: live on %s", self.label, connection.target.safe_name)
        start, self._wait_keyframe = self._stream.start_messages(self)
        connection.write(encode(start, connection.stream_id, connection.chunk_size))
        if self._ending and not self.queue:
            connection.close(clean=True, drain_timeout=self._settings.write_timeout)
        error = await connection.closed
        self._detach(loop)
        if error is None and self._ending:
            log.info("%s: stream ended, destination closed", self.label)
        return error

    def _detach(self, loop: asyncio.AbstractEventLoop) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._bytes_before += connection.bytes_sent
        if self._live_since is not None:
            self._live_before += loop.time() - self._live_since
            self._live_since = None
        self.queue.clear()

    async def _retry(
        self, error: EgressError, loop: asyncio.AbstractEventLoop, published: bool
    ) -> None:
        """Count the failure, wait the backoff delay (or until the stream ends)."""
        self.last_error = str(error)
        self.reconnects += 1
        if self._ending:
            log.warning("%s: %s; the stream has ended, not reconnecting", self.label, error)
            return
        if (
            self._chunk_size > FALLBACK_CHUNK_SIZE
            and not published
            and error.connected
            and not error.refused
        ):
            # Connected, then dropped before accepting the publish (nginx-rtmp hangs up
            # on a Set Chunk Size above its limit): from now on, the size OBS uses.
            self._chunk_size = FALLBACK_CHUNK_SIZE
            log.info("%s: next attempt with chunk size %d", self.label, FALLBACK_CHUNK_SIZE)
        self.state = DestinationState.BACKOFF
        delay = self._backoff.next_delay()
        self._retry_at = loop.time() + delay
        log.warning("%s: %s; retrying in %.1f s", self.label, error, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), delay)
        self._retry_at = None

    def _drain(self) -> None:
        """The connection takes data again: move queued messages to it."""
        connection = self._connection
        if connection is None:
            return
        queue = self.queue
        while queue and not connection.paused:
            batch = queue.take(DRAIN_BATCH)
            connection.write(encode(batch, connection.stream_id, connection.chunk_size))
        if self._ending and not queue:
            connection.close(clean=True, drain_timeout=self._settings.write_timeout)

    def _from_keyframe(self, messages: list[MediaMessage]) -> list[MediaMessage]:
        """Drop video frames until a keyframe (audio, data and codec configuration pass);
        clears `_wait_keyframe` once one is found."""
        for index, message in enumerate(messages):
            if message.starts_gop:
                self._wait_keyframe = False
                return [m for m in messages[:index] if not m.is_video_frame] + messages[index:]
        return [m for m in messages if not m.is_video_frame]

    def _finish(self, state: DestinationState) -> None:
        if self._finished:
            return
        self._finished = True
        self.state = state
        self._on_done(self)
