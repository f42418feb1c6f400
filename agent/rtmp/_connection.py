"""What server and client sessions share once the handshake is over: chunking in both
directions, the outgoing buffer, acknowledgements, pings and command encoding."""

from __future__ import annotations

import math
from typing import Any, Final

from mypy_extensions import mypyc_attr

from . import amf0
from .chunk import (
    CSID_COMMAND,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CHUNK_SIZE,
    ChunkReader,
    ChunkWriter,
)
from .errors import ProtocolError
from .handshake import ClientHandshake, ServerHandshake
from .message import (
    ABORT,
    ACK,
    COMMAND_AMF0,
    COMMAND_AMF3,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    UC_PING_REQUEST,
    USER_CONTROL,
    WINDOW_ACK_SIZE,
    Message,
    acknowledgement,
    parse_u32,
    parse_user_control,
    ping_response,
    window_ack_size,
)

#: Window Acknowledgement Size assumed until the peer announces one (§5.4.4).
DEFAULT_WINDOW_ACK_SIZE: Final = 2_500_000


# Compiled (agent/fastpath.py), subclassed by ClientSession, which is not.
@mypyc_attr(allow_interpreted_subclasses=True)
class _Connection:
    """Chunk reader/writer plus the protocol control handling of RTMP spec 1.0 §5.4."""

    _handshake: ClientHandshake | ServerHandshake  # set by the subclass

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_size: int = MAX_CHUNK_SIZE,
    ) -> None:
        self._reader = ChunkReader(max_message_size=max_message_size, max_chunk_size=max_chunk_size)
        self._writer = ChunkWriter()
        self._out: list[bytes] = []
        self._received = 0
        self._sent = 0
        self._peer_window = DEFAULT_WINDOW_ACK_SIZE
        self._last_ack = 0
        self._announced_window: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ public helpers

    def data_to_send(self) -> bytes:
        """Return (and forget) every byte queued for the peer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._sent += len(data)
        return data

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` has something."""
        return bool(self._out)

    @property
    def bytes_received(self) -> int:
        """Bytes received from the peer so far, handshake included."""
        return self._received

    @property
    def bytes_sent(self) -> int:
        """Bytes handed out by :meth:`data_to_send` so far, handshake included."""
        return self._sent

    @property
    def closed(self) -> bool:
        """True once the connection should be closed by the I/O layer."""
        return self._closed

    # ---------------------------------------------------------------- for subclasses

    def _feed_handshake(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Feed the handshake and queue its reply: None while it goes on, then the bytes
        that followed it (the first chunks)."""
        handshake = self._handshake
        reply = handshake.feed(data)
        if reply:
            self._out.append(reply)
        return handshake.leftover if handshake.done else None

    def _send(self, message: Message, csid: int | None = None) -> None:
        self._out.append(self._writer.write(message, csid))

    def _send_command(self, stream_id: int, *values: Any) -> None:
        payload = amf0.encode(*values)
        self._out.append(
            self._writer.write(Message(COMMAND_AMF0, stream_id, 0, payload), CSID_COMMAND)
        )

    def _set_send_chunk_size(self, size: int) -> None:
        self._out.append(self._writer.set_chunk_size(size))

    def _announce_window(self, size: int) -> None:
        self._send(window_ack_size(size))
        self._announced_window = size

    def _maybe_ack(self) -> None:
        # §5.4.3: acknowledge once a window's worth of bytes arrived since the last ack.
        if self._received - self._last_ack >= self._peer_window:
            self._send(acknowledgement(self._received))
            self._last_ack = self._received

    def _handle_control(self, message: Message) -> bool:
        """Handle protocol/user control messages; return False for any other message."""
        t = message.type_id
        if t > SET_PEER_BANDWIDTH:
            return False
        if t in (SET_CHUNK_SIZE, ABORT, ACK):
            return True  # chunk size and abort were applied by the reader
        if t == USER_CONTROL:
            event, value = parse_user_control(message)
            if event == UC_PING_REQUEST:
                # §7.1.7: answer a PingRequest with the timestamp it carried.
                self._send(ping_response(value))
        elif t == WINDOW_ACK_SIZE:
            size = parse_u32(message)
            if size > 0:
                self._peer_window = size
        elif t == SET_PEER_BANDWIDTH:
            size = parse_u32(message)
            # §5.4.5: answer with a Window Ack Size if it differs from the last one sent.
            if size > 0 and size != self._announced_window:
                self._announce_window(size)
        return True


def decode_command(message: Message) -> tuple[str, int, list[Any]]:
    """Split a command message (§7.1.1) into ``(name, transaction id, arguments)``."""
    payload = message.payload
    if message.type_id == COMMAND_AMF3 and payload[:1] == b"\x00":
        # AMF3 command messages start with a format byte 0, then AMF0 values (§7.1.1).
        payload = payload[1:]
    values = amf0.decode(payload)
    if not values or not isinstance(values[0], str):
        raise ProtocolError("command message without a command name")
    tx = values[1] if len(values) > 1 else 0.0
    if not isinstance(tx, float) or not math.isfinite(tx):
        tx = 0.0
    return values[0], int(tx), values[2:]


def is_command(message: Message) -> bool:
    """True for AMF0 and AMF3 command messages."""
    return message.type_id in (COMMAND_AMF0, COMMAND_AMF3)
