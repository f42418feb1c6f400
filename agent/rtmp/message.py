"""RTMP messages (RTMP spec 1.0 §6), protocol control messages (§5.4) and user control
events (§7.1.7): constants, builders and small parsers."""

from __future__ import annotations

import struct
from typing import Final

from .errors import ProtocolError

__all__ = [
    "ABORT",
    "ACK",
    "AGGREGATE",
    "AUDIO",
    "COMMAND_AMF0",
    "COMMAND_AMF3",
    "DATA_AMF0",
    "DATA_AMF3",
    "PEER_BANDWIDTH_DYNAMIC",
    "PEER_BANDWIDTH_HARD",
    "PEER_BANDWIDTH_SOFT",
    "SET_CHUNK_SIZE",
    "SET_PEER_BANDWIDTH",
    "SHARED_OBJECT_AMF0",
    "SHARED_OBJECT_AMF3",
    "UC_PING_REQUEST",
    "UC_PING_RESPONSE",
    "UC_SET_BUFFER_LENGTH",
    "UC_STREAM_BEGIN",
    "UC_STREAM_DRY",
    "UC_STREAM_EOF",
    "UC_STREAM_IS_RECORDED",
    "USER_CONTROL",
    "VIDEO",
    "WINDOW_ACK_SIZE",
    "Message",
    "abort",
    "acknowledgement",
    "parse_u32",
    "parse_user_control",
    "ping_request",
    "ping_response",
    "set_chunk_size",
    "set_peer_bandwidth",
    "split_aggregate",
    "stream_begin",
    "stream_eof",
    "user_control",
    "window_ack_size",
]

# Message type ids: protocol control (§5.4), user control (§6.2), others (§7.1).
SET_CHUNK_SIZE: Final = 1
ABORT: Final = 2
ACK: Final = 3
USER_CONTROL: Final = 4
WINDOW_ACK_SIZE: Final = 5
SET_PEER_BANDWIDTH: Final = 6
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
SHARED_OBJECT_AMF3: Final = 16
COMMAND_AMF3: Final = 17
DATA_AMF0: Final = 18
SHARED_OBJECT_AMF0: Final = 19
COMMAND_AMF0: Final = 20
AGGREGATE: Final = 22

# User control event types (§7.1.7).
UC_STREAM_BEGIN: Final = 0
UC_STREAM_EOF: Final = 1
UC_STREAM_DRY: Final = 2
UC_SET_BUFFER_LENGTH: Final = 3
UC_STREAM_IS_RECORDED: Final = 4
UC_PING_REQUEST: Final = 6
UC_PING_RESPONSE: Final = 7

# Set Peer Bandwidth limit types (§5.4.5).
PEER_BANDWIDTH_HARD: Final = 0
PEER_BANDWIDTH_SOFT: Final = 1
PEER_BANDWIDTH_DYNAMIC: Final = 2

_U32: Final = struct.Struct(">I")
_UC: Final = struct.Struct(">HI")
_BW: Final = struct.Struct(">IB")
_AGG_HEADER: Final = struct.Struct(">B3sI3s")  # type, length, timestamp (low 24 + high 8), stream


