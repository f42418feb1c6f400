"""The relay side: an RTMP client connection publishing one stream to a destination
(YouTube, Twitch, nginx-rtmp...), with the command sequence FFmpeg and OBS use::

    handshake -> Set Chunk Size -> connect
    _result(connect) -> releaseStream, FCPublish, createStream
    _result(createStream) -> publish(name, "live")
    onStatus NetStream.Publish.Start -> media ... -> FCUnpublish, deleteStream
"""

from __future__ import annotations

import enum
import os
from typing import Any

from ._connection import _Connection, decode_command, is_command
from .chunk import DEFAULT_MAX_MESSAGE_SIZE
from .errors import LocalProtocolError, ProtocolError
from .events import (
    ClientConnected,
    Event,
    PublishRefused,
    PublishStarted,
    ServerClosed,
    StatusReceived,
)
from .handshake import ClientHandshake, RandomSource
from .message import AGGREGATE, AUDIO, DATA_AMF0, DATA_AMF3, VIDEO, Message

__all__ = ["DEFAULT_FLASH_VER", "ClientSession"]

#: flashVer announced in connect, as FFmpeg and OBS do when publishing.
DEFAULT_FLASH_VER = "FMLE/3.0 (compatible; FMSc/1.0)"

_SENDABLE = frozenset((AUDIO, VIDEO, DATA_AMF0, DATA_AMF3, AGGREGATE))
# Calls whose _error means the publish cannot happen (FFmpeg ignores the others).
_FATAL_CALLS = frozenset(("connect", "createStream", "publish"))


class _State(enum.Enum):
    IDLE = "idle"
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating-stream"
    PUBLISH_REQUESTED = "publish-requested"
    PUBLISHING = "publishing"
    UNPUBLISHED = "unpublished"
    CLOSED = "closed"


