"""Crafted streams for the failure cases: a real stream with messages added or changed.

A base stream is made by ffmpeg (H.264 + AAC in FLV); a case edits its list of tags
(random video payloads, a second onMetaData, cue points, timestamps that jump, a new
sequence header) and publishes the result in real time through FFmpeg's own RTMP
client: ``ffmpeg -f data -i pipe:0 -c copy -f data rtmp://...`` sends each FLV tag
it is given as one RTMP message, bytes untouched (FFmpeg's rtmp_write only prefixes
data messages with ``@setDataFrame``). A thread writes the tags into ffmpeg's stdin
at the time each belongs to, so the publish runs live, as an encoder's would.
"""

from __future__ import annotations

import random
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .rtmp_capture import FLV_HEADER, Message, data_name, flv_tag, read_flv_messages

AUDIO, VIDEO, SCRIPT = 8, 9, 18


@dataclass(frozen=True)
class CraftedTag:
    """One tag to send: type, timestamp (ms), body, and when to send it (s from start)."""

    type: int
    timestamp: int
    body: bytes
    at: float

    def encode(self) -> bytes:
        return flv_tag(self.type, self.timestamp, self.body)


def make_base(path: Path, seconds: float, size: str = "320x240", frequency: int = 440) -> Path:
    """H.264 (B-frames, a keyframe every second) + 48 kHz AAC, as an FLV file."""
    out = subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
            "-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=48000",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "96k", "-f", "flv", str(path),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"ffmpeg could not make {path.name}: {out.stderr}"
    return path


def read_tags(path: Path) -> list[CraftedTag]:
    """The tags of an FLV file, each to be sent at its own timestamp."""
    messages, _ = read_flv_messages(path)
    return [CraftedTag(m.type, m.timestamp, m.payload, m.timestamp / 1000) for m in messages]


def index_at(tags: list[CraftedTag], seconds: float) -> int:
    """The index of the first tag sent at or after `seconds`."""
    return next(i for i, t in enumerate(tags) if t.at >= seconds)


def insert(tags: list[CraftedTag], at: float, new: list[CraftedTag]) -> list[CraftedTag]:
    """`new` inserted before the tag sent at `at`, sent with it."""
    i = index_at(tags, at)
    placed = [replace(t, at=tags[i].at) for t in new]
    return [*tags[:i], *placed, *tags[i:]]


def random_video(rng: random.Random, count: int, timestamp: int, at: float) -> list[CraftedTag]:
    """Video messages whose whole payload is random bytes (their header byte too)."""
    return [
        CraftedTag(VIDEO, timestamp, rng.randbytes(rng.randint(16, 6000)), at) for _ in range(count)
    ]


def amf0_string(value: str) -> bytes:
    raw = value.encode()
    return b"\x02" + len(raw).to_bytes(2, "big") + raw


def amf0_value(value: object) -> bytes:
    if isinstance(value, bool):
        return b"\x01" + bytes((value,))
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        return amf0_string(value)
    if isinstance(value, dict):
        body = b"".join(
            len(k.encode()).to_bytes(2, "big") + k.encode() + amf0_value(v)
            for k, v in value.items()
        )
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(value)


def data_tag(name: str, value: dict, timestamp: int, at: float = 0.0) -> CraftedTag:
    """A script data message: onMetaData, onCuePoint, onTextData... with an object."""
    return CraftedTag(SCRIPT, timestamp, amf0_string(name) + amf0_value(value), at)


def shift(tags: list[CraftedTag], from_index: int, delta_ms: int) -> list[CraftedTag]:
    """Every tag from `from_index` on stamped `delta_ms` later (send times unchanged)."""
    return [
        replace(t, timestamp=(t.timestamp + delta_ms) & 0xFFFFFFFF) if i >= from_index else t
        for i, t in enumerate(tags)
    ]


class CraftedPublisher:
    """FFmpeg's RTMP client sending crafted tags, paced by their send times."""

    def __init__(self, tags: list[CraftedTag], url: str, log: Path) -> None:
        self.tags = tags
        self._log = log
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
                    "-f", "data", "-i", "pipe:0", "-map", "0", "-c", "copy", "-f", "data", url,
                ],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        self.started = time.monotonic()
        self.feed_error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(FLV_HEADER)
            for tag in self.tags:
                delay = self.started + tag.at - time.monotonic()
                if delay > 0:
                    stdin.flush()
                    time.sleep(delay)
                stdin.write(tag.encode())
            stdin.close()
        except (BrokenPipeError, ValueError) as exc:  # ffmpeg exited (killed, refused)
            self.feed_error = exc

    def wait(self, timeout: float = 60) -> int:
        self._feeder.join(timeout)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    @property
    def stderr(self) -> str:
        return self._log.read_text(errors="replace")


# --- The scenarios of the failure cases: a stream, and what to check beyond "relayed
# unchanged".


@dataclass
class Scenario:
    """Crafted tags; `late_join_at`: when a destination that was down from the start
    comes up (its first connection is late, still within the queue bounds); `rejoin`:
    (when it goes down, when it comes back) for a destination that reconnects; `clean`:
    the publisher's own stream decodes without error; `nginx_recording`: nginx-rtmp's
    recording is predictable (see `assert_nginx_recording`)."""

    tags: list[CraftedTag]
    late_join_at: float | None = None
    rejoin: tuple[float, float] | None = None
    clean: bool = True
    nginx_recording: bool = True

    def check_sent(self, sent: list[Message]) -> None:
        """The capture shows that FFmpeg sent what the scenario is about."""

    def check_decoded(self, report: dict) -> None:
        """What FFmpeg 8 decoded of the stream (pyav_receiver.read_flv) is right."""

    def check_rejoined(self, sent: list[Message], joined: int) -> None:
        """The reconnected destination resumed where the scenario wants it (at the newest
        keyframe when it came back: after the change)."""


