"""The ingest side: an RTMP server connection accepting one publisher (OBS, FFmpeg).

Command flow (RTMP spec 1.0 §7.2, as OBS and FFmpeg use it)::

    connect -> releaseStream -> FCPublish -> createStream -> publish
    ... audio/video/@setDataFrame ...
    FCUnpublish -> deleteStream
"""

from __future__ import annotations

import enum
import os
from typing import Any, Final

from mypy_extensions import mypyc_attr

from ._connection import _Connection, decode_command, is_command
from .chunk import DEFAULT_MAX_MESSAGE_SIZE, MAX_CHUNK_SIZE
from .errors import LocalProtocolError, ProtocolError
from .events import ConnectRequested, Event, MediaReceived, PublishEnded, PublishRequested
from .handshake import RandomSource, ServerHandshake
from .message import (
    AGGREGATE,
    AUDIO,
    DATA_AMF0,
    DATA_AMF3,
    PEER_BANDWIDTH_DYNAMIC,
    VIDEO,
    Message,
    set_peer_bandwidth,
    split_aggregate,
    stream_begin,
)

__all__ = ["ServerSession"]

_MEDIA_TYPES: Final = frozenset((AUDIO, VIDEO, DATA_AMF0, DATA_AMF3))
_MAX_STREAMS: Final = 16  # createStream calls honoured per connection
#: Largest message before a publish is accepted: the handshake and the commands of a
#: publish (connect, createStream, publish) are a few hundred bytes each.
DEFAULT_MAX_MESSAGE_SIZE_BEFORE_PUBLISH: Final = 64 * 1024
#: Bytes received while a publish waits for its answer, kept unread: the rest of the
#: read that brought the publish command (a caller pauses reading meanwhile).
MAX_INPUT_WHILE_PENDING: Final = 1024 * 1024


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await-connect"
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish-pending"
    PUBLISHING = "publishing"
    CLOSED = "closed"


