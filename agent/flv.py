"""FLV tags, sans-I/O: the bridge between RTMP messages and PyAV.

An RTMP audio, video or data message body *is* an FLV tag body (FLV spec v10.1 §E.4),
so the ingest is turned into an FLV byte stream for PyAV's demuxer by adding tag
headers, and each destination's PyAV FLV muxer output is cut back into tags that are
sent as RTMP messages. Media bytes are never touched.
"""

import struct

from agent.rtmp import amf0

AUDIO, VIDEO, SCRIPT = 8, 9, 18
MEDIA_TYPES = frozenset((AUDIO, VIDEO, SCRIPT))

# Signature, version 1, flags (audio | video), header size 9; then PreviousTagSize0.
FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
_TAG_HEADER = struct.Struct(">B3sI3s")  # type, size, timestamp (low 24 bits | ext << 24), sid
_SET_DATA_FRAME = amf0.encode("@setDataFrame")


def flv_tag(type_id: int, timestamp: int, payload: bytes) -> bytes:
    """One FLV tag followed by its PreviousTagSize (FLV spec §E.3)."""
    size = len(payload)
    timestamp &= 0xFFFFFFFF
    # The timestamp field is 24 bits plus an extension byte holding bits 24-31.
    ts_field = ((timestamp & 0xFFFFFF) << 8) | (timestamp >> 24)
    header = _TAG_HEADER.pack(type_id, size.to_bytes(3, "big"), ts_field, b"\x00\x00\x00")
    return b"".join((header, payload, (size + 11).to_bytes(4, "big")))


def strip_set_data_frame(payload: bytes) -> bytes:
    """RTMP publishers wrap metadata as `@setDataFrame, onMetaData, {...}`; FLV has no wrapper."""
    if payload.startswith(_SET_DATA_FRAME):
        return payload[len(_SET_DATA_FRAME) :]
    return payload


def add_set_data_frame(payload: bytes) -> bytes:
    """The RTMP form of an FLV script tag, as a publisher sends metadata (FFmpeg does so)."""
    return _SET_DATA_FRAME + payload


class FlvTagReader:
    """Cuts an FLV byte stream into (type, timestamp, body) tags; fed any split of bytes."""

    def __init__(self, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._header_done = False
        self._max_tag_size = max_tag_size

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Consume bytes; return every tag they complete."""
        buf = self._buffer
        buf += data
        tags = []
        pos = 0
        if not self._header_done:
            if len(buf) < len(FLV_HEADER):
                return tags
            if buf[:3] != b"FLV":
                raise ValueError("not an FLV stream")
            pos = int.from_bytes(buf[5:9], "big") + 4
            self._header_done = True
        while len(buf) - pos >= 11:
            type_id, size_b, ts_field, _sid = _TAG_HEADER.unpack_from(buf, pos)
            size = int.from_bytes(size_b, "big")
            if size > self._max_tag_size:
                raise ValueError(f"FLV tag of {size} bytes exceeds the limit")
            end = pos + 11 + size + 4
            if len(buf) < end:
                break
            timestamp = (ts_field >> 8) | ((ts_field & 0xFF) << 24)
            tags.append((type_id, timestamp, bytes(buf[pos + 11 : pos + 11 + size])))
            pos = end
        del buf[:pos]
        return tags
