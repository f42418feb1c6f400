"""What a probe of an ingest's sequence headers says about its media: the slate's input.

Field names and values are the heartbeat's (docs/agent-protocol.md#heartbeat-health, `ingest`):
FFmpeg's canonical codec names (`"av1"`, never the decoder's name `"libdav1d"`), FFmpeg's profile
names, levels as people write them (`"4.1"`). The media engine's probe (`agent/probe.py`)
says all of it but the frame rate, which the relay measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class VideoFacts:
    """An ingest's video track."""

    codec: str  # "h264", "hevc", "av1", "vp9", ...
    width: int
    height: int
    frame_rate: Fraction | None = None  # None: unknown (the slate assumes 30)
    pixel_format: str | None = None  # "yuv420p", "yuv420p10le", ...
    profile: str | None = None  # "High", "Main 10", ...
    level: str | None = None  # "4.1"


@dataclass(frozen=True, slots=True)
class AudioFacts:
    """An ingest's audio track."""

    codec: str  # "aac", "opus", "mp3", ...
    sample_rate: int
    channels: int
    layout: str | None = None  # FFmpeg's channel layout name: "stereo", "5.1", ...
    profile: str | None = None  # "LC", "HE-AAC", ...
