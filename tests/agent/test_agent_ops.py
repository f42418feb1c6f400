"""The agent's HTTP listener (/metrics, /healthz, /readyz) and its logs, in process.

A real rig app (on the test database, on a real port), a real agent ingest server, a
publisher replaying the media of a captured FFmpeg publish, and a local RTMP receiver
standing in for the destination. Every log line of the whole run, formatted as text
and as JSON, is searched for the secrets involved.
"""

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from agent.health import HealthServer, split_listen
from agent.ingest import LiveIngest
from agent.rig_client import RigClient
from agent.rtmp import ClientSession, ServerSession
from agent.rtmp.events import (
    MediaReceived,
    PublishRefused,
    PublishRequested,
    PublishStarted,
)
from agent.server import IngestServer
from agent.settings import AgentSettings
from rig.agents import create_agent
from rig.app import AccessLogger, create_app
from rig.logs import JsonFormatter, TextFormatter

CAPTURE = Path(__file__).resolve().parent.parent / "data" / "ffmpeg_publish.bin"


def capture_media() -> list[tuple[int, int, bytes]]:
    """(type, timestamp, payload) of every media message of the captured publish."""
    server = ServerSession()
    data = CAPTURE.read_bytes()
    events: list[object] = []
    for pos in range(0, len(data), 1000):
        pending = server.receive_data(data[pos : pos + 1000])
        while pending:
            event = pending.pop(0)
            events.append(event)
            if isinstance(event, PublishRequested):
                server.accept_publish()
                pending += server.receive_data(b"")  # what was held until the answer
    media = [e.message for e in events if isinstance(e, MediaReceived)]
    assert len(media) == 152  # 62 video, 89 audio, 1 metadata
    return [(m.type_id, m.timestamp, bytes(m.payload)) for m in media]


def samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


class Receiver:
    """A local RTMP server accepting any publish (the destination)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.publishes = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        session = ServerSession()
        try:
            while data := await reader.read(65536):
                self.bytes += len(data)
                for event in session.receive_data(data):
                    if isinstance(event, PublishRequested):
                        session.accept_publish()
                        self.publishes += 1
                writer.write(session.data_to_send())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Publisher:
    """An RTMP publisher (our ClientSession) over a real socket."""

    def __init__(self, port: int, key: str, app: str = "live") -> None:
        self.port, self.key, self.app = port, key, app
        self.session = ClientSession(app, f"rtmp://127.0.0.1:{port}/{app}", key)

    async def publish(self) -> object:
        """Connect and publish; returns PublishStarted or PublishRefused."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.session.start()
        async with asyncio.timeout(10):
            while True:
                self.writer.write(self.session.data_to_send())
                data = await self.reader.read(65536)
                assert data, "the agent closed the connection"
                for event in self.session.receive_data(data):
                    if isinstance(event, PublishStarted | PublishRefused):
                        return event

    async def send(self, media: list[tuple[int, int, bytes]], offset: int = 0) -> None:
        for type_id, timestamp, payload in media:
            self.session.send_media(type_id, timestamp + offset, payload)
            self.writer.write(self.session.data_to_send())
            await self.writer.drain()

    async def stop(self) -> None:
        self.session.unpublish()
        self.writer.write(self.session.data_to_send())
        await self.writer.drain()
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


INGEST_FIELDS = {
    "bytesIn": int, "bitrate": int, "uptime": float, "frameRate": float,
    "keyframeInterval": (float, type(None)), "videoCodec": str, "width": int, "height": int,
    "pixelFormat": str, "profile": str, "level": str, "audioCodec": str,
    "audioSampleRate": int, "audioChannels": int, "unclassifiedMessages": int,
}  # fmt: skip
DESTINATION_FIELDS = {
    "id": int, "service": str, "state": str, "lastError": (str, type(None)),
    "retryIn": (float, type(None)), "bytesSent": int, "reconnects": int,
    "liveSeconds": float, "droppedPackets": int,
}  # fmt: skip


