"""Whatever a publisher sends reaches the destinations unchanged (bytes, timestamps,
order; checked on the wire with wire_recorder.py, and nginx-rtmp records it), and what
goes wrong on the publisher's side ends there: corrupt video, a second onMetaData,
timestamps that jump, audio first, a publisher that breaks mid-stream."""

import hashlib
import os
import secrets
from datetime import datetime

import pytest

from agent.flv import FlvTagReader, strip_set_data_frame
from agent.rtmp import amf0

from .flvtools import AUDIO, SCRIPT, VIDEO, assert_whole_stream, parse_flv
from .harness import Agent, Receiver, StreamInfo, WireRecorder, dest_keys, key_id
from .rtmp_publisher import SET_DATA_FRAME, Sent, flv_messages, publish

pytestmark = pytest.mark.e2e


def on_the_wire(path) -> list[Sent]:
    """What the wire recorder received: every message as (type, timestamp, body)."""
    return FlvTagReader(64 * 1024 * 1024).feed(path.read_bytes())


def as_recorded(sent: list[Sent]) -> list[Sent]:
    """The recorder writes FLV, which has no @setDataFrame wrapper."""
    return [(t, ts, strip_set_data_frame(body) if t == SCRIPT else body) for t, ts, body in sent]


def wire_and_nginx(e2e) -> tuple[Receiver, WireRecorder, Agent, dict[str, str], StreamInfo]:
    """A stream relayed to nginx-rtmp (YouTube) and to the wire recorder (Kick)."""
    youtube = e2e.receiver("live2")
    kick = e2e.wire_recorder("app")
    rig = e2e.rig(YouTube=youtube.url, Kick=kick.url)
    agent = e2e.agent(rig)
    keys = {"YouTube": f"yt-{secrets.token_hex(6)}", "Kick": f"kick-{secrets.token_hex(6)}"}
    return youtube, kick, agent, keys, e2e.api(rig).stream(keys)


def test_every_message_arrives_unchanged(e2e, media):
    youtube, kick, agent, keys, stream = wire_and_nginx(e2e)

    base = [m for m in flv_messages(media.path) if m[1] < 5000]
    before = [m for m in base if m[1] < 2000]
    after = [m for m in base if m[1] >= 2000]
    # Inserted at 2 s, where the media after them starts: no track's timestamps step
    # back (the agent would send a step back at the track's last timestamp instead).
    corrupt = [(VIDEO, 2000, b"\x27\x01\x00\x00\x00" + os.urandom(4000)) for _ in range(10)]
    corrupt += [(VIDEO, 2000, b"\xff" + os.urandom(4000)) for _ in range(5)]
    extras = [
        (SCRIPT, 2000, amf0.encode("onCuePoint", {"name": "ad-break", "time": 2.0})),
        (SCRIPT, 2000, amf0.encode("onTextData", {"text": "hello"})),
        *corrupt,
        (SCRIPT, 2000, SET_DATA_FRAME + amf0.encode("onMetaData", {"width": 640.0, "n": 2.0})),
    ]
    # A timestamp jump of an hour at 3.5 s (a publisher's clock reset or wrap).
    jumped = [(t, ts + 3_600_000 if ts >= 3500 else ts, body) for t, ts, body in after]
    sent = before + extras + jumped
    # Data that is not script data: counted and held back (nginx-rtmp hangs up on it).
    not_script = (SCRIPT, 2000, b"\x05" + os.urandom(100))
    publish(agent.port, stream.key, [*before, *extras, not_script, *jumped])
    agent.wait_closed(stream)

    [recording] = kick.recordings(keys["Kick"])
    assert on_the_wire(recording) == as_recorded(sent)  # every message, as sent
    # nginx-rtmp recorded the stream too: the media after the corrupt burst arrived.
    nginx = parse_flv(youtube.recording(keys["YouTube"]))
    got = {(tag.type, tag.sha) for tag in nginx.media}
    want = {(t, hashlib.sha256(body).hexdigest()) for t, _, body in jumped if t in (AUDIO, VIDEO)}
    assert want <= got
    assert len(youtube.recordings(keys["YouTube"])) == 1  # one publish, never cut


def log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_a_failed_ingest_then_a_good_one_to_the_same_destination(e2e, media):
    stack = e2e.stack()
    keys = dest_keys()
    # Without disconnect protection (with it, the broken publish would be held for the
    # next one: tests/e2e/test_disconnect.py).
    stream = stack.api.stream(keys, {"enabled": False})
    agent = stack.agent
    messages = [m for m in flv_messages(media.path) if m[1] < 2000]

    # The publisher breaks mid-stream: a chunk on a chunk stream it never opened.
    publish(agent.port, stream.key, messages, garbage=b"\xff" + os.urandom(512))
    agent.wait_closed(stream)
    log = agent.log().splitlines()
    failed = next(line for line in log if "closing RTMP connection" in line)
    closed = [line for line in log if "stream ended, destination closed" in line]
    assert len(closed) == 2
    for line in closed:  # each destination unpublished and closed within a second
        assert (log_time(line) - log_time(failed)).total_seconds() < 1.0, (failed, line)
    assert f"stream {key_id(stream.key)} from" in agent.log()

    # The same key, to the same destinations, at once: accepted there, relayed whole.
    good = e2e.publish(media, agent, stream.key)
    assert good.wait(60) == 0, good.stderr
    agent.wait_for_log("stream ended, destination closed", count=4)
    for receiver, service in ((stack.youtube, "YouTube"), (stack.twitch, "Twitch")):
        _first, second = receiver.recordings(keys[service])
        assert_whole_stream(second, media.flv, media.info)
        assert "already publishing" not in receiver.log()


def test_audio_first(e2e, media):
    """GStreamer's flvmux and ffmpeg -tune zerolatency start with audio."""
    youtube, kick, agent, keys, stream = wire_and_nginx(e2e)

    messages = flv_messages(media.path)
    # The first media message is audio (the AAC sequence header, before the video's).
    first_audio = next(m for m in messages if m[0] == AUDIO)
    sent = [messages[0], first_audio, *(m for m in messages[1:] if m is not first_audio)]
    assert sent[1][0] == AUDIO and sent[2][0] == VIDEO
    publish(agent.port, stream.key, sent)
    agent.wait_closed(stream)

    [recording] = kick.recordings(keys["Kick"])
    assert on_the_wire(recording) == as_recorded(sent)
    assert_whole_stream(youtube.recording(keys["YouTube"]), media.flv, media.info)
    assert " ERROR " not in agent.log()
