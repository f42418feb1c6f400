"""The switching logic of a broadcast (agent/broadcast.py), sans-I/O on a simulated clock.

Publishers are real encoded H.264/AAC streams: a card of their own (the slate encoder's
output with another text), played in real time with rising timestamps from each
publisher's own clock. The output records what the relay would send, with the
timeline's timestamps, and which source each message came from (each publisher's
messages carry a message stream id of its own; the slate's is SLATE_STREAM_ID).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import pytest

from agent.broadcast import BACKUP, HOLDING, LIVE, ON_BACKUP, PRIMARY, Broadcast, Protection
from agent.media_facts import AudioFacts, VideoFacts
from agent.rtmp.message import Message
from agent.slate import SLATE_STREAM_ID, Slate, SlateLoop, encode_slate
from agent.standby import AUDIO_ONLY_AFTER_MS, Standby
from agent.tags import AUDIO, VIDEO, Kind, classify
from agent.timeline import Timeline

SMALL = VideoFacts("h264", 320, 180, Fraction(25), "yuv420p", "High", "3.0")
LARGER = VideoFacts("h264", 480, 270, Fraction(25), "yuv420p", "High", "3.0")
AAC = AudioFacts("aac", 48000, 2, "stereo", "LC")
STEP_MS = 40  # 25 fps
PROTECTED = Protection(True, 10)


@functools.cache
def card(text: str, video: VideoFacts | None = SMALL, audio: AudioFacts | None = AAC) -> Slate:
    return encode_slate(video, audio, text=text, subtext="")


def kind(message: Message) -> Kind:
    return classify(message.type_id, message.payload).kind


class Output:
    """What the relay does with a broadcast's messages, recorded: placed on the timeline,
    tagged with the source whose body it is (by the bodies each card is made of)."""

    def __init__(self, facts_known: bool = True) -> None:
        self.timeline = Timeline(step_ms=STEP_MS)
        self.has_video = False
        self.sent: list[tuple[int, int, str, Kind]] = []  # (type, timestamp, source, kind)
        self.new_sources = 0
        self._configuration: dict[tuple[int, Kind], Message] = {}
        self._known = facts_known
        self.names_of: dict[int, str] = {SLATE_STREAM_ID: "slate"}  # by message stream id

    def feed(self, messages: list[Message], now: float | None = None) -> None:
        for message in messages:
            k = kind(message)
            ts = self.timeline.place(message.type_id, message.timestamp, now or 0.0)
            name = self.names_of[message.stream_id]
            self.sent.append((message.type_id, ts, name, k))
            if message.type_id == VIDEO:
                self.has_video = True
            if k is Kind.SEQUENCE_HEADER:
                self._configuration[(message.type_id, k)] = message

    def feed_slate(self, messages: list[Message], now: float) -> None:
        self.feed(messages, now)

    def new_source(self, slate: bool = False) -> None:
        self.new_sources += 1
        self._configuration.clear()

    def configuration(self) -> list[Message]:
        return list(self._configuration.values())

    def slate_facts(self) -> tuple[VideoFacts | None, AudioFacts | None]:
        return SMALL, AAC

    def facts_known(self) -> bool:
        return self._known

    def names(self) -> list[str]:
        """The sources in the order they fed the output (runs collapsed)."""
        runs: list[str] = []
        for _, _, name, k in self.sent:
            if k in (Kind.KEYFRAME, Kind.FRAME) and (not runs or runs[-1] != name):
                runs.append(name)
        return runs


class Slates:
    """The slate cache: the real slate, ready at once or only once `ready` is set."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.requests: list[tuple] = []

    def request(self, video: VideoFacts | None, audio: AudioFacts | None) -> None:
        self.requests.append((video, audio))

    def get(self, video: VideoFacts | None, audio: AudioFacts | None) -> Slate | None:
        return card("We'll be right back") if self.ready else None


class Publisher:
    """A card played in real time from the moment it joins; its own clock starts at
    `clock_ms` (OBS starts every connection at 0, another encoder anywhere)."""

    def __init__(self, slate: Slate, now: float, clock_ms: int, stream_id: int) -> None:
        self.loop = SlateLoop(slate, start=now)
        self.clock_ms = clock_ms
        self.stream_id = stream_id

    def due(self, now: float) -> list[Message]:
        return [
            Message(m.type_id, self.stream_id, m.timestamp + self.clock_ms, m.payload)
            for m in self.loop.due(now)
        ]


