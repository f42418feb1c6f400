"""The RTMP handshake (RTMP spec 1.0 §5.2), server and client side, sans-I/O.

Besides the plain handshake of the specification, Flash, librtmp (OBS) and FFmpeg send
the "digest" handshake: C1 carries a non-zero version field and a 32-byte HMAC-SHA256
digest at one of two places ("scheme 0" near the start, "scheme 1" in the second half).
Servers such as YouTube or Twitch expect it from publishers, and clients that sent it
check that the server answers in kind. Both sides are implemented here; a server falls
back to the plain echo when the client's digest does not validate.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from .errors import HandshakeError

__all__ = [
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "ServerHandshake",
]

#: The only protocol version we speak, C0/S0 (RTMP spec 1.0 §5.2.2).
RTMP_VERSION = 3
#: Size of C1/S1/C2/S2 (RTMP spec 1.0 §5.2.3).
HANDSHAKE_SIZE = 1536

_DIGEST_SIZE = 32
# Shared 32-byte tail of the two well-known handshake keys.
_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
#: Key of the client side ("Genuine Adobe Flash Player 001" + tail, 62 bytes).
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
#: Key of the server side ("Genuine Adobe Flash Media Server 001" + tail, 68 bytes).
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
# C1 and S1 digests are keyed with the text part of the key only.
_FP_PARTIAL_KEY = FP_KEY[:30]
_FMS_PARTIAL_KEY = FMS_KEY[:36]

# Version fields we put in C1/S1 (a Flash Player and a Flash Media Server version).
_CLIENT_VERSION = bytes((9, 0, 124, 2))
_SERVER_VERSION = bytes((4, 5, 0, 1))
_ZERO4 = bytes(4)

RandomSource = Callable[[int], bytes]


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(packet: bytes | bytearray, scheme: int) -> int:
    """Return where the 32-byte digest sits in a C1/S1 *packet* for *scheme* 0 or 1.

    The four bytes at the scheme's base (8 or 772) are summed, reduced modulo 728 and
    added to the base + 4, so the digest always lies inside its 764-byte half.
    """
    base = 8 if scheme == 0 else 772
    return sum(packet[base : base + 4]) % 728 + base + 4


def _packet_digest(packet: bytes | bytearray, offset: int, key: bytes) -> bytes:
    # HMAC over the packet with the digest bytes themselves left out.
    return _hmac(key, bytes(packet[:offset]) + bytes(packet[offset + _DIGEST_SIZE :]))


def find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """Return ``(scheme, digest)`` if *packet* (C1 or S1) carries a valid digest for *key*."""
    for scheme in (0, 1):
        offset = digest_offset(packet, scheme)
        expected = _packet_digest(packet, offset, key)
        if hmac.compare_digest(expected, packet[offset : offset + _DIGEST_SIZE]):
            return scheme, expected
    return None


def _make_digest_packet(
    version: bytes, key: bytes, scheme: int, random: RandomSource
) -> tuple[bytes, bytes]:
    """Build a C1/S1 with an embedded digest; return ``(packet, digest)``."""
    packet = bytearray(_ZERO4 + version + random(HANDSHAKE_SIZE - 8))
    offset = digest_offset(packet, scheme)
    digest = _packet_digest(packet, offset, key)
    packet[offset : offset + _DIGEST_SIZE] = digest
    return bytes(packet), digest


def _make_response(peer_digest: bytes, key: bytes, random: RandomSource) -> bytes:
    """Build a digest-style C2/S2: random bytes signed with HMAC(key, peer digest)."""
    body = random(HANDSHAKE_SIZE - _DIGEST_SIZE)
    return body + _hmac(_hmac(key, peer_digest), body)


def _verify_response(packet: bytes, own_digest: bytes, key: bytes) -> bool:
    body = packet[: HANDSHAKE_SIZE - _DIGEST_SIZE]
    signature = _hmac(_hmac(key, own_digest), body)
    return hmac.compare_digest(signature, packet[HANDSHAKE_SIZE - _DIGEST_SIZE :])


class ServerHandshake:
    """Server side of the handshake: reads C0+C1, answers S0+S1+S2, then reads C2."""

    def __init__(self, random: RandomSource = os.urandom) -> None:
        self._random = random
        self._buf = bytearray()
        self._replied = False
        self.done = False
        self.leftover = b""
        #: 0 or 1 when the client's digest validated, None for the plain handshake.
        self.digest_scheme: int | None = None
        #: Whether a digest client's C2 was signed correctly (None: not checked).
        self.client_verified: bool | None = None
        self._server_digest = b""

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume handshake bytes; return the bytes to send (S0+S1+S2 once, else b"")."""
        if self.done:
            self.leftover += bytes(data)
            return b""
        self._buf += data
        out = b""
        if not self._replied:
            if self._buf and self._buf[0] != RTMP_VERSION:
                # C0 carries the requested version, RTMP spec 1.0 §5.2.2.
                raise HandshakeError(
                    f"unsupported RTMP version {self._buf[0]} in C0 (expected {RTMP_VERSION})"
                )
            if len(self._buf) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            out = self._reply(c1)
            self._replied = True
        if len(self._buf) >= HANDSHAKE_SIZE:
            c2 = bytes(self._buf[:HANDSHAKE_SIZE])
            if self._server_digest:
                self.client_verified = _verify_response(c2, self._server_digest, FP_KEY)
            self.leftover = bytes(self._buf[HANDSHAKE_SIZE:])
            self._buf = bytearray()
            self.done = True
        return out

    def _reply(self, c1: bytes) -> bytes:
        found = find_digest(c1, _FP_PARTIAL_KEY) if c1[4:8] != _ZERO4 else None
        if found is None:
            # Plain handshake: S1 is time + zero + random, S2 echoes C1 (§5.2.3, §5.2.4).
            s1 = _ZERO4 + _ZERO4 + self._random(HANDSHAKE_SIZE - 8)
            s2 = c1
        else:
            scheme, client_digest = found
            self.digest_scheme = scheme
            s1, self._server_digest = _make_digest_packet(
                _SERVER_VERSION, _FMS_PARTIAL_KEY, scheme, self._random
            )
            s2 = _make_response(client_digest, FMS_KEY, self._random)
        return bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake:
    """Client side of the handshake, digest style like FFmpeg: C0+C1, then C2 after S1."""

    def __init__(self, random: RandomSource = os.urandom, *, use_digest: bool = True) -> None:
        self._random = random
        self._use_digest = use_digest
        self._buf = bytearray()
        self._c1 = b""
        self._client_digest = b""
        self._sent_c2 = False
        self.done = False
        self.leftover = b""
        #: True/False once S2 is read: whether it answered our C1 correctly.
        self.server_verified: bool | None = None

    def start(self) -> bytes:
        """Return C0+C1, the first bytes of the connection."""
        if self._c1:
            raise HandshakeError("ClientHandshake.start() called twice")
        if self._use_digest:
            self._c1, self._client_digest = _make_digest_packet(
                _CLIENT_VERSION, _FP_PARTIAL_KEY, 0, self._random
            )
        else:
            self._c1 = _ZERO4 + _ZERO4 + self._random(HANDSHAKE_SIZE - 8)
        return bytes((RTMP_VERSION,)) + self._c1

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume server bytes; return C2 once S0+S1 are in, else b""."""
        if not self._c1:
            raise HandshakeError("ClientHandshake.feed() called before start()")
        if self.done:
            self.leftover += bytes(data)
            return b""
        self._buf += data
        out = b""
        if not self._sent_c2:
            if self._buf and self._buf[0] != RTMP_VERSION:
                raise HandshakeError(
                    f"unsupported RTMP version {self._buf[0]} in S0 (expected {RTMP_VERSION})"
                )
            if len(self._buf) < 1 + HANDSHAKE_SIZE:
                return b""
            s1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            out = self._make_c2(s1)
            self._sent_c2 = True
        if len(self._buf) >= HANDSHAKE_SIZE:
            s2 = bytes(self._buf[:HANDSHAKE_SIZE])
            # Either signed for our digest or a plain echo of C1 (§5.2.4) is acceptable.
            self.server_verified = s2[8:] == self._c1[8:] or (
                bool(self._client_digest) and _verify_response(s2, self._client_digest, FMS_KEY)
            )
            self.leftover = bytes(self._buf[HANDSHAKE_SIZE:])
            self._buf = bytearray()
            self.done = True
        return out

    def _make_c2(self, s1: bytes) -> bytes:
        if self._client_digest and s1[4:8] != _ZERO4:
            found = find_digest(s1, _FMS_PARTIAL_KEY)
            if found is not None:
                return _make_response(found[1], FP_KEY, self._random)
        # Plain handshake: C2 echoes S1 (RTMP spec 1.0 §5.2.4).
        return s1
