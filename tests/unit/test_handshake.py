"""RTMP handshake: plain and digest variants, both sides, byte-at-a-time feeding."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from agent.rtmp.errors import HandshakeError
from agent.rtmp.handshake import ClientHandshake, ServerHandshake

from .rtmp_helpers import seeded

SIZE = 1536
TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY = b"Genuine Adobe Flash Player 001" + TAIL
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + TAIL


def sha(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def offset(packet: bytes, scheme: int) -> int:
    base = 8 if scheme == 0 else 772
    return base + 4 + sum(packet[base : base + 4]) % 728


def digest_at(packet: bytes, pos: int, key: bytes) -> bytes:
    return sha(key, packet[:pos] + packet[pos + 32 :])


def make_c1(scheme: int | None, seed: int = 3) -> bytes:
    """A C1 like Flash/FFmpeg send (digest at *scheme*) or a plain one (None)."""
    body = bytearray(bytes(4) + (bytes(4) if scheme is None else b"\x09\x00\x7c\x02"))
    body += seeded(seed)(SIZE - 8)
    if scheme is not None:
        pos = offset(bytes(body), scheme)
        body[pos : pos + 32] = digest_at(bytes(body), pos, FP_KEY[:30])
    return bytes(body)


def transfer(client: ClientHandshake, server: ServerHandshake) -> None:
    """Run a complete handshake in memory, aioquic style."""
    c2 = client.feed(server.feed(client.start()))
    assert server.feed(c2) == b""


def test_client_and_server_digest_handshake() -> None:
    client, server = ClientHandshake(seeded(1)), ServerHandshake(seeded(2))
    transfer(client, server)
    assert client.done and server.done
    assert server.digest_scheme == 0
    assert server.client_verified is True
    assert client.server_verified is True
    assert client.leftover == server.leftover == b""


def test_client_and_server_plain_handshake() -> None:
    client = ClientHandshake(seeded(1), use_digest=False)
    server = ServerHandshake(seeded(2))
    c0c1 = client.start()
    assert c0c1[0] == 3 and c0c1[5:9] == bytes(4)
    s = server.feed(c0c1)
    assert s[1 + SIZE :] == c0c1[1:]  # S2 echoes C1
    assert client.feed(s) == s[1 : 1 + SIZE]  # C2 echoes S1
    assert client.done and client.server_verified is True
    assert server.digest_scheme is None and server.client_verified is None


@pytest.mark.parametrize("scheme", [0, 1])
def test_server_answers_digest_c1(scheme: int) -> None:
    c1 = make_c1(scheme)
    client_digest = c1[offset(c1, scheme) : offset(c1, scheme) + 32]
    server = ServerHandshake(seeded(5))
    out = server.feed(b"\x03" + c1)
    assert len(out) == 1 + 2 * SIZE and out[0] == 3
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert server.digest_scheme == scheme
    assert s1[4:8] != bytes(4)
    # S1 carries a server digest at the same scheme, keyed with the 36-byte FMS key.
    pos = offset(s1, scheme)
    assert s1[pos : pos + 32] == digest_at(s1, pos, FMS_KEY[:36])
    # S2 ends with HMAC(HMAC(full FMS key, client digest), rest of S2).
    assert s2[-32:] == sha(sha(FMS_KEY, client_digest), s2[:-32])
    # A C2 signed with the full Flash Player key and the server digest validates.
    server_digest = s1[pos : pos + 32]
    body = seeded(6)(SIZE - 32)
    assert server.feed(body + sha(sha(FP_KEY, server_digest), body)) == b""
    assert server.done and server.client_verified is True


def test_server_falls_back_to_echo_on_bad_digest() -> None:
    c1 = bytearray(make_c1(0))
    c1[offset(bytes(c1), 0)] ^= 0xFF  # corrupt the digest: no scheme validates
    server = ServerHandshake(seeded(5))
    out = server.feed(b"\x03" + bytes(c1))
    assert server.digest_scheme is None
    assert out[1 + SIZE :] == bytes(c1)
    assert out[5:9] == bytes(4)


def test_server_plain_c1_echo() -> None:
    c1 = make_c1(None)
    server = ServerHandshake(seeded(5))
    out = server.feed(b"\x03" + c1)
    assert out[1 + SIZE :] == c1
    server.feed(out[1 : 1 + SIZE])
    assert server.done and server.client_verified is None


@pytest.mark.parametrize("version", [0, 6, 0xFF])
def test_bad_versions_rejected(version: int) -> None:
    with pytest.raises(HandshakeError, match=f"unsupported RTMP version {version} in C0"):
        ServerHandshake().feed(bytes((version,)))
    client = ClientHandshake()
    client.start()
    with pytest.raises(HandshakeError, match=f"unsupported RTMP version {version} in S0"):
        client.feed(bytes((version,)) + bytes(10))


def test_client_misuse() -> None:
    client = ClientHandshake()
    with pytest.raises(HandshakeError, match="before start"):
        client.feed(b"\x03")
    client.start()
    with pytest.raises(HandshakeError, match="called twice"):
        client.start()


def test_one_byte_at_a_time_and_leftover() -> None:
    client, server = ClientHandshake(seeded(1)), ServerHandshake(seeded(2))
    c0c1 = client.start()
    s_out = b"".join(server.feed(c0c1[i : i + 1]) for i in range(len(c0c1)))
    assert len(s_out) == 1 + 2 * SIZE
    assert server.feed(b"") == b""

    tail = b"\x02chunk-data-after-S2"
    c2 = b""
    for i in range(len(s_out) + len(tail)):
        c2 += client.feed((s_out + tail)[i : i + 1])
    assert len(c2) == SIZE and client.done
    assert client.leftover == tail

    after = b"\x03\x00\x00\x00connect..."
    data = c2 + after
    for i in range(len(data)):
        assert server.feed(data[i : i + 1]) == b""
    assert server.done and server.client_verified is True
    assert server.leftover == after


def test_leftover_in_one_piece() -> None:
    client, server = ClientHandshake(seeded(1)), ServerHandshake(seeded(2))
    c2 = client.feed(server.feed(client.start()) + b"xyz")
    assert client.leftover == b"xyz"
    server.feed(c2 + b"abc")
    assert server.leftover == b"abc"
    server.feed(b"def")
    assert server.leftover == b"abcdef"


def test_deterministic_with_injected_random() -> None:
    a = ServerHandshake(seeded(9)).feed(b"\x03" + make_c1(1))
    b = ServerHandshake(seeded(9)).feed(b"\x03" + make_c1(1))
    assert a == b
    assert ClientHandshake(seeded(4)).start() == ClientHandshake(seeded(4)).start()
