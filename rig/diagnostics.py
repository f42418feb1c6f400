"""Ingest diagnostics: what a streamer should change so each destination takes the
stream well (docs/agent-protocol.md#diagnostics).

A pure function from the ingest's measured facts (the agent's heartbeat: codecs,
resolution, frame rate, keyframe interval, bitrate, audio sample rate) and the services
the stream goes to, to a list of `Diagnostic`s. rig relays the ingest unchanged, so
every destination gets what the streamer's encoder sends: a keyframe every 8 s is fine
for a custom server and makes Twitch's player stall.

Severity: `warning` where the service requires otherwise (it may refuse, cut or
degrade the stream); `info` where it only recommends otherwise. Every figure below
cites the page it comes from. Measured values wobble (a 2 s GOP measures 2.0 to 2.1 s;
a 6 Mbit/s CBR video plus audio measures a little over 6), so limits get a tolerance
of 5 %, and nothing is said about a fact not measured yet.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rig.shapes import Diagnostic

Severity = Literal["warning", "info"]
TOLERANCE = 1.05


@dataclass(frozen=True)
class BitrateBand:
    """Bit/s the service wants for video up to `lines` (the short side) at up to `fps`."""

    lines: int
    fps: float
    low: int
    high: int


@dataclass(frozen=True)
class Requirements:
    """A service's published ingest requirements (None: it says nothing about it)."""

    source: str
    video_codecs: frozenset[str]
    audio_codecs: frozenset[str]
    keyframe_recommended: float  # seconds
    keyframe_max: float  # seconds; above: warning
    max_lines: int  # the short side: 1080 for 1920x1080 and for 1080x1920
    max_frame_rate: float
    bands: tuple[BitrateBand, ...]  # smallest first
    max_bitrate: int | None = None  # bit/s; above: warning
    sample_rates: frozenset[int] | None = None


MBIT = 1_000_000
KBIT = 1_000