class Message:
    """One RTMP message: type, message stream id, absolute timestamp (ms, uint32), payload.

    A plain class, not a dataclass: one is made per message received, and compiled
    (agent/fastpath.py) a dataclass is still made by the interpreted `__init__` the
    dataclasses module writes (a Python frame per message)."""

    __slots__ = ("payload", "stream_id", "timestamp", "type_id")

    def __init__(self, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        self.type_id = type_id
        self.stream_id = stream_id
        self.timestamp = timestamp
        self.payload = payload

    def __repr__(self) -> str:
        return (
            f"Message(type_id={self.type_id!r}, stream_id={self.stream_id!r}, "
            f"timestamp={self.timestamp!r}, payload={self.payload!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.type_id, self.stream_id, self.timestamp, self.payload) == (
            other.type_id, other.stream_id, other.timestamp, other.payload,
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]


def _control(type_id: int, payload: bytes) -> Message:
    # Protocol control messages use message stream id 0 (and chunk stream 2), §5.4.
    return Message(type_id, 0, 0, payload)


def set_chunk_size(size: int) -> Message:
    """Set Chunk Size (§5.4.1); *size* is 1..0x7FFFFFFF."""
    return _control(SET_CHUNK_SIZE, _U32.pack(size & 0x7FFFFFFF))


def abort(chunk_stream_id: int) -> Message:
    """Abort Message (§5.4.2) for the partial message on *chunk_stream_id*."""
    return _control(ABORT, _U32.pack(chunk_stream_id))


def acknowledgement(sequence_number: int) -> Message:
    """Acknowledgement (§5.4.3): total bytes received so far, modulo 2**32."""
    return _control(ACK, _U32.pack(sequence_number & 0xFFFFFFFF))


def window_ack_size(size: int) -> Message:
    """Window Acknowledgement Size (§5.4.4)."""
    return _control(WINDOW_ACK_SIZE, _U32.pack(size))


def set_peer_bandwidth(size: int, limit_type: int = PEER_BANDWIDTH_DYNAMIC) -> Message:
    """Set Peer Bandwidth (§5.4.5)."""
    return _control(SET_PEER_BANDWIDTH, _BW.pack(size, limit_type))


def user_control(event_type: int, value: int) -> Message:
    """User Control Message (§6.2, §7.1.7) with a single 32-bit event datum."""
    return _control(USER_CONTROL, _UC.pack(event_type, value & 0xFFFFFFFF))


def stream_begin(stream_id: int) -> Message:
    """User control Stream Begin (§7.1.7) for *stream_id*."""
    return user_control(UC_STREAM_BEGIN, stream_id)


def stream_eof(stream_id: int) -> Message:
    """User control Stream EOF (§7.1.7) for *stream_id*."""
    return user_control(UC_STREAM_EOF, stream_id)


def ping_request(timestamp: int) -> Message:
    """User control PingRequest (§7.1.7) carrying the sender's *timestamp*."""
    return user_control(UC_PING_REQUEST, timestamp)


def ping_response(timestamp: int) -> Message:
    """User control PingResponse (§7.1.7) echoing the request's *timestamp*."""
    return user_control(UC_PING_RESPONSE, timestamp)


def parse_u32(message: Message) -> int:
    """Read the 32-bit value of Set Chunk Size / Abort / Ack / Window Ack Size (§5.4)."""
    if len(message.payload) < 4:
        raise ProtocolError(f"message type {message.type_id} payload shorter than 4 bytes")
    return int(_U32.unpack_from(message.payload)[0])


def parse_user_control(message: Message) -> tuple[int, int]:
    """Return ``(event_type, first 32-bit datum)`` of a User Control message (§7.1.7)."""
    if len(message.payload) < 6:
        raise ProtocolError("user control message shorter than 6 bytes")
    event_type, value = _UC.unpack_from(message.payload)
    return int(event_type), int(value)


def split_aggregate(message: Message) -> list[Message]:
    """Split an Aggregate message (§7.1.6) into its sub-messages.

    Sub-message timestamps are shifted by the difference between the aggregate's
    timestamp and the first sub-message's; the aggregate's stream id overrides theirs.
    """
    payload = memoryview(message.payload)
    out: list[Message] = []
    pos = 0
    end = len(payload)
    offset = 0
    while pos < end:
        if end - pos < _AGG_HEADER.size:
            raise ProtocolError("truncated aggregate sub-message header")
        type_id, raw_len, ts, _ = _AGG_HEADER.unpack_from(payload, pos)
        length = int.from_bytes(raw_len, "big")
        ts = ((ts >> 8) | ((ts & 0xFF) << 24)) & 0xFFFFFFFF  # low 24 bits, then high 8
        pos += _AGG_HEADER.size
        if end - pos < length:
            raise ProtocolError("truncated aggregate sub-message body")
        if not out:
            offset = message.timestamp - ts
        out.append(
            Message(
                type_id,
                message.stream_id,
                (ts + offset) & 0xFFFFFFFF,
                bytes(payload[pos : pos + length]),
            )
        )
        pos += length + 4  # body, then the 4-byte back pointer
    return out
