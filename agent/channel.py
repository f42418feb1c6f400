"""Messages between the agent's supervisor and its workers, over a Unix socket.

A frame is a JSON object, an optional binary blob and optional file descriptors (a
publisher's socket, passed with SCM_RIGHTS):

    header: JSON length (u32), blob length (u32), number of fds (u8), big-endian
    then the JSON (UTF-8), then the blob; the fds travel with the header's first byte

`FrameReader` is the sans-I/O part (bytes and fds in, frames out; tested with byte
vectors). `Channel` moves frames over a non-blocking `AF_UNIX` stream socket on the
event loop, and `Link` adds requests and answers on top: a request carries `"id"`, its
answer `"re"` with the same number; anything else is a notification. The socket is a
`socketpair()` the supervisor made: nothing else can connect to it.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IIB")
# Limits: a frame beyond them is a bug or a corrupted stream, and ends the channel.
MAX_JSON = 16 * 1024 * 1024  # metrics of thousands of destinations fit
MAX_BLOB = 64 * 1024 * 1024  # a handed-over RTMP session (agent/handoff.py bounds it)
MAX_FDS = 1
READ_SIZE = 256 * 1024


class ChannelError(Exception):
    """The channel carried something that is not a valid frame: it cannot go on."""


class ChannelClosed(ConnectionError):
    """The other end is gone (or this end closed)."""


@dataclass
class Frame:
    """One message: a JSON object, a blob, and the file descriptors that came with it
    (owned by the frame's receiver, who must close or adopt them)."""

    message: dict[str, Any]
    blob: bytes = b""
    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        """Close the descriptors nobody adopted."""
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


def encode(message: dict[str, Any], blob: bytes = b"", fds: int = 0) -> bytes:
    """The bytes of one frame (its fds go separately, with the first byte)."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_JSON or len(blob) > MAX_BLOB or not 0 <= fds <= MAX_FDS:
        raise ChannelError(f"frame too large: {len(body)} B JSON, {len(blob)} B blob, {fds} fds")
    return HEADER.pack(len(body), len(blob), fds) + body + blob


class FrameReader:
    """Bytes and file descriptors in, frames out (sans-I/O)."""

    def __init__(self, max_json: int = MAX_JSON, max_blob: int = MAX_BLOB) -> None:
        self.max_json = max_json
        self.max_blob = max_blob
        self._buf = bytearray()
        self._fds: deque[int] = deque()
        self._header: tuple[int, int, int] | None = None

    def feed(self, data: bytes, fds: Iterable[int] = ()) -> list[Frame]:
        """Consume `data` (and the fds that came with it); return the complete frames.
        Raises ChannelError on a malformed frame; the reader is then unusable (close
        it: that closes the fds it holds)."""
        self._fds.extend(fds)
        self._buf += data
        frames = []
        while True:
            if self._header is None:
                if len(self._buf) < HEADER.size:
                    break
                json_len, blob_len, nfds = HEADER.unpack_from(self._buf)
                if json_len > self.max_json or blob_len > self.max_blob or nfds > MAX_FDS:
                    raise ChannelError(
                        f"frame over the limits: {json_len} B JSON, {blob_len} B blob, {nfds} fds"
                    )
                if len(self._fds) < nfds:  # fds arrive with the header's first byte
                    raise ChannelError(f"frame announces {nfds} fds, {len(self._fds)} arrived")
                self._header = (json_len, blob_len, nfds)
            json_len, blob_len, nfds = self._header
            end = HEADER.size + json_len + blob_len
            if len(self._buf) < end:
                break
            fds_of_frame = [self._fds.popleft() for _ in range(nfds)]
            frame = Frame({}, bytes(self._buf[HEADER.size + json_len : end]), fds_of_frame)
            body = bytes(self._buf[HEADER.size : HEADER.size + json_len])
            del self._buf[:end]
            self._header = None
            try:
                message = json.loads(body)
            except ValueError:
                frame.close_fds()
                raise ChannelError("frame JSON does not parse") from None
            if not isinstance(message, dict):
                frame.close_fds()
                raise ChannelError("frame JSON is not an object")
            frame.message = message
            frames.append(frame)
        if self._fds and self._header is None and not self._buf:
            raise ChannelError(f"{len(self._fds)} fds arrived without a frame")
        return frames

    def close(self) -> None:
        """Close the descriptors received and not yet handed out."""
        Frame({}, fds=list(self._fds)).close_fds()
        self._fds.clear()


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            numbers = array.array("i")
            numbers.frombytes(data[: len(data) - len(data) % numbers.itemsize])
            fds.extend(numbers)
    return fds


class Channel:
    """Frames over a non-blocking AF_UNIX stream socket, on the running event loop."""

    def __init__(
        self,
        sock: socket.socket,
        on_frame: Callable[[Frame], None],
        on_close: Callable[[Exception | None], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._on_frame = on_frame
        self._on_close = on_close
        self._reader = FrameReader()
        self._out: deque[tuple[memoryview, list[int]]] = deque()
        self._loop = asyncio.get_running_loop()
        self._writing = False
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: dict[str, Any], blob: bytes = b"", fds: Iterable[int] = ()) -> None:
        """Queue one frame. The channel owns `fds` from now on (closed once sent)."""
        fds = list(fds)
        if self.closed:
            Frame({}, fds=fds).close_fds()
            raise ChannelClosed("channel closed")
        try:
            data = encode(message, blob, len(fds))
        except ChannelError:
            Frame({}, fds=fds).close_fds()
            raise
        self._out.append((memoryview(data), fds))
        if not self._writing:
            self._write()

    def close(self, error: Exception | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
        for _, fds in self._out:
            Frame({}, fds=fds).close_fds()
        self._out.clear()
        self._reader.close()
        self.sock.close()
        self._on_close(error)

    def _write(self) -> None:
        while self._out:
            data, fds = self._out[0]
            try:
                if fds:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = self.sock.sendmsg([data], rights)
                else:
                    sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close(exc)
                return
            if fds:  # in flight now: the kernel holds them for the receiver
                Frame({}, fds=fds).close_fds()
            if sent < len(data):
                self._out[0] = (data[sent:], [])
                continue
            self._out.popleft()
        writing = bool(self._out)
        if writing and not self._writing:
            self._loop.add_writer(self.sock.fileno(), self._write)
        elif not writing and self._writing:
            self._loop.remove_writer(self.sock.fileno())
        self._writing = writing

    def _readable(self) -> None:
        while not self.closed:
            space = socket.CMSG_SPACE(8 * array.array("i").itemsize)
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    READ_SIZE, space, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close(exc)
                return
            fds = _received_fds(ancillary)
            if not data:
                Frame({}, fds=fds).close_fds()
                self.close()
                return
            try:
                if flags & socket.MSG_CTRUNC:
                    Frame({}, fds=fds).close_fds()
                    raise ChannelError("file descriptors were lost (ancillary data truncated)")
                frames = self._reader.feed(data, fds)
            except ChannelError as exc:
                log.error("channel: %s", exc)
                self.close(exc)
                return
            for frame in frames:
                self._on_frame(frame)


# What a Link's handler answers to a request: the answer's JSON (without "re"), a blob
# and fds; None for a notification.
Answer = tuple[dict[str, Any], bytes, list[int]]
Handler = Callable[[Frame], Awaitable[Answer | None]]


class Link:
    """Requests and answers over a Channel. `handler` serves the other end's requests
    and notifications, each in a task of its own."""

    def __init__(self, sock: socket.socket, handler: Handler, name: str = "link") -> None:
        self.name = name
        self._handler = handler
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Frame]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.closed = asyncio.get_running_loop().create_future()
        self.channel = Channel(sock, self._on_frame, self._on_close)

    def notify(self, message: dict[str, Any], blob: bytes = b"", fds: Iterable[int] = ()) -> None:
        """Send a message that has no answer."""
        self.channel.send(message, blob, fds)

    def request(
        self, message: dict[str, Any], blob: bytes = b"", fds: Iterable[int] = ()
    ) -> asyncio.Future[Frame]:
        """Send a request; the future gets the answer's frame (ChannelClosed if the
        other end goes away first)."""
        number = next(self._ids)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        try:
            self.channel.send({**message, "id": number}, blob, fds)
        except (ChannelError, ChannelClosed):
            del self._waiting[number]
            raise
        return future

    async def ask(
        self,
        message: dict[str, Any],
        blob: bytes = b"",
        fds: Iterable[int] = (),
        within: float = 10,
    ) -> Frame:
        """A request, awaited (at most `within` seconds: TimeoutError)."""
        async with asyncio.timeout(within):
            return await self.request(message, blob, fds)

    def close(self) -> None:
        self.channel.close()

    def _on_frame(self, frame: Frame) -> None:
        answer_to = frame.message.get("re")
        if answer_to is not None:
            future = self._waiting.pop(answer_to, None) if type(answer_to) is int else None
            if future is None or future.done():
                frame.close_fds()  # an answer nobody waits for any more
            else:
                future.set_result(frame)
            return
        task = asyncio.get_running_loop().create_task(self._serve(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, frame: Frame) -> None:
        number = frame.message.get("id")
        try:
            answer = await self._handler(frame)
        except Exception:
            log.exception("%s: handling %r failed", self.name, frame.message.get("op"))
            answer = ({"error": "failed"}, b"", [])
        finally:
            frame.close_fds()  # whatever the handler did not adopt
        if number is None or self.channel.closed:
            if answer is not None:
                Frame({}, fds=answer[2]).close_fds()
            return
        message, blob, fds = answer if answer is not None else ({}, b"", [])
        with contextlib.suppress(ChannelClosed):
            self.channel.send({**message, "re": number}, blob, fds)

    def _on_close(self, error: Exception | None) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChannelClosed(f"{self.name} closed"))
        self._waiting.clear()
        if not self.closed.done():
            self.closed.set_result(error)