def assert_heartbeat_health(ingest: LiveIngest, ingest_url: str) -> None:
    """The heartbeat's health of a live stream has the shape of
    docs/agent-protocol.md#heartbeat-health."""
    health = ingest.health(ingest_url)
    assert health["ingestUrl"] == ingest_url
    facts = health["ingest"]
    assert set(facts) == set(INGEST_FIELDS), facts
    for name, kind in INGEST_FIELDS.items():
        assert isinstance(facts[name], kind), (name, facts[name])
    # The captured publish: H.264 + AAC, probed by the media engine.
    assert facts["videoCodec"] == "h264" and facts["audioCodec"] == "aac", facts
    [destination] = health["destinations"]
    assert set(destination) == set(DESTINATION_FIELDS), destination
    for name, kind in DESTINATION_FIELDS.items():
        assert isinstance(destination[name], kind), (name, destination[name])
    assert destination["state"] == "live" and destination["liveSeconds"] > 0


async def scrape(session: aiohttp.ClientSession, health: HealthServer) -> str:
    async with session.get(f"http://127.0.0.1:{health.port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def wait_for(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


class Lines(logging.Handler):
    """Every record of the run, formatted both ways."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []
        self.json: list[str] = []
        self._text, self._json = TextFormatter(), JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(self._text.format(record))
        self.json.append(self._json.format(record))


@pytest.fixture
def log_lines():
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def test_agent_metrics_health_and_logs_over_a_real_publish(
    aiohttp_server, settings, db, log_lines
):
    # rig's own access logger, as `rig serve` uses (aiohttp's default one logs paths).
    rig_server = await aiohttp_server(
        create_app(settings), host="127.0.0.1", access_log_class=AccessLogger
    )
    rig_url = str(rig_server.make_url("")).rstrip("/")
    receiver = Receiver()
    receiver_port = await receiver.start()
    password = "a password for the agent test"
    destination_key = "destkey-" + secrets.token_urlsafe(12)
    _agent_id, api_key = await create_agent(db, "edge-ops")

    async with aiohttp.ClientSession() as http:
        user = {"username": "streamer", "password": password, "email": "s@example.org"}
        async with http.post(f"{rig_url}/accounts/", json=user) as resp:
            assert resp.status == 200
        async with http.post(f"{rig_url}/accounts/auth/local", json=user) as resp:
            user_token = (await resp.json())["payload"]["token"]
        headers = {"Authorization": f"Bearer {user_token}"}
        async with http.post(f"{rig_url}/streams/", headers=headers) as resp:
            stream = (await resp.json())["payload"]
        destination = {
            "service": "Custom",
            "rtmpUrl": f"rtmp://127.0.0.1:{receiver_port}/live2",
            "streamKey": destination_key,
        }
        async with http.post(
            f"{rig_url}/streams/{stream['id']}/destination", json=destination, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
        stream_key = stream["streamKey"]

        agent_settings = AgentSettings(
            rig_url=rig_url,
            agent_key=api_key,
            name="edge-ops",
            rtmp_listen="127.0.0.1:0",
            heartbeat_interval=0.3,
            retry_initial=0.1,
            retry_max=0.5,
            shutdown_timeout=2,
            allow_private_destinations=True,  # the receiver listens on 127.0.0.1
        )
        async with RigClient(rig_url, api_key) as rig:
            server = IngestServer(agent_settings, rig, agent_settings.egress())
            await server.start()
            health = HealthServer("127.0.0.1:0", server, rig)
            await health.start()
            base = f"http://127.0.0.1:{health.port}"
            try:
                assert await get_json(http, f"{base}/healthz") == (200, {"status": "ok"})
                assert await get_json(http, f"{base}/readyz") == (
                    200,
                    {"status": "ok", "rig": "ok"},
                )
                before = await scrape(http, health)
                assert samples(before, "rig_agent_live_ingests") == {"": 0}
                assert samples(before, "rig_agent_ingest_bytes_total") == {"": 0}
                refused = samples(before, "rig_agent_publishes_refused_total")
                assert set(refused.values()) == {0}
                assert '{reason="unknown_key"}' in refused

                # Refused publishes are counted by reason.
                unknown = Publisher(server.port, "no-such-key-" + secrets.token_hex(4))
                assert isinstance(await unknown.publish(), PublishRefused)
                await unknown.close()
                wrong_app = Publisher(server.port, stream_key, app="other")
                assert isinstance(await wrong_app.publish(), PublishRefused)
                await wrong_app.close()

                publisher = Publisher(server.port, stream_key)
                assert isinstance(await publisher.publish(), PublishStarted)
                media = capture_media()
                await publisher.send(media)

                async def relaying() -> bool:
                    text = await scrape(http, health)
                    live = samples(text, "rig_agent_destinations").get('{state="live"}')
                    return live == 1 and receiver.publishes == 1

                await wait_for(relaying)
                # A little more, as live (without a second onMetaData: see the report).
                await publisher.send(media[1:], offset=2100)
                payload = sum(len(p) for _, _, p in media) * 2 - len(media[0][2])

                async def received() -> bool:
                    text = await scrape(http, health)
                    return samples(text, "rig_agent_ingest_bytes_total")[""] >= payload

                await wait_for(received)

                async def sent_media() -> bool:
                    text = await scrape(http, health)
                    sent = samples(text, "rig_agent_destination_bytes_sent_total")
                    assert len(sent) == 1, sent
                    return min(sent.values()) > 10_000 and receiver.bytes > 10_000

                await wait_for(sent_media)
                live_ingest = next(iter(server.live.values()))

                async def probed() -> bool:  # the media engine works in the background
                    assert live_ingest.relay is not None
                    return live_ingest.relay.ingest_facts()["width"] is not None

                await wait_for(probed)

                async def live_a_while() -> bool:  # liveSeconds counts in 0.1 s steps
                    [destination] = live_ingest.health(server.ingest_url)["destinations"]
                    return destination["liveSeconds"] > 0

                await wait_for(live_a_while)
                assert_heartbeat_health(live_ingest, server.ingest_url)
                text = await scrape(http, health)
                state = samples(text, "rig_agent_destination_state")
                assert list(state.values()) == [1], state
                assert re.fullmatch(
                    r'\{destination="\d+",service="Custom",state="live"\}', next(iter(state))
                ), state
                assert samples(text, "rig_agent_live_ingests") == {"": 1}
                assert samples(text, "rig_agent_publishes_total") == {"": 1}
                assert samples(text, "rig_agent_ingest_bytes_total")[""] >= payload
                states = samples(text, "rig_agent_destinations")
                assert states['{state="live"}'] == 1
                assert sum(states.values()) == 1
                refused = samples(text, "rig_agent_publishes_refused_total")
                assert refused['{reason="unknown_key"}'] == 1
                assert refused['{reason="unknown_application"}'] == 1
                assert refused['{reason="rig_unavailable"}'] == 0
                assert "rig_agent_destination_reconnects_total" in text
                assert "rig_agent_destination_dropped_packets_total" in text
                # No key, URL or token in any label or value.
                for secret in (stream_key, destination_key, api_key, "rtmp://"):
                    assert secret not in text

                # The publisher leaves: the ingest ends, the totals stay.
                live_bytes = samples(text, "rig_agent_ingest_bytes_total")[""]
                await publisher.stop()

                async def ended() -> bool:
                    text = await scrape(http, health)
                    return samples(text, "rig_agent_live_ingests") == {"": 0} and not any(
                        r.done is False for r in server.relays
                    )

                await wait_for(ended)
                await asyncio.sleep(0.1)
                after = await scrape(http, health)
                assert samples(after, "rig_agent_ingest_bytes_total")[""] >= live_bytes
                assert samples(after, "rig_agent_egress_bytes_total")[""] > 0
                assert samples(after, "rig_agent_destination_bytes_sent_total") == {}
                assert samples(after, "rig_agent_publishes_total") == {"": 1}
                agent_token = rig._token  # for the log check below
                assert agent_token

                # Readiness follows rig: rig gone, not ready; liveness unaffected.
                await rig_server.close()
                status, body = await get_json(http, f"{base}/readyz")
                assert status == 503, body
                assert body["status"] == "not ready"
                assert (await get_json(http, f"{base}/healthz"))[0] == 200
                health.draining = True
                assert await get_json(http, f"{base}/readyz") == (503, {"status": "draining"})
            finally:
                await server.close()
                await health.close()
                await receiver.close()

    # The whole run's log lines hold none of the secrets involved.
    assert any("accepted" in line for line in log_lines.text), log_lines.text
    assert any("live on rtmp://127.0.0.1" in line for line in log_lines.text), log_lines.text
    secrets_involved = [stream_key, destination_key, api_key, password, user_token, agent_token]
    for token in (user_token, agent_token):
        secrets_involved += [part for part in token.split(".") if len(part) > 8]
    for line in [*log_lines.text, *log_lines.json]:
        for secret in secrets_involved:
            assert secret not in line, (secret, line)
    for line in log_lines.json:
        json.loads(line)  # every JSON line parses on its own


async def test_health_without_rig():
    """rig unreachable: alive, not ready; a refused publish counts as rig_unavailable."""
    agent_settings = AgentSettings(
        rig_url="http://127.0.0.1:9", agent_key="unused", rtmp_listen="127.0.0.1:0"
    )
    async with RigClient(agent_settings.rig_url, "unused", timeout=1) as rig:
        server = IngestServer(agent_settings, rig, agent_settings.egress())
        await server.start()
        health = HealthServer("127.0.0.1:0", server, rig)
        await health.start()
        try:
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{health.port}"
                assert (await get_json(http, f"{base}/healthz"))[0] == 200
                status, body = await get_json(http, f"{base}/readyz")
                assert status == 503
                assert body["rig"].startswith("rig unreachable")
                publisher = Publisher(server.port, "somekey")
                assert isinstance(await publisher.publish(), PublishRefused)
                await publisher.close()
                text = await scrape(http, health)
                refused = samples(text, "rig_agent_publishes_refused_total")
                assert refused['{reason="rig_unavailable"}'] == 1
                async with http.get(f"{base}/nothing") as resp:
                    assert resp.status == 404
        finally:
            await server.close()
            await health.close()
        # After the RTMP listener closed, liveness fails (unless draining).
        await health.start()
        try:
            async with aiohttp.ClientSession() as http:
                status, _ = await get_json(http, f"http://127.0.0.1:{health.port}/healthz")
                assert status == 503
        finally:
            await health.close()


def test_split_listen():
    assert split_listen("127.0.0.1:9935") == ("127.0.0.1", 9935)
    assert split_listen("[::1]:9") == ("::1", 9)
    assert split_listen(":9935") == ("0.0.0.0", 9935)  # noqa: S104
    with pytest.raises(ValueError):
        split_listen("nohost")


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_")}
    env.update(
        RIG_URL="http://127.0.0.1:9",
        RIG_AGENT_KEY="rigagent_" + secrets.token_urlsafe(32),
        RIG_AGENT_RTMP_LISTEN="127.0.0.1:0",
        **extra,
    )
    return env


def start_agent_process(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m agent` with `env`, its output (stdout and stderr) in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen) -> re.Match:
    async with asyncio.timeout(30):
        while True:
            text = path.read_text(errors="replace")
            if match := re.search(pattern, text):
                return match
            assert proc.poll() is None, text
            await asyncio.sleep(0.1)


async def test_rig_agent_process_json_logs_and_listener(tmp_path):
    env = agent_env(RIG_AGENT_HTTP_LISTEN="127.0.0.1:0", RIG_AGENT_LOG_FORMAT="json")
    log_path = tmp_path / "agent.log"
    proc = start_agent_process(env, log_path)
    try:
        match = await wait_for_line(log_path, r"metrics and health on http://127.0.0.1:(\d+)", proc)
        await wait_for_line(log_path, r"ready: publish to", proc)
        base = f"http://127.0.0.1:{match.group(1)}"
        async with aiohttp.ClientSession() as http:
            assert (await get_json(http, f"{base}/healthz"))[0] == 200
            assert (await get_json(http, f"{base}/readyz"))[0] == 503  # rig is not there
            async with http.get(f"{base}/metrics") as resp:
                assert "rig_agent_live_ingests 0.0" in await resp.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    lines = log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    assert any(e["message"] == "agent stopped" for e in entries), entries
    assert env["RIG_AGENT_KEY"] not in log_path.read_text()


async def test_rig_agent_carries_on_when_the_listener_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = agent_env(RIG_AGENT_HTTP_LISTEN=f"127.0.0.1:{port}")
        log_path = tmp_path / "agent.log"
        proc = start_agent_process(env, log_path)
        try:
            await wait_for_line(log_path, r"ready: publish to", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
    text = log_path.read_text()
    assert f"WARNING agent: no metrics/health listener on 127.0.0.1:{port}" in text, text
    assert " ERROR " not in text


def test_rig_agent_help_lists_the_new_flags():
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=agent_env(),
    )
    assert result.returncode == 0
    for word in ("--http-listen", "RIG_AGENT_HTTP_LISTEN", "--log-format", "RIG_AGENT_LOG_FORMAT"):
        assert word in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "agent"],
        capture_output=True,
        text=True,
        check=False,
        env=agent_env(RIG_AGENT_LOG_FORMAT="xml"),
    )
    assert bad.returncode == 2
    assert "invalid setting" in bad.stderr
