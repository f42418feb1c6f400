"""Conformance matrix: real, independent publishers through the agent into real receivers.

Each case publishes a few seconds from a real encoder (ffmpeg 5.1, GStreamer
`rtmp2sink` and `rtmpsink`, FFmpeg 8 through PyAV with Enhanced RTMP codecs) through a
recording proxy to the agent, which relays it to two destinations, each behind a
recording proxy: nginx-rtmp (recording to a file) and an FFmpeg 8 listener (PyAV,
demuxing and decoding). Checks (see `conformance.py` for what each allows):

- on the wire: every message the agent sent each destination is the publisher's,
  same bytes, same timestamp, same order, nothing lost, nothing added;
- nginx-rtmp recorded the publisher's frames (except what nginx-rtmp 1.2.2 cannot
  record: Enhanced RTMP video);
- FFmpeg 8 demuxed the same packets from the destination as from what the publisher
  sent, and they decode as the publisher's do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conformance import (
    assert_joined_late,
    assert_nginx_recording,
    assert_prefix,
    assert_same_demux,
    assert_unchanged,
)
from .conftest import HARNESS, Harness
from .crafted import (
    CraftedPublisher,
    CraftedTag,
    Scenario,
    corrupt_video,
    cue_points_and_text,
    make_base,
    new_sequence_header,
    read_tags,
    second_metadata,
    timestamps_jump,
)
from .flvtools import parse_flv
from .harness import Agent, Api, Receiver, wait_until
from .matrix import PUBLISHERS, Case, Destination, Publisher, StreamFacts
from .pyav_receiver import read_flv
from .rtmp_capture import Message, read_capture, read_flv_messages, write_flv

pytestmark = pytest.mark.e2e


@dataclass
class Relay:
    """rig, one agent and one nginx-rtmp shared by the module's cases."""

    harness: Harness
    agent: Agent
    api: Api
    nginx: Receiver


@pytest.fixture(scope="module")
def relay(e2e_tools, tmp_path_factory, make_database) -> Iterator[Relay]:
    harness = Harness(tmp_path_factory.mktemp("conformance"), make_database)
    try:
        nginx = harness.receiver("app")
        rig = harness.rig()
        agent = harness.agent(rig)
        yield Relay(harness, agent, harness.api(rig), nginx)
    finally:
        harness.close()


class CaseLogs:
    """The module's process logs and the case's, for a failed test's report."""

    def __init__(self, relay: Relay, case: Case) -> None:
        self.relay, self.case = relay, case

    def logs(self) -> str:
        return self.relay.harness.logs() + "\n" + self.case.logs()


@pytest.fixture
def case(relay: Relay, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Case]:
    case = Case(tmp_path, relay.agent, relay.api, relay.nginx)
    request.node.stash[HARNESS] = CaseLogs(relay, case)  # type: ignore[assignment]
    try:
        yield case
    finally:
        case.close()
    assert relay.agent.process.running, "the agent died"


