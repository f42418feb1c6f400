"""What the heartbeat says about the ingest, measured by the relay: the keyframe interval
of a GOP longer than the heartbeat interval, and of keyframes that stop; the figures of a
destination changed or removed while live, added up over its connections."""

from __future__ import annotations

import pytest

from agent.destination import EgressSettings
from agent.relay import StreamRelay
from agent.rtmp.message import Message
from agent.tags import VIDEO, Kind, classify
from tests.unit.media_samples import picture_flv


def gop_stream(seconds: float, gop_seconds: float, start: float = 0.0) -> list[Message]:
    """30 fps H.264 from `start` for `seconds`, a keyframe every `gop_seconds`: real
    encoded frames, re-timed (the classifier reads their headers, not their pictures)."""
    tags = picture_flv("h264", 320, 240, frames=2, gop=1000)
    header, key, inter = (
        next(t.body for t in tags if classify(t.type_id, t.body).kind is kind)
        for kind in (Kind.SEQUENCE_HEADER, Kind.KEYFRAME, Kind.FRAME)
    )
    out = [Message(VIDEO, 1, round(start * 1000), header)] if start == 0 else []
    per_gop = round(gop_seconds * 30)
    first = round(start * 30)
    for n in range(first, first + round(seconds * 30)):
        body = key if n % per_gop == 0 else inter
        out.append(Message(VIDEO, 1, round(n * 1000 / 30), body))
    return out


def relay() -> StreamRelay:
    relay = StreamRelay("stream test", [], EgressSettings())
    relay.start()
    return relay


def test_a_gop_longer_than_the_heartbeat_interval_is_measured():
    r = relay()
    facts = []
    for window in range(8):  # 5 s heartbeats over 40 s of a 10 s GOP
        r.feed(gop_stream(5, 10, start=5 * window))
        facts.append(r.ingest_facts()["keyframeInterval"])
    assert facts[0] is None  # one keyframe seen: nothing to measure yet
    assert facts[1] is None
    assert facts[2:] == [pytest.approx(10.0, abs=0.05)] * 6
    assert r.ingest_facts()["frameRate"] == 0  # nothing new


def test_a_short_gop_and_keyframes_that_stop():
    r = relay()
    r.feed(gop_stream(5, 2))
    assert r.ingest_facts()["keyframeInterval"] == pytest.approx(2.0, abs=0.05)
    # The encoder stops sending keyframes: the interval grows with the open GOP.
    tail = [
        m for m in gop_stream(20, 100, start=5) if classify(VIDEO, m.payload).kind is Kind.FRAME
    ]
    r.feed(tail[: 5 * 30])  # 5-10 s: the last keyframe was at 4 s
    assert r.ingest_facts()["keyframeInterval"] == pytest.approx(6.0, abs=0.05)
    r.feed(tail[5 * 30 : 15 * 30])
    assert r.ingest_facts()["keyframeInterval"] == pytest.approx(16.0, abs=0.05)
    # Keyframes again, every 2 s: measured as such from the next one on.
    r.feed(gop_stream(6, 2, start=20))
    assert r.ingest_facts()["keyframeInterval"] == pytest.approx((20 - 4 + 2 + 2) / 3, abs=0.05)
    r.feed(gop_stream(6, 2, start=26))
    assert r.ingest_facts()["keyframeInterval"] == pytest.approx(2.0, abs=0.05)
