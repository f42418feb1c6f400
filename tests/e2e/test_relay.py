"""The relay's main promise: one push in, the same stream, unchanged, at every destination."""

import time

import pytest

from .flvtools import assert_whole_stream
from .harness import dest_keys, free_port, key_id

pytestmark = pytest.mark.e2e


def test_both_destinations_receive_the_whole_stream(e2e, media):
    stack = e2e.stack()
    keys = dest_keys()
    stream = stack.api.stream(keys)

    publish = e2e.publish(media, stack.agent, stream.key)
    assert publish.wait(60) == 0, publish.stderr
    stack.agent.wait_closed(stream)

    for receiver, service in ((stack.youtube, "YouTube"), (stack.twitch, "Twitch")):
        assert_whole_stream(receiver.recording(keys[service]), media.flv, media.info)
    # -re: the relay must not slow the publisher down.
    assert publish.wall_time < media.duration + 1.5

    # Secrets never reach a log line: ingest key, destination keys, the agent's API key.
    logs = stack.agent.log() + stack.rig.process.log()
    for secret in [stream.key, *keys.values(), stack.agent.env["RIG_AGENT_KEY"]]:
        assert secret not in logs
    assert f"publish of stream {key_id(stream.key)} from" in stack.agent.log()


def test_refusing_destination_does_not_affect_the_other(e2e, media):
    closed = free_port()  # nothing listens here
    stack = e2e.stack(twitch=f"rtmp://127.0.0.1:{closed}/app")
    keys = dest_keys()
    stream = stack.api.stream(keys)

    publish = e2e.publish(media, stack.agent, stream.key)
    assert publish.wait(60) == 0, publish.stderr
    youtube = stack.agent.destination_pattern(stream, "YouTube")
    stack.agent.wait_for_log(youtube + " stream ended, destination closed")

    assert_whole_stream(stack.youtube.recording(keys["YouTube"]), media.flv, media.info)
    assert publish.wall_time < media.duration + 1.5
    twitch = stack.agent.destination_pattern(stream, "Twitch")
    retry = twitch + rf" cannot connect to rtmp://127\.0\.0\.1:{closed}/app: .*; retrying in"
    # RIG_AGENT_RETRY_MAX is 1 s: an 8 s stream sees many attempts.
    assert stack.agent.count(retry) >= 4, stack.agent.log()
    assert stack.twitch.recordings() == []

    # Once the stream has ended there is nothing left to deliver: the failing
    # destination stops retrying instead of trying forever.
    time.sleep(1.5)
    before = stack.agent.count(retry)
    time.sleep(2.5)
    assert stack.agent.count(retry) == before, "still retrying a destination of an ended stream"


def test_rtmps_destination(e2e, media, tls_cert):
    cert, _key = tls_cert
    youtube = e2e.receiver("live2")
    twitch = e2e.receiver("app")
    tunnel = e2e.stunnel(youtube, tls_cert)
    rig = e2e.rig(YouTube=f"rtmps://127.0.0.1:{tunnel.port}/live2", Twitch=twitch.url)
    trusting = e2e.agent(rig, tls_ca_file=cert)
    untrusting = e2e.agent(rig)  # the system CAs do not know our self-signed certificate
    api = e2e.api(rig)
    keys, other_keys = dest_keys(1), dest_keys(2)
    stream, other = api.stream(keys), api.stream(other_keys)

    good = e2e.publish(media, trusting, stream.key)
    bad = e2e.publish(media, untrusting, other.key)
    assert good.wait(60) == 0, good.stderr
    assert bad.wait(60) == 0, bad.stderr
    trusting.wait_closed(stream)

    assert_whole_stream(youtube.recording(keys["YouTube"]), media.flv, media.info)
    assert_whole_stream(twitch.recording(keys["Twitch"]), media.flv, media.info)
    assert f"live on rtmps://127.0.0.1:{tunnel.port}/live2" in trusting.log()
    # Without the CA the certificate is not trusted: nothing is sent over TLS.
    rejected = untrusting.destination_pattern(other, "YouTube") + " TLS with rtmps://"
    untrusting.wait_for_log(rejected + ".* failed: .*CERTIFICATE_VERIFY_FAILED")
    assert youtube.recordings(other_keys["YouTube"]) == []
    untrusting.wait_closed(other, ("Twitch",))
    assert_whole_stream(twitch.recording(other_keys["Twitch"]), media.flv, media.info)


def test_ten_publishers_at_once(e2e, media):
    stack = e2e.stack()
    all_keys = [dest_keys(n) for n in range(10)]
    streams = [stack.api.stream(keys) for keys in all_keys]

    publishes = [e2e.publish(media, stack.agent, s.key) for s in streams]
    for publish in publishes:
        assert publish.wait(90) == 0, publish.stderr
    for stream in streams:
        stack.agent.wait_closed(stream)

    for keys in all_keys:
        assert_whole_stream(stack.youtube.recording(keys["YouTube"]), media.flv, media.info)
        assert_whole_stream(stack.twitch.recording(keys["Twitch"]), media.flv, media.info)
    assert len(stack.youtube.recordings()) == len(stack.twitch.recordings()) == 10