@dataclass
class Checks:
    """Runs every check of a case and reports all failures together (so one run says
    which receivers a defect reaches, not only the first)."""

    failures: list[str] = field(default_factory=list)

    @contextmanager
    def check(self, what: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failures.append(f"[{what}] {exc}")

    def done(self) -> None:
        if self.failures:
            raise AssertionError("\n".join(self.failures))


def check_destinations(
    case: Case,
    sent: list[Message],
    nginx: Destination | None,
    ffmpeg: Destination | None,
    clean: bool = True,
    checks: Checks | None = None,
    nginx_recording: bool = True,
) -> None:
    """Every check of a stream relayed from its start, at both destinations (failures
    gathered in `checks` when given, else raised at the end)."""
    mine = checks is None
    checks = checks or Checks()
    for dest in (d for d in (nginx, ffmpeg) if d is not None):
        with checks.check(f"wire -> {dest.name}"):
            assert_unchanged(sent, dest.only_capture().relayed, f"agent -> {dest.name}")
    if nginx is not None and nginx_recording:
        with checks.check("nginx-rtmp recording"):
            assert_nginx_recording(parse_flv(case.nginx.recording(nginx.key)), sent, "nginx-rtmp")
    if ffmpeg is not None:
        with checks.check("FFmpeg 8 receiver"):
            check_ffmpeg_received(case, sent, ffmpeg, clean)
    if mine:
        checks.done()


def check_ffmpeg_received(
    case: Case, sent: list[Message], ffmpeg: Destination, clean: bool = True
) -> None:
    """What FFmpeg 8's RTMP server received: the publisher's messages, and the same
    packets and decoding for FFmpeg's demuxer and decoders."""
    received = ffmpeg.received()
    messages, truncated = read_flv_messages(received)
    assert not truncated, f"{received.name} ends inside a tag"
    assert_unchanged(sent, messages, "FFmpeg 8's RTMP server")
    reference = read_flv(write_flv(sent, case.root / "sent.flv"))
    assert_same_demux(read_flv(received), reference, "FFmpeg 8 demuxer", clean)


def publish_and_capture(case: Case, argv_for, destinations: list[Destination]) -> list[Message]:
    """Publish through the ingest proxy to a new stream with these destinations; wait
    until everything is delivered; return what the publisher sent."""
    ingest = case.ingest()
    stream = case.stream(destinations)
    publish = case.publish(argv_for(f"{ingest.url('live')}/{stream.key}"))
    assert publish.wait(90) == 0, f"publisher failed: {publish.stderr[-2000:]}"
    case.wait_delivered(destinations)
    captures = [read_capture(path) for path in ingest.upstreams()]
    assert len(captures) == 1, f"{len(captures)} publisher connections"
    capture = captures[0]
    assert "publish" in capture.commands(), capture.commands()
    return capture.relayed


# Every publisher of the matrix, since the byte-for-byte relay of issue 11.
@pytest.mark.parametrize("publisher", PUBLISHERS, ids=lambda p: p.id)
def test_publisher_relayed_unchanged(case: Case, publisher: Publisher) -> None:
    nginx = case.nginx_destination()
    ffmpeg = case.ffmpeg_destination()
    sent = publish_and_capture(case, publisher.argv, [nginx, ffmpeg])
    publisher.check(StreamFacts.of(sent))
    check_destinations(case, sent, nginx, ffmpeg)


# --- Control: the same publishers straight into the receivers, no agent. Proves that
# the checks pass when nothing alters the stream (so a failure above is the agent's),
# and pins what nginx-rtmp records of each stream.


@pytest.mark.parametrize("publisher", PUBLISHERS, ids=lambda p: p.id)
def test_control_publisher_straight_to_receivers(case: Case, publisher: Publisher) -> None:
    nginx = case.nginx_destination()
    ffmpeg = case.ffmpeg_destination()
    to_nginx = case.publish(publisher.argv(f"{nginx.rtmp_url}/{nginx.key}"), "to-nginx")
    to_ffmpeg = case.publish(publisher.argv(f"{ffmpeg.rtmp_url}/{ffmpeg.key}"), "to-ffmpeg")
    for publish in (to_nginx, to_ffmpeg):
        assert publish.wait(90) == 0, f"publisher failed: {publish.stderr[-2000:]}"
    case.wait_delivered([nginx, ffmpeg])
    for dest in (nginx, ffmpeg):
        publisher.check(StreamFacts.of(dest.only_capture().relayed))
    recording = parse_flv(case.nginx.recording(nginx.key))
    assert_nginx_recording(recording, nginx.only_capture().relayed, "nginx-rtmp")
    check_ffmpeg_received(case, ffmpeg.only_capture().relayed, ffmpeg)


# --- Failure cases: crafted streams sent live by FFmpeg's RTMP client (`crafted.py`).


@pytest.fixture(scope="module")
def base(e2e_tools, tmp_path_factory) -> list[CraftedTag]:
    """4 s of 320x240 30 fps H.264 (B-frames, a keyframe a second) + 48 kHz AAC."""
    return read_tags(make_base(tmp_path_factory.mktemp("crafted") / "base.flv", 4))


@pytest.fixture(scope="module")
def scenarios(base: list[CraftedTag], tmp_path_factory) -> dict[str, Scenario]:
    path = tmp_path_factory.mktemp("crafted") / "base640.flv"
    base_640 = read_tags(make_base(path, 2, size="640x360", frequency=880))
    return {
        "corrupt-video": corrupt_video(base),
        "second-onmetadata": second_metadata(base),
        "timestamps-jump": timestamps_jump(base),
        "cue-points-and-text": cue_points_and_text(base),
        "new-sequence-header": new_sequence_header(base, base_640),
    }


SCENARIOS = [
    "corrupt-video",
    "second-onmetadata",
    "timestamps-jump",
    "cue-points-and-text",
    "new-sequence-header",
]


def start_crafted(case: Case, tags: list[CraftedTag], url: str) -> CraftedPublisher:
    """FFmpeg's RTMP client publishing crafted tags live to `url`."""
    publisher = CraftedPublisher(tags, url, case.root / f"crafted-{len(case.crafted)}.err")
    case.crafted.append(publisher)
    return publisher


def publish_crafted(
    case: Case, tags: list[CraftedTag], destinations: list[Destination]
) -> list[Message]:
    """Publish crafted tags through the ingest proxy to a new stream with these
    destinations; wait until it is delivered; return what FFmpeg sent."""
    ingest = case.ingest()
    publisher = start_crafted(case, tags, f"{ingest.url('live')}/{case.stream(destinations).key}")
    assert publisher.wait(60) == 0, f"ffmpeg failed: {publisher.stderr[-2000:]}"
    case.wait_delivered(destinations)
    [capture] = [read_capture(path) for path in ingest.upstreams()]
    return capture.relayed


@pytest.mark.parametrize("name", SCENARIOS)
def test_crafted_stream_relayed_unchanged(
    case: Case, scenarios: dict[str, Scenario], name: str
) -> None:
    """Corrupt video, a second onMetaData, timestamps that jump, cue points and text,
    a new sequence header: each relayed as sent (see crafted.py for each scenario);
    where the scenario says so, a destination that is cut and reconnects resumes right."""
    scenario = scenarios[name]
    nginx, ffmpeg = case.nginx_destination(), case.ffmpeg_destination()
    destinations = [nginx, ffmpeg]
    rejoin = None
    if scenario.rejoin is not None:
        rejoin = case.nginx_destination("rejoin")
        down, up = scenario.rejoin
        threading.Timer(down, rejoin.proxy.drop).start()  # cut, and refused until `up`
        threading.Timer(up, rejoin.proxy.refusing.clear).start()
        destinations.append(rejoin)
    sent = publish_crafted(case, scenario.tags, destinations)
    scenario.check_sent(sent)
    checks = Checks()
    check_destinations(case, sent, nginx, ffmpeg, scenario.clean, checks, scenario.nginx_recording)
    with checks.check("FFmpeg 8 decoding"):
        scenario.check_decoded(read_flv(ffmpeg.received()))
    if rejoin is not None:
        with checks.check("reconnection"):
            captures = rejoin.captures()
            assert len(captures) == 2, f"{len(captures)} connections, want 2 (cut once)"
            assert_prefix(sent, captures[0].relayed, "agent -> rejoin, before the cut")
            joined = assert_joined_late(sent, captures[1].relayed, "agent -> rejoin, after")
            scenario.check_rejoined(sent, joined)
    checks.done()


LATE_SCENARIOS = ["second-onmetadata", "new-sequence-header"]


@pytest.mark.parametrize("name", LATE_SCENARIOS)
def test_late_first_connection_gets_the_whole_stream(
    case: Case, scenarios: dict[str, Scenario], name: str
) -> None:
    """A destination down when the publish starts, up after the configuration changed
    (seconds later, within the queue bounds): its first connection gets the whole
    stream, every onMetaData and sequence header in place, as if it had been there."""
    scenario = scenarios[name]
    assert scenario.late_join_at is not None
    late = case.nginx_destination("late")
    late.proxy.refusing.set()
    threading.Timer(scenario.late_join_at, late.proxy.refusing.clear).start()
    sent = publish_crafted(case, scenario.tags, [late])
    assert late.proxy.refused > 0, "never refused: it did not connect late"
    assert_unchanged(sent, late.only_capture().relayed, "agent -> late first connection")


@pytest.mark.parametrize("name", SCENARIOS)
def test_control_crafted_stream_straight_to_receivers(
    case: Case, scenarios: dict[str, Scenario], name: str
) -> None:
    scenario = scenarios[name]
    nginx, ffmpeg = case.nginx_destination(), case.ffmpeg_destination()
    publishers = [
        start_crafted(case, scenario.tags, f"{dest.rtmp_url}/{dest.key}")
        for dest in (nginx, ffmpeg)
    ]
    for publisher in publishers:
        assert publisher.wait(60) == 0, f"ffmpeg failed: {publisher.stderr[-2000:]}"
    case.wait_delivered([nginx, ffmpeg])
    for dest in (nginx, ffmpeg):
        scenario.check_sent(dest.only_capture().relayed)
    if scenario.nginx_recording:
        recording = parse_flv(case.nginx.recording(nginx.key))
        assert_nginx_recording(recording, nginx.only_capture().relayed, "nginx-rtmp")
    check_ffmpeg_received(case, ffmpeg.only_capture().relayed, ffmpeg, scenario.clean)
    scenario.check_decoded(read_flv(ffmpeg.received()))


# --- A publish that fails, then a good one to the same destination.

AUDIO_FIRST = next(p for p in PUBLISHERS if p.id == "ffmpeg-zerolatency")


@pytest.mark.parametrize("first", ["publisher-killed", "audio-first"])
def test_failed_ingest_then_a_good_one(case: Case, base: list[CraftedTag], first: str) -> None:
    """The first publish ends badly: its encoder is killed mid-stream (the connection
    drops), or it is the audio-first stream (ffmpeg -tune zerolatency) that the first
    relay refused, leaving its destination connections open. The
    agent must close that publish's destination connection (issue 11, item 5: within a
    second; allowed 3 s here, on a shared machine) and relay the next publish of the
    same key to the same destination, unchanged. nginx-rtmp refuses a second publisher
    of a name still publishing, so a leaked connection shows at once."""
    nginx = case.nginx_destination()
    ingest = case.ingest()
    # Without disconnect protection (with it, the killed publish is held for the next
    # one: tests/e2e/test_disconnect.py).
    url = f"{ingest.url('live')}/{case.stream([nginx], {'enabled': False}).key}"
    tags = base
    if first == "publisher-killed":
        killed = start_crafted(case, tags, url)
        wait_until(lambda: nginx.proxy.connections > 0, 10, "the agent to reach nginx")
        time.sleep(max(0.0, killed.started + 1.5 - time.monotonic()))
        killed.kill()
    else:
        audio_first = case.publish(AUDIO_FIRST.argv(url), "audio-first")
        audio_first.wait(60)  # its exit status is the agent's to decide: not checked here
    ended = time.monotonic()

    def first_closed() -> bool:
        return nginx.proxy.connections > 0 and nginx.proxy.active == 0

    wait_until(first_closed, 10, "the agent to close the failed publish's destination")
    closing = time.monotonic() - ended
    checks = Checks()
    with checks.check("closed in time"):
        assert closing < 3.0, f"the destination connection closed {closing:.1f} s after the end"
    with checks.check("the failed publish"):
        first_sent = read_capture(ingest.upstream(1)).relayed
        first_arrived = nginx.only_capture().relayed
        if first == "publisher-killed":
            assert_prefix(first_sent, first_arrived, "agent -> nginx, killed publish")
        else:
            assert_unchanged(first_sent, first_arrived, "agent -> nginx, audio-first publish")

    good = start_crafted(case, tags, url)
    assert good.wait(60) == 0, f"the good publish failed: {good.stderr[-2000:]}"
    wait_until(lambda: nginx.proxy.connections > 1 and nginx.proxy.active == 0, 15, "delivery")
    sent = read_capture(ingest.upstream(2)).relayed
    captures = nginx.captures()
    with checks.check("the good publish"):
        assert len(captures) == 2, f"the agent connected {len(captures)} times to nginx"
        assert_unchanged(sent, captures[1].relayed, "agent -> nginx, the good publish")
        recording = parse_flv(case.nginx.recordings(nginx.key)[-1])
        assert_nginx_recording(recording, sent, "nginx-rtmp, the good publish")
    checks.done()