class Harness:
    """A broadcast, its output, and publishers playing on a simulated clock."""

    def __init__(self, protection: Protection = PROTECTED, **output: bool) -> None:
        self.output = Output(**output)
        self.slates = Slates()
        self.states: list[str] = []
        self.ended: list[str] = []
        self.broadcast = Broadcast(
            self.output, self.slates, protection, self.states.append, self.ended.append
        )
        self.now = 100.0
        self.playing: dict[object, Publisher] = {}

    def publisher(self, name: str, role: str = PRIMARY, video: VideoFacts = SMALL, clock=0.0):
        """A publisher joins with its own card; its clock starts at `clock` seconds."""
        stream_id = 10 + len(self.output.names_of)
        self.output.names_of[stream_id] = name
        source = self.broadcast.join(role, f"key-{role}", self.now)
        self.playing[source] = Publisher(
            card(name, video), self.now, round(clock * 1000), stream_id
        )
        return source

    def run(self, seconds: float, stalled: tuple = (), dt: float = 0.05) -> None:
        """Time passes: every playing publisher sends what is due (those in `stalled` send
        nothing), the broadcast ticks."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += dt
            for source, loop in list(self.playing.items()):
                messages = loop.due(self.now)
                if source in stalled:
                    continue
                if messages:
                    source.feed(messages, self.now)
            self.broadcast.tick(self.now)

    def drop(self, source, cause: str = "connection lost") -> None:
        del self.playing[source]
        self.broadcast.gone(source, self.now, cause)

    def holding(self, live: float, held: float) -> None:
        """Publisher A plays for `live` seconds, drops, and the broadcast holds `held`."""
        a = self.publisher("A")
        self.run(live)
        self.drop(a)
        self.run(held)

    def assert_continuous(self, max_hole_ms: int = 1000) -> None:
        """No timestamp goes back on any track; no hole over `max_hole_ms` between two
        consecutive messages of the video track."""
        last: dict[int, int] = {}
        for type_id, ts, _, _ in self.output.sent:
            assert ts >= last.get(type_id, 0), f"type {type_id} went back to {ts}"
            if type_id == VIDEO and type_id in last:
                assert ts - last[type_id] <= max_hole_ms, f"a hole before {ts}"
            last[type_id] = ts


def test_the_first_publisher_is_relayed_with_its_own_timestamps():
    h = Harness()
    h.publisher("A", clock=7.0)  # its clock starts at 7 s
    h.run(1.0)
    sent = h.output.sent
    assert sent[0][1] == 7000  # headers, then the keyframe at the publisher's own time
    assert [k for _, _, _, k in sent[:3]] == [Kind.SEQUENCE_HEADER] * 2 + [Kind.KEYFRAME]
    assert {name for _, _, name, _ in sent} == {"A"}
    assert h.broadcast.state == LIVE and h.states == []
    h.assert_continuous()


def test_a_dropped_publisher_is_held_with_the_slate_until_it_comes_back():
    h = Harness()
    a = h.publisher("A")
    h.run(3.0)
    h.drop(a)
    assert h.broadcast.state == HOLDING and h.states == [HOLDING]
    h.run(6.0)  # six seconds of slate
    slate_frames = [m for m in h.output.sent if m[2] == "slate" and m[0] == VIDEO]
    assert 6 * 25 - 2 <= len(slate_frames) <= 6 * 25 + 2
    assert slate_frames[0][3] is Kind.SEQUENCE_HEADER  # its own headers first
    # Back on a new connection, its clock at 0 again: it takes over at its keyframe.
    h.publisher("A again")
    h.run(2.0)
    assert h.broadcast.state == LIVE and h.states == [HOLDING, LIVE]
    assert h.output.names() == ["A", "slate", "A again"]
    back = next(i for i, m in enumerate(h.output.sent) if m[2] == "A again")
    assert [m[3] for m in h.output.sent[back : back + 3]] == [
        Kind.SEQUENCE_HEADER,
        Kind.SEQUENCE_HEADER,
        Kind.KEYFRAME,
    ]
    h.assert_continuous(max_hole_ms=2 * STEP_MS)
    assert h.broadcast.held_for(h.now) == pytest.approx(6.0, abs=0.1)
    assert h.ended == []


def test_the_grace_running_out_ends_the_broadcast():
    h = Harness(Protection(True, 4))
    a = h.publisher("A")
    h.run(1.0)
    h.drop(a)
    h.run(3.9)
    assert h.ended == []
    h.run(0.2)
    assert h.ended == ["grace expired"]
    sent = len(h.output.sent)
    h.run(1.0)
    assert len(h.output.sent) == sent  # nothing after the end


@pytest.mark.parametrize("protection", [Protection(False, 30), Protection(True, 0)])
def test_without_protection_a_dropped_publisher_ends_the_broadcast_at_once(protection):
    h = Harness(protection)
    a = h.publisher("A")
    h.run(1.0)
    h.drop(a, "connection lost")
    assert h.ended == ["connection lost"]
    assert "slate" not in h.output.names()


def test_a_deliberate_stop_ends_at_once_even_with_protection():
    h = Harness()
    a = h.publisher("A")
    h.run(1.0)
    h.broadcast.unpublished(a, h.now, "FCUnpublish")
    assert h.ended == ["FCUnpublish"] and h.states == []


def test_a_stalled_publisher_is_held_and_takes_back_over_at_its_next_keyframe():
    h = Harness()
    a = h.publisher("A")
    h.run(1.0)
    h.run(2.0, stalled=(a,))  # sends nothing for two seconds
    h.broadcast.stalled(a, h.now)
    assert h.broadcast.state == HOLDING
    # The slate caught up the two seconds: no hole in the timestamps.
    h.assert_continuous(max_hole_ms=2 * STEP_MS)
    # Its data resumes mid-GOP: not before its next keyframe (2 s GOP).
    h.run(0.5)
    assert h.broadcast.state == HOLDING
    h.run(2.0)
    assert h.broadcast.state == LIVE
    assert h.output.names() == ["A", "slate", "A"]
    resumed = next(
        i for i, m in enumerate(h.output.sent) if i > 0 and m[2] == "A" and m[3] is Kind.KEYFRAME
    )
    assert resumed > 0
    h.assert_continuous(max_hole_ms=2 * STEP_MS)


def test_a_stall_without_protection_changes_nothing():
    h = Harness(Protection(False, 0))
    a = h.publisher("A")
    h.run(1.0)
    h.broadcast.stalled(a, h.now)
    assert h.broadcast.state == LIVE and h.ended == []
    h.run(1.0)
    assert h.output.names() == ["A"]


def test_a_backup_waits_takes_over_at_once_and_hands_back_to_the_primary():
    h = Harness()
    primary = h.publisher("P")
    h.run(1.0)
    backup = h.publisher("B", BACKUP, clock=500.0)  # another encoder: another clock
    h.run(3.0)
    assert h.output.names() == ["P"]  # read, kept ready, not sent
    h.drop(primary)
    # At once, from the backup's cached keyframe, without a slate.
    assert h.broadcast.state == ON_BACKUP and h.states == [ON_BACKUP]
    h.run(2.0)
    assert h.output.names() == ["P", "B"]
    h.publisher("P again")
    h.run(0.5)
    assert h.broadcast.state == LIVE and h.states == [ON_BACKUP, LIVE]
    h.run(2.5)
    assert h.output.names() == ["P", "B", "P again"]
    # The backup waits again; when the primary drops once more it takes over with its
    # sequence headers (sent once on its connection, kept while it fed).
    h.drop(next(s for s in h.playing if s is not backup))
    h.run(0.5)
    assert h.output.names() == ["P", "B", "P again", "B"]
    sent = h.output.sent
    last_p = max(i for i, m in enumerate(sent) if m[2] == "P again")
    assert [m[2:] for m in sent[last_p + 1 : last_p + 4]] == [
        ("B", Kind.SEQUENCE_HEADER),
        ("B", Kind.SEQUENCE_HEADER),
        ("B", Kind.KEYFRAME),
    ]
    h.assert_continuous(max_hole_ms=2 * STEP_MS)
    assert h.ended == []


def test_the_backup_dropping_while_it_feeds_holds_the_broadcast():
    h = Harness()
    primary = h.publisher("P")
    backup = h.publisher("B", BACKUP)
    h.run(2.5)
    h.drop(primary)
    h.run(1.0)
    h.drop(backup)
    assert h.broadcast.state == HOLDING
    h.run(1.0)
    assert h.output.names() == ["P", "B", "slate"]


def test_a_deliberate_stop_of_the_primary_hands_over_to_a_ready_backup():
    h = Harness()
    primary = h.publisher("P")
    h.publisher("B", BACKUP)
    h.run(2.5)
    h.broadcast.unpublished(primary, h.now, "FCUnpublish")
    h.run(0.5)
    assert h.ended == [] and h.output.names() == ["P", "B"]


def test_a_new_resolution_on_return_comes_with_its_own_sequence_header():
    h = Harness()
    a = h.publisher("A")
    h.run(1.0)
    h.drop(a)
    h.run(1.0)
    h.publisher("A larger", video=LARGER)
    h.run(1.0)
    headers = [m for m in h.output.sent if m[3] is Kind.SEQUENCE_HEADER and m[0] == VIDEO]
    assert [m[2] for m in headers] == ["A", "slate", "A larger"]


def test_a_slate_encoded_late_starts_where_the_timeline_stopped():
    h = Harness()
    h.slates.ready = False
    h.holding(1.0, 1.5)
    assert "slate" not in h.output.names()
    h.slates.ready = True
    h.run(0.5)
    assert h.output.names() == ["A", "slate"]
    h.assert_continuous(max_hole_ms=2 * STEP_MS)  # the 1.5 s were caught up


def test_protection_turned_off_while_holding_ends_the_broadcast():
    h = Harness()
    h.holding(1.0, 1.0)
    h.broadcast.set_protection(Protection(False, 30), h.now)
    assert h.ended == ["grace expired"]


def test_a_shorter_grace_while_holding_applies_at_once():
    h = Harness(Protection(True, 60))
    h.holding(1.0, 5.0)
    h.broadcast.set_protection(Protection(True, 3), h.now)
    assert h.ended == ["grace expired"]


def test_the_slate_is_asked_for_once_the_facts_are_known():
    h = Harness(facts_known=False)
    h.publisher("A")
    h.broadcast.prepare()
    assert h.slates.requests == []
    h.output._known = True
    h.broadcast.prepare()
    h.broadcast.prepare()
    assert h.slates.requests == [(SMALL, AAC)]


def test_protection_of_rig_answers():
    assert Protection.of({"enabled": True, "graceSeconds": 30}) == Protection(True, 30.0)
    assert Protection.of({"enabled": "yes", "graceSeconds": 30}) is None
    assert Protection.of(None) is None
    assert not Protection(True, 0).holds and Protection(True, 1).holds


# ------------------------------------------------------------------ the standby buffer


def test_a_standby_starts_at_a_keyframe_with_the_configuration_stamped_there():
    loop = SlateLoop(card("S"), start=0.0)
    standby = Standby(max_bytes=1 << 20, max_ms=10_000)
    first = loop.due(0.5)  # headers, keyframe, half a GOP
    standby.add(first)
    assert standby.ready(expect_video=True) and standby.keyframe_at == 0
    standby.add(loop.due(2.5))  # past the next keyframe at 2 s
    messages, at = standby.take()
    assert at == 2000
    assert [kind(m) for m in messages[:3]] == [Kind.SEQUENCE_HEADER] * 2 + [Kind.KEYFRAME]
    assert {m.timestamp for m in messages[:2]} == {2000}
    assert not standby.ready(expect_video=True)


def test_a_standby_gop_beyond_the_bounds_waits_for_the_next_keyframe():
    loop = SlateLoop(card("S"), start=0.0)
    standby = Standby(max_bytes=1 << 20, max_ms=1000)
    standby.add(loop.due(1.5))
    assert not standby.ready(expect_video=True)
    standby.add(loop.due(2.1))
    assert standby.ready(expect_video=True) and standby.keyframe_at == 2000


def test_an_audio_only_standby_is_ready_at_once_or_after_a_while():
    loop = SlateLoop(card("S", video=None), start=0.0)
    standby = Standby(max_bytes=1 << 20, max_ms=10_000)
    standby.add(loop.due(0.1))
    assert standby.ready(expect_video=False)
    assert not standby.ready(expect_video=True)  # a camera may still come
    standby.add(loop.due(AUDIO_ONLY_AFTER_MS / 1000 + 0.1))
    assert standby.ready(expect_video=True)
    messages, _ = standby.take()
    assert [m.type_id for m in messages] == [AUDIO, AUDIO]  # header, latest frame
