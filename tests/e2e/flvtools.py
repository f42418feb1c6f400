"""FLV analysis for the end-to-end tests: parse tags, compare recordings with the fixture.

A relay must pass media unchanged: every audio (8) and video (9) tag a receiver records
must carry the same bytes and the same timestamp as in the file the publisher read.
Script tags (18, metadata) may differ and are not compared.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

AUDIO, VIDEO, SCRIPT = 8, 9, 18
MEDIA = (AUDIO, VIDEO)


@dataclass(frozen=True)
class Tag:
    """One FLV tag: type, 32-bit millisecond timestamp, body digest and the first bytes."""

    type: int
    timestamp: int
    sha: str
    size: int
    head: bytes  # the first bytes of the body (codec headers)

    @property
    def key(self) -> tuple[int, int, str]:
        """What must be identical between the fixture and a recording."""
        return (self.type, self.timestamp, self.sha)

    @property
    def is_sequence_header(self) -> bool:
        """AVC sequence header (video, AVCPacketType 0) or AAC sequence header."""
        if self.type == VIDEO:
            return len(self.head) > 1 and self.head[0] & 0x0F == 7 and self.head[1] == 0
        if self.type == AUDIO:
            return len(self.head) > 1 and self.head[0] >> 4 == 10 and self.head[1] == 0
        return False

    @property
    def is_end_of_sequence(self) -> bool:
        """AVC end of sequence (AVCPacketType 2): FFmpeg's muxer writes it last, stamped
        with the last video timestamp, so it may follow later audio."""
        return self.type == VIDEO and len(self.head) > 1 and self.head[1] == 2

    @property
    def is_keyframe(self) -> bool:
        """A video key frame carrying picture data (not a sequence header)."""
        return (
            self.type == VIDEO
            and self.head[0] >> 4 == 1
            and not self.is_sequence_header
            and not self.is_end_of_sequence
        )


@dataclass
class FlvFile:
    """The tags of one FLV file; `truncated` if it ended inside a tag."""

    path: Path
    tags: list[Tag]
    truncated: bool

    @property
    def media(self) -> list[Tag]:
        return [t for t in self.tags if t.type in MEDIA]

    def of_type(self, kind: int) -> list[Tag]:
        return [t for t in self.tags if t.type == kind]

    @property
    def frames(self) -> list[Tag]:
        """Media tags without codec sequence headers."""
        return [t for t in self.media if not t.is_sequence_header]


def parse_flv(path: Path) -> FlvFile:
    """Parse an FLV file: 9+ byte header, PreviousTagSize0, then tags (FLV spec §E)."""
    data = path.read_bytes()
    if len(data) < 13 or data[:3] != b"FLV":
        raise AssertionError(f"{path} is not an FLV file ({len(data)} bytes)")
    pos = int.from_bytes(data[5:9], "big") + 4
    tags: list[Tag] = []
    truncated = False
    while pos < len(data):
        if len(data) - pos < 11:
            truncated = True
            break
        kind = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + 11 + size + 4
        if end > len(data):
            truncated = True
            break
        body = data[pos + 11 : pos + 11 + size]
        previous = int.from_bytes(data[end - 4 : end], "big")
        if previous != size + 11:
            raise AssertionError(f"{path}: bad PreviousTagSize at offset {end - 4}")
        tags.append(Tag(kind, timestamp, hashlib.sha256(body).hexdigest(), size, body[:8]))
        pos = end
    return FlvFile(path, tags, truncated)


def probe(path: Path) -> dict:
    """ffprobe's view of a file: streams and format."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-print_format", "json",
            "-show_streams", "-show_format", str(path),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"ffprobe failed on {path}: {out.stderr}"
    return json.loads(out.stdout)


def stream_summary(info: dict) -> list[tuple]:
    """(type, codec, width, height, sample rate, channels) of each stream, sorted."""
    return sorted(
        (
            s["codec_type"],
            s["codec_name"],
            s.get("width"),
            s.get("height"),
            s.get("sample_rate"),
            s.get("channels"),
        )
        for s in info["streams"]
    )


def assert_monotonic(recording: FlvFile) -> None:
    """Media timestamps never go back, across the tracks (FLV is interleaved by time)."""
    previous = -1
    for tag in recording.media:
        if tag.is_end_of_sequence:
            continue
        assert tag.timestamp >= previous, (
            f"{recording.path.name}: type {tag.type} timestamp {tag.timestamp} after {previous}"
        )
        previous = tag.timestamp


def _first_difference(got: list, want: list) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
        min(len(got), len(want)),
    )