# Compiled (agent/fastpath.py); tests subclass it to misbehave.
@mypyc_attr(allow_interpreted_subclasses=True)
class ServerSession(_Connection):
    """Server side of one RTMP connection, sans-I/O.

    Feed received bytes to :meth:`receive_data`, send what :meth:`data_to_send`
    returns, and answer each :class:`PublishRequested` with :meth:`accept_publish` or
    :meth:`reject_publish`. Close the socket once :attr:`closed` is true.

    Memory before a publish is accepted is what a stranger can make us hold, so until
    then messages are limited to ``max_message_size_before_publish`` bytes (partial
    ones to twice that), and nothing after a ``publish`` command is read until the
    publish is answered: those bytes are kept as they are (at most
    ``MAX_INPUT_WHILE_PENDING``) and read, with ``max_message_size`` as the limit, once
    the publish is accepted. Media received before ``publish`` is dropped
    (``dropped_before_publish``).
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        window_ack_size: int = 2_500_000,
        chunk_size: int = 4096,
        *,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        max_message_size_before_publish: int = DEFAULT_MAX_MESSAGE_SIZE_BEFORE_PUBLISH,
        random: RandomSource = os.urandom,
    ) -> None:
        before = min(max_message_size, max_message_size_before_publish)
        super().__init__(max_message_size=before, max_chunk_size=max_chunk_size)
        self._max_message_size = max_message_size
        self._handshake = ServerHandshake(random)
        self._window_ack_size = window_ack_size
        self._chunk_size = chunk_size
        self._state = _State.HANDSHAKE
        self._streams: set[int] = set()
        self._next_stream_id = 1
        self._publish_stream_id = 0
        self.app: str | None = None
        self.tc_url: str | None = None
        self.stream_name: str | None = None
        self.publish_type: str | None = None
        self.dropped_before_publish = 0
        # Media that arrived while a publish awaited accept_publish(), and its size.
        self._held: list[Message] = []
        self._held_bytes = 0
        self._max_held_bytes = max_message_size
        self._ready: list[Message] = []  # held media, read by the next call

    # ------------------------------------------------------------------ properties

    @property
    def publishing(self) -> bool:
        """True between :meth:`accept_publish` and the end of the publish."""
        return self._state is _State.PUBLISHING

    @property
    def publish_pending(self) -> bool:
        """True while a ``publish`` waits for :meth:`accept_publish`/:meth:`reject_publish`."""
        return self._state is _State.PUBLISH_PENDING

    @property
    def stream_id(self) -> int:
        """Message stream id of the current (or last) publish, 0 if none."""
        return self._publish_stream_id

    @property
    def handshake_done(self) -> bool:
        """The RTMP handshake is over (commands come next)."""
        return self._state is not _State.HANDSHAKE

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and held, not yet delivered: unread input, partial messages,
        media held for a pending publish (what a peer makes this session keep)."""
        reader = self._reader
        return reader.buffered + reader.partial_bytes + self._held_bytes

    # ------------------------------------------------------------------ I/O entry points

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume bytes from the client; return the events they produced.

        What arrived between ``publish`` and :meth:`accept_publish` is read once the
        publish is accepted, by the next call, which may be ``receive_data(b"")``.
        """
        media, events = self.receive_media(data)
        if media:
            return [MediaReceived(message) for message in media] + events
        return events

    def receive_media(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[Message], list[Event]]:
        """:meth:`receive_data` for the publisher's read loop: the audio, video and data
        messages as they are (aggregates split) rather than a `MediaReceived` each, then
        the other events. Every message comes before those events, as it came before
        them: nothing after an unpublish is the publish's media."""
        if self._closed:
            return [], []
        media, self._ready = self._ready, []
        events: list[Event] = []
        if data:
            self._received += len(data)
            if self._state is _State.HANDSHAKE:
                leftover = self._feed_handshake(data)
                if leftover is None:
                    return media, events
                self._state = _State.AWAIT_CONNECT
                data = leftover
        state = self._state
        if state is _State.PUBLISHING:
            publishing = True
            for message in self._reader.feed(data):
                if publishing:
                    t = message.type_id
                    if t in _MEDIA_TYPES:
                        media.append(message)
                        continue
                    if t == AGGREGATE:
                        self._media(message, media)
                        continue
                self._handle(message, events)
                if self._closed:
                    break
                publishing = self._state is _State.PUBLISHING
        elif state is _State.PUBLISH_PENDING:
            self._reader.keep(data)
            if self._reader.buffered > MAX_INPUT_WHILE_PENDING:
                raise ProtocolError(
                    f"more than {MAX_INPUT_WHILE_PENDING} bytes sent before the publish was"
                    " answered"
                )
        elif state is not _State.HANDSHAKE:
            self._read_commands(data, events)
        self._maybe_ack()
        return media, events

    def _read_commands(self, data: bytes | bytearray | memoryview, events: list[Event]) -> None:
        """Before a publish: one command at a time, so that what follows a ``publish``
        stays unread until the publish is answered (and then read with the limits that
        apply to a publisher)."""
        while True:
            messages = self._reader.feed_until_command(data)
            if not messages:
                return
            data = b""
            for message in messages:  # only the last one may be a command
                self._handle(message, events)
                if self._closed:
                    return
            if self._state is _State.PUBLISH_PENDING:
                return  # the rest waits for the answer

    def accept_publish(self) -> None:
        """Start the pending publish: Stream Begin + NetStream.Publish.Start (§7.2.2.6)."""
        if self._state is not _State.PUBLISH_PENDING:
            raise LocalProtocolError(f"accept_publish() in state {self._state.value}")
        sid = self._publish_stream_id
        self._send(stream_begin(sid))
        self._on_status(
            sid, "status", "NetStream.Publish.Start", f"{self.stream_name} is now published."
        )
        self._state = _State.PUBLISHING
        self._reader.set_max_message_size(self._max_message_size)
        for message in self._held:
            self._media(message, self._ready)
        self._held = []
        self._held_bytes = 0

    def reject_publish(
        self,
        code: str = "NetStream.Publish.BadName",
        description: str = "Publish refused.",
    ) -> None:
        """Refuse the pending publish with an error onStatus; the session then closes."""
        if self._state is not _State.PUBLISH_PENDING:
            raise LocalProtocolError(f"reject_publish() in state {self._state.value}")
        self._on_status(self._publish_stream_id, "error", code, description)
        self._state = _State.CLOSED
        self._closed = True
        self._held = []

    # ------------------------------------------------------------------ internals

    def _on_status(self, stream_id: int, level: str, code: str, description: str) -> None:
        info = {"level": level, "code": code, "description": description}
        self._send_command(stream_id, "onStatus", 0, None, info)

    def _media(self, message: Message, media: list[Message]) -> None:
        if message.type_id == AGGREGATE:
            media.extend(m for m in split_aggregate(message) if m.type_id in _MEDIA_TYPES)
        else:
            media.append(message)

    def _handle(self, message: Message, events: list[Event]) -> None:
        """A message that is not the publish's media (`receive_media` took those)."""
        t = message.type_id
        if t in _MEDIA_TYPES or t == AGGREGATE:
            if (
                self._state is _State.PUBLISH_PENDING
                and self._held_bytes + len(message.payload) <= self._max_held_bytes
            ):
                self._held.append(message)
                self._held_bytes += len(message.payload)
            else:
                self.dropped_before_publish += 1
        elif is_command(message):
            self._handle_command(message, events)
        else:
            self._handle_control(message)

    def _handle_command(self, message: Message, events: list[Event]) -> None:
        name, tx, args = decode_command(message)
        state = self._state
        if name == "connect":
            if state is not _State.AWAIT_CONNECT:
                raise ProtocolError("connect received twice")
            self._connect(tx, args, events)
            return
        if name in ("_result", "_error", "onStatus"):
            return  # answers to nothing we asked: ignore
        if state is _State.AWAIT_CONNECT:
            raise ProtocolError(f"command {name[:64]!r} before connect")
        if name in ("releaseStream", "FCPublish"):
            if tx:
                self._send_command(0, "_result", tx, None)
        elif name == "createStream":
            if len(self._streams) >= _MAX_STREAMS:
                raise ProtocolError(f"more than {_MAX_STREAMS} streams created")
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(sid)
            self._send_command(0, "_result", tx, None, float(sid))
        elif name == "publish":
            self._publish(message.stream_id, args, events)
        elif name == "FCUnpublish":
            if tx:
                self._send_command(0, "_result", tx, None)
            self._end_publish("FCUnpublish", events)
        elif name in ("deleteStream", "closeStream"):
            sid = message.stream_id
            if name == "deleteStream":
                sid = int(args[1]) if len(args) > 1 and isinstance(args[1], float) else 0
                self._streams.discard(sid)
            if sid == self._publish_stream_id and self._end_publish(name, events):
                self._on_status(
                    sid,
                    "status",
                    "NetStream.Unpublish.Success",
                    f"{self.stream_name} is now unpublished.",
                )
        elif tx:
            # Unknown call expecting an answer (nginx-rtmp would stay silent).
            self._send_command(
                0,
                "_error",
                tx,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Call.Failed",
                    "description": f"Method not found ({name[:64]}).",
                },
            )

    def _connect(self, tx: int, args: list[Any], events: list[Event]) -> None:
        obj = args[0] if args else None
        if not isinstance(obj, dict):
            raise ProtocolError("connect without a command object")
        app = obj.get("app", "")
        tc_url = obj.get("tcUrl")
        if not isinstance(app, str):
            raise ProtocolError("connect: app is not a string")
        if tc_url is not None and not isinstance(tc_url, str):
            raise ProtocolError("connect: tcUrl is not a string")
        encoding = obj.get("objectEncoding", 0.0)
        if not isinstance(encoding, float):
            encoding = 0.0
        self.app = app
        self.tc_url = tc_url
        self._state = _State.CONNECTED
        # Reply as FMS/nginx-rtmp do: §5.4.4, §5.4.5, §5.4.1, then _result (§7.2.1.1).
        self._announce_window(self._window_ack_size)
        self._send(set_peer_bandwidth(self._window_ack_size, PEER_BANDWIDTH_DYNAMIC))
        self._set_send_chunk_size(self._chunk_size)
        self._send_command(
            0,
            "_result",
            tx,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": encoding,
            },
        )
        events.append(ConnectRequested(app, tc_url, dict(obj)))

    def _publish(self, stream_id: int, args: list[Any], events: list[Event]) -> None:
        if self._state is not _State.CONNECTED:
            raise ProtocolError(f"publish in state {self._state.value}")
        if stream_id not in self._streams:
            raise ProtocolError(f"publish on message stream {stream_id}, which was not created")
        name = args[1] if len(args) > 1 else None
        if not isinstance(name, str):
            raise ProtocolError("publish without a stream name")
        publish_type = args[2] if len(args) > 2 and isinstance(args[2], str) else "live"
        self.stream_name = name
        self.publish_type = publish_type
        self._publish_stream_id = stream_id
        self._state = _State.PUBLISH_PENDING
        events.append(PublishRequested(name, publish_type))

    def _end_publish(self, reason: str, events: list[Event]) -> bool:
        if self._state not in (_State.PUBLISHING, _State.PUBLISH_PENDING):
            return False
        self._state = _State.CONNECTED
        self._held = []
        self._held_bytes = 0
        events.append(PublishEnded(reason))
        return True
