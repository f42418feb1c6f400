"""The tag classifier: byte vectors (legacy FLV, Enhanced RTMP v1/v2, script data), every
truncation of each vector, fuzzing, and the tags FFmpeg 8's own FLV muxer writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rtmp import amf0
from agent.tags import AUDIO, DATA, DATA_AMF3, VIDEO, Kind, Tag, Track, classify

from .media_samples import encoded_flv

K = Kind


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


# (message type, body, kind, [(track id, codec, payload start, payload end)])
VECTORS: list[tuple[str, int, bytes, Kind, list[tuple[int, str | None, int, int | None]]]] = [
    # ---- legacy video (FLV spec §E.4.3.1): FrameType << 4 | CodecID, AVCPacketType, CTS
    (
        "avc sequence header",
        VIDEO,
        b"\x17\x00\x00\x00\x00\x01\x64",
        K.SEQUENCE_HEADER,
        [(0, "h264", 5, None)],
    ),
    (
        "avc keyframe",
        VIDEO,
        b"\x17\x01\x00\x00\x43\x00\x00\x02",
        K.KEYFRAME,
        [(0, "h264", 5, None)],
    ),
    ("avc inter frame", VIDEO, b"\x27\x01\x00\x00\xa6\x00", K.FRAME, [(0, "h264", 5, None)]),
    (
        "avc end of sequence",
        VIDEO,
        b"\x17\x02\x00\x00\x00",
        K.END_OF_SEQUENCE,
        [(0, "h264", 5, None)],
    ),
    (
        "hevc legacy id 12",
        VIDEO,
        b"\x1c\x00\x00\x00\x00\x01",
        K.SEQUENCE_HEADER,
        [(0, "hevc", 5, None)],
    ),
    ("hevc legacy frame", VIDEO, b"\x2c\x01\x00\x00\x21\xaa", K.FRAME, [(0, "hevc", 5, None)]),
    ("sorenson h263 key", VIDEO, b"\x12\x00\x00\x84", K.KEYFRAME, [(0, "flv1", 1, None)]),
    ("vp6 disposable", VIDEO, b"\x34\x00", K.FRAME, [(0, "vp6f", 1, None)]),
    ("legacy command frame", VIDEO, b"\x57\x00", K.COMMAND, []),
    ("legacy codec 0", VIDEO, b"\x10\x00", K.UNKNOWN, []),
    ("legacy frame type 0", VIDEO, b"\x07\x01\x00\x00\x00", K.UNKNOWN, []),
    ("avc packet type 3", VIDEO, b"\x17\x03\x00\x00\x00", K.UNKNOWN, []),
    ("avc too short", VIDEO, b"\x17\x01\x00", K.UNKNOWN, []),
    ("empty video", VIDEO, b"", K.UNKNOWN, []),
    # ---- enhanced video (E-RTMP v2 "Enhanced Video"), as FFmpeg 8 writes it
    (
        "hvc1 sequence start",
        VIDEO,
        b"\x90hvc1\x01\x01\x60",
        K.SEQUENCE_HEADER,
        [(0, "hevc", 5, None)],
    ),
    (
        "hvc1 coded frames key",
        VIDEO,
        b"\x91hvc1\x00\x00\x43\x00\x00",
        K.KEYFRAME,
        [(0, "hevc", 8, None)],
    ),
    (
        "hvc1 coded frames inter",
        VIDEO,
        b"\xa1hvc1\x00\x00\xa6\x00",
        K.FRAME,
        [(0, "hevc", 8, None)],
    ),
    ("hvc1 coded frames x", VIDEO, b"\xa3hvc1\x00\x00\x00\x09", K.FRAME, [(0, "hevc", 5, None)]),
    (
        "av01 sequence start",
        VIDEO,
        b"\x90av01\x81\x00\x0c\x00",
        K.SEQUENCE_HEADER,
        [(0, "av1", 5, None)],
    ),
    ("av01 key (no cts)", VIDEO, b"\x91av01\x12\x00\x0a", K.KEYFRAME, [(0, "av1", 5, None)]),
    (
        "av01 mpeg2ts sequence start",
        VIDEO,
        b"\x95av01\x80",
        K.SEQUENCE_HEADER,
        [(0, "av1", 5, None)],
    ),
    (
        "vp09 sequence start",
        VIDEO,
        b"\x90vp09\x01\x00\x00\x00",
        K.SEQUENCE_HEADER,
        [(0, "vp9", 5, None)],
    ),
    ("vp09 inter", VIDEO, b"\xa1vp09\x86", K.FRAME, [(0, "vp9", 5, None)]),
    ("avc1 enhanced key", VIDEO, b"\x91avc1\x00\x00\x00\x00", K.KEYFRAME, [(0, "h264", 8, None)]),
    ("vvc1 sequence start", VIDEO, b"\x90vvc1\xff", K.SEQUENCE_HEADER, [(0, "vvc", 5, None)]),
    ("sequence end", VIDEO, b"\x92hvc1", K.END_OF_SEQUENCE, [(0, "hevc", 5, None)]),
    (
        "colorInfo metadata",
        VIDEO,
        b"\xd4hvc1\x02\x00\x09colorInfo\x03",
        K.METADATA,
        [(0, "hevc", 5, None)],
    ),
    ("enhanced command", VIDEO, b"\xd1\x00", K.COMMAND, []),
    ("unknown fourcc", VIDEO, b"\x91abcd\x00", K.KEYFRAME, [(0, None, 5, None)]),
    ("reserved packet type 8", VIDEO, b"\x98hvc1\x00", K.UNKNOWN, []),
    ("fourcc cut short", VIDEO, b"\x90hv", K.UNKNOWN, []),
    ("cts cut short", VIDEO, b"\x91hvc1\x00", K.UNKNOWN, []),
    # ModEx (packet type 7): size - 1, data, ModExType << 4 | packet type
    (
        "modex timestamp offset nano",
        VIDEO,
        b"\x97\x02\x00\x01\x02\x01avc1\x00\x00\x00\xaa",
        K.KEYFRAME,
        [(0, "h264", 13, None)],
    ),
    (
        "modex with a 16-bit size",
        VIDEO,
        b"\x97\xff\x01\x00" + bytes(257) + b"\x03av01\xaa",
        K.KEYFRAME,
        [(0, "av1", 1 + 3 + 257 + 1 + 4, None)],
    ),
    ("modex cut short", VIDEO, b"\x97\x05\x00\x01", K.UNKNOWN, []),
    # Multitrack (packet type 6): AvMultitrackType << 4 | packet type, ...
    ("one track", VIDEO, b"\x96\x01hvc1\x02\x00\x00\x00\xaa", K.KEYFRAME, [(2, "hevc", 10, None)]),
    (
        "many tracks",
        VIDEO,
        b"\x96\x10av01\x00" + u24(2) + b"\xaa\xbb\x01" + u24(1) + b"\xcc",
        K.SEQUENCE_HEADER,
        [(0, "av1", 10, 12), (1, "av1", 16, 17)],
    ),
    (
        "many tracks many codecs",
        VIDEO,
        b"\xa6\x23avc1\x00" + u24(1) + b"\xaahvc1\x01" + u24(2) + b"\xbb\xcc",
        K.FRAME,
        [(0, "h264", 10, 11), (1, "hevc", 19, 21)],
    ),
    (
        "many tracks, coded frames with cts",
        VIDEO,
        b"\x96\x11avc1\x00" + u24(4) + b"\x00\x00\x00\xaa\x01" + u24(3) + b"\x00\x00\x00",
        K.KEYFRAME,
        [(0, "h264", 13, 14), (1, "h264", 21, 21)],
    ),
    ("multitrack in multitrack", VIDEO, b"\x96\x06hvc1\x00", K.UNKNOWN, []),
    ("multitrack type 3", VIDEO, b"\x96\x31hvc1\x00", K.UNKNOWN, []),
    ("track size beyond the body", VIDEO, b"\x96\x10av01\x00" + u24(9) + b"\xaa", K.UNKNOWN, []),
    # ---- legacy audio (FLV spec §E.4.2.1)
    ("aac sequence header", AUDIO, b"\xaf\x00\x11\x90", K.SEQUENCE_HEADER, [(0, "aac", 2, None)]),
    ("aac raw", AUDIO, b"\xaf\x01\x21\x10", K.FRAME, [(0, "aac", 2, None)]),
    ("aac packet type 2", AUDIO, b"\xaf\x02\x00", K.UNKNOWN, []),
    ("aac without packet type", AUDIO, b"\xaf", K.UNKNOWN, []),
    ("mp3", AUDIO, b"\x2f\xff\xfb", K.FRAME, [(0, "mp3", 1, None)]),
    ("speex", AUDIO, b"\xb6\x00", K.FRAME, [(0, "speex", 1, None)]),
    ("reserved sound format 12", AUDIO, b"\xc0\x00", K.UNKNOWN, []),
    ("audio silence", AUDIO, b"", K.END_OF_SEQUENCE, []),
    # ---- enhanced audio (E-RTMP v2 "Enhanced Audio")
    (
        "opus sequence start",
        AUDIO,
        b"\x90OpusOpusHead\x01\x02",
        K.SEQUENCE_HEADER,
        [(0, "opus", 5, None)],
    ),
    ("opus coded frames", AUDIO, b"\x91Opus\xfc\xff", K.FRAME, [(0, "opus", 5, None)]),
    (
        "multichannel config",
        AUDIO,
        b"\x94Opus\x01\x02\x00\x00\x00\x03",
        K.CHANNEL_CONFIG,
        [(0, "opus", 5, None)],
    ),
    ("flac sequence start", AUDIO, b"\x90fLaCfLaC\x00", K.SEQUENCE_HEADER, [(0, "flac", 5, None)]),
    ("ac-3 frames", AUDIO, b"\x91ac-3\x0b\x77", K.FRAME, [(0, "ac3", 5, None)]),
    ("e-ac-3 frames", AUDIO, b"\x91ec-3\x0b\x77", K.FRAME, [(0, "eac3", 5, None)]),
    ("mp4a sequence start", AUDIO, b"\x90mp4a\x11\x90", K.SEQUENCE_HEADER, [(0, "aac", 5, None)]),
    ("mp3 enhanced", AUDIO, b"\x91.mp3\xff\xfb", K.FRAME, [(0, "mp3", 5, None)]),
    ("audio sequence end", AUDIO, b"\x92Opus", K.END_OF_SEQUENCE, [(0, "opus", 5, None)]),
    ("audio modex", AUDIO, b"\x97\x02\x00\x00\x07\x01Opus\xfc", K.FRAME, [(0, "opus", 10, None)]),
    ("audio reserved packet type 3", AUDIO, b"\x93Opus", K.UNKNOWN, []),
    (
        "audio one track",
        AUDIO,
        b"\x95\x00mp4a\x03\x11\x90",
        K.SEQUENCE_HEADER,
        [(3, "aac", 7, None)],
    ),
    (
        "audio many tracks",
        AUDIO,
        b"\x95\x11Opus\x00" + u24(1) + b"\xaa\x01" + u24(2) + b"\xbb\xcc",
        K.FRAME,
        [(0, "opus", 10, 11), (1, "opus", 15, 17)],
    ),
    (
        "audio many tracks many codecs",
        AUDIO,
        b"\x95\x20Opus\x00" + u24(1) + b"\xaamp4a\x01" + u24(2) + b"\x11\x90",
        K.SEQUENCE_HEADER,
        [(0, "opus", 10, 11), (1, "aac", 19, 21)],
    ),
    ("audio multitrack without tracks", AUDIO, b"\x95\x11Opus", K.UNKNOWN, []),
    # ---- script data (FLV spec §E.4.4)
    (
        "@setDataFrame onMetaData",
        DATA,
        amf0.encode("@setDataFrame", "onMetaData", {"width": 640.0}),
        K.METADATA,
        [],
    ),
    ("onMetaData", DATA, amf0.encode("onMetaData", {"duration": 0.0}), K.METADATA, []),
    ("onCuePoint", DATA, amf0.encode("onCuePoint", {"name": "ad"}), K.SCRIPT, []),
    ("onTextData", DATA, amf0.encode("onTextData", {"text": "hi"}), K.SCRIPT, []),
    ("amf3 onMetaData", DATA_AMF3, b"\x00" + amf0.encode("onMetaData", {}), K.METADATA, []),
    ("not a string", DATA, b"\x05", K.UNKNOWN, []),
    ("string cut short", DATA, b"\x02\x00\x0aonMeta", K.UNKNOWN, []),
]


@pytest.mark.parametrize(
    ("type_id", "body", "kind", "tracks"),
    [v[1:] for v in VECTORS],
    ids=[v[0] for v in VECTORS],
)
def test_byte_vectors(type_id: int, body: bytes, kind: Kind, tracks: list) -> None:
    tag = classify(type_id, body)
    assert tag.kind == kind
    assert tag.media == (DATA if type_id == DATA_AMF3 else type_id)
    assert [(t.id, t.codec, t.start, t.end) for t in tag.tracks] == tracks
    assert classify(type_id, body) == tag  # the legacy answers come from a cache


def test_script_names() -> None:
    assert classify(DATA, amf0.encode("@setDataFrame", "onMetaData", {})).name == "onMetaData"
    assert classify(DATA, amf0.encode("onCuePoint", {})).name == "onCuePoint"
    assert classify(DATA, amf0.encode("@setDataFrame", "onCaption", {})).name == "onCaption"


def test_other_message_types_are_unknown() -> None:
    assert classify(20, amf0.encode("publish")) == Tag(Kind.UNKNOWN, 20)


def assert_sane(tag: Tag, body: bytes) -> None:
    """Whatever the input: a Tag whose track payloads lie inside the body."""
    assert isinstance(tag.kind, Kind)
    for track in tag.tracks:
        assert isinstance(track, Track)
        end = len(body) if track.end is None else track.end
        assert 0 <= track.start <= end <= len(body), (track, len(body))
        assert 0 <= track.id <= 255


@pytest.mark.parametrize(
    ("type_id", "body"), [v[1:3] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_every_truncation_classifies_or_is_unknown(type_id: int, body: bytes) -> None:
    """A message cut anywhere (a broken publisher) is named or counted, never raises."""
    full = classify(type_id, body)
    for size in range(len(body)):
        tag = classify(type_id, body[:size])
        assert_sane(tag, body[:size])
        assert tag.kind in (full.kind, Kind.UNKNOWN, Kind.END_OF_SEQUENCE, Kind.COMMAND)


@settings(max_examples=3000)
@given(st.sampled_from([AUDIO, VIDEO, DATA, DATA_AMF3]), st.binary(max_size=64))
def test_fuzz_any_bytes(type_id: int, body: bytes) -> None:
    assert_sane(classify(type_id, body), body)


@settings(max_examples=2000)
@given(
    st.sampled_from([b"\x96", b"\xa6", b"\x95", b"\x97", b"\x90", b"\x91"]),
    st.binary(min_size=0, max_size=64),
)
def test_fuzz_enhanced_headers(first: bytes, rest: bytes) -> None:
    """Random bytes behind the enhanced headers that lead into the deep paths."""
    for type_id in (AUDIO, VIDEO):
        assert_sane(classify(type_id, first + rest), first + rest)


def test_many_zero_size_tracks_are_bounded() -> None:
    body = b"\x96\x10av01" + (b"\x00" + u24(0)) * 10_000
    assert classify(VIDEO, body).kind == Kind.UNKNOWN


@pytest.mark.parametrize(
    ("video", "audio", "video_codec", "audio_codec"),
    [
        ("libx264", "aac", "h264", "aac"),
        ("libx265", "libopus", "hevc", "opus"),
        ("libsvtav1", "aac", "av1", "aac"),
        ("libvpx-vp9", "libopus", "vp9", "opus"),
    ],
)
def test_what_ffmpeg_8_writes(video: str, audio: str, video_codec: str, audio_codec: str) -> None:
    """Every tag of a real FLV from FFmpeg 8's muxer (PyAV's bundled FFmpeg): nothing is
    unknown, each track starts with its sequence header, the keyframes are FFmpeg's."""
    flv = encoded_flv(video, audio)
    tags = flv.tags
    kinds = [(t.type_id, classify(t.type_id, t.body)) for t in tags]
    assert all(tag.kind != Kind.UNKNOWN for _, tag in kinds), kinds
    assert kinds[0][1].kind == Kind.METADATA  # onMetaData first
    video_tags = [tag for type_id, tag in kinds if type_id == VIDEO and tag.kind != Kind.METADATA]
    audio_tags = [tag for type_id, tag in kinds if type_id == AUDIO]
    assert video_tags[0].kind == Kind.SEQUENCE_HEADER
    assert audio_tags[0].kind == Kind.SEQUENCE_HEADER
    assert {t.codec for t in video_tags} == {video_codec}
    assert {t.codec for t in audio_tags} == {audio_codec}
    keyframes = [tag for tag in video_tags if tag.kind == Kind.KEYFRAME]
    frames = [tag for tag in video_tags if tag.kind in (Kind.KEYFRAME, Kind.FRAME)]
    # The same count as FFmpeg's FLV demuxer reads back.
    assert len(keyframes) == flv.video_keyframes >= 2
    assert len(frames) == flv.video_packets