@dataclass
class CorruptVideo(Scenario):
    """12 video messages of random bytes (their header byte too) at 1.5 s. A relay does
    not judge payloads: they are relayed like any other message, and everything after
    them still arrives. nginx-rtmp's recorder is not compared: it reads each video
    header (a random one can replace its stored AVC sequence header, or look like an
    enhanced tag), so what it records of garbage is nginx's own affair; what the agent
    sent it is checked on the wire."""

    garbage: list[bytes] = field(default_factory=list)

    def check_sent(self, sent: list[Message]) -> None:
        bodies = {m.body for m in sent}
        assert all(g in bodies for g in self.garbage), "ffmpeg did not send the garbage"


def corrupt_video(base: list[CraftedTag]) -> Scenario:
    rng = random.Random(11)
    at = base[index_at(base, 1.5)]
    garbage = random_video(rng, 12, at.timestamp, at.at)
    tags = insert(base, 1.5, garbage)
    bodies = [g.body for g in garbage]
    return CorruptVideo(tags, clean=False, nginx_recording=False, garbage=bodies)


@dataclass
class SecondMetadata(Scenario):
    """A second onMetaData at 1.5 s: relayed in place, also to a destination whose first
    connection comes after it; one that was cut at 1 s and comes back at 2 s resumes
    with the second (the latest), not the first."""

    def check_sent(self, sent: list[Message]) -> None:
        assert len(_metadata(sent)) == 2, "ffmpeg did not send two onMetaData"

    def check_rejoined(self, sent: list[Message], joined: int) -> None:
        second = sent.index(_metadata(sent)[1])
        assert joined > second, (
            f"resumed at #{joined} ({sent[joined].describe()}), before the second"
            f" onMetaData (#{second}), while it was down until long after it: a"
            " reconnecting destination resumes at the newest keyframe (issue 11, item 3)"
        )


def _metadata(sent: list[Message]) -> list[Message]:
    return [m for m in sent if data_name(m) == "onMetaData"]


def second_metadata(base: list[CraftedTag]) -> Scenario:
    at = base[index_at(base, 1.5)]
    second = data_tag("onMetaData", {"width": 320, "height": 240, "encoder": "2nd"}, at.timestamp)
    return SecondMetadata(insert(base, 1.5, [second]), late_join_at=2.0, rejoin=(1.0, 2.0))


@dataclass
class TimestampsJump(Scenario):
    """At 1.5 s the clock jumps 4.66 h ahead, to 0.7 s before the 24-bit limit of the
    timestamp field (from then on the extended timestamp is in use). Relayed as sent. (A
    clock that steps back instead, a publisher restarting it, is not relayed as sent:
    the agent's timeline continues it from the last timestamp, so a destination never
    sees time go back; tests/unit/test_timeline.py.)"""

    def check_sent(self, sent: list[Message]) -> None:
        assert max(m.timestamp for m in sent) > 0xFFFFFF, "no extended timestamp was sent"


def timestamps_jump(base: list[CraftedTag]) -> Scenario:
    jump_at = index_at(base, 1.5)
    ahead = 0xFFFFFF - 700 - base[jump_at].timestamp
    return TimestampsJump(shift(base, jump_at, ahead))


@dataclass
class CuePointsAndText(Scenario):
    """onCuePoint (ad markers) and onTextData (captions) reach the destinations in place."""

    def check_sent(self, sent: list[Message]) -> None:
        names = [data_name(m) for m in sent]
        assert names.count("onCuePoint") == names.count("onTextData") == 2, names


def cue_points_and_text(base: list[CraftedTag]) -> Scenario:
    tags = base
    for seconds, name, value in (
        (1.0, "onCuePoint", {"name": "ad-break", "time": 1.0, "type": "event"}),
        (1.5, "onTextData", {"text": "first caption", "trackid": 0}),
        (2.0, "onCuePoint", {"name": "ad-end", "time": 2.0, "type": "event"}),
        (2.5, "onTextData", {"text": "second caption", "trackid": 0}),
    ):
        tags = insert(
            tags, seconds, [data_tag(name, value, tags[index_at(tags, seconds)].timestamp)]
        )
    return CuePointsAndText(tags)


@dataclass
class NewSequenceHeader(Scenario):
    """At 2 s the encoder restarts at 640x360 with new AVC and AAC sequence headers:
    relayed in place, also to a destination whose first connection comes after the
    change; both pictures decode; one cut at 1 s and back at 2.4 s resumes with the new
    headers."""

    change_ms: int = 0

    def check_decoded(self, report: dict) -> None:
        sizes = report["decoded"]["0"]["sizes"]
        assert sizes == [[320, 240], [640, 360]], f"decoded picture sizes {sizes}"

    def check_rejoined(self, sent: list[Message], joined: int) -> None:
        assert sent[joined].timestamp >= self.change_ms, (
            f"resumed at {sent[joined].describe()}, before the change at {self.change_ms} ms,"
            " while it was down until after it: a reconnecting destination resumes at the"
            " newest keyframe (issue 11, item 3)"
        )


def new_sequence_header(base: list[CraftedTag], second: list[CraftedTag]) -> Scenario:
    cut = index_at(base, 2.0)
    start = base[cut].timestamp
    moved = [
        replace(t, timestamp=t.timestamp + start, at=t.at + start / 1000)
        for t in second
        if t.type != SCRIPT
    ]
    tags = base[:cut] + moved
    return NewSequenceHeader(tags, late_join_at=2.4, rejoin=(1.0, 2.4), change_ms=start)
