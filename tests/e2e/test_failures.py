"""What goes wrong around the relay: refused publishes, destinations that die or stall,
malformed input, and the agent being stopped mid-stream."""

import asyncio
import os
import secrets
import signal
import socket
import time

import asyncpg
import pytest

from agent.rtmp import ClientHandshake

from .flvtools import (
    SCRIPT,
    VIDEO,
    assert_codec_headers,
    assert_contiguous_run,
    assert_prefix,
    assert_whole_stream,
    frame_keys,
    parse_flv,
)
from .harness import Agent, Publish, dest_keys, key_id, wait_until

pytestmark = pytest.mark.e2e


async def deactivate(database_url: str, stream_id: str) -> None:
    """There is no API for it yet: switch a stream off in the database."""
    conn = await asyncpg.connect(database_url)
    try:
        status = await conn.execute(
            "UPDATE streams SET is_active = false WHERE id = $1::uuid", stream_id
        )
    finally:
        await conn.close()
    assert status == "UPDATE 1"


def test_refused_publishes_relay_nothing(e2e, media):
    stack = e2e.stack()
    keys = dest_keys()
    stream = stack.api.stream(keys)
    inactive_keys = dest_keys(1)
    inactive = stack.api.stream(inactive_keys)
    asyncio.run(deactivate(stack.rig.database_url, inactive.id))
    wrong_key = secrets.token_urlsafe(16)
    agent = stack.agent

    def refused(key: str, reason: str) -> None:
        started = time.monotonic()
        publish = e2e.publish(media, agent, key)
        assert publish.wait(30) != 0, f"publish with {reason} succeeded"
        # Refused at `publish`, before any media: not after playing the file.
        assert time.monotonic() - started < media.duration - 2, publish.stderr
        agent.wait_for_log(rf"refused publish of stream {key_id(key)} from .*: {reason}")

    refused(wrong_key, "unknown or inactive key")
    refused(inactive.key, "unknown or inactive key")
    stack.rig.process.stop()
    refused(stream.key, "rig unreachable")

    assert agent.process.running
    assert stack.youtube.recordings() == []
    assert stack.twitch.recordings() == []
    assert "publish: name=" not in stack.youtube.log() + stack.twitch.log()
    log = agent.log()
    assert agent.count(r"publish of stream \w+ from .* accepted") == 0
    secrets_ = [wrong_key, stream.key, inactive.key, *keys.values(), *inactive_keys.values()]
    leaked = [s for s in secrets_ if s in log]
    assert not leaked, "the agent log contains stream keys"


