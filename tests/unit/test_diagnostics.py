"""rig/diagnostics.py: each service's published requirements against measured ingests."""

import pytest

from rig.diagnostics import REQUIREMENTS, Diagnostic, diagnose

# What OBS sends with its defaults for 1080p60 to Twitch: nothing to say to anyone.
GOOD = {
    "videoCodec": "h264",
    "audioCodec": "aac",
    "width": 1920,
    "height": 1080,
    "frameRate": 60.0,
    "keyframeInterval": 2.0,
    "bitrate": 6_000_000,
    "audioSampleRate": 48_000,
}
ALL = ("YouTube", "Twitch", "Facebook", "Kick", "Custom")


def codes(facts, services=ALL):
    return {(d.service, d.severity, d.code) for d in diagnose(facts, services)}


def test_a_good_ingest_has_nothing_to_fix():
    assert diagnose(GOOD, ALL) == []
    # Measured values wobble: a 2 s GOP measured at 2.08 s, 60 fps at 60.2, CBR 6 Mbit/s
    # plus audio measured at 6.2 Mbit/s are still fine.
    wobbly = {**GOOD, "keyframeInterval": 2.08, "frameRate": 60.2, "bitrate": 6_200_000}
    assert diagnose(wobbly, ALL) == []


CASES = [
    # (what, facts changed, expected (service, severity, code))
    (
        "OBS keyframe interval 0 (auto): x264 puts one every 250 frames",
        {"keyframeInterval": 8.3},
        {
            ("YouTube", "warning", "keyframe-interval"),
            ("Twitch", "warning", "keyframe-interval"),
            ("Facebook", "warning", "keyframe-interval"),
            ("Kick", "warning", "keyframe-interval"),
        },
    ),
    (
        "3 s: within YouTube's and Facebook's 4 s, not Twitch's or Kick's 2 s",
        {"keyframeInterval": 3.0},
        {
            ("YouTube", "info", "keyframe-interval"),
            ("Facebook", "info", "keyframe-interval"),
            ("Twitch", "warning", "keyframe-interval"),
            ("Kick", "warning", "keyframe-interval"),
        },
    ),
    (
        "HEVC over Enhanced RTMP: YouTube takes it, the others do not",
        {"videoCodec": "hevc"},
        {
            ("Twitch", "warning", "video-codec"),
            ("Facebook", "warning", "video-codec"),
            ("Kick", "warning", "video-codec"),
        },
    ),
    (
        "AV1 goes to YouTube only",
        {"videoCodec": "av1"},
        {
            ("Twitch", "warning", "video-codec"),
            ("Facebook", "warning", "video-codec"),
            ("Kick", "warning", "video-codec"),
        },
    ),
    (
        "VP9 goes nowhere",
        {"videoCodec": "vp9"},
        {(s, "warning", "video-codec") for s in ("YouTube", "Twitch", "Facebook", "Kick")},
    ),
    (
        "Opus audio",
        {"audioCodec": "opus"},
        {(s, "warning", "audio-codec") for s in ("YouTube", "Twitch", "Facebook", "Kick")},
    ),
    (
        "MP3 audio: YouTube and Twitch take it",
        {"audioCodec": "mp3"},
        {("Facebook", "warning", "audio-codec"), ("Kick", "warning", "audio-codec")},
    ),
    (
        "1440p60 at 12 Mbit/s: YouTube only",
        {"width": 2560, "height": 1440, "bitrate": 12_000_000},
        {
            ("Twitch", "warning", "resolution"),
            ("Twitch", "warning", "bitrate-high"),
            ("Facebook", "warning", "resolution"),
            ("Kick", "warning", "resolution"),
            ("Kick", "warning", "bitrate-high"),
        },  # Facebook has no range above 1080p: the resolution is what to fix
    ),
    (
        "8 Mbit/s at 1080p60: over Twitch's maximum, within the others'",
        {"bitrate": 8_000_000},
        {("Twitch", "warning", "bitrate-high")},
    ),
    (
        "1080p60 at 2.5 Mbit/s: below YouTube's and Facebook's range",
        {"bitrate": 2_500_000},
        {("YouTube", "info", "bitrate-low"), ("Facebook", "info", "bitrate-low")},
    ),
    (
        "720p30 at 2.5 Mbit/s: Facebook's 1.5-4 is fine, YouTube wants 3",
        {"width": 1280, "height": 720, "frameRate": 30.0, "bitrate": 2_500_000},
        {("YouTube", "info", "bitrate-low")},
    ),
    (
        "720p30 at 9 Mbit/s: more than YouTube and Facebook use, over Kick's and Twitch's",
        {"width": 1280, "height": 720, "frameRate": 30.0, "bitrate": 9_000_000},
        {
            ("YouTube", "info", "bitrate-high"),
            ("Facebook", "info", "bitrate-high"),
            ("Twitch", "warning", "bitrate-high"),
            ("Kick", "warning", "bitrate-high"),
        },
    ),
    (
        "a vertical 1080x1920 is 1080 lines",
        {"width": 1080, "height": 1920},
        set(),
    ),
    (
        "120 fps",
        {"frameRate": 120.0},
        {(s, "warning", "frame-rate") for s in ("YouTube", "Twitch", "Facebook", "Kick")},
    ),
    (
        "32 kHz audio: Facebook takes 44.1 or 48",
        {"audioSampleRate": 32_000},
        {("Facebook", "warning", "audio-sample-rate")},
    ),
]


@pytest.mark.parametrize(("what", "changed", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rules(what, changed, expected):
    assert codes({**GOOD, **changed}) == expected


def test_nothing_is_said_about_what_was_not_measured():
    assert diagnose({}, ALL) == []
    assert diagnose(None, ALL) == []
    unknown = {"videoCodec": None, "keyframeInterval": None, "bitrate": 0, "width": "wide"}
    assert diagnose(unknown, ALL) == []
    # Keyframe interval alone is enough to judge it.
    assert codes({"keyframeInterval": 10.0}, ["Twitch"]) == {
        ("Twitch", "warning", "keyframe-interval")
    }


def test_only_the_stream_s_services_each_once():
    facts = {**GOOD, "keyframeInterval": 6.0}
    assert codes(facts, ["Twitch", "Twitch", "Custom"]) == {
        ("Twitch", "warning", "keyframe-interval")
    }
    assert diagnose(facts, ["Custom"]) == []
    assert diagnose(facts, []) == []


def test_messages_say_what_to_do_with_the_numbers():
    (found,) = diagnose({**GOOD, "keyframeInterval": 8.3}, ["Twitch"])
    assert found == Diagnostic(
        service="Twitch",
        severity="warning",
        code="keyframe-interval",
        message="A keyframe every 8.3 s; Twitch needs one at least every 2 s: set the"
        " keyframe interval to 2 s (OBS: Settings, Output, Keyframe Interval).",
    )
    (high,) = diagnose({**GOOD, "bitrate": 8_000_000}, ["Twitch"])
    assert "8.0 Mbit/s" in high.message and "6.0 Mbit/s" in high.message
    (codec,) = diagnose({**GOOD, "videoCodec": "hevc"}, ["Facebook"])
    assert "H.264" in codec.message and "HEVC" in codec.message


def test_every_service_cites_its_source():
    assert set(REQUIREMENTS) == {"YouTube", "Twitch", "Facebook", "Kick"}
    for rules in REQUIREMENTS.values():
        assert rules.source.startswith("https://")
        assert rules.keyframe_recommended <= rules.keyframe_max
        assert list(rules.bands) == sorted(rules.bands, key=lambda b: (b.lines, b.fps))
