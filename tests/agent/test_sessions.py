"""The agent's side of sessions and thumbnails, in process against a real rig (on the
test database, on a real port): a real ingest server, an RTMP publisher (our
ClientSession over a socket) sending a stream PyAV encoded, and RTMP receivers in this
loop standing in for YouTube and Twitch.

Each way a publish can end is released with its reason and the final figures, which
rig keeps in the session (docs/agent-protocol.md#release); a live stream's picture
reaches rig and its owner (docs/agent-protocol.md#thumbnail-upload); a destination
changed while live keeps its earlier bytes in the report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import re
import secrets
import socket
import struct

import aiohttp
import pytest
from PIL import Image
from prometheus_client import generate_latest

from agent.metrics import registry_for
from agent.rig_client import RigClient
from agent.rtmp import amf0
from agent.server import IngestServer
from agent.settings import AgentSettings
from agent.tags import DATA
from rig.agents import create_agent
from rig.app import create_app
from tests.unit.media_samples import encoded_flv

from .receiver import Receiver
from .streamer import new_stream
from .test_agent_ops import Publisher

SET_DATA_FRAME = amf0.encode("@setDataFrame")


def stream_media(frames: int = 90) -> list[tuple[int, int, bytes]]:
    """H.264 (320x240, 30 fps, a keyframe every second) and 48 kHz stereo AAC, as a
    publisher sends them."""
    return [
        (t.type_id, t.timestamp, SET_DATA_FRAME + t.body if t.type_id == DATA else t.body)
        for t in encoded_flv("libx264", "aac", frames).tags
    ]


@dataclasses.dataclass
class Live:
    """rig, its user and stream, the two receivers, and a running agent."""

    http: aiohttp.ClientSession
    rig_url: str
    headers: dict[str, str]
    stream: dict
    destinations: dict[str, dict]
    receivers: dict[str, Receiver]
    server: IngestServer

    async def get(self, path: str) -> tuple[int, object, str]:
        async with self.http.get(self.rig_url + path, headers=self.headers) as resp:
            body = await resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, (await resp.json() if "json" in kind else body), kind

    async def sessions(self) -> list[dict]:
        status, body, _ = await self.get(f"/streams/{self.stream['id']}/sessions")
        assert status == 200, body
        return body["payload"]  # type: ignore[index]

    async def ended_session(self, timeout: float = 15) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                current = (await self.sessions())[0]
                if current["endedAt"] is not None:
                    return current
                await asyncio.sleep(0.1)

    async def publisher(self) -> Publisher:
        publisher = Publisher(self.server.port, self.stream["streamKey"])
        started = await publisher.publish()
        assert type(started).__name__ == "PublishStarted", started
        return publisher

    def received(self, service: str) -> int:
        """Bytes the service's receiver read, over every connection."""
        return sum(c.bytes for c in self.receivers[service].connections)


