"""Real encoded media for the classifier and probe tests: a few frames encoded with PyAV's
bundled FFmpeg (libx264, libx265, libsvtav1, libvpx-vp9, aac, libopus) and muxed by its FLV
muxer, which writes Enhanced RTMP tags for HEVC, AV1, VP9 and Opus."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import av

WIDTH, HEIGHT = 320, 240


@dataclass(frozen=True)
class FlvSample:
    """One FLV tag as FFmpeg muxed it."""

    type_id: int
    timestamp: int
    body: bytes


@dataclass(frozen=True)
class EncodedFlv:
    """An FLV file's tags and what FFmpeg's own demuxer reads back from it."""

    tags: list[FlvSample]
    video_packets: int
    video_keyframes: int


def _frames(stream: av.video.stream.VideoStream, count: int):
    for i in range(count):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        for n, plane in enumerate(frame.planes):
            # A gradient that moves: inter frames carry something.
            row = bytes((x + 3 * i + 40 * n) % 256 for x in range(plane.line_size))
            plane.update(row * (plane.buffer_size // plane.line_size))
        frame.pts = i
        yield from stream.encode(frame)
    yield from stream.encode(None)


def _audio(stream: av.audio.stream.AudioStream, count: int):
    context = stream.codec_context
    size = context.frame_size or 1024
    for i in range(count):
        frame = av.AudioFrame(format=context.format.name, layout="stereo", samples=size)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 48000
        frame.pts = i * size
        yield from stream.encode(frame)
    yield from stream.encode(None)


@functools.cache
def encoded_flv(video: str, audio: str, frames: int = 45) -> EncodedFlv:
    """`frames` video frames at 30 fps (keyframe every 30) and 48 kHz stereo audio."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as out:
        vs = out.add_stream(video, rate=30)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.codec_context.gop_size = 30
        if video == "libx265":
            vs.options = {"preset": "ultrafast", "x265-params": "log-level=error:keyint=30"}
        elif video == "libsvtav1":
            vs.options = {"preset": "12", "svtav1-params": "keyint=30"}
        elif video == "libvpx-vp9":
            vs.options = {"deadline": "realtime", "cpu-used": "8"}
        aus = out.add_stream(audio, rate=48000)
        aus.layout = "stereo"
        for packet in _frames(vs, frames):
            out.mux(packet)
        for packet in _audio(aus, frames * 2 // 3):
            out.mux(packet)
    data = buffer.getvalue()
    tags = []
    pos = int.from_bytes(data[5:9], "big") + 4
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        tags.append(FlvSample(data[pos], timestamp, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    packets = keyframes = 0
    with av.open(io.BytesIO(data), "r", format="flv") as container:
        for packet in container.demux(video=0):
            if packet.size:
                packets += 1
                keyframes += packet.is_keyframe
    return EncodedFlv(tags, packets, keyframes)
