"""A live encoder on PyAV's bundled FFmpeg 8 publishing over RTMP (Enhanced RTMP codecs).

Run as a process: ``python pyav_publisher.py URL SECONDS VIDEO[,VIDEO2] AUDIO[,AUDIO2]``
(a codec list may be ``-`` for none). It encodes FFmpeg's test pattern and a sine tone
in real time and publishes them with FFmpeg's own FLV muxer and RTMP client
(``av.open(url, "w", format="flv")``). FFmpeg 8's muxer needs no option for Enhanced
RTMP: HEVC (``hvc1``), AV1 (``av01``), VP9 (``vp09``) and Opus (``Opus``) are always
written with the extended header, H.264 and AAC in the legacy format, and a second
video or audio stream makes it write Enhanced RTMP multitrack tags (track id 1).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import av

from agent.scheduling import ordinary_scheduling

WIDTH, HEIGHT, FPS, SAMPLE_RATE = 320, 240, 15, 48000

# Fast settings so that encoding keeps up with real time on a shared, loaded machine.
VIDEO_OPTIONS = {
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libsvtav1": {"preset": "12", "svtav1-params": "lp=1"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "0"},
    "libx264": {"preset": "ultrafast", "tune": "zerolatency"},
}


def _codecs(arg: str) -> list[str]:
    return [] if arg == "-" else arg.split(",")


def _add_video(out: Any, codec: str) -> Any:
    stream = out.add_stream(codec, rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.gop_size = FPS  # a keyframe every second
    stream.options = dict(VIDEO_OPTIONS.get(codec, {}))
    return stream


def _add_audio(out: Any, codec: str) -> Any:
    stream = out.add_stream(codec, rate=SAMPLE_RATE)
    stream.layout = "stereo"
    return stream


def _sources(seconds: float) -> tuple[Any, Any]:
    video = av.open(f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={seconds}", "r", "lavfi")
    audio = av.open(
        f"sine=frequency=440:sample_rate={SAMPLE_RATE}:duration={seconds}", "r", "lavfi"
    )
    return video, audio


def publish(url: str, seconds: float, video_codecs: list[str], audio_codecs: list[str]) -> None:
    """Encode and publish in real time: each frame is encoded when its time comes."""
    video_in, audio_in = _sources(seconds)
    with av.open(url, "w", format="flv") as out:
        video_out = [_add_video(out, c) for c in video_codecs]
        audio_out = [_add_audio(out, c) for c in audio_codecs]
        with ordinary_scheduling():  # libsvtav1 would make us SCHED_FIFO 99, above the agent
            out.start_encoding()
        frames: list[tuple[float, Any, list[Any]]] = []
        if video_out:
            frames += [(float(f.time), f, video_out) for f in video_in.decode(video=0)]
        if audio_out:
            frames += [(float(f.time), f, audio_out) for f in audio_in.decode(audio=0)]
        frames.sort(key=lambda item: item[0])
        start = time.monotonic()
        for at, frame, streams in frames:
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for stream in streams:
                out.mux(stream.encode(frame))
        for stream in [*video_out, *audio_out]:
            out.mux(stream.encode(None))
    video_in.close()
    audio_in.close()


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    publish(url, seconds, _codecs(sys.argv[3]), _codecs(sys.argv[4]))


if __name__ == "__main__":
    main()
