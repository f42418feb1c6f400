"""What holding a disconnect slate costs: encoding it once, then looping it.

`python -m bench.slate` prints, per ingest shape (720p30 and 1080p30 H.264/AAC by
default; `--all` adds HEVC/Opus, AV1/AAC and VP9/Opus at 1080p30):

- **encode**: CPU seconds (every thread of the process) and wall seconds to encode the
  slate once (`agent.slate.encode_slate`: the card, a 2 s GOP, 1 s of silence);
- **loop**: CPU seconds per minute of holding for what the relay does per message while
  holding: `SlateLoop.due`, `Timeline.place` and the RTMP chunking of every message for
  one destination (`ChunkWriter.write`), run on a simulated clock (no sleeping): the
  pure cost of looping, without socket writes;
- **real time**: the same for `--seconds` (10) of wall time paced by a real clock: woken
  for every frame (sleeping until `SlateLoop.next_due()`), and woken every 100 ms to
  send what is due (a relay's shared timer): adds the wake-ups a relay would have;
- the slate's bitrate: what every destination receives while holding.

CPU is `time.process_time()` (user + system of the whole process). The machine is shared:
run it when it is quiet, and read the figures as an order of magnitude.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from agent.media_facts import AudioFacts, VideoFacts
from agent.rtmp.chunk import ChunkWriter
from agent.slate import Slate, SlateLoop, encode_slate
from agent.timeline import Timeline

OUT = Path(__file__).resolve().parent / "out"
AAC = AudioFacts("aac", 48000, 2, "stereo", "LC")
OPUS = AudioFacts("opus", 48000, 2, "stereo")
SHAPES = {
    "720p30 H.264/AAC": (
        VideoFacts("h264", 1280, 720, Fraction(30), "yuv420p", "High", "3.1"),
        AAC,
    ),
    "1080p30 H.264/AAC": (
        VideoFacts("h264", 1920, 1080, Fraction(30), "yuv420p", "High", "4.1"),
        AAC,
    ),
}
MORE_SHAPES = {
    "1080p30 HEVC/Opus": (VideoFacts("hevc", 1920, 1080, Fraction(30), "yuv420p"), OPUS),
    "1080p30 AV1/AAC": (VideoFacts("av1", 1920, 1080, Fraction(30), "yuv420p"), AAC),
    "1080p30 VP9/Opus": (VideoFacts("vp9", 1920, 1080, Fraction(30), "yuv420p"), OPUS),
}
SIMULATED_MINUTES = 10


@dataclass
class Figures:
    """One ingest shape's measurements."""

    shape: str
    encode_cpu_s: float
    encode_wall_s: float
    loop_cpu_s_per_min: float
    realtime_per_frame_cpu_s_per_min: float
    realtime_100ms_cpu_s_per_min: float
    slate_kbit_s: float


def _relay(slate: Slate, clock_start: float, until: float, step: float) -> tuple[int, int]:
    """Hold from `clock_start` to `until` on a simulated clock ticking every `step` s:
    what the relay does per message. Returns (messages, bytes) sent to one destination."""
    loop = SlateLoop(slate, start=clock_start)
    timeline = Timeline()
    writer = ChunkWriter(4096)
    count = size = 0
    now = clock_start
    while now < until:
        for message in loop.due(now):
            placed = timeline.place(message.type_id, message.timestamp, now)
            message.timestamp = placed
            size += len(writer.write(message))
            count += 1
        now += step
    return count, size


def _realtime(slate: Slate, seconds: float, tick: float) -> float:
    """CPU seconds spent holding for `seconds` of real time, woken every `tick` seconds
    (0: for every frame)."""
    loop = SlateLoop(slate, start=time.monotonic())
    timeline = Timeline()
    writer = ChunkWriter(4096)
    end = loop.start + seconds
    cpu = time.process_time()
    while (now := time.monotonic()) < end:
        for message in loop.due(now):
            message.timestamp = timeline.place(message.type_id, message.timestamp, now)
            writer.write(message)
        wake = loop.next_due() if tick == 0 else now + tick
        time.sleep(max(0.0, min(wake, end) - time.monotonic()))
    return time.process_time() - cpu


def measure(shape: str, video: VideoFacts, audio: AudioFacts, seconds: float) -> Figures:
    """Encode the slate for one shape once, then loop it (simulated, then real time)."""
    cpu, wall = time.process_time(), time.perf_counter()
    slate = encode_slate(video, audio)
    encode_cpu, encode_wall = time.process_time() - cpu, time.perf_counter() - wall
    step = 1 / float(video.frame_rate or 30)
    cpu = time.process_time()
    _, size = _relay(slate, 0.0, SIMULATED_MINUTES * 60, step)
    loop_cpu = (time.process_time() - cpu) / SIMULATED_MINUTES
    per_frame = _realtime(slate, seconds, 0) * 60 / seconds
    batched = _realtime(slate, seconds, 0.1) * 60 / seconds
    kbit_s = size * 8 / (SIMULATED_MINUTES * 60) / 1000
    return Figures(shape, encode_cpu, encode_wall, loop_cpu, per_frame, batched, kbit_s)


def main(argv: list[str]) -> int:
    """Print the table (and write it as JSON into bench/out/)."""
    parser = argparse.ArgumentParser(prog="bench.slate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also HEVC, AV1 and VP9 at 1080p")
    parser.add_argument("--seconds", type=float, default=10.0, help="real-time run (10)")
    args = parser.parse_args(argv)
    shapes = SHAPES | (MORE_SHAPES if args.all else {})
    rows = [measure(name, *facts, args.seconds) for name, facts in shapes.items()]
    print("CPU s per minute of holding: loop (simulated clock), real time woken per frame")
    print("and every 100 ms; encoding once: CPU and wall s; bitrate each destination gets.")
    print(
        f"{'ingest':<20} {'encode CPU':>10} {'encode wall':>11} {'loop':>8} "
        f"{'per frame':>9} {'100 ms':>8} {'kbit/s':>7}"
    )
    for r in rows:
        print(
            f"{r.shape:<20} {r.encode_cpu_s:>10.3f} {r.encode_wall_s:>11.3f} "
            f"{r.loop_cpu_s_per_min:>8.4f} {r.realtime_per_frame_cpu_s_per_min:>9.4f} "
            f"{r.realtime_100ms_cpu_s_per_min:>8.4f} {r.slate_kbit_s:>7.1f}"
        )
    OUT.mkdir(exist_ok=True)
    path = OUT / f"slate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
