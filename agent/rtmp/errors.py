"""Exceptions raised by the sans-I/O RTMP implementation.

Every error caused by bytes from the peer is a :class:`ProtocolError`; the I/O layer
closes the connection when it sees one. :class:`LocalProtocolError` marks a misuse of
the API by our own code (calling a method in the wrong state), as in h11.
"""


class ProtocolError(Exception):
    """The peer violated the RTMP protocol or exceeded one of our limits."""


class HandshakeError(ProtocolError):
    """The RTMP handshake (RTMP spec 1.0 §5.2) failed."""


class ChunkError(ProtocolError):
    """The chunk stream (RTMP spec 1.0 §5.3) is malformed or exceeds a limit."""


class MessageTooLarge(ChunkError):
    """A message header declared a length above the configured maximum."""


class AMFError(ProtocolError):
    """AMF0 data could not be encoded or decoded."""


class LocalProtocolError(ProtocolError):
    """Our own code called a session method in a state where it is not allowed."""