def test_destinations_killed_and_restarted_mid_stream(e2e, long_media):
    """Twitch (nginx) and Kick (a wire-exact recorder) crash at 5 s and come back at 8 s;
    YouTube stays up. nginx's recorder skips video up to a keyframe by itself, so what the
    agent really resumes with is checked on the wire recorder."""
    media = long_media
    youtube = e2e.receiver("live2")
    twitch = e2e.receiver("app")
    kick = e2e.wire_recorder("app")
    rig = e2e.rig(YouTube=youtube.url, Twitch=twitch.url, Kick=kick.url)
    agent = e2e.agent(rig)
    keys = {**dest_keys(), "Kick": f"kick-{secrets.token_hex(6)}"}
    stream = e2e.api(rig).stream(keys)
    logs = {service: agent.destination_pattern(stream, service) for service in keys}

    publish = e2e.publish(media, agent, stream.key)
    for service in keys:
        agent.wait_for_log(logs[service] + " live on")
    time.sleep(max(0.0, publish.started + 5 - time.monotonic()))
    twitch.kill()
    kick.kill()
    time.sleep(max(0.0, publish.started + 8 - time.monotonic()))
    twitch.start()  # same port, new process: a new recording
    kick.start()
    assert publish.wait(60) == 0, publish.stderr
    agent.wait_closed(stream)

    # The destination that stayed up did not notice.
    assert_whole_stream(youtube.recording(keys["YouTube"]), media.flv, media.info)
    assert publish.wall_time < media.duration + 1.5

    for service, recordings in (
        ("Twitch", twitch.recordings(keys["Twitch"])),
        ("Kick", kick.recordings(keys["Kick"])),
    ):
        assert len(recordings) == 2, f"{service}: {recordings}"
        before, after = (parse_flv(path) for path in recordings)
        # Up to the crash: the start of the stream, unchanged (possibly cut inside a tag).
        assert assert_prefix(before, media.flv) >= 3000, service
        # After the restart: the rest of the stream from a keyframe to its very end,
        # bytes and timestamps unchanged.
        start, end = assert_contiguous_run(after, media.flv)
        assert 5000 <= start <= 11000, f"{service} resumed at {start} ms"
        assert end == frame_keys(media.flv, VIDEO)[-1][1], service
        assert agent.count(logs[service] + " live on") == 2, service
        assert agent.count(logs[service] + r" .*; retrying in") >= 1, service

    # On the wire: a fresh muxer sends the codec headers first, then a video keyframe
    # (nothing of the interrupted GOP, no audio from before the keyframe).
    resumed = parse_flv(kick.recordings(keys["Kick"])[1])
    media_tags = resumed.media
    assert {t.type for t in media_tags[:2]} == {8, 9}, media_tags[:3]
    assert all(t.is_sequence_header for t in media_tags[:2]), media_tags[:3]
    assert media_tags[2].is_keyframe, media_tags[:3]
    assert resumed.tags[0].type == SCRIPT  # metadata first


def sample_memory(agent: Agent, publish: Publish) -> int:
    """The agent's largest PSS (kB) while `publish` runs; records its end time."""
    peak = 0
    while publish.process.poll() is None:
        peak = max(peak, agent.memory_kb())
        time.sleep(0.05)
    publish.wait()
    return peak


def test_stalled_destination_does_not_slow_the_stream(e2e, heavy_media):
    media = heavy_media
    youtube = e2e.receiver("live2")
    stuck = e2e.stuck_receiver()
    rig = e2e.rig(YouTube=youtube.url, Twitch=stuck.url("app"))
    # A small queue bound: the stalled destination's queue overflows and drops GOPs.
    agent = e2e.agent(rig, write_timeout=2, queue_seconds=3)
    api = e2e.api(rig)
    baseline = api.stream({"YouTube": "yt-baseline"})
    keys = dest_keys()
    stream = api.stream(keys)

    # Baseline: the same agent, one healthy destination.
    first = e2e.publish(media, agent, baseline.key)
    baseline_memory = sample_memory(agent, first)
    assert first.returncode == 0, first.stderr
    agent.wait_closed(baseline)

    # Now with a destination that accepts the publish, then stops reading.
    second = e2e.publish(media, agent, stream.key)
    peak_memory = sample_memory(agent, second)
    assert second.returncode == 0, second.stderr
    agent.wait_closed(stream, ("YouTube",))

    assert_whole_stream(youtube.recording(keys["YouTube"]), media.flv, media.info)
    assert stuck.publishes >= 1
    stalled = agent.destination_pattern(stream, "Twitch")
    assert agent.count(stalled + r" .*stopped reading \(write timed out\); retrying") >= 1
    # The ingest kept real time: no slower than the baseline, nor than the media itself.
    assert second.wall_time < first.wall_time + 1.0
    assert second.wall_time < media.duration + 1.5
    assert peak_memory < 400 * 1024, f"agent PSS {peak_memory} kB"
    # The stalled queue is bounded (3 s, about 4.5 MB of this stream), so is the agent.
    growth = peak_memory - baseline_memory
    assert growth < 32 * 1024, f"PSS {baseline_memory} -> {peak_memory} kB"