REQUIREMENTS: dict[str, Requirements] = {
    # YouTube Help, "Choose live encoder settings, bitrates, and resolutions":
    # https://support.google.com/youtube/answer/2853702 - bitrate ranges by ingest
    # resolution and frame rate (min-max, Mbit/s): 2160p60 10-40, 2160p30 8-35, 1440p60
    # 6-30, 1440p30 5-25, 1080p60 4-10, 1080p30 3-8, 720p60 3-8, 240p-720p30 3-8;
    # codecs H.264, HEVC, AV1; keyframe frequency 2 s recommended, at most 4 s; up to
    # 2160p and 60 fps; audio AAC or MP3.
    "YouTube": Requirements(
        source="https://support.google.com/youtube/answer/2853702",
        video_codecs=frozenset({"h264", "hevc", "av1"}),
        audio_codecs=frozenset({"aac", "mp3"}),
        keyframe_recommended=2.0,
        keyframe_max=4.0,
        max_lines=2160,
        max_frame_rate=60.0,
        bands=(
            BitrateBand(720, 30, 3 * MBIT, 8 * MBIT),
            BitrateBand(720, 60, 3 * MBIT, 8 * MBIT),
            BitrateBand(1080, 30, 3 * MBIT, 8 * MBIT),
            BitrateBand(1080, 60, 4 * MBIT, 10 * MBIT),
            BitrateBand(1440, 30, 5 * MBIT, 25 * MBIT),
            BitrateBand(1440, 60, 6 * MBIT, 30 * MBIT),
            BitrateBand(2160, 30, 8 * MBIT, 35 * MBIT),
            BitrateBand(2160, 60, 10 * MBIT, 40 * MBIT),
        ),
    ),
    # Twitch Help, "Broadcast Requirements" (the broadcasting guidelines):
    # https://help.twitch.tv/customer/portal/articles/1253460-broadcast-requirements -
    # H.264, keyframe interval 2 s, frame rates 25/30 or 50/60, recommended bitrate 3-6
    # Mbit/s, AAC-LC (or MP3); RTMP ingest tops at 6000 kbit/s and 1080p (Twitch's
    # current guidelines, https://help.twitch.tv/s/article/broadcasting-guidelines).
    "Twitch": Requirements(
        source="https://help.twitch.tv/customer/portal/articles/1253460-broadcast-requirements",
        video_codecs=frozenset({"h264"}),
        audio_codecs=frozenset({"aac", "mp3"}),
        keyframe_recommended=2.0,
        keyframe_max=2.0,
        max_lines=1080,
        max_frame_rate=60.0,
        bands=(),  # its 3-6 Mbit/s is for every resolution: only the maximum is checked
        max_bitrate=6000 * KBIT,
    ),
    # Meta for Developers, Live Video API reference, "Recommended Settings":
    # https://developers.facebook.com/docs/live-video-api/reference - H.264 and AAC
    # only; key frame 2 s recommended, do not exceed 4 s; 1080p60 4500-9000 kbit/s,
    # 1080p30 3000-6000, 720p60 2250-6000, 720p30 1500-4000, 480p30 600-2000, 360p
    # 400-1000; sample rate 44.1 or 48 kHz; up to 1080p.
    "Facebook": Requirements(
        source="https://developers.facebook.com/docs/live-video-api/reference",
        video_codecs=frozenset({"h264"}),
        audio_codecs=frozenset({"aac"}),
        keyframe_recommended=2.0,
        keyframe_max=4.0,
        max_lines=1080,
        max_frame_rate=60.0,
        bands=(
            BitrateBand(360, 30, 400 * KBIT, 1000 * KBIT),
            BitrateBand(480, 30, 600 * KBIT, 2000 * KBIT),
            BitrateBand(720, 30, 1500 * KBIT, 4000 * KBIT),
            BitrateBand(720, 60, 2250 * KBIT, 6000 * KBIT),
            BitrateBand(1080, 30, 3000 * KBIT, 6000 * KBIT),
            BitrateBand(1080, 60, 4500 * KBIT, 9000 * KBIT),
        ),
        sample_rates=frozenset({44_100, 48_000}),
    ),
    # Kick: up to 1080p60, 8000 kbit/s, H.264 only, keyframe interval 2 s. Kick's own
    # help page (https://help.kick.com, "Streaming software setup") was not reachable
    # from here; these figures are as a third party summarises them for 2026
    # (github.com/ElMike094/stream-optimizer, release v1.6.0: "Kick: 1080p60, 8000
    # kbps, H.264 CBR only") and match what OBS's Kick service enforces.
    "Kick": Requirements(
        source="https://help.kick.com",
        video_codecs=frozenset({"h264"}),
        audio_codecs=frozenset({"aac"}),
        keyframe_recommended=2.0,
        keyframe_max=2.0,
        max_lines=1080,
        max_frame_rate=60.0,
        bands=(),
        max_bitrate=8000 * KBIT,
    ),
}

CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "aac": "AAC"}


def _name(codec: str) -> str:
    return CODEC_NAMES.get(codec, codec.upper())


def _names(codecs: Iterable[str]) -> str:
    return " or ".join(_name(c) for c in sorted(codecs))


def _number(facts: Mapping[str, Any], name: str) -> float | None:
    value = facts.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _text(facts: Mapping[str, Any], name: str) -> str | None:
    value = facts.get(name)
    return value.lower() if isinstance(value, str) and value else None


def _band(rules: Requirements, lines: float, fps: float) -> BitrateBand | None:
    """The band of the smallest resolution and frame rate at least this ingest's."""
    for band in rules.bands:
        if lines <= band.lines * TOLERANCE and fps <= band.fps * TOLERANCE:
            return band
    return None


def _mbit(bits: float) -> str:
    return f"{bits / MBIT:.1f} Mbit/s"


