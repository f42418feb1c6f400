"""The ingest's packets muxed once into RTMP media messages, shared by every destination.

PyAV's FLV muxer (one per track, see `_TrackMuxer`) turns each demuxed packet back into
an FLV tag, and an FLV tag body is an RTMP message body. The muxer's output is the same
for every destination (timestamps are passed through, never rebased), so it runs once
per ingest in the demux thread instead of once per destination: a destination only
chunks and sends the shared bytes.

Codec configuration (AVC/HEVC/AAC sequence headers) is whatever the muxer writes
outside a packet's own tag: at the start, and again when the publisher sends a new
one mid-stream. The latest per track is kept, for destinations that (re)connect.
"""

import contextlib
from fractions import Fraction
from typing import Any

import av

from agent.flv import SCRIPT, FlvTagReader
from agent.media_queue import MediaMessage

MS = Fraction(1, 1000)  # FLV and RTMP timestamps are milliseconds
# Muxer options: no seeking back to patch duration (the output is not a file); no
# interleaving hold-back; one write per packet so nothing waits in AVIO's buffer.
MUXER_OPTIONS = {
    "flvflags": "no_duration_filesize",
    "max_interleave_delta": "1",
    "flush_packets": "1",
}


class _TagCollector:
    """File-like sink of a PyAV FLV muxer: cuts its bytes back into tags.

    The muxer's own script tag (its regenerated onMetaData) is dropped: destinations
    get the publisher's original metadata instead.
    """

    def __init__(self) -> None:
        self._reader = FlvTagReader()
        self.tags: list[tuple[int, int, bytes]] = []

    def write(self, data: bytes) -> int:
        self.tags.extend(tag for tag in self._reader.feed(data) if tag[0] != SCRIPT)
        return len(data)

    def take(self) -> list[tuple[int, int, bytes]]:
        tags, self.tags = self.tags, []
        return tags


class _TrackMuxer:
    """A PyAV FLV muxer for one track (audio or video).

    One muxer per track, not one for both: with two streams, FFmpeg's interleaver
    (av_interleaved_write_frame) holds every packet until the other track has a later
    one, which delays each packet by one packet interval (~15 ms measured) whatever
    `max_interleave_delta` says. With one stream per muxer every packet is written at
    once, in the order the publisher sent it.
    """

    def __init__(self, template: Any) -> None:
        self.sink = _TagCollector()
        self.container = av.open(self.sink, "w", format="flv", options=MUXER_OPTIONS)
        self.stream = self.container.add_stream_from_template(template)
        self.container.start_encoding()  # writes the header: the sequence header
        self.headers = self.sink.take()
        self.closed = False

    def mux(self, packet: Any) -> list[tuple[int, int, bytes]]:
        """The tags one demuxed packet becomes: its own last, a new sequence header
        (when the packet carries new codec configuration as side data) before it."""
        packet.stream = self.stream
        self.container.mux_one(packet)
        tags = self.sink.take()
        if len(tags) > 1:
            self.headers = tags[:-1]
        return tags

    def close(self) -> list[tuple[int, int, bytes]]:
        """The trailer (for AVC/HEVC, the end-of-sequence tag)."""
        if self.closed:
            return []
        self.closed = True
        with contextlib.suppress(av.FFmpegError, ValueError):
            self.container.close()
        return self.sink.take()


class Remuxer:
    """Every track of one ingest: demuxed PyAV packets in, RTMP media messages out."""

    def __init__(self, streams: list[Any]) -> None:
        self._muxers = {stream.index: _TrackMuxer(stream) for stream in streams}
        self._last_dts = {stream.index: -(1 << 62) for stream in streams}
        self.has_video = any(stream.type == "video" for stream in streams)

    def headers(self) -> list[MediaMessage]:
        """The current codec configuration of every track, for a (re)connection."""
        return [
            MediaMessage(type_id, timestamp, body)
            for muxer in self._muxers.values()
            for type_id, timestamp, body in muxer.headers
        ]

    def mux(self, packet: Any) -> list[MediaMessage]:
        """The messages for one demuxed packet; [] for a track that is not relayed or a
        timestamp going back (FLV cannot carry it; the muxer would refuse it)."""
        index = packet.stream.index
        muxer = self._muxers.get(index)
        if muxer is None or packet.dts is None or packet.dts < self._last_dts[index]:
            return []
        self._last_dts[index] = packet.dts
        keyframe = packet.is_keyframe
        tags = muxer.mux(packet)
        last = len(tags) - 1
        return [
            MediaMessage(type_id, timestamp, body, keyframe and i == last)
            for i, (type_id, timestamp, body) in enumerate(tags)
        ]

    def close(self) -> list[MediaMessage]:
        """Every track's trailer, once the ingest ended."""
        return [
            MediaMessage(type_id, timestamp, body)
            for muxer in self._muxers.values()
            for type_id, timestamp, body in muxer.close()
        ]