def expect_closed(sock: socket.socket, timeout: float) -> None:
    """The peer closes the connection within `timeout` s (whatever it sent before)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return
    except ConnectionResetError:
        return
    except TimeoutError:
        pass
    raise AssertionError("the agent kept a malformed connection open")


def handshaken(port: int) -> socket.socket:
    """A connection that completed a valid RTMP handshake."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        handshake = ClientHandshake()
        sock.sendall(handshake.start())
        while not handshake.done:
            data = sock.recv(65536)
            assert data, "agent closed during the handshake"
            reply = handshake.feed(data)
            if reply:
                sock.sendall(reply)
    except BaseException:
        sock.close()
        raise
    return sock


def test_malformed_input_closes_only_that_connection(e2e, media):
    stack = e2e.stack(handshake_timeout=3)
    keys = dest_keys()
    stream = stack.api.stream(keys)
    agent = stack.agent

    publish = e2e.publish(media, agent, stream.key)
    agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")
    time.sleep(1)

    bad: list[socket.socket] = []
    try:
        for _ in range(5):  # not RTMP at all
            sock = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
            sock.sendall(b"\x7f" + os.urandom(4096))
            bad.append(sock)
        garbage = [
            b"\xc5" + os.urandom(512),  # a continuation chunk on a chunk stream never opened
            b"\x03" + bytes(3) + b"\xff\xff\xff\x14" + bytes(4),  # a 16 MiB message
            os.urandom(8192),  # anything
        ]
        for data in garbage:
            sock = handshaken(agent.port)
            sock.sendall(data)
            bad.append(sock)
        ports = [sock.getsockname()[1] for sock in bad]
        for sock in bad:
            expect_closed(sock, timeout=6)
    finally:
        for sock in bad:
            sock.close()
    for port in ports:
        assert f"closing RTMP connection from 127.0.0.1:{port}:" in agent.log()

    assert publish.wait(60) == 0, publish.stderr
    agent.wait_closed(stream)
    assert_whole_stream(stack.youtube.recording(keys["YouTube"]), media.flv, media.info)
    assert_whole_stream(stack.twitch.recording(keys["Twitch"]), media.flv, media.info)
    assert agent.process.running


def test_sigterm_ends_the_stream_cleanly(e2e, long_media):
    stack = e2e.stack()
    keys = dest_keys()
    stream = stack.api.stream(keys)
    agent = stack.agent

    publish = e2e.publish(long_media, agent, stream.key)
    for service in ("YouTube", "Twitch"):
        agent.wait_for_log(agent.destination_pattern(stream, service) + " live on")
    time.sleep(max(0.0, publish.started + 5 - time.monotonic()))
    signalled = time.monotonic()
    agent.process.signal(signal.SIGTERM)
    assert agent.process.wait(10) == 0, agent.log()
    assert time.monotonic() - signalled < 5.0
    published_ms = (signalled - publish.started) * 1000
    wait_until(lambda: publish.returncode is not None, 10, "ffmpeg to notice the agent left")

    agent.wait_closed(stream, timeout=0)
    assert "agent stopped" in agent.log()
    assert f"stream {key_id(stream.key)} from 127.0.0.1" in agent.log()
    assert "ended: shutdown" in agent.log() and "kicked" not in agent.log()
    # rig was told why (docs/agent-protocol.md#release): the session ended as a shutdown,
    # offline at once.
    [session] = stack.api.call("GET", f"/streams/{stream.id}/sessions")
    assert session["endReason"] == "shutdown", session
    assert not stack.api.call("GET", f"/streams/{stream.id}")["isStreaming"]
    for receiver, service in ((stack.youtube, "YouTube"), (stack.twitch, "Twitch")):
        recording = parse_flv(receiver.recording(keys[service]))
        assert not recording.truncated
        assert_codec_headers(recording, long_media.flv)
        last = assert_prefix(recording, long_media.flv)
        # Everything published up to the signal was delivered (ffmpeg -re: media time
        # runs with wall time from the publish's start).
        assert published_ms - 2000 <= last <= published_ms + 500, (last, published_ms)