class ClientSession(_Connection):
    """Client side of one outgoing RTMP publish, sans-I/O.

    Call :meth:`start`, then alternate :meth:`data_to_send` / :meth:`receive_data`.
    Once :class:`PublishStarted` arrives, :meth:`send_media` queues audio, video and
    data messages; :meth:`unpublish` ends the publish cleanly.
    """

    def __init__(
        self,
        app: str,
        tc_url: str,
        stream_name: str,
        chunk_size: int = 4096,
        *,
        flash_ver: str = DEFAULT_FLASH_VER,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        random: RandomSource = os.urandom,
    ) -> None:
        super().__init__(max_message_size=max_message_size)
        self.app = app
        self.tc_url = tc_url
        self.stream_name = stream_name
        self.flash_ver = flash_ver
        self._chunk_size = chunk_size
        self._handshake = ClientHandshake(random)
        self._state = _State.IDLE
        self._tx = 0
        self._calls: dict[int, str] = {}
        self._stream_id = 0

    # ------------------------------------------------------------------ properties

    @property
    def publishing(self) -> bool:
        """True once the destination confirmed the publish, until :meth:`unpublish`."""
        return self._state is _State.PUBLISHING

    @property
    def stream_id(self) -> int:
        """Message stream id given by the destination's createStream answer (0 before)."""
        return self._stream_id

    @property
    def chunk_size(self) -> int:
        """The chunk size this session announces after the handshake and sends with."""
        return self._chunk_size

    # ------------------------------------------------------------------ I/O entry points

    def start(self) -> None:
        """Queue C0+C1; call once, right after the TCP connection is established."""
        if self._state is not _State.IDLE:
            raise LocalProtocolError("start() called twice")
        self._out.append(self._handshake.start())
        self._state = _State.HANDSHAKE

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume bytes from the destination; return the events they produced."""
        if self._state is _State.IDLE:
            raise LocalProtocolError("receive_data() before start()")
        if self._closed or not data:
            return []
        self._received += len(data)
        if self._state is _State.HANDSHAKE:
            leftover = self._feed_handshake(data)
            if leftover is None:
                return []
            self._after_handshake()
            data = leftover
        events: list[Event] = []
        for message in self._reader.feed(data):
            if is_command(message):
                self._handle_command(message, events)
                if self._closed:
                    break
            else:
                self._handle_control(message)  # media from a destination is ignored
        self._maybe_ack()
        return events

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Queue an audio (8), video (9) or data (18) message on the publish stream."""
        if self._state is not _State.PUBLISHING:
            raise LocalProtocolError(f"send_media() in state {self._state.value}")
        if type_id not in _SENDABLE:
            raise LocalProtocolError(f"send_media() cannot send message type {type_id}")
        self._send(Message(type_id, self._stream_id, timestamp & 0xFFFFFFFF, payload))

    def unpublish(self) -> None:
        """Queue FCUnpublish and deleteStream, as FFmpeg does when it closes."""
        if self._state not in (_State.PUBLISHING, _State.PUBLISH_REQUESTED):
            raise LocalProtocolError(f"unpublish() in state {self._state.value}")
        self._call("FCUnpublish", None, self.stream_name)
        self._send_command(0, "deleteStream", 0, None, float(self._stream_id))
        self._state = _State.UNPUBLISHED

    # ------------------------------------------------------------------ internals

    def _call(self, name: str, *args: Any, stream_id: int = 0) -> None:
        self._tx += 1
        self._calls[self._tx] = name
        self._send_command(stream_id, name, self._tx, *args)

    def _after_handshake(self) -> None:
        self._set_send_chunk_size(self._chunk_size)
        self._state = _State.CONNECTING
        self._call(
            "connect",
            {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": self.flash_ver,
                "tcUrl": self.tc_url,
            },
        )

    def _refuse(self, code: str, description: str, events: list[Event]) -> None:
        events.append(PublishRefused(code, description))
        self._state = _State.CLOSED
        self._closed = True

    def _handle_command(self, message: Message, events: list[Event]) -> None:
        name, tx, args = decode_command(message)
        if name in ("_result", "_error"):
            call = self._calls.pop(tx, None)
            if call is None:
                return
            if name == "_error":
                if call in _FATAL_CALLS:
                    info = _info(args)
                    self._refuse(
                        _str(info.get("code"), f"{call}.Failed"),
                        _str(info.get("description"), f"{call} refused"),
                        events,
                    )
                return
            if call == "connect":
                self._on_connected(args, events)
            elif call == "createStream":
                self._on_stream_created(args)
        elif name == "onStatus":
            info = _info(args)
            level = _str(info.get("level"), "")
            code = _str(info.get("code"), "")
            description = _str(info.get("description"), "")
            if code == "NetStream.Publish.Start" and self._state is _State.PUBLISH_REQUESTED:
                self._state = _State.PUBLISHING
                events.append(PublishStarted(self._stream_id))
            elif level == "error" and self._state is not _State.PUBLISHING:
                self._refuse(code, description, events)
            else:
                events.append(StatusReceived(level, code, description))
        elif name == "close":
            events.append(ServerClosed("close"))
            self._state = _State.CLOSED
            self._closed = True
        # onBWDone, onFCPublish and other notifications need no answer.

    def _on_connected(self, args: list[Any], events: list[Event]) -> None:
        if self._state is not _State.CONNECTING:
            return
        props = args[0] if args and isinstance(args[0], dict) else {}
        info = _info(args)
        events.append(ClientConnected(dict(props), dict(info)))
        self._call("releaseStream", None, self.stream_name)
        self._call("FCPublish", None, self.stream_name)
        self._call("createStream", None)
        self._state = _State.CREATING_STREAM

    def _on_stream_created(self, args: list[Any]) -> None:
        if self._state is not _State.CREATING_STREAM:
            return
        sid = args[1] if len(args) > 1 else None
        if not isinstance(sid, float) or not 0 < sid <= 0xFFFFFFFF or sid != int(sid):
            # Words, not the peer's value (it may be anything: it ends up in lastError).
            shown = repr(sid) if isinstance(sid, float) else type(sid).__name__
            raise ProtocolError(f"createStream answered with an invalid stream id ({shown})")
        self._stream_id = int(sid)
        self._call("publish", None, self.stream_name, "live", stream_id=self._stream_id)
        self._state = _State.PUBLISH_REQUESTED


def _info(args: list[Any]) -> dict[str, Any]:
    # The info object is the last argument of _result/_error/onStatus (§7.2.1.1).
    for arg in reversed(args):
        if isinstance(arg, dict):
            return arg
    return {}


def _str(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default
