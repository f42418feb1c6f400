"""The conformance matrix's own instruments, checked without processes: the capture
reader against byte vectors and a real FFmpeg publish, and every comparison against
deliberately wrong expectations (a check that cannot fail proves nothing)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from .conformance import (
    assert_joined_late,
    assert_nginx_recording,
    assert_prefix,
    assert_same_demux,
    assert_unchanged,
)
from .crafted import NewSequenceHeader, SecondMetadata
from .flvtools import parse_flv
from .matrix import StreamFacts
from .rtmp_capture import (
    HANDSHAKE_BYTES,
    Message,
    is_keyframe,
    is_sequence_header,
    read_capture,
    read_flv_messages,
    read_messages,
    write_flv,
)

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "ffmpeg_publish.bin"
HANDSHAKE = bytes(HANDSHAKE_BYTES)


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def fmt0(csid: int, ts: int, length: int, type_id: int, sid: int = 1) -> bytes:
    return bytes((csid,)) + u24(ts) + u24(length) + bytes((type_id,)) + sid.to_bytes(4, "little")


def triples(messages: list[Message]) -> list[tuple[int, int, bytes]]:
    return [(m.type, m.timestamp, m.payload) for m in messages]


# --- The capture reader


def test_reads_a_real_ffmpeg_publish() -> None:
    capture = read_capture(CAPTURE)
    assert not capture.truncated
    assert capture.commands() == [
        "connect", "releaseStream", "FCPublish", "createStream", "publish",
        "FCUnpublish", "deleteStream",
    ]  # fmt: skip
    relayed = capture.relayed
    assert [m.type for m in relayed[:3]] == [18, 9, 8]
    assert is_sequence_header(relayed[1]) and is_sequence_header(relayed[2])
    assert is_keyframe(relayed[3])
    video = [m.timestamp for m in relayed if m.type == 9 and not is_sequence_header(m)]
    assert video == sorted(video) and video[-1] > 1900  # 2 s at 30 fps, monotonic


def test_header_formats_and_delta_rules() -> None:
    data = (
        HANDSHAKE
        + fmt0(4, 1000, 2, 8) + b"aa"
        + b"\xc4" + b"bb"  # format 3 after format 0: the timestamp again as delta
        + b"\x44" + u24(10) + u24(3) + b"\x09" + b"ccc"  # format 1: delta 10, video
        + b"\x84" + u24(5) + b"ddd"  # format 2: delta 5
        + b"\xc4" + b"eee"  # format 3: delta 5 again
    )  # fmt: skip
    messages, truncated = read_messages(data)
    assert not truncated
    assert triples(messages) == [
        (8, 1000, b"aa"),
        (8, 2000, b"bb"),
        (9, 2010, b"ccc"),
        (9, 2015, b"ddd"),
        (9, 2020, b"eee"),
    ]


def test_chunk_size_extended_timestamps_and_long_chunk_stream_ids() -> None:
    body = bytes(range(200))
    ts = 0x01020304  # above 0xFFFFFF: in the extended field, repeated on format 3 chunks
    data = (
        HANDSHAKE
        + fmt0(2, 0, 4, 1, 0) + (100).to_bytes(4, "big")  # Set Chunk Size 100
        + b"\x00\x06" + u24(0xFFFFFF) + u24(200) + b"\x09" + (1).to_bytes(4, "little")
        + ts.to_bytes(4, "big") + body[:100]
        + b"\xc0\x06" + ts.to_bytes(4, "big") + body[100:]  # csid 70, two-byte form
    )  # fmt: skip
    messages, truncated = read_messages(data)
    assert not truncated
    assert triples(messages) == [(9, ts, body)]


def test_interleaved_chunk_streams_complete_in_order() -> None:
    data = (
        HANDSHAKE
        + fmt0(4, 0, 200, 9) + bytes(128)
        + fmt0(5, 0, 3, 8) + b"aud"
        + b"\xc4" + bytes(72)
    )  # fmt: skip
    messages, _ = read_messages(data)
    assert [(m.type, len(m.payload)) for m in messages] == [(8, 3), (9, 200)]


def test_aggregate_messages_are_split() -> None:
    def sub(kind: int, ts: int, body: bytes) -> bytes:
        header = bytes((kind,)) + u24(len(body)) + u24(ts) + b"\x00" + bytes(3)
        return header + body + (len(body) + 11).to_bytes(4, "big")

    payload = sub(9, 500, b"vid") + sub(8, 520, b"au")
    data = HANDSHAKE + fmt0(4, 1000, len(payload), 22) + payload
    messages, _ = read_messages(data)
    assert triples(messages) == [(9, 1000, b"vid"), (8, 1020, b"au")]


def test_a_cut_capture_is_reported() -> None:
    data = HANDSHAKE + fmt0(4, 0, 10, 8) + b"12345"
    messages, truncated = read_messages(data)
    assert messages == [] and truncated


def test_flv_round_trip(tmp_path: Path) -> None:
    sent = read_capture(CAPTURE).relayed
    messages, truncated = read_flv_messages(write_flv(sent, tmp_path / "x.flv"))
    assert not truncated
    assert [m.key for m in messages] == [m.key for m in sent]


# --- The comparisons fail on every kind of difference


@pytest.fixture(scope="module")
def sent() -> list[Message]:
    return read_capture(CAPTURE).relayed


def changed_byte(m: Message) -> Message:
    payload = bytearray(m.payload)
    payload[-1] ^= 1
    return replace(m, payload=bytes(payload))


def later(m: Message) -> Message:
    return replace(m, timestamp=m.timestamp + 1)


WRONG = {
    "a byte changed": lambda s: [*s[:10], changed_byte(s[10]), *s[11:]],
    "a timestamp changed": lambda s: [*s[:10], later(s[10]), *s[11:]],
    "a message lost": lambda s: [*s[:10], *s[11:]],
    "a message added": lambda s: [*s[:10], s[9], *s[10:]],
    "two messages swapped": lambda s: [*s[:10], s[11], s[10], *s[12:]],
    "the end lost": lambda s: s[:-1],
    "metadata lost": lambda s: s[1:],
}  # fmt: skip


@pytest.mark.parametrize("wrong", WRONG)
def test_unchanged_fails_on_any_difference(sent: list[Message], wrong: str) -> None:
    assert_unchanged(sent, list(sent), "same")
    with pytest.raises(AssertionError, match="not relayed unchanged"):
        assert_unchanged(sent, WRONG[wrong](sent), wrong)


def test_set_data_frame_wrapper_is_not_part_of_the_data(sent: list[Message]) -> None:
    metadata = sent[0]
    assert metadata.payload.startswith(b"\x02\x00\x0d@setDataFrame")
    unwrapped = replace(metadata, payload=metadata.body)
    assert_unchanged(sent, [unwrapped, *sent[1:]], "unwrapped")


def test_prefix(sent: list[Message]) -> None:
    assert_prefix(sent, sent[:40], "cut")
    with pytest.raises(AssertionError):
        assert_prefix(sent, [*sent[:20], *sent[21:40]], "gap")
    with pytest.raises(AssertionError):
        assert_prefix(sent, [*sent[:40], changed_byte(sent[40])], "changed end")


def late_join(sent: list[Message], k: int) -> list[Message]:
    opening = [sent[0], sent[1], sent[2]]  # onMetaData, AVC and AAC sequence headers
    return [*opening, *sent[k:]]


def test_joined_late(sent: list[Message]) -> None:
    first, k = [i for i, m in enumerate(sent) if is_keyframe(m)][:2]
    assert assert_joined_late(sent, late_join(sent, k), "at a keyframe") == k
    assert assert_joined_late(sent, list(sent), "everything") == first
    # Joined between keyframes: audio at once, video from the next keyframe.
    between = late_join(sent, k)
    between[3:3] = [m for m in sent[first + 1 : k] if m.type != 9]
    assert assert_joined_late(sent, between, "audio first") == k
    with pytest.raises(AssertionError, match="not the publisher's stream from some point"):
        assert_joined_late(sent, late_join(sent, k + 1), "video not from a keyframe")
    with pytest.raises(AssertionError, match="opened with"):
        assert_joined_late(sent, [sent[0], sent[1], *sent[k:]], "no audio header")
    with pytest.raises(AssertionError):
        gap = late_join(sent, k)
        del gap[10]
        assert_joined_late(sent, gap, "a gap after joining")


def test_nginx_recording_fails_on_a_difference(sent: list[Message], tmp_path: Path) -> None:
    """A file written as nginx would record the stream passes; changed, it fails."""
    headers = [m for m in sent if is_sequence_header(m)]
    frames = [m for m in sent if m.type in (8, 9) and not is_sequence_header(m)]
    good = parse_flv(write_flv([*headers, *frames], tmp_path / "good.flv"))
    assert_nginx_recording(good, sent, "good")
    frames[5] = changed_byte(frames[5])
    bad = parse_flv(write_flv([*headers, *frames], tmp_path / "bad.flv"))
    with pytest.raises(AssertionError, match="first difference at #5"):
        assert_nginx_recording(bad, sent, "bad")


def test_same_demux_fails_on_a_difference() -> None:
    packet = {"stream": 0, "pts": 0, "dts": 0, "key": True, "size": 3, "sha": "a"}
    report = {
        "streams": [{"index": 0, "type": "video", "codec": "h264", "extradata": "x"}],
        "packets": [packet],
        "decoded": {"0": {"frames": 1, "errors": 0, "sizes": [[320, 240]]}},
        "ended_by": "end of file",
    }
    assert_same_demux(report, report, "same")
    for field, value in (("sha", "b"), ("pts", 1), ("key", False)):
        other = {**report, "packets": [{**packet, field: value}]}
        with pytest.raises(AssertionError, match="first difference"):
            assert_same_demux(other, report, field)
    broken = {**report, "decoded": {"0": {"frames": 0, "errors": 1, "sizes": []}}}
    with pytest.raises(AssertionError, match="decoding differs"):
        assert_same_demux(broken, report, "decoding")
    with pytest.raises(AssertionError, match="does not decode"):
        assert_same_demux(broken, broken, "clean")


def test_stream_facts(sent: list[Message]) -> None:
    facts = StreamFacts.of(sent)
    assert facts.video == ("avc",) and facts.audio == ("aac",)
    assert not facts.audio_first
    # Audio first once the video frames before the first audio frame are gone.
    first_audio = next(i for i, m in enumerate(sent) if m.type == 8 and not is_sequence_header(m))
    later = [m for m in sent[:first_audio] if m.type != 9 or is_sequence_header(m)]
    assert StreamFacts.of([*later, *sent[first_audio:]]).audio_first


def test_digest_is_of_the_body() -> None:
    m = Message(18, 0, 1, b"\x02\x00\x0d@setDataFrame" + b"rest")
    assert m.key == (18, 0, hashlib.sha256(b"rest").hexdigest())


def test_a_reconnection_must_resume_after_the_change(sent: list[Message]) -> None:
    """The scenarios' "newest keyframe" check fails when a reconnection resumed before
    the change it came back after."""
    first, second = [i for i, m in enumerate(sent) if is_keyframe(m)][:2]
    change = NewSequenceHeader([], change_ms=sent[second].timestamp)
    change.check_rejoined(sent, second)
    with pytest.raises(AssertionError, match="newest keyframe"):
        change.check_rejoined(sent, first)
    metadata = replace(sent[0], timestamp=sent[second].timestamp - 1)
    with_second = [*sent[:second], metadata, *sent[second:]]
    SecondMetadata([]).check_rejoined(with_second, second + 1)
    with pytest.raises(AssertionError, match="newest keyframe"):
        SecondMetadata([]).check_rejoined(with_second, first)
