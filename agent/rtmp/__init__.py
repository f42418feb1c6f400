"""Sans-I/O RTMP: handshake, chunk stream, AMF0 and publish sessions (h11 style).

Nothing here does I/O: feed received bytes in, get events and bytes to send out.
"""

# ruff: noqa: E402 - the compiled modules' directory goes on __path__ before any import

from agent import fastpath as _fastpath

_fastpath.extend(__path__, "rtmp")  # its compiled modules, if the agent's are in use

from . import amf0, message
from .amf0 import AMFDate, EcmaArray, TypedObject
from .chunk import ChunkReader, ChunkWriter, csid_for
from .client_session import ClientSession
from .errors import (
    AMFError,
    ChunkError,
    HandshakeError,
    LocalProtocolError,
    MessageTooLarge,
    ProtocolError,
)
from .events import (
    ClientConnected,
    ConnectRequested,
    Event,
    MediaReceived,
    PublishEnded,
    PublishRefused,
    PublishRequested,
    PublishStarted,
    ServerClosed,
    StatusReceived,
)
from .handshake import ClientHandshake, ServerHandshake
from .message import Message
from .server_session import ServerSession

__all__ = [
    "AMFDate",
    "AMFError",
    "ChunkError",
    "ChunkReader",
    "ChunkWriter",
    "ClientConnected",
    "ClientHandshake",
    "ClientSession",
    "ConnectRequested",
    "EcmaArray",
    "Event",
    "HandshakeError",
    "LocalProtocolError",
    "MediaReceived",
    "Message",
    "MessageTooLarge",
    "ProtocolError",
    "PublishEnded",
    "PublishRefused",
    "PublishRequested",
    "PublishStarted",
    "ServerClosed",
    "ServerHandshake",
    "ServerSession",
    "StatusReceived",
    "TypedObject",
    "amf0",
    "csid_for",
    "message",
]
