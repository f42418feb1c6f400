"""`python -m bench.thumbnails`: the CPU one stream picture costs the agent.

For each case a few seconds of ffmpeg's test pattern (with temporal noise, so the
encoder spends its bitrate as on real content) are encoded by PyAV's FFmpeg at a typical
live bitrate and muxed to FLV; the relay (`StreamRelay`) is fed the tags and hands over
its newest keyframe, which `agent.thumbnails.make_thumbnail` turns into the JPEG rig
gets, `--reps` times: decode (single-threaded, as in the agent), scale to 320 px, JPEG.
CPU is the calling thread's (`time.thread_time`), the worker thread's in the agent.

Also run by `bench/run --thumbnails`, after the relay measurements.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from dataclasses import dataclass

import av
from av.video.frame import PictureType

from agent.destination import EgressSettings
from agent.flv import FlvTagReader
from agent.relay import StreamRelay
from agent.rtmp.message import Message
from agent.thumbnails import INTERVAL, Keyframe, make_thumbnail

X265 = {"preset": "ultrafast", "x265-params": "log-level=error"}
# (codec, encoder, width, height, kbit/s, options)
CASES = [
    ("h264", "libx264", 1280, 720, 4500, {"preset": "veryfast"}),
    ("h264", "libx264", 1920, 1080, 6000, {"preset": "veryfast"}),
    ("hevc", "libx265", 1280, 720, 3000, X265),
    ("hevc", "libx265", 1920, 1080, 4500, X265),
]
MORE_CASES = [
    ("av1", "libsvtav1", 1920, 1080, 4500, {"preset": "12"}),
    ("vp9", "libvpx-vp9", 1920, 1080, 4500, {"deadline": "realtime", "cpu-used": "8"}),
]
FPS = 30
# SVT-AV1 logs its configuration to stderr by default; warnings and errors only.
os.environ.setdefault("SVT_LOG", "2")
GOP = 60


@dataclass
class Figures:
    """One case: what a picture costs."""

    case: str
    keyframe_kb: float
    jpeg_kb: float
    cpu_ms_median: float
    cpu_ms_max: float
    wall_ms_median: float
    reps: int

    @property
    def cpu_percent_of_a_core_per_stream(self) -> float:
        """One picture every INTERVAL seconds, as a share of one core."""
        return 100 * self.cpu_ms_median / 1000 / INTERVAL


def newest_keyframe(
    codec: str, encoder: str, width: int, height: int, kbits: int, options: dict[str, str]
) -> Keyframe:
    """The relay's newest keyframe after 2 GOPs and a frame of a live-like encoding."""
    out_buffer = io.BytesIO()
    source = av.open(f"testsrc2=size={width}x{height}:rate={FPS}", format="lavfi")
    graph = av.filter.Graph()
    src = graph.add_buffer(template=source.streams.video[0])
    noise = graph.add("noise", "alls=12:allf=t")
    sink = graph.add("buffersink")
    src.link_to(noise)
    noise.link_to(sink)
    graph.configure()
    with av.open(out_buffer, "w", format="flv") as out:
        stream = out.add_stream(encoder, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = kbits * 1000
        stream.codec_context.gop_size = GOP
        if codec == "hevc":
            options = {**options, "x265-params": f"{options['x265-params']}:keyint={GOP}"}
        elif codec == "av1":
            options = {**options, "svtav1-params": f"keyint={GOP}"}
        stream.options = options
        for n, frame in enumerate(source.decode(video=0)):
            if n > 2 * GOP:
                break
            graph.push(frame)
            noisy = graph.pull().reformat(format="yuv420p")
            noisy.pts = n
            noisy.pict_type = PictureType.NONE  # lavfi marks every frame I: not a keyframe
            for packet in stream.encode(noisy):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    source.close()
    relay = StreamRelay("bench", [], EgressSettings())
    relay.start()
    tags = FlvTagReader(max_tag_size=64 << 20).feed(out_buffer.getvalue())
    relay.feed([Message(type_id, 1, ts, body) for type_id, ts, body in tags])
    keyframe = relay.latest_keyframe()
    if keyframe is None:
        raise RuntimeError(f"no keyframe in the {codec} encoding")
    return keyframe


def measure(case: tuple, reps: int) -> Figures:
    codec, _encoder, width, height, kbits, _options = case
    keyframe = newest_keyframe(*case)
    cpu, wall = [], []
    jpeg = b""
    make_thumbnail(keyframe)  # warm: the decoder's tables, Pillow's encoder
    for _ in range(reps):
        c0, w0 = time.thread_time(), time.perf_counter()
        jpeg = make_thumbnail(keyframe)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return Figures(
        case=f"{codec} {width}x{height} {kbits / 1000:g} Mbit/s",
        keyframe_kb=round(len(keyframe.frame) / 1024, 1),
        jpeg_kb=round(len(jpeg) / 1024, 1),
        cpu_ms_median=round(1000 * statistics.median(cpu), 2),
        cpu_ms_max=round(1000 * max(cpu), 2),
        wall_ms_median=round(1000 * statistics.median(wall), 2),
        reps=reps,
    )


def run(reps: int = 20, every_codec: bool = False, log=print) -> list[Figures]:
    """Every case; prints a table."""
    results = []
    for case in CASES + (MORE_CASES if every_codec else []):
        figures = measure(case, reps)
        results.append(figures)
        log(
            f"thumbnail {figures.case:28} keyframe {figures.keyframe_kb:6.1f} KB ->"
            f" JPEG {figures.jpeg_kb:4.1f} KB: CPU {figures.cpu_ms_median:6.2f} ms median,"
            f" {figures.cpu_ms_max:6.2f} max (wall {figures.wall_ms_median:6.2f});"
            f" one per {INTERVAL:g} s = {figures.cpu_percent_of_a_core_per_stream:.3f} %"
            f" of a core per stream"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.thumbnails", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="pictures per case (20)")
    parser.add_argument("--all", action="store_true", help="also AV1 and VP9 at 1080p")
    args = parser.parse_args(argv)
    run(args.reps, args.all)
    print(
        f"load average (1 min) {os.getloadavg()[0]:.1f}"
        " (other work on the machine skews wall times more than CPU times)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
