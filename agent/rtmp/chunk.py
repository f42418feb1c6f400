"""The RTMP chunk stream (RTMP spec 1.0 §5.3), sans-I/O: bytes <-> :class:`Message`.

Memory per connection is bounded: the input buffer holds at most one incomplete chunk,
whose payload is never larger than one message, and partially received messages are
capped in number (``max_in_flight``) and in total size (2 x ``max_message_size``).

A message that comes in several chunks is assembled in a buffer of its announced length,
made at its first chunk and charged in full to that cap: each chunk is copied once,
where growing the buffer chunk by chunk reallocated and copied it again and again (the
largest part of the chunk reader's cost, relaying 720p from FFmpeg's 4096-byte chunks).
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import ChunkError, LocalProtocolError, MessageTooLarge
from .message import (
    ABORT,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    VIDEO,
    Message,
)
from .message import set_chunk_size as _set_chunk_size_message

__all__ = [
    "CSID_AUDIO",
    "CSID_COMMAND",
    "CSID_CONTROL",
    "CSID_DATA",
    "CSID_VIDEO",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_CHUNK_SIZE",
    "ChunkReader",
    "ChunkWriter",
    "csid_for",
    "message_chunks",
]

#: Chunk size until a Set Chunk Size message says otherwise (§5.4.1).
DEFAULT_CHUNK_SIZE: Final = 128
#: Largest chunk size the spec allows: 31 bits (§5.4.1).
MAX_CHUNK_SIZE: Final = 0x7FFFFFFF
#: Default limit on one message; a 4K keyframe is a few MB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 8 * 1024 * 1024
#: Largest length a chunk message header can carry: 24 bits (§5.3.1.2.1).
MAX_MESSAGE_LENGTH: Final = 0xFFFFFF

# Chunk stream ids we send on, chosen like FFmpeg: 2 is reserved for protocol
# control (§5.4); the others are free for the sender to pick (§5.3.1.1).
CSID_CONTROL: Final = 2
CSID_COMMAND: Final = 3
CSID_AUDIO: Final = 4
CSID_DATA: Final = 5
CSID_VIDEO: Final = 6

# How many chunk streams a peer may use in total, and with a message half received.
_MAX_CHUNK_STREAMS: Final = 1024
_DEFAULT_MAX_IN_FLIGHT: Final = 64

_COMMANDS: Final = (COMMAND_AMF0, COMMAND_AMF3)
_EXTENDED: Final = 0xFFFFFF  # timestamp field value announcing an extended timestamp, §5.3.1.3
_MASK32: Final = 0xFFFFFFFF

_U32: Final = struct.Struct(">I")
_U32LE: Final = struct.Struct("<I")
_TS_LEN_TYPE: Final = struct.Struct(">BHBHB")  # 3-byte timestamp, 3-byte length, type id
_TS: Final = struct.Struct(">BH")  # 3-byte timestamp (delta)


def csid_for(message: Message) -> int:
    """Return the chunk stream id we send *message* on (2 control, 3 commands, ...)."""
    t = message.type_id
    if t <= 6:
        return CSID_CONTROL
    if t == AUDIO:
        return CSID_AUDIO
    if t in (VIDEO, AGGREGATE):
        return CSID_VIDEO
    if t in (DATA_AMF0, DATA_AMF3):
        return CSID_DATA
    return CSID_COMMAND


class _InStream:
    """Receive state of one chunk stream: its last header and the message in progress."""

    __slots__ = (
        "delta",
        "ext_value",
        "extended",
        "filled",
        "length",
        "partial",
        "pieces",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.ext_value = 0
        # The message in progress: `filled` of its `length` bytes received (0: none in
        # progress), its chunks in this read as `pieces` (views, joined once at its
        # end) or, once it spans reads, copied into `partial`, made at its full length.
        self.filled = 0
        self.pieces: list[memoryview] | None = None
        self.partial: bytearray | None = None


def _u24(data: bytes, i: int) -> int:
    return (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]


def _u32(data: bytes, i: int) -> int:
    return (data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]


def _u32le(data: bytes, i: int) -> int:
    return data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)


class ChunkReader:
    """Turn received chunk-stream bytes into complete messages (RTMP spec 1.0 §5.3).

    Set Chunk Size (§5.4.1) and Abort (§5.4.2) messages are applied here and are also
    returned to the caller. ``bytes_received`` counts every byte fed.

    Limits: a message longer than ``max_message_size`` raises :class:`MessageTooLarge`;
    a Set Chunk Size of 0 or above ``max_chunk_size`` raises :class:`ChunkError`. The
    chunk size limit defaults to the spec maximum: a chunk never carries more than one
    message, so memory stays bounded by ``max_message_size`` whatever the chunk size.
    At most ``max_in_flight`` chunk streams may hold a partial message, and those
    partial messages may total at most 2 x ``max_message_size`` bytes (their announced
    lengths: what they take once they span reads).

    Each read is parsed as one `bytes` object (a read into a reused buffer is copied
    once): compiled (agent/fastpath.py), indexing bytes is a C array access, where a
    memoryview's items and `struct` calls go through the interpreter's generic calls.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        max_in_flight: int = _DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_chunk_size = max_chunk_size
        self.max_in_flight = max_in_flight
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.bytes_received = 0
        self._max_pending = 2 * max_message_size
        # Input not parsed yet: `_data` from `_at` on (what a read left: an incomplete
        # chunk, or what follows a command), then `_more` (reads that came while that
        # chunk still missed bytes, and bytes kept unread). `_need`: the length from
        # `_at` that completes that chunk (0: unknown, a header is incomplete). Each
        # byte is copied a bounded number of times however it is cut into reads.
        self._data = b""
        self._at = 0
        self._more = bytearray()
        self._need = 0
        self._streams: dict[int, _InStream] = {}
        self._in_flight = 0
        self._pending = 0

    @property
    def buffered(self) -> int:
        """Bytes waiting in the input buffer: an incomplete chunk, or bytes kept unread
        (`feed_until_command`, `keep`)."""
        return len(self._data) - self._at + len(self._more)

    @property
    def partial_bytes(self) -> int:
        """Bytes of partially received messages (their whole lengths: what they take)."""
        return self._pending

    def set_max_message_size(self, size: int) -> None:
        """Change the largest message accepted from now on (a server accepts small ones
        until it knows who the peer is). Partial messages may total twice as much."""
        self.max_message_size = size
        self._max_pending = 2 * size

    def feed(
        self, data: bytes | bytearray | memoryview, until_command: bool = False
    ) -> list[Message]:
        """Consume *data*; return the messages completed by it, in arrival order.

        `until_command`: stop after the first command message; what follows stays in
        the input buffer, unread, until the next call (a server that must answer a
        command before it knows which limits apply to the rest)."""
        self.bytes_received += len(data)
        left = len(self._data) - self._at
        more = self._more
        if left or more:
            if left + len(more) + len(data) < self._need:
                more += data  # the waiting chunk is still incomplete
                return []
            if more or data:
                whole = b"".join((memoryview(self._data)[self._at :], more, data))
                more.clear()
                at = 0
            else:  # what followed a command, read now
                whole, at = self._data, self._at
        elif isinstance(data, bytes):
            whole, at = data, 0
        else:
            whole, at = bytes(data), 0
        out: list[Message] = []
        started: list[_InStream] = []
        self._need = 0
        try:
            consumed = self._parse(whole, at, out, until_command, started)
        finally:
            for st in started:
                self._spans_reads(st)
        if consumed == len(whole):
            self._data, self._at = b"", 0
        elif consumed * 2 > len(whole):
            # Copied out when it is the smaller part (an incomplete chunk at the end of
            # a read): what is held stays at most twice what is left, and a read of
            # many commands, taken one per call, is copied a bounded number of times.
            self._data, self._at = whole[consumed:], 0
        else:
            self._data, self._at = whole, consumed
        return out

    def feed_until_command(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """`feed(data, until_command=True)`."""
        return self.feed(data, True)

    def keep(self, data: bytes | bytearray | memoryview) -> None:
        """Append *data* to the input buffer without reading it (see `feed`)."""
        self.bytes_received += len(data)
        self._more += data

    def _spans_reads(self, st: _InStream) -> None:
        """A message begun in this read and not complete at its end: copy what came
        into a buffer of its full length (the read's bytes are not kept)."""
        pieces = st.pieces
        if pieces is None:
            return
        st.pieces = None
        partial = st.partial = bytearray(st.length)
        at = 0
        for piece in pieces:
            n = len(piece)
            partial[at : at + n] = piece
            at += n

    def _parse(
        self, data: bytes, pos: int, out: list[Message], stop: bool, started: list[_InStream]
    ) -> int:
        streams = self._streams
        chunk_size = self.chunk_size
        end = len(data)
        view: memoryview | None = None
        while pos < end:
            # Basic header, §5.3.1.1: 1, 2 or 3 bytes.
            b0 = data[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            hpos = pos + 1
            if csid == 0:
                if end - pos < 2:
                    break
                csid = data[pos + 1] + 64
                hpos = pos + 2
            elif csid == 1:
                if end - pos < 3:
                    break
                csid = data[pos + 1] + (data[pos + 2] << 8) + 64
                hpos = pos + 3
            st = streams.get(csid)
            if st is None:
                # The first chunk of a chunk stream must be format 0, §5.3.1.2.1.
                if fmt != 0:
                    raise ChunkError(
                        f"chunk stream {csid}: format {fmt} chunk before any format 0 chunk"
                    )
                if len(streams) >= _MAX_CHUNK_STREAMS:
                    raise ChunkError(f"more than {_MAX_CHUNK_STREAMS} chunk streams")
                # Safe to create before the chunk is complete: format 0 sets every field.
                st = streams[csid] = _InStream()

            # Message header, §5.3.1.2, and extended timestamp, §5.3.1.3.
            filled = st.filled  # 0: this chunk starts a message
            field = 0
            ext = False
            type_id = st.type_id
            if fmt == 3:
                ppos = hpos
                if st.extended:
                    # Repeated on type 3 chunks per §5.3.1.3, but some librtmp versions
                    # omit it: only consume it when it carries the expected value.
                    if end - ppos < 4:
                        break
                    if _u32(data, ppos) == st.ext_value:
                        ppos += 4
                length = st.length
            else:
                if filled:
                    raise ChunkError(
                        f"chunk stream {csid}: format {fmt} header before the previous "
                        "message was complete"
                    )
                if fmt == 2:
                    ppos = hpos + 3
                    if end < ppos:
                        break
                    length = st.length
                else:
                    ppos = hpos + (11 if fmt == 0 else 7)
                    if end < ppos:
                        break
                    length = _u24(data, hpos + 3)
                    type_id = data[hpos + 6]
                field = _u24(data, hpos)
                if field == _EXTENDED:
                    if end - ppos < 4:
                        break
                    field = _u32(data, ppos)
                    ppos += 4
                    ext = True
                if length > self.max_message_size:
                    raise MessageTooLarge(
                        f"chunk stream {csid}: message of {length} bytes exceeds the "
                        f"limit of {self.max_message_size} bytes"
                    )

            # Chunk data: at most chunk_size bytes of the message, §5.3.1.
            remaining = length - filled
            n = remaining if remaining < chunk_size else chunk_size
            if end - ppos < n:
                self._need = ppos + n - pos
                break
            pos = ppos + n

            # The whole chunk is here: commit its header to the chunk stream state.
            if fmt == 0:
                st.stream_id = _u32le(data, hpos + 7)
                st.type_id = type_id
                st.length = length
                st.timestamp = field
                # A type 3 chunk after a type 0 one uses its timestamp as delta, §5.3.1.2.4.
                st.delta = field
                st.extended = ext
                st.ext_value = field
            elif fmt != 3:
                st.type_id = type_id
                st.length = length
                st.delta = field
                st.timestamp = (st.timestamp + field) & _MASK32
                st.extended = ext
                st.ext_value = field
            elif not filled:
                st.timestamp = (st.timestamp + st.delta) & _MASK32

            if not filled:
                if n == length:
                    message = Message(st.type_id, st.stream_id, st.timestamp, data[ppos:pos])
                else:
                    # The first of several chunks.
                    self._in_flight += 1
                    if self._in_flight > self.max_in_flight:
                        raise ChunkError(
                            f"more than {self.max_in_flight} chunk streams with a partial message"
                        )
                    self._add_pending(length)
                    if view is None:
                        view = memoryview(data)
                    st.pieces = [view[ppos:pos]]
                    st.filled = n
                    started.append(st)
                    continue
            else:
                if view is None:
                    view = memoryview(data)
                pieces = st.pieces
                partial = st.partial
                if partial is not None:  # begun in an earlier read
                    partial[filled : filled + n] = view[ppos:pos]
                elif pieces is not None:
                    pieces.append(view[ppos:pos])
                filled += n
                if filled < length:
                    st.filled = filled
                    continue
                # One of the two holds the message (_InStream: exactly one while filled).
                payload = bytes(partial) if partial is not None else b"".join(pieces or ())
                st.filled, st.pieces, st.partial = 0, None, None
                self._in_flight -= 1
                self._pending -= length
                message = Message(st.type_id, st.stream_id, st.timestamp, payload)

            out.append(message)
            if message.type_id <= ABORT:
                self._apply_control(message)
                chunk_size = self.chunk_size
            elif stop and message.type_id in _COMMANDS:
                break
        return pos

    def _add_pending(self, n: int) -> None:
        self._pending += n
        if self._pending > self._max_pending:
            raise ChunkError(f"more than {self._max_pending} bytes of partially received messages")

    def _apply_control(self, message: Message) -> None:
        if message.type_id not in (SET_CHUNK_SIZE, ABORT):
            return
        if len(message.payload) < 4:
            raise ChunkError(f"message type {message.type_id} payload shorter than 4 bytes")
        value = _u32(message.payload, 0)
        if message.type_id == SET_CHUNK_SIZE:
            # §5.4.1: bit 31 must be zero; valid sizes are 1 to 0x7FFFFFFF.
            if value & 0x80000000:
                raise ChunkError(f"set chunk size {value:#x} has bit 31 set")
            if value == 0 or value > self.max_chunk_size:
                raise ChunkError(f"set chunk size {value} outside 1..{self.max_chunk_size}")
            self.chunk_size = value
        else:
            # §5.4.2: discard the partially received message on that chunk stream.
            st = self._streams.get(value)
            if st is not None and st.filled:
                self._in_flight -= 1
                self._pending -= st.length
                st.filled, st.pieces, st.partial = 0, None, None


class _OutStream:
    """Send state of one chunk stream: the last message header written on it."""

    __slots__ = ("delta", "ext_field", "extended", "length", "stream_id", "timestamp", "type_id")

    def __init__(self) -> None:
        self.stream_id = 0
        self.type_id = 0
        self.length = 0
        self.timestamp = 0
        self.delta = -1
        self.extended = False
        self.ext_field = b""


def _basic_header(fmt: int, csid: int) -> bytes:
    # §5.3.1.1: 1 byte for csid 2-63, 2 bytes for 64-319, 3 bytes for 64-65599.
    if csid < 64:
        return _ONE_BYTE_HEADERS[fmt][csid]
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    value = csid - 64
    return bytes(((fmt << 6) | 1, value & 0xFF, value >> 8))


# The 1-byte basic headers, made once (one is made for every message relayed).
_ONE_BYTE_HEADERS: Final = [[bytes(((fmt << 6) | csid,)) for csid in range(64)] for fmt in range(4)]


class ChunkWriter:
    """Turn messages into chunk-stream bytes (RTMP spec 1.0 §5.3).

    Header compression: format 0 for the first message on a chunk stream, when the
    message stream id changes or the timestamp goes backwards; format 1 when length or
    type change; format 2 when only the delta changes; format 3 when the delta repeats
    a format 1/2 delta. Continuation chunks are format 3 and repeat the extended
    timestamp when the header had one (§5.3.1.3), as FFmpeg and librtmp expect.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}
        self._cont_headers: dict[int, bytes] = {}

    def set_chunk_size(self, size: int) -> bytes:
        """Return a Set Chunk Size message (§5.4.1) and use *size* for later messages."""
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
        data = self.write(_set_chunk_size_message(size))
        self.chunk_size = size
        return data

    def write(self, message: Message, csid: int | None = None) -> bytes:
        """Return the chunks carrying *message* on *csid* (default :func:`csid_for`)."""
        if csid is None:
            csid = csid_for(message)
        elif not 2 <= csid <= 65599:
            raise LocalProtocolError(f"chunk stream id {csid} outside 2..65599")
        payload = message.payload
        length = len(payload)
        if length > MAX_MESSAGE_LENGTH:
            raise LocalProtocolError(
                f"message of {length} bytes exceeds the {MAX_MESSAGE_LENGTH}-byte header limit"
            )
        timestamp = message.timestamp & _MASK32
        st = self._streams.get(csid)
        if st is None:
            st = self._streams[csid] = _OutStream()
            fmt = 0
        elif message.stream_id != st.stream_id or timestamp < st.timestamp:
            fmt = 0
        elif message.type_id != st.type_id or length != st.length:
            fmt = 1
        elif timestamp - st.timestamp != st.delta:
            fmt = 2
        else:
            fmt = 3

        if fmt == 3:
            header = _basic_header(3, csid) + st.ext_field
        else:
            field = timestamp if fmt == 0 else timestamp - st.timestamp
            ext = field >= _EXTENDED
            ts3 = _EXTENDED if ext else field
            if fmt == 0:
                # The message stream id is little-endian, §5.3.1.2.1.
                header = (
                    _basic_header(0, csid)
                    + _TS_LEN_TYPE.pack(
                        ts3 >> 16, ts3 & 0xFFFF, length >> 16, length & 0xFFFF, message.type_id
                    )
                    + _U32LE.pack(message.stream_id & _MASK32)
                )
                # Never use format 3 for the next new message right after a format 0:
                # readers disagree on that delta (§5.3.1.2.4).
                st.delta = -1
                st.stream_id = message.stream_id
            elif fmt == 1:
                header = _basic_header(1, csid) + _TS_LEN_TYPE.pack(
                    ts3 >> 16, ts3 & 0xFFFF, length >> 16, length & 0xFFFF, message.type_id
                )
                st.delta = field
            else:
                header = _basic_header(2, csid) + _TS.pack(ts3 >> 16, ts3 & 0xFFFF)
                st.delta = field
            st.extended = ext
            st.ext_field = _U32.pack(field) if ext else b""
            if ext:
                header += st.ext_field
            st.type_id = message.type_id
            st.length = length
        st.timestamp = timestamp

        size = self.chunk_size
        if length <= size:
            return header + payload if payload else header
        view = memoryview(payload)
        cont = self._cont_headers.get(csid)
        if cont is None:
            cont = self._cont_headers[csid] = _basic_header(3, csid)
        if st.extended:
            cont = cont + st.ext_field
        parts: list[bytes | memoryview] = [header, view[:size]]
        for offset in range(size, length, size):
            parts.append(cont)
            parts.append(view[offset : offset + size])
        return b"".join(parts)


def message_chunks(
    csid: int,
    stream_id: int,
    type_id: int,
    timestamp: int,
    payload: bytes,
    chunk_size: int,
) -> list[bytes | memoryview]:
    """The chunks of one message, each header a function of the message alone.

    The first chunk has a format 0 header (§5.3.1.2.1: absolute timestamp, length, type,
    message stream id), the others format 3 (§5.3.1.2.4), repeating the extended
    timestamp when there is one (§5.3.1.3, as FFmpeg and librtmp expect). No header
    compression against earlier messages: the bytes depend on no connection state, so
    one encoding serves every connection with the same chunk size and message stream
    id (the relay chunks a message once for all its destinations). Costs 7 bytes per
    message over the best compression. Returns parts to join; the payload is not copied.
    """
    length = len(payload)
    if length > MAX_MESSAGE_LENGTH:
        raise LocalProtocolError(
            f"message of {length} bytes exceeds the {MAX_MESSAGE_LENGTH}-byte header limit"
        )
    timestamp &= _MASK32
    ext = b""
    field = timestamp
    if timestamp >= _EXTENDED:
        field = _EXTENDED
        ext = _U32.pack(timestamp)
    header = (
        _basic_header(0, csid)
        + _TS_LEN_TYPE.pack(field >> 16, field & 0xFFFF, length >> 16, length & 0xFFFF, type_id)
        + _U32LE.pack(stream_id & _MASK32)
        + ext
    )
    if length <= chunk_size:
        return [header, payload]
    view = memoryview(payload)
    cont = _basic_header(3, csid) + ext
    parts: list[bytes | memoryview] = [header, view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(view[offset : offset + chunk_size])
    return parts