@contextlib.asynccontextmanager
async def live_stack(
    aiohttp_server,
    settings,
    db,
    protection: dict | None = None,
    via=None,
    **agent_options: object,
):
    """`protection`: the stream's disconnectProtection, if not rig's default. `via`, if
    given, makes the URL the agent reaches rig at from rig's own URL (a proxy in
    between)."""
    async with Receiver() as youtube, Receiver() as twitch, aiohttp.ClientSession() as http:
        services = {
            **settings.service_urls,
            "YouTube": f"rtmp://127.0.0.1:{youtube.port}/live2",
            "Twitch": f"rtmp://127.0.0.1:{twitch.port}/app",
        }
        rig_app = create_app(dataclasses.replace(settings, service_urls=services))
        rig_server = await aiohttp_server(rig_app, host="127.0.0.1")
        rig_url = str(rig_server.make_url("")).rstrip("/")
        headers, stream = await new_stream(http, rig_url)
        if protection is not None:
            body = {"disconnectProtection": protection}
            path = f"{rig_url}/streams/{stream['id']}"
            async with http.patch(path, json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        destinations = {}
        for service in ("YouTube", "Twitch"):
            body = {"service": service, "streamKey": f"{service.lower()}-{secrets.token_hex(4)}"}
            async with http.post(
                f"{rig_url}/streams/{stream['id']}/destination", json=body, headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
                destinations[service] = (await resp.json())["payload"]
        _agent_id, api_key = await create_agent(db, "edge-sessions")
        agent_rig_url = rig_url if via is None else await via(rig_url)
        agent_settings = AgentSettings(
            rig_url=agent_rig_url,
            agent_key=api_key,
            name="edge-sessions",
            rtmp_listen="127.0.0.1:0",
            heartbeat_interval=0.3,
            retry_initial=0.1,
            retry_max=0.3,
            shutdown_timeout=2,
            **agent_options,  # type: ignore[arg-type]
        )
        async with RigClient(agent_rig_url, api_key) as rig:
            server = IngestServer(agent_settings, rig, agent_settings.egress())
            await server.start()
            try:
                yield Live(
                    http,
                    rig_url,
                    headers,
                    stream,
                    destinations,
                    {"YouTube": youtube, "Twitch": twitch},
                    server,
                )
            finally:
                await server.close()


async def wait_until(predicate, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def relayed(live: Live) -> None:
    """Until both receivers got media, and then half a second live."""
    await wait_until(
        lambda: all(
            r.publishes and len(r.publishes[-1].messages) > 20 for r in live.receivers.values()
        )
    )
    await asyncio.sleep(0.5)


def check_final_figures(live: Live, session: dict, publisher_bytes: int) -> None:
    ingest = session["ingest"]
    assert session["agent"] == "edge-sessions"
    assert (ingest["videoCodec"], ingest["width"], ingest["height"]) == ("h264", 320, 240)
    assert (ingest["audioCodec"], ingest["audioSampleRate"], ingest["audioChannels"]) == (
        "aac",
        48000,
        2,
    )
    assert ingest["keyframeInterval"] == pytest.approx(1.0, abs=0.05)
    # Over the whole publish (the last heartbeats of an idle end measured 0).
    assert ingest["frameRate"] == pytest.approx(30, abs=1)
    # Every byte the publisher sent: the final figures, not the last heartbeat's.
    assert ingest["bytesIn"] == publisher_bytes
    assert ingest["averageBitrate"] > 0
    by_service = {d["service"]: d for d in session["destinations"]}
    assert set(by_service) == {"YouTube", "Twitch"}
    for service, report in by_service.items():
        assert report["id"] == live.destinations[service]["id"]
        assert report["bytesSent"] == live.received(service), service
        assert report["reconnects"] == 0
        assert report["lastError"] is None
        assert 0.4 <= report["liveSeconds"] < 30


async def test_an_unpublished_stream_ends_its_session_with_every_byte(aiohttp_server, settings, db):
    async with live_stack(aiohttp_server, settings, db) as live:
        publisher = await live.publisher()
        await publisher.send(stream_media())
        await relayed(live)
        await publisher.stop()
        session = await live.ended_session()
        assert session["endReason"] == "ended"
        check_final_figures(live, session, publisher.session.bytes_sent)


@pytest.mark.parametrize(
    ("how", "reason"), [("reset", "error"), ("idle", "idle"), ("shutdown", "shutdown")]
)
async def test_each_end_has_its_reason(aiohttp_server, settings, db, how, reason):
    # Without disconnect protection: a broken or idle publisher ends the broadcast at once.
    off = {"enabled": False}
    async with live_stack(aiohttp_server, settings, db, off, idle_timeout=1.0) as live:
        publisher = await live.publisher()
        await publisher.send(stream_media())
        await relayed(live)
        if how == "reset":
            # RST (linger 0): the encoder's connection broke.
            sock = publisher.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            publisher.writer.transport.abort()
        elif how == "shutdown":
            await live.server.close()
        # "idle": the publisher just stops sending; the agent drops it after 1 s.
        session = await live.ended_session()
        assert session["endReason"] == reason
        check_final_figures(live, session, publisher.session.bytes_sent)
        with contextlib.suppress(ConnectionError):
            await publisher.close()


async def test_a_live_stream_has_a_thumbnail_and_one_without_video_has_none(
    aiohttp_server, settings, db
):
    # No disconnect protection: the publisher, idle once its media is sent, is not held
    # (a held broadcast's relay has the slate's keyframes, not the publisher's).
    off = {"enabled": False, "graceSeconds": 0}
    async with live_stack(aiohttp_server, settings, db, protection=off) as live:
        path = f"/streams/{live.stream['id']}/thumbnail"
        status, body, _ = await live.get(path)
        assert (status, body["errorCode"]) == (404, 1000)  # type: ignore[index]
        publisher = await live.publisher()
        await publisher.send(stream_media())
        # Nobody has asked for a picture: heartbeats and picture ticks go by, none made.
        await relayed(live)
        await asyncio.sleep(1.5)
        assert live.server.thumbnailer is not None
        assert live.server.thumbnailer.made == 0
        [ingest] = live.server.broadcasts()
        assert ingest.thumbnail_wanted is False

        async def picture() -> tuple[int, object, str]:
            async with asyncio.timeout(10):
                while True:
                    status, body, kind = await live.get(path)
                    if status == 200:
                        return status, body, kind
                    await asyncio.sleep(0.2)

        _, jpeg, kind = await picture()
        assert kind == "image/jpeg"
        image = Image.open(io.BytesIO(jpeg), formats=["JPEG"])  # type: ignore[arg-type]
        image.load()
        assert image.size == (320, 240)  # 320x240 ingest: not enlarged
        assert live.server.thumbnailer is not None
        assert live.server.thumbnailer.made == 1
        metrics = generate_latest(registry_for(live.server)).decode()
        assert 'rig_agent_thumbnails_total{result="made"} 1.0' in metrics
        assert 'rig_agent_thumbnails_total{result="failed"} 0.0' in metrics
        cpu = re.search(r"^rig_agent_thumbnail_cpu_seconds_total (\S+)$", metrics, re.M)
        assert cpu and 0 < float(cpu.group(1)) < 1
        # A minute without a GET: the next heartbeat's answer stops the pictures.
        await db.execute("UPDATE thumbnail_wanted SET wanted_until = now() - interval '1 s'")
        await wait_until(lambda: not ingest.thumbnail_wanted)
        assert live.server._live_claims() == []
        await publisher.stop()
        await live.ended_session()

        # Audio only: no picture is ever sent, rig answers 1000.
        audio = [m for m in stream_media() if m[0] != 9]
        publisher = await live.publisher()
        await publisher.send(audio)
        await wait_until(lambda: len(live.receivers["YouTube"].publishes) == 2)
        await asyncio.sleep(1.5)  # more than a thumbnail tick
        status, body, _ = await live.get(path)
        assert (status, body["errorCode"]) == (404, 1000)  # type: ignore[index]
        assert live.server.thumbnailer.made == 1
        await publisher.stop()


async def test_thumbnails_off(aiohttp_server, settings, db):
    async with live_stack(aiohttp_server, settings, db, thumbnails=False) as live:
        assert live.server.thumbnailer is None
        publisher = await live.publisher()
        await publisher.send(stream_media())
        await relayed(live)
        await asyncio.sleep(1.5)
        status, body, _ = await live.get(f"/streams/{live.stream['id']}/thumbnail")
        assert (status, body["errorCode"]) == (404, 1000)  # type: ignore[index]
        await publisher.stop()


async def test_a_destination_changed_while_live_keeps_its_bytes_in_the_session(
    aiohttp_server, settings, db
):
    async with live_stack(aiohttp_server, settings, db) as live:
        publisher = await live.publisher()
        media = stream_media()
        await publisher.send(media)
        await relayed(live)
        youtube = live.destinations["YouTube"]
        before = live.received("YouTube")
        async with live.http.patch(
            f"{live.rig_url}/streams/{live.stream['id']}/destination/{youtube['id']}",
            json={"streamKey": "a-new-key"},
            headers=live.headers,
        ) as resp:
            assert resp.status == 200, await resp.text()
        receiver = live.receivers["YouTube"]
        await wait_until(lambda: len(receiver.publishes) == 2 and receiver.publishes[1].messages)
        assert receiver.publishes[1].name == "a-new-key"
        await publisher.send(media[1:], offset=3100)
        await publisher.stop()
        session = await live.ended_session()
        report = next(d for d in session["destinations"] if d["id"] == youtube["id"])
        # Both connections' bytes: the first one's are not lost with the change.
        assert report["bytesSent"] == live.received("YouTube") > before


async def test_a_publish_right_after_the_last_waits_for_its_release(aiohttp_server, settings, db):
    """rig answers a claim from the agent that holds the stream with that same claim: a
    new publish claiming before the last one's release went out would have it ended by
    that release (docs/agent-protocol.md#claim)."""
    async with live_stack(aiohttp_server, settings, db) as live:
        first = await live.publisher()
        await first.send(stream_media())
        await relayed(live)
        await first.stop()
        second = await live.publisher()  # at once: the release is still in flight
        await second.send(stream_media())
        youtube = live.receivers["YouTube"]
        await wait_until(lambda: len(youtube.publishes) == 2 and youtube.publishes[1].messages)
        await asyncio.sleep(1.5)  # heartbeats every 0.3 s: the second claim stays live
        sessions = await live.sessions()
        assert [s["endReason"] for s in sessions] == [None, "ended"]
        status, body, _ = await live.get(f"/streams/{live.stream['id']}")
        assert status == 200 and body["payload"]["isStreaming"] is True  # type: ignore[index]
        await second.stop()
        assert (await live.ended_session())["endReason"] == "ended"
