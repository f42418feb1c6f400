"""What an RTMP client really sent: the messages in a raw capture of its TCP stream.

The conformance tests record, byte for byte, what each publisher sends the agent and
what the agent sends each destination (`tcp_proxy.py`), and compare the two. The
comparison is only worth something if the capture is read by code that shares
nothing with the agent, so this is a second, deliberately small reading of the RTMP
chunk stream (RTMP spec 1.0 §5.3), written for the tests: it does not import `agent`.

Where the spec is ambiguous it reads as FFmpeg's rtmppkt.c and nginx-rtmp do:
- a format 3 chunk that starts a new message adds the chunk stream's last timestamp
  field again (the absolute timestamp after a format 0 header, the delta after 1/2);
- format 3 chunks repeat the extended timestamp when their header had one (§5.3.1.3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0 + C1 + C2, all a client sends before chunks (§5.2)
SET_CHUNK_SIZE, ABORT, AGGREGATE = 1, 2, 22
AUDIO, VIDEO, DATA_AMF0, DATA_AMF3 = 8, 9, 18, 15
# What a relay passes on: audio, video and data (onMetaData, onCuePoint, onTextData...).
RELAYED = (AUDIO, VIDEO, DATA_AMF0, DATA_AMF3)
EXTENDED = 0xFFFFFF
SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"  # the AMF0 string a publisher wraps data in


class CaptureError(AssertionError):
    """The capture is not a well-formed RTMP client stream."""


@dataclass(frozen=True)
class Message:
    """One complete RTMP message as sent: type, 32-bit timestamp (ms), stream, body."""

    type: int
    timestamp: int
    stream_id: int
    payload: bytes = field(repr=False)

    @property
    def body(self) -> bytes:
        """The payload as a relay must deliver it: data messages without the
        `@setDataFrame` wrapper, which is an instruction to the server it is sent to
        (store this as the stream's data frame), not part of the data."""
        if self.type == DATA_AMF0 and self.payload.startswith(SET_DATA_FRAME):
            return self.payload[len(SET_DATA_FRAME) :]
        return self.payload

    @property
    def key(self) -> tuple[int, int, str]:
        """What must be equal at a destination: type, timestamp, body digest."""
        return (self.type, self.timestamp, hashlib.sha256(self.body).hexdigest())

    def describe(self) -> str:
        """A short human description for failure messages."""
        return f"{kind_name(self)} ts={self.timestamp} size={len(self.body)}"


@dataclass
class _ChunkStream:
    """What the previous header on one chunk stream id left for the next."""

    timestamp: int = 0
    ts_field: int = 0  # absolute after format 0, delta after 1/2
    length: int = 0
    type: int = 0
    stream_id: int = 0
    extended: bool = False
    started: bool = False
    partial: bytearray | None = None


def _uint(data: bytes | memoryview, pos: int, size: int) -> int:
    return int.from_bytes(data[pos : pos + size], "big")


def read_messages(stream: bytes, skip_handshake: bool = True) -> tuple[list[Message], bool]:
    """Every complete message in a client's byte stream, in the order they completed;
    and whether the stream ended inside a chunk (a connection cut mid-message)."""
    data = memoryview(stream)
    pos = HANDSHAKE_BYTES if skip_handshake else 0
    if len(data) < pos:
        return [], len(data) > 0
    chunk_size = 128
    streams: dict[int, _ChunkStream] = {}
    messages: list[Message] = []
    while pos < len(data):
        start = pos
        b0 = data[pos]
        fmt, csid = b0 >> 6, b0 & 0x3F
        pos += 1
        if csid == 0:
            if pos + 1 > len(data):
                return messages, True
            csid = 64 + data[pos]
            pos += 1
        elif csid == 1:
            if pos + 2 > len(data):
                return messages, True
            csid = 64 + data[pos] + 256 * data[pos + 1]
            pos += 2
        st = streams.setdefault(csid, _ChunkStream())
        header = (11, 7, 3, 0)[fmt]
        if pos + header > len(data):
            return messages, True
        if fmt != 0 and not st.started:
            raise CaptureError(f"offset {start}: format {fmt} chunk on unused chunk stream {csid}")
        new_message = st.partial is None
        if fmt < 3:
            ts_field = _uint(data, pos, 3)
            if fmt <= 1:
                st.length = _uint(data, pos + 3, 3)
                st.type = data[pos + 6]
            if fmt == 0:
                st.stream_id = int.from_bytes(data[pos + 7 : pos + 11], "little")
            pos += header
            st.extended = ts_field == EXTENDED
            if st.extended:
                if pos + 4 > len(data):
                    return messages, True
                ts_field = _uint(data, pos, 4)
                pos += 4
            if not new_message:
                raise CaptureError(f"offset {start}: new header inside a message on {csid}")
            st.ts_field = ts_field
            st.timestamp = ts_field if fmt == 0 else (st.timestamp + ts_field) & 0xFFFFFFFF
            st.started = True
        else:
            if st.extended:
                if pos + 4 > len(data):
                    return messages, True
                pos += 4  # repeated extended timestamp (FFmpeg and nginx-rtmp send it)
            if new_message:
                st.timestamp = (st.timestamp + st.ts_field) & 0xFFFFFFFF
        if new_message:
            st.partial = bytearray()
        assert st.partial is not None
        take = min(chunk_size, st.length - len(st.partial))
        if pos + take > len(data):
            return messages, True
        st.partial += data[pos : pos + take]
        pos += take
        if len(st.partial) < st.length:
            continue
        payload, st.partial = bytes(st.partial), None
        if st.type == SET_CHUNK_SIZE:
            chunk_size = _uint(payload, 0, 4) & 0x7FFFFFFF
            if chunk_size < 1:
                raise CaptureError(f"offset {start}: chunk size {chunk_size}")
        elif st.type == ABORT:
            aborted = streams.get(_uint(payload, 0, 4))
            if aborted is not None:
                aborted.partial = None
        elif st.type == AGGREGATE:
            messages.extend(split_aggregate(st.timestamp, st.stream_id, payload))
        else:
            messages.append(Message(st.type, st.timestamp, st.stream_id, payload))
    return messages, False


def split_aggregate(timestamp: int, stream_id: int, payload: bytes) -> list[Message]:
    """The sub-messages of an aggregate message (§7.1.6): FLV-tag-like records whose
    timestamps are offsets from the first one, applied to the aggregate's timestamp."""
    out: list[Message] = []
    pos, first = 0, None
    while pos + 11 <= len(payload):
        kind = payload[pos]
        size = _uint(payload, pos + 1, 3)
        ts = _uint(payload, pos + 4, 3) | (payload[pos + 7] << 24)
        first = ts if first is None else first
        body = payload[pos + 11 : pos + 11 + size]
        if len(body) < size:
            raise CaptureError("aggregate message cut inside a sub-message")
        out.append(Message(kind, (timestamp + ts - first) & 0xFFFFFFFF, stream_id, body))
        pos += 11 + size + 4
    return out


def relayed(messages: list[Message]) -> list[Message]:
    """The messages a relay passes on (media and data), in order."""
    return [m for m in messages if m.type in RELAYED]


@dataclass
class Capture:
    """One recorded connection: the client's bytes and what they say."""

    path: Path
    messages: list[Message]
    truncated: bool

    @property
    def relayed(self) -> list[Message]:
        return relayed(self.messages)

    def commands(self) -> list[str]:
        """The names of the AMF0 commands the client sent (connect, publish, ...)."""
        names = []
        for m in self.messages:
            if m.type == 20 and m.payload[:1] == b"\x02":
                size = _uint(m.payload, 1, 2)
                names.append(m.payload[3 : 3 + size].decode(errors="replace"))
        return names


def read_flv_messages(path: Path) -> tuple[list[Message], bool]:
    """The tags of an FLV file as messages (what an RTMP reader such as FFmpeg's wrote
    of a stream it received); and whether the file ends inside a tag."""
    data = path.read_bytes()
    if len(data) < 13 or data[:3] != b"FLV":
        raise CaptureError(f"{path.name} is not FLV ({len(data)} bytes)")
    pos = _uint(data, 5, 4) + 4
    messages = []
    while pos + 11 <= len(data):
        size = _uint(data, pos + 1, 3)
        if pos + 11 + size + 4 > len(data):
            return messages, True
        ts = _uint(data, pos + 4, 3) | (data[pos + 7] << 24)
        messages.append(Message(data[pos] & 0x1F, ts, 0, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return messages, pos != len(data)


FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"  # + PreviousTagSize0


def flv_tag(kind: int, timestamp: int, body: bytes) -> bytes:
    """One FLV tag and its PreviousTagSize (FLV spec §E.3): the timestamp's low 24 bits,
    then bits 24-31 in the extension byte."""
    ts = timestamp & 0xFFFFFFFF
    header = bytes((kind,)) + len(body).to_bytes(3, "big")
    header += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes((ts >> 24,)) + bytes(3)
    return header + body + (len(body) + 11).to_bytes(4, "big")


def write_flv(messages: list[Message], path: Path) -> Path:
    """The messages as an FLV file (what an RTMP reader such as FFmpeg's makes of them)."""
    path.write_bytes(FLV_HEADER + b"".join(flv_tag(m.type, m.timestamp, m.body) for m in messages))
    return path


def read_capture(path: Path) -> Capture:
    """Parse a client-to-server capture written by tcp_proxy.py."""
    messages, truncated = read_messages(path.read_bytes())
    return Capture(path, messages, truncated)


# --- What a message is (legacy FLV and Enhanced RTMP v1/v2), for expectations and
# failure messages. Deliberately small: only what the tests need to say.

VIDEO_FOURCC_PACKET_NAMES = {
    0: "sequence start",
    1: "coded frames",
    2: "sequence end",
    3: "coded frames X",
    4: "metadata",
    5: "MPEG-2 TS sequence start",
    6: "multitrack",
    7: "mod ex",
}


def is_ex_video(m: Message) -> bool:
    return m.type == VIDEO and bool(m.payload) and bool(m.payload[0] & 0x80)


def is_ex_audio(m: Message) -> bool:
    return m.type == AUDIO and bool(m.payload) and m.payload[0] >> 4 == 9


def is_sequence_header(m: Message) -> bool:
    """Codec configuration: AVC/AAC sequence header, or an enhanced SequenceStart
    (also inside a multitrack tag: its inner packet type)."""
    p = m.payload
    if len(p) < 2:
        return False
    if m.type == VIDEO:
        if is_ex_video(m):
            packet_type = p[0] & 0x0F
            if packet_type == 6 and len(p) > 1:  # multitrack: AvMultitrackType | PacketType
                packet_type = p[1] & 0x0F
            return packet_type in (0, 5)
        return p[0] & 0x0F in (7, 12, 13) and p[1] == 0
    if m.type == AUDIO:
        if is_ex_audio(m):
            packet_type = p[0] & 0x0F
            if packet_type == 5:  # multitrack
                packet_type = p[1] & 0x0F
            return packet_type in (0, 4)  # sequence start, multichannel config
        return p[0] >> 4 == 10 and p[1] == 0
    return False


def is_keyframe(m: Message) -> bool:
    """A video message carrying a key frame's picture (not configuration)."""
    if m.type != VIDEO or not m.payload or is_sequence_header(m):
        return False
    p = m.payload
    frame_type = (p[0] >> 4) & 0x07 if is_ex_video(m) else p[0] >> 4
    if not is_ex_video(m) and p[0] & 0x0F == 7 and len(p) > 1 and p[1] != 1:
        return False  # AVC end of sequence
    if is_ex_video(m) and p[0] & 0x0F in (2, 4):
        return False  # sequence end, metadata
    return frame_type == 1


def data_name(m: Message) -> str:
    """The first AMF0 string of a data message (onMetaData, onCuePoint, ...)."""
    body = m.body
    if m.type == DATA_AMF0 and body[:1] == b"\x02" and len(body) >= 3:
        return body[3 : 3 + _uint(body, 1, 2)].decode(errors="replace")
    return "?"


def kind_name(m: Message) -> str:
    if m.type == DATA_AMF0:
        return f"data {data_name(m)}"
    if m.type not in (AUDIO, VIDEO):
        return f"type {m.type}"
    track = "video" if m.type == VIDEO else "audio"
    if is_sequence_header(m):
        return f"{track} sequence header"
    if is_keyframe(m):
        return f"{track} keyframe"
    if is_ex_video(m) and m.payload[0] & 0x0F == 4:
        return "video metadata (colorInfo)"
    if is_end_of_sequence(m):
        return f"{track} end of sequence"
    return f"{track} frame"


def is_end_of_sequence(m: Message) -> bool:
    """AVC end of sequence, or an enhanced SequenceEnd."""
    p = m.payload
    if m.type != VIDEO or len(p) < 2:
        return False
    if is_ex_video(m):
        return p[0] & 0x0F == 2
    return p[0] & 0x0F in (7, 12, 13) and p[1] == 2


def fourcc(m: Message) -> str:
    """The Enhanced RTMP FourCC of a message ('' for legacy or non-media tags)."""
    p = m.payload
    if not (is_ex_video(m) or is_ex_audio(m)) or len(p) < 5:
        return ""
    multitrack = (m.type == VIDEO and p[0] & 0x0F == 6) or (m.type == AUDIO and p[0] & 0x0F == 5)
    at = 2 if multitrack else 1
    return p[at : at + 4].decode(errors="replace")
