"""The benchmark's workload file: made once by ffmpeg, cached in bench/out/.

1280x720 at 30 fps H.264 (libx264 veryfast, about 4.5 Mbit/s, a keyframe every 2 s,
yuv420p) and AAC at 160 kbit/s, 48 kHz, 20 s, in FLV: what a typical OBS stream looks
like on the wire. A little temporal noise on ffmpeg's test pattern keeps the encoder at
its target bitrate instead of far below it.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from agent.flv import FlvTagReader

SECONDS = 20
FPS = 30
VIDEO_KBITS = 4500
AUDIO_KBITS = 160

FFMPEG_ARGS = [
    "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-t", str(SECONDS),
    "-vf", "noise=alls=12:allf=t",
    "-c:v", "libx264", "-preset", "veryfast",
    "-b:v", f"{VIDEO_KBITS}k", "-minrate", f"{VIDEO_KBITS}k", "-maxrate", f"{VIDEO_KBITS}k",
    "-bufsize", f"{VIDEO_KBITS}k",
    "-g", str(2 * FPS), "-keyint_min", str(2 * FPS), "-sc_threshold", "0",
    "-pix_fmt", "yuv420p",
    "-c:a", "aac", "-b:a", f"{AUDIO_KBITS}k", "-ar", "48000",
    "-f", "flv",
]  # fmt: skip


def fixture_path(out_dir: Path) -> Path:
    """Where the fixture is cached: the name changes whenever the recipe does."""
    recipe = hashlib.sha256(" ".join(FFMPEG_ARGS).encode()).hexdigest()[:10]
    return out_dir / f"fixture-720p30-{recipe}.flv"


def make_fixture(out_dir: Path) -> Path:
    """The cached fixture, encoded first if missing (about 15 s on two cores)."""
    path = fixture_path(out_dir)
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.flv")
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         *FFMPEG_ARGS, str(partial)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not make the fixture: {result.stderr[-2000:]}")
    partial.rename(path)
    return path


def read_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """Every (type, timestamp, body) tag of an FLV file, in file order."""
    reader = FlvTagReader(max_tag_size=64 * 1024 * 1024)
    tags: list[tuple[int, int, bytes]] = []
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            tags.extend(reader.feed(chunk))
    return tags
