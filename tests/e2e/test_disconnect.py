"""Disconnect protection and backup ingest with real processes (issue 15): ffmpeg
publishers killed (SIGKILL), hung (SIGSTOP) and back; rig; one or two rig-agents; nginx-rtmp
and the wire recorder as the services.

What a service must see, checked at both receivers: one publish (one connection, no
unpublish until the broadcast ends), timestamps that never go back and leave no hole
over a second, the slate's frames while the streamer was away (told apart by decoding
with PyAV: a dark card), and video that decodes across every switch."""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime
from pathlib import Path

import av
import pytest
from PIL import ImageStat

from .conftest import Media, make_media
from .flvtools import VIDEO, parse_flv
from .harness import Agent, Api, Receiver, StreamInfo, WireRecorder, key_id, wait_until
from .test_unchanged import on_the_wire

pytestmark = pytest.mark.e2e

PRIMARY_SOURCE = "testsrc2=size=640x360:rate=30"  # colourful and moving
BACKUP_SOURCE = "color=c=red:size=640x360:rate=30"  # a red picture


@pytest.fixture(scope="module")
def primary(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """30 s of the test pattern: killed long before it ends."""
    return make_media(tmp_path_factory.mktemp("dp") / "primary.flv", 30)


@pytest.fixture(scope="module")
def comeback(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """6 s of the test pattern: the streamer back, then Stop Streaming."""
    return make_media(tmp_path_factory.mktemp("dp") / "comeback.flv", 6)


@pytest.fixture(scope="module")
def backup(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """30 s of a red picture: the backup encoder."""
    return make_media(tmp_path_factory.mktemp("dp") / "backup.flv", 30, source=BACKUP_SOURCE)


@pytest.fixture(scope="module")
def larger(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """6 s of the test pattern at 1280x720: back with another resolution."""
    source = "testsrc2=size=1280x720:rate=30"
    return make_media(tmp_path_factory.mktemp("dp") / "larger.flv", 6, source=source)


class Stack:
    """rig, an agent, nginx-rtmp as YouTube and the wire recorder as Kick, a stream."""

    def __init__(self, e2e, protection: dict | None = None, agents: int = 1) -> None:
        self.e2e = e2e
        self.youtube: Receiver = e2e.receiver("live2")
        self.kick: WireRecorder = e2e.wire_recorder("app")
        self.rig = e2e.rig(YouTube=self.youtube.url, Kick=self.kick.url)
        self.agents: list[Agent] = [e2e.agent(self.rig) for _ in range(agents)]
        self.api: Api = e2e.api(self.rig)
        self.keys = {"YouTube": "yt-dp", "Kick": "kick-dp"}
        self.stream: StreamInfo = self.api.stream(self.keys, protection)

    @property
    def agent(self) -> Agent:
        return self.agents[0]

    def publish(self, media: Media, key: str | None = None, agent: Agent | None = None):
        return self.e2e.publish(media, agent or self.agent, key or self.stream.key)

    def state(self) -> str:
        payload = self.api.call("GET", f"/streams/{self.stream.id}")
        return payload["ingestState"]  # type: ignore[index]

    def until_state(self, state: str, timeout: float = 15) -> None:
        wait_until(lambda: self.state() == state, timeout, f"ingestState {state}", 0.1)

    def accepted(self, agent: Agent | None = None, count: int = 1) -> None:
        (agent or self.agent).wait_for_log(rf"publish of stream {key_id(self.stream.key)}", count)

    def sessions(self) -> list[dict]:
        return self.api.call("GET", f"/streams/{self.stream.id}/sessions")  # type: ignore[return-value]

    def ended(self, timeout: float = 30) -> dict:
        def ended_session() -> dict | None:
            current = self.sessions()[0]
            return current if current["endedAt"] else None

        return wait_until(ended_session, timeout, "the session to end", 0.2)  # type: ignore[return-value]

    def wire(self) -> list[Path]:
        return self.kick.recordings(self.keys["Kick"])

    def unpublishes(self) -> int:
        return len(re.findall(r"unpublished", self.kick.log()))

    def closed(self, agent: Agent | None = None, timeout: float = 30) -> None:
        """Both destinations ended their publish and closed."""
        for service in self.keys:
            pattern = (agent or self.agent).destination_pattern(self.stream, service)
            (agent or self.agent).wait_for_log(pattern + " stream ended", timeout=timeout)


def label(frame: av.VideoFrame) -> str:
    """What a decoded picture is: the slate (a dark card), the backup (red), or the
    primary (the test pattern)."""
    small = frame.reformat(width=64, height=36, format="rgb24").to_image()
    red, green, blue = ImageStat.Stat(small).mean
    if max(red, green, blue) < 70:
        return "slate"
    if red > 150 and green < 90 and blue < 90:
        return "backup"
    return "primary"


def decoded(path: Path) -> tuple[list[tuple[int, str, tuple[int, int]]], int]:
    """Every picture PyAV decodes from a recording: (ms, label, size), and how many
    packets failed to decode."""
    pictures, errors = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except (StopIteration, IndexError):
                # IndexError: PyAV 18 cannot return a packet of a stream FFmpeg's FLV
                # demuxer added after opening, which it does for the AVC end of sequence
                # ffmpeg's muxer writes last (tests/e2e/pyav_receiver.py).
                break
            try:
                frames = packet.decode()
            except av.FFmpegError:
                errors += 1
                continue
            for frame in frames:
                ms = round(frame.time * 1000) if frame.time is not None else -1
                pictures.append((ms, label(frame), (frame.width, frame.height)))
    return pictures, errors


def runs(pictures: list[tuple[int, str, tuple[int, int]]]) -> list[tuple[str, float]]:
    """The labels in order with how long each run lasted (s), runs of fewer than three
    pictures left out (a picture mid-switch)."""
    out: list[tuple[str, list[int]]] = []
    for ms, name, _ in pictures:
        if out and out[-1][0] == name:
            out[-1][1].append(ms)
        else:
            out.append((name, [ms]))
    return [(name, (t[-1] - t[0]) / 1000) for name, t in out if len(t) >= 3]


def assert_continuous(path: Path, max_hole_ms: int = 1000) -> None:
    """On the wire: timestamps never go back on any track; no hole over a second."""
    last: dict[int, int] = {}
    for type_id, ts, _ in on_the_wire(path):
        assert ts >= last.get(type_id, 0), f"type {type_id}: back from {last[type_id]} to {ts}"
        if type_id == VIDEO and VIDEO in last:
            assert ts - last[VIDEO] <= max_hole_ms, f"a hole of {ts - last[VIDEO]} ms at {ts}"
        last[type_id] = ts


def assert_one_publish(stack: Stack) -> tuple[Path, Path]:
    """One publish at each service, ended once (at the end), continuous, decodable."""
    [wire] = stack.wire()
    [nginx] = stack.youtube.recordings(stack.keys["YouTube"])
    assert stack.unpublishes() == 1, stack.kick.log()
    assert "already publishing" not in stack.youtube.log()
    assert_continuous(wire)
    assert not parse_flv(nginx).truncated
    return wire, nginx


def finished(stack: Stack, last) -> list[list[tuple[int, str, tuple[int, int]]]]:
    """The last publisher ends (Stop Streaming), the broadcast with it: one publish at
    each service, and at each every picture decoded (none failed)."""
    assert last.wait(60) == 0, last.stderr
    stack.closed()
    out = []
    for recording in assert_one_publish(stack):
        pictures, errors = decoded(recording)
        assert errors == 0, f"{recording.name}: {errors} packets did not decode"
        out.append(pictures)
    return out


def log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_a_publisher_killed_and_back_six_seconds_later_is_one_publish(e2e, primary, comeback):
    stack = Stack(e2e)
    first = stack.publish(primary)
    stack.accepted()
    time.sleep(4)
    first.process.kill()  # SIGKILL: no unpublish, the kernel closes the connection
    stack.until_state("holding", timeout=5)
    time.sleep(6)
    back = stack.publish(comeback)
    stack.until_state("live")
    for pictures in finished(stack, back):
        seen = runs(pictures)
        assert [name for name, _ in seen] == ["primary", "slate", "primary"], seen
        assert 4.5 <= seen[1][1] <= 8.0, seen  # the six seconds away, give or take a GOP
    session = stack.ended()
    assert session["endReason"] == "ended"
    assert 4.5 <= session["holdingSeconds"] <= 9, session


def killed_until_the_end(stack: Stack, media: Media) -> float:
    """Publish for 3 s, SIGKILL the publisher: seconds until the recorder's publish
    ended (its unpublish)."""
    first = stack.publish(media)
    stack.accepted()
    time.sleep(3)
    killed = time.monotonic()
    first.process.kill()
    wait_until(lambda: stack.unpublishes() == 1, 15, "the recorder's publish to end")
    return time.monotonic() - killed


def test_the_grace_running_out_ends_the_destinations_cleanly(e2e, primary):
    stack = Stack(e2e, {"enabled": True, "graceSeconds": 3})
    ended = killed_until_the_end(stack, primary)
    assert 2.5 <= ended <= 6, f"ended {ended:.1f} s after the kill, grace 3 s"
    stack.closed()
    assert_one_publish(stack)
    assert stack.ended()["endReason"] == "grace expired"
    assert "ended: grace expired" in stack.agent.log()


def test_a_grace_of_zero_ends_at_once_as_before(e2e, primary):
    stack = Stack(e2e, {"enabled": True, "graceSeconds": 0})
    assert killed_until_the_end(stack, primary) < 2.0
    assert stack.ended()["endReason"] == "ended"
    [wire] = stack.wire()
    assert {name for _, name, _ in decoded(wire)[0]} == {"primary"}  # no slate


def test_a_hung_connection_is_replaced_by_a_new_one(e2e, primary, comeback):
    stack = Stack(e2e)
    hung = stack.publish(primary)
    stack.accepted()
    time.sleep(4)
    hung.process.send_signal(signal.SIGSTOP)  # the connection stays open, silent
    stack.until_state("holding", timeout=6)  # stalled after RIG_AGENT_STALL_TIMEOUT
    back = stack.publish(comeback)
    stack.until_state("live")
    stack.agent.wait_for_log("replaces")  # the hung connection closed by the agent
    for pictures in finished(stack, back):
        assert [name for name, _ in runs(pictures)] == ["primary", "slate", "primary"]
    hung.process.kill()


def test_a_backup_takes_over_at_once_and_hands_back(e2e, primary, backup, comeback):
    stack = Stack(e2e)
    backup_key = stack.api.call("POST", f"/streams/{stack.stream.id}/backupKey")[
        "backupStreamKey"  # type: ignore[index]
    ]
    main = stack.publish(primary)
    stack.accepted()
    time.sleep(1)
    standby = stack.publish(backup, backup_key)
    stack.agent.wait_for_log(f"publish of stream {key_id(backup_key)} .* as backup")
    time.sleep(4)  # read, kept ready, not sent
    main.process.kill()
    stack.until_state("backup", timeout=5)
    time.sleep(4)
    back = stack.publish(comeback)
    stack.until_state("live")
    time.sleep(2)
    standby.process.send_signal(signal.SIGINT)  # the backup encoder stops (unpublishes)
    for pictures in finished(stack, back):
        seen = runs(pictures)
        assert [name for name, _ in seen] == ["primary", "backup", "primary"], seen
        assert 3 <= seen[1][1] <= 7, seen
    session = stack.ended()
    assert session["endReason"] == "ended" and session["holdingSeconds"] == 0


def test_back_with_another_resolution_sends_its_sequence_header(e2e, primary, larger):
    stack = Stack(e2e)
    first = stack.publish(primary)
    stack.accepted()
    time.sleep(4)
    first.process.kill()
    stack.until_state("holding", timeout=5)
    time.sleep(2)
    back = stack.publish(larger)
    for pictures in finished(stack, back):
        sizes = [size for _, _, size in pictures]
        assert sorted(set(sizes)) == [(640, 360), (1280, 720)]
        assert sizes[-1] == (1280, 720) and sizes[0] == (640, 360)
    [wire] = stack.wire()
    headers = [t for t in parse_flv(wire).of_type(VIDEO) if t.is_sequence_header]
    assert len(headers) == 3  # the ingest's, the slate's, the larger one's


def test_back_through_another_agent_takes_the_stream_over(e2e, primary, comeback):
    stack = Stack(e2e, agents=2)
    first_agent, second_agent = stack.agents
    first = stack.publish(primary, agent=first_agent)
    stack.accepted(first_agent)
    time.sleep(4)
    first.process.kill()
    stack.until_state("holding", timeout=5)
    # DNS round robin sends the streamer to the other agent: it takes the stream over.
    back = stack.publish(comeback, agent=second_agent)
    stack.accepted(second_agent)
    first_agent.wait_for_log("rig revoked the claim", timeout=10)
    stack.closed(first_agent, timeout=10)
    accepted = next(line for line in second_agent.log().splitlines() if "publish of stream" in line)
    closed = [
        line
        for line in first_agent.log().splitlines()
        if re.search(r"-> \w+ #\d+: stream ended", line)
    ]
    assert len(closed) == 2
    for line in closed:  # the first agent's destinations freed promptly
        assert (log_time(line) - log_time(accepted)).total_seconds() < 3.0, (accepted, line)
    assert back.wait(60) == 0, back.stderr
    stack.closed(second_agent)
    # Each service: the first agent's publish, then the second's (a new publish there;
    # nginx-rtmp refused the second agent until the first had let go, an empty file each).
    assert len(stack.wire()) == 2
    recordings = stack.youtube.recordings(stack.keys["YouTube"])
    assert len([r for r in recordings if r.stat().st_size > 0]) == 2
    pictures, errors = decoded(stack.wire()[1])
    assert errors == 0 and {name for _, name, _ in pictures} == {"primary"}
    sessions = stack.sessions()
    assert [s["endReason"] for s in sessions[:2]] == ["ended", "taken over"]
