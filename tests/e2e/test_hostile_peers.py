"""Peers that send what should never be trusted (issue 12, items 1 and 6): real processes.

A destination answers with 100 KB of CR, LF, NUL, terminal escapes and forged log lines
(as its onStatus code and description, or as its createStream answer); publishers send
such text as their application name and commands. The streams stay live (heartbeats
carry bounded health, so rig keeps renewing every claim), nothing of it reaches
lastError, and the agent's log has it escaped and cut short: no forged line, no NUL.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.rtmp import ClientHandshake, ClientSession, PublishRefused
from agent.rtmp import message as msg
from agent.rtmp.amf0 import encode
from agent.rtmp.chunk import ChunkWriter

from .harness import Process, dest_keys, free_port, wait_until

pytestmark = pytest.mark.e2e

HOSTILE_SCRIPT = Path(__file__).with_name("hostile_receiver.py")
FORGED = "FORGED-LOG-LINE"  # the logger name of the lines peers try to forge
# A claim lives 3 s without a heartbeat here: a failed heartbeat shows at once.
FAST_CLAIMS = {"RIG_CLAIM_TTL": "3"}


def hostile_receiver(root: Path, mode: str) -> tuple[Process, int]:
    port = free_port()
    process = Process(
        f"hostile-{mode}",
        [sys.executable, str(HOSTILE_SCRIPT), str(port), mode, FORGED],
        root / f"hostile-{mode}.log",
    )
    process.start()
    process.wait_for_port(port)
    return process, port


def assert_log_is_safe(log: bytes) -> None:
    """No NUL, no escape sequence, no forged line, no line longer than a few hundred
    characters: whatever the peers sent."""
    assert b"\x00" not in log
    assert b"\x1b" not in log
    assert "\u2028".encode() not in log
    text = log.decode()
    lines = text.splitlines()
    forged = [line for line in lines if re.match(rf"\S+ \S+ ERROR agent\.{FORGED}", line)]
    assert not forged, forged[:3]
    longest = max(lines, key=len)
    assert len(longest) < 1000, longest[:300]


def test_a_hostile_destination_fails_only_itself(e2e, long_media):
    youtube = e2e.receiver("live2")
    status, status_port = hostile_receiver(e2e.root, "status")
    stream_id, stream_id_port = hostile_receiver(e2e.root, "stream-id")
    try:
        rig = e2e.rig(
            env=FAST_CLAIMS,
            YouTube=youtube.url,
            Twitch=f"rtmp://127.0.0.1:{status_port}/app",
            Kick=f"rtmp://127.0.0.1:{stream_id_port}/app",
        )
        agent = e2e.agent(rig, heartbeat_interval=1)
        api = e2e.api(rig)
        keys = {**dest_keys(), "Kick": f"kick-{secrets.token_hex(6)}"}
        stream = api.stream(keys)
        bystander_keys = dest_keys(1)
        bystander = api.stream({"YouTube": bystander_keys["YouTube"]})
        publishes = [
            e2e.publish(long_media, agent, stream.key),
            e2e.publish(long_media, agent, bystander.key),
        ]
        for service in ("Twitch", "Kick"):
            agent.wait_for_log(agent.destination_pattern(stream, service) + ".*retrying", 2)
        # Longer than a claim lives: only heartbeats that rig takes keep the streams live.
        time.sleep(5)
        for s in (stream, bystander):
            detail = api.call("GET", f"/streams/{s.id}")
            assert detail["isStreaming"], f"stream {s.id} went offline"
        stats = api.call("GET", f"/streams/{stream.id}/stats")
        by_service = {d["service"]: d for d in stats["destinations"]}
        assert by_service["YouTube"]["state"] == "live"
        for service in ("Twitch", "Kick"):
            dest = by_service[service]
            assert dest["state"] in ("backoff", "connecting"), dest
            error = dest["lastError"]
            assert error and len(error) <= 200 and error.isprintable(), error
            assert FORGED not in error and "hacked" not in error, error
        assert "refused the publish" in by_service["Twitch"]["lastError"]
        assert "broke the protocol" in by_service["Kick"]["lastError"]
        for publish in publishes:
            assert publish.wait(60) == 0, publish.stderr
    finally:
        status.stop()
        stream_id.stop()
    assert "publish" in status.log() and "connection" in stream_id.log()
    assert_log_is_safe(Path(agent.process.log_path).read_bytes())
    # What the destinations said is in the log, escaped and cut, beside our words.
    assert re.search(r"refused the publish: \\r\\n2026-01-01 .{20,100}…\(\d+ more\)", agent.log())


def hostile_publish(port: int, app: str, key: str) -> PublishRefused:
    """Publish with our client to app `app` (any text); the agent's refusal."""
    session = ClientSession(app, f"rtmp://127.0.0.1:{port}/{app}", key)
    session.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while True:
            sock.sendall(session.data_to_send())
            data = sock.recv(65536)
            assert data, "closed before answering the publish"
            for event in session.receive_data(data):
                if isinstance(event, PublishRefused):
                    return event


def hostile_command(port: int, name: str) -> None:
    """A command named `name` before connect (a protocol error), on a fresh connection."""
    handshake = ClientHandshake()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(handshake.start())
        while not handshake.done:
            data = sock.recv(65536)
            assert data
            c2 = handshake.feed(data)
            if c2:
                sock.sendall(c2)
        command = msg.Message(msg.COMMAND_AMF0, 0, 0, encode(name, 1.0, None))
        sock.sendall(ChunkWriter().write(command))
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass


def test_text_from_publishers_is_escaped_in_the_log(e2e, media):
    stack = e2e.stack()
    agent = stack.agent
    forged = f"\r\n2026-01-01 00:00:00,000 ERROR agent.{FORGED}: rig was hacked"
    # ffmpeg, with an application name holding CR and LF.
    out = subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
            "-i", str(media.path), "-c", "copy", "-f", "flv",
            "-rtmp_app", "live" + forged, agent.url("somekey"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    # Our client: NUL, escapes and 12 KB in the application name; a command name too.
    refused = hostile_publish(agent.port, "x\x00\x1b[2J" + forged * 200, "otherkey")
    assert refused.code == "NetStream.Publish.BadName"
    assert f"127.0.0.1:{agent.port}/live" in refused.description  # the hint
    # Short segments of an application name are logged escaped; long ones are withheld
    # (they may be a stream key: agent.logsafe.loggable_path).
    refused = hostile_publish(agent.port, "x\x00\x1b[2J\r\n/y", "otherkey")
    assert refused.code == "NetStream.Publish.BadName"
    hostile_command(agent.port, ("connect\n" + forged) * 300)
    wait_until(lambda: agent.count("before connect") >= 1, 10, "the protocol error logged")
    wait_until(lambda: agent.count("unknown application") >= 3, 10, "three refusals logged")
    log = Path(agent.process.log_path).read_bytes()
    assert_log_is_safe(log)
    text = log.decode()
    assert agent.count(r'unknown application "<\d+ characters>"') == 2, text[-3000:]
    assert agent.count(r'unknown application "x\\x00\\x1b\[2J\\r\\n/y"') == 1, text[-3000:]