def assert_codec_headers(recording: FlvFile, fixture: FlvFile) -> None:
    """The recording carries exactly the fixture's codec sequence headers (nginx-rtmp may
    record one twice), each track starting with its header."""
    want = {(t.type, t.sha) for t in fixture.media if t.is_sequence_header}
    got = {(t.type, t.sha) for t in recording.media if t.is_sequence_header}
    assert got == want, f"{recording.path.name}: codec headers differ from the fixture's"
    for kind in MEDIA:
        tags = recording.of_type(kind)
        assert tags, f"{recording.path.name}: no tags of type {kind}"
        assert tags[0].is_sequence_header, (
            f"{recording.path.name}: type {kind} does not start with its sequence header"
        )


def frame_keys(flv: FlvFile, kind: int) -> list[tuple[int, int, str]]:
    return [t.key for t in flv.of_type(kind) if not t.is_sequence_header]


def assert_same_media(recording: FlvFile, fixture: FlvFile) -> None:
    """The recording holds every media tag of the fixture, byte-identical, same
    timestamps, in order: each track's frames equal the fixture's exactly."""
    assert not recording.truncated, f"{recording.path.name} ends inside a tag"
    for kind, name in ((VIDEO, "video"), (AUDIO, "audio")):
        want = frame_keys(fixture, kind)
        got = frame_keys(recording, kind)
        if got != want:
            i = _first_difference(got, want)
            raise AssertionError(
                f"{recording.path.name}: {name} frames differ from the fixture: got {len(got)},"
                f" want {len(want)}; first difference at #{i}:"
                f" got {got[i : i + 2]} want {want[i : i + 2]}"
            )
    assert_codec_headers(recording, fixture)
    assert_monotonic(recording)


def assert_contiguous_run(recording: FlvFile, fixture: FlvFile) -> tuple[int, int]:
    """Each track's frames in the recording are one contiguous run of the fixture's
    (identical bytes and timestamps), video starting on a keyframe; return the first and
    last timestamps of the video run."""
    assert not recording.truncated, f"{recording.path.name} ends inside a tag"
    video = [t for t in recording.of_type(VIDEO) if not t.is_sequence_header]
    assert video, f"{recording.path.name}: no video frames"
    assert video[0].is_keyframe, f"{recording.path.name}: first video frame is not a keyframe"
    for kind in MEDIA:
        tags = [t for t in recording.of_type(kind) if not t.is_sequence_header]
        if tags and tags[-1].is_end_of_sequence:
            tags.pop()  # written by the muxer when the destination was closed cleanly
        got = [t.key for t in tags]
        want = frame_keys(fixture, kind)
        assert got, f"{recording.path.name}: no frames of type {kind}"
        assert got[0] in want, f"{recording.path.name}: frame {got[0]} is not in the fixture"
        start = want.index(got[0])
        assert got == want[start : start + len(got)], (
            f"{recording.path.name}: type {kind} frames are not a contiguous run of the"
            f" fixture's (from #{start}, first difference at"
            f" #{_first_difference(got, want[start:])})"
        )
    assert_codec_headers(recording, fixture)
    assert_monotonic(recording)
    return video[0].timestamp, video[-1].timestamp


def keyframe_count(flv: FlvFile) -> int:
    return sum(1 for t in flv.media if t.is_keyframe)


def assert_whole_stream(path: Path, fixture: FlvFile, fixture_info: dict) -> FlvFile:
    """A recording of the whole fixture: identical media tags (see assert_same_media),
    same codecs and picture size, same duration (within 0.5 s), same keyframes."""
    recording = parse_flv(path)
    assert_same_media(recording, fixture)
    assert keyframe_count(recording) == keyframe_count(fixture) > 1
    info = probe(path)
    assert stream_summary(info) == stream_summary(fixture_info)
    got, want = float(info["format"]["duration"]), float(fixture_info["format"]["duration"])
    assert abs(got - want) <= 0.5, f"{path.name}: duration {got} s, fixture {want} s"
    return recording


def assert_prefix(recording: FlvFile, fixture: FlvFile) -> int:
    """Each track's frames in the recording are the fixture's from the very start, bytes
    and timestamps unchanged (the muxer's closing end-of-sequence marker aside); return
    the last video frame's timestamp."""
    for kind in MEDIA:
        tags = [t for t in recording.of_type(kind) if not t.is_sequence_header]
        if tags and tags[-1].is_end_of_sequence:
            tags.pop()  # written when the destination was closed
        got = [t.key for t in tags]
        want = frame_keys(fixture, kind)[: len(got)]
        assert got, f"{recording.path.name}: no frames of type {kind}"
        assert got == want, (
            f"{recording.path.name}: type {kind} frames are not the start of the fixture's"
            f" (first difference at #{_first_difference(got, want)})"
        )
    assert_monotonic(recording)
    return [t for t in recording.of_type(VIDEO) if not t.is_end_of_sequence][-1].timestamp
