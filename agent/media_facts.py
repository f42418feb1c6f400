"""What a probe of an ingest's sequence headers says about its media: one definition.

The stats (`ingest` in the heartbeat's health, CONTRACTS.md §1) and the disconnect slate
(`agent/slate.py`) read the same facts. Codec names are FFmpeg's canonical ones
(`"av1"`, never the decoder's name `"libdav1d"`), the words the heartbeat uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True, slots=True)
class VideoFacts:
    """An ingest's video track as its sequence header (and metadata) describe it."""

    codec: str  # "h264", "hevc", "av1", "vp9", ...
    width: int
    height: int
    frame_rate: Fraction | None = None  # None: not in the header (the slate assumes 30)
    pixel_format: str | None = None  # "yuv420p", "yuv420p10le", ...
    profile: str | None = None  # FFmpeg's words: "High", "Main 10", ...
    level: int | None = None  # as FFmpeg reports it: 41 for H.264 level 4.1

    @classmethod
    def from_codec_context(cls, context: Any, frame_rate: Fraction | None = None) -> VideoFacts:
        """The facts of an opened PyAV video decoder (given the sequence header as
        extradata). `frame_rate` overrides the header's (e.g. the measured rate)."""
        rate = frame_rate or context.framerate or None
        level = context.level if context.level is not None and context.level >= 0 else None
        return cls(
            codec=context.codec.canonical_name,
            width=context.width,
            height=context.height,
            frame_rate=Fraction(rate) if rate else None,
            pixel_format=context.pix_fmt,
            profile=context.profile,
            level=level,
        )


@dataclass(frozen=True, slots=True)
class AudioFacts:
    """An ingest's audio track as its sequence header (or first frame) describes it."""

    codec: str  # "aac", "opus", "mp3", ...
    sample_rate: int
    channels: int
    layout: str | None = None  # FFmpeg's channel layout name: "stereo", "5.1", ...
    profile: str | None = None  # "LC", "HE-AAC", ...

    @classmethod
    def from_codec_context(cls, context: Any) -> AudioFacts:
        """The facts of an opened PyAV audio decoder."""
        layout = context.layout
        return cls(
            codec=context.codec.canonical_name,
            sample_rate=context.sample_rate,
            channels=layout.nb_channels,
            layout=layout.name or None,
            profile=context.profile,
        )
