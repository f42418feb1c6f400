"""Real encoded media for the classifier and probe tests: a few frames encoded with PyAV's
bundled FFmpeg (libx264, libx265, libsvtav1, libvpx-vp9, aac, libopus) and muxed by its FLV
muxer, which writes Enhanced RTMP tags for HEVC, AV1, VP9 and Opus."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from fractions import Fraction

import av

from agent.flv import FlvTagReader
from agent.scheduling import ordinary_scheduling

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


def flv_samples(data: bytes) -> list[FlvSample]:
    """The tags of an FLV file."""
    return [FlvSample(*tag) for tag in FlvTagReader().feed(data)]


@functools.cache
@ordinary_scheduling()  # libsvtav1 would leave the test process SCHED_FIFO 99
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
    tags = flv_samples(data)
    packets = keyframes = 0
    with av.open(io.BytesIO(data), "r", format="flv") as container:
        for packet in container.demux(video=0):
            if packet.size:
                packets += 1
                keyframes += packet.is_keyframe
    return EncodedFlv(tags, packets, keyframes)


# Encoders and options for a short stream of a still picture (thumbnail tests, bench).
VIDEO_ENCODERS = {
    "h264": ("libx264", {"preset": "veryfast"}),
    "hevc": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=error"}),
    "av1": ("libsvtav1", {"preset": "12"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
}


def two_colours(width: int, height: int, frame: int = 0):
    """A picture whose left half is red and right half blue, with a white bar that
    moves right by 8 px per frame (so pictures of different frames differ)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (220, 20, 20))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 2, 0, width, height), fill=(20, 20, 220))
    x = (8 * frame) % width
    draw.rectangle((x, 0, x + max(2, width // 40), height // 8), fill=(255, 255, 255))
    return image


@functools.cache
@ordinary_scheduling()
def picture_flv(
    codec: str,
    width: int,
    height: int,
    frames: int = 10,
    gop: int = 5,
    sample_aspect: tuple[int, int] | None = None,
) -> list[FlvSample]:
    """The video tags of `frames` frames of `two_colours` at 30 fps, a keyframe every
    `gop` frames, encoded by PyAV's FFmpeg and muxed by its FLV muxer."""
    encoder, options = VIDEO_ENCODERS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as out:
        stream = out.add_stream(encoder, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if sample_aspect is not None:
            stream.codec_context.sample_aspect_ratio = Fraction(*sample_aspect)
        if codec == "hevc":
            options = {**options, "x265-params": f"{options['x265-params']}:keyint={gop}"}
        elif codec == "av1":
            options = {**options, "svtav1-params": f"keyint={gop}"}
        stream.options = options
        for i in range(frames):
            picture = av.VideoFrame.from_image(two_colours(width, height, i))
            frame = picture.reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return flv_samples(buffer.getvalue())
