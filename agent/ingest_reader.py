"""The publisher's connection once its publish is accepted, read by the ingest's relay thread.

The event loop (agent.server) owns a connection until rig has authorised the publish;
then it hands the socket and its ServerSession to the relay thread, which reads media
itself: the bytes go from the kernel to the demuxer in one thread, with no hand-off to
another thread per read (each one a futex wake-up and a GIL hand-off, measured as about
half of the agent's CPU when the event loop read every ingest). The socket is
non-blocking; the relay thread poll()s it with its destinations' sockets.

This class only moves bytes and enforces the idle deadline; the protocol is the
sans-I/O ServerSession, as on the event loop.
"""

import contextlib
import socket
import time
from collections.abc import Callable

from agent.rtmp import ProtocolError, ServerSession
from agent.rtmp.events import MediaReceived, PublishEnded
from agent.rtmp.message import AGGREGATE, split_aggregate

READ_SIZE = 256 * 1024
# A publisher that stops reading our acks and pings: closed once this much is waiting.
MAX_UNSENT = 1024 * 1024

MediaSink = Callable[[int, int, bytes], None]  # (type, timestamp, body)


class IngestEnded(Exception):
    """The publish is over: why, for the log (never holds the stream key)."""


class IngestReader:
    """Reads one publisher's media into `on_media`, answering it (acks, pings) as it goes."""

    def __init__(
        self,
        sock: socket.socket,
        session: ServerSession,
        on_media: MediaSink,
        idle_timeout: float,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.fd = sock.fileno()
        # One receive buffer for the connection: recv(256 KiB) would allocate (and, past
        # glibc's mmap threshold, map and unmap) a fresh 256 KiB object on every read.
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._session = session
        self._on_media = on_media
        self._idle_timeout = idle_timeout
        self._out = bytearray()
        self._last_data = time.monotonic()

    def fileno(self) -> int:
        """The publisher's socket, for the relay thread's poll()."""
        return self.fd

    @property
    def wants_write(self) -> bool:
        """Answers to the publisher wait for its socket to become writable."""
        return bool(self._out)

    def feed(self, data: bytes) -> None:
        """Take bytes read before the hand-over (still buffered on the event loop)."""
        if data:
            self._receive(data)

    def on_readable(self) -> None:
        """Read what the publisher sent; raise IngestEnded when the publish is over."""
        try:
            size = self._sock.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise IngestEnded(f"connection lost: {exc}") from exc
        if not size:
            raise IngestEnded("connection closed")
        self._last_data = time.monotonic()
        self._receive(self._view[:size])  # the session copies what it keeps

    def on_writable(self) -> None:
        """Send queued answers to the publisher, as much as its socket takes."""
        if not self._out:
            return
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise IngestEnded(f"connection lost: {exc}") from exc
        del self._out[:sent]

    def check_idle(self, now: float) -> None:
        """Raise IngestEnded once the publisher sent nothing for the idle deadline."""
        if now - self._last_data > self._idle_timeout:
            raise IngestEnded("no data in time")

    def close(self) -> None:
        """Send what is left (best effort) and close the connection for good."""
        with contextlib.suppress(IngestEnded):
            self.on_writable()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # the event loop's copy of the fd too
        self._sock.close()

    def _receive(self, data: bytes | memoryview) -> None:
        try:
            events = self._session.receive_data(data)
        except ProtocolError as exc:
            raise IngestEnded(f"protocol error: {exc}") from exc
        ended = None
        for event in events:
            if isinstance(event, MediaReceived):
                message = event.message
                if message.type_id == AGGREGATE:
                    for sub in split_aggregate(message):
                        self._on_media(sub.type_id, sub.timestamp, bytes(sub.payload))
                else:
                    self._on_media(message.type_id, message.timestamp, bytes(message.payload))
            elif isinstance(event, PublishEnded):
                ended = event.reason or "unpublished"
        self._out += self._session.data_to_send()
        if len(self._out) > MAX_UNSENT:
            raise IngestEnded("the publisher stopped reading")
        self.on_writable()
        if ended is not None or self._session.closed:
            raise IngestEnded(ended or "connection closed by the protocol")