def check(service: str, rules: Requirements, facts: Mapping[str, Any]) -> list[Diagnostic]:
    """What `facts` (the ingest) break or miss of one service's requirements."""
    found: list[Diagnostic] = []

    def say(severity: Severity, code: str, message: str) -> None:
        found.append(Diagnostic(service=service, severity=severity, code=code, message=message))

    video, audio = _text(facts, "videoCodec"), _text(facts, "audioCodec")
    if video is not None and video not in rules.video_codecs:
        say(
            "warning",
            "video-codec",
            f"{service} takes {_names(rules.video_codecs)} video, not {_name(video)}:"
            f" set your encoder to {_name(sorted(rules.video_codecs)[0])}.",
        )
    if audio is not None and audio not in rules.audio_codecs:
        say(
            "warning",
            "audio-codec",
            f"{service} takes {_names(rules.audio_codecs)} audio, not {_name(audio)}:"
            " set your encoder's audio to AAC.",
        )
    keyframes = _number(facts, "keyframeInterval")
    if keyframes is not None:
        if keyframes > rules.keyframe_max * TOLERANCE:
            say(
                "warning",
                "keyframe-interval",
                f"A keyframe every {keyframes:.1f} s; {service} needs one at least every"
                f" {rules.keyframe_max:g} s: set the keyframe interval to"
                f" {rules.keyframe_recommended:g} s (OBS: Settings, Output, Keyframe Interval).",
            )
        elif keyframes > rules.keyframe_recommended * TOLERANCE:
            say(
                "info",
                "keyframe-interval",
                f"A keyframe every {keyframes:.1f} s; {service} recommends"
                f" {rules.keyframe_recommended:g} s (viewers join and recover faster).",
            )
    width, height = _number(facts, "width"), _number(facts, "height")
    lines = min(width, height) if width and height else None
    if lines is not None and lines > rules.max_lines:
        say(
            "warning",
            "resolution",
            f"{width:.0f}x{height:.0f} is above {service}'s {rules.max_lines}p: scale your"
            f" output to {rules.max_lines}p or less.",
        )
    fps = _number(facts, "frameRate")
    if fps is not None and fps > rules.max_frame_rate * TOLERANCE:
        say(
            "warning",
            "frame-rate",
            f"{fps:.0f} frames per second is above {service}'s {rules.max_frame_rate:.0f}:"
            f" set your encoder to {rules.max_frame_rate:.0f} fps or less.",
        )
    bitrate = _number(facts, "bitrate")
    if bitrate is not None:
        band = _band(rules, lines, fps or 30.0) if lines is not None else None
        if rules.max_bitrate is not None and bitrate > rules.max_bitrate * TOLERANCE:
            say(
                "warning",
                "bitrate-high",
                f"{_mbit(bitrate)} is above {service}'s {_mbit(rules.max_bitrate)}: lower"
                " your encoder's bitrate, or viewers will buffer and the ingest may drop you.",
            )
        elif band is not None and bitrate > band.high * TOLERANCE:
            say(
                "info",
                "bitrate-high",
                f"{_mbit(bitrate)} is above the {_mbit(band.low)}-{_mbit(band.high)} {service}"
                f" recommends for up to {band.lines}p{band.fps:.0f}: more than it uses.",
            )
        if band is not None and bitrate < band.low / TOLERANCE:
            say(
                "info",
                "bitrate-low",
                f"{_mbit(bitrate)} is below the {_mbit(band.low)}-{_mbit(band.high)} {service}"
                f" recommends for up to {band.lines}p{band.fps:.0f}: raise the bitrate, or lower"
                " the resolution, for a sharper picture.",
            )
    rate = _number(facts, "audioSampleRate")
    if rules.sample_rates is not None and rate is not None and int(rate) not in rules.sample_rates:
        rates = " or ".join(f"{r / 1000:g} kHz" for r in sorted(rules.sample_rates))
        say(
            "warning",
            "audio-sample-rate",
            f"Audio at {rate / 1000:g} kHz; {service} takes {rates}: change the sample rate"
            " in your encoder's audio settings.",
        )
    return found


def diagnose(facts: Mapping[str, Any] | None, services: Iterable[str]) -> list[Diagnostic]:
    """Every diagnostic of the ingest `facts` for each of `services` (each once; services
    without published requirements, such as Custom, have none)."""
    if not facts:
        return []
    found: list[Diagnostic] = []
    for service in sorted(set(services)):
        rules = REQUIREMENTS.get(service)
        if rules is not None:
            found.extend(check(service, rules, facts))
    return found
