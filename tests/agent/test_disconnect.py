"""Disconnect protection and backup ingest in process (issue 15): a real rig on the test
database, a real ingest server, RTMP receivers in this loop, and publishers playing
encoded cards (H.264 + AAC, PyAV) in real time over real sockets.

What each receiver sees must be one publish: one connection, no unpublish until the
broadcast ends, timestamps that never go back and leave no hole, the slate in between,
and what rig says (ingestState, the session's holding time and end reason)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from fractions import Fraction

import pytest

from agent.media_facts import AudioFacts, VideoFacts
from agent.rig_client import RigClient
from agent.rtmp import PublishRefused, PublishStarted
from agent.server import IngestServer
from agent.settings import AgentSettings
from agent.slate import Slate, SlateLoop, encode_slate
from agent.tags import VIDEO, Kind, classify
from rig.agents import create_agent

from .test_agent_ops import Publisher
from .test_sessions import Live, live_stack, wait_until

SMALL = VideoFacts("h264", 320, 240, Fraction(30), "yuv420p", "High", "3.0")
LARGER = VideoFacts("h264", 480, 360, Fraction(30), "yuv420p", "High", "3.0")
AAC = AudioFacts("aac", 48000, 2, "stereo", "LC")
_cards: dict[tuple, Slate] = {}
_players: list[Playing] = []  # of the running test, closed at its end


@pytest.fixture(autouse=True)
async def _close_players():
    """Every publisher's socket is closed when its test ends (one the agent closed, too:
    a socket left to the garbage collector fails whichever test is running then)."""
    yield
    while _players:
        player = _players.pop()
        await player._stop_playing()
        with contextlib.suppress(ConnectionError, AttributeError):
            await player.publisher.close()


def card(text: str, video: VideoFacts = SMALL) -> Slate:
    if (text, video) not in _cards:
        _cards[(text, video)] = encode_slate(video, AAC, text=text, subtext="")
    return _cards[(text, video)]


class Playing:
    """A publisher playing a card in real time (its clock from 0, as OBS does)."""

    def __init__(self, live: Live, key: str, name: str, video: VideoFacts = SMALL) -> None:
        self.name = name
        self.publisher = Publisher(live.server.port, key)
        self.slate = card(name, video)
        self.keyframe = self.slate.video.frames[0]  # type: ignore[union-attr]
        self.task: asyncio.Task | None = None
        self.paused = False
        _players.append(self)

    async def start(self) -> object:
        answer = await self.publisher.publish()
        if isinstance(answer, PublishStarted):
            self.task = asyncio.create_task(self._play())
        return answer

    async def _play(self) -> None:
        loop = SlateLoop(self.slate, start=time.monotonic())
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.03)
                due = loop.due(time.monotonic())
                if not self.paused:
                    await self.publisher.send([(m.type_id, m.timestamp, m.payload) for m in due])

    async def drop(self) -> None:
        """The encoder's link dies: the connection closes without an unpublish."""
        await self._stop_playing()
        self.publisher.writer.transport.abort()

    async def stop(self) -> None:
        """Stop Streaming: unpublish, then close."""
        await self._stop_playing()
        await self.publisher.stop()

    async def _stop_playing(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def keyframes(messages: list[tuple[int, int, bytes]]) -> list[tuple[int, bytes]]:
    return [
        (ts, body)
        for t, ts, body in messages
        if t == VIDEO and classify(t, body).kind is Kind.KEYFRAME
    ]


def assert_one_continuous_publish(live: Live, max_hole_ms: int = 1000) -> None:
    """Each receiver: one connection that published, timestamps never back on a track,
    no hole over `max_hole_ms` in the video."""
    for service, receiver in live.receivers.items():
        [publish] = receiver.publishes
        assert len(receiver.connections) == 1, service
        last: dict[int, int] = {}
        for type_id, ts, _ in publish.messages:
            assert ts >= last.get(type_id, 0), f"{service}: type {type_id} back to {ts}"
            if type_id == VIDEO and VIDEO in last:
                assert ts - last[VIDEO] <= max_hole_ms, f"{service}: a hole before {ts} ms"
            last[type_id] = ts


def sources_seen(messages, *players: Playing) -> list[str]:
    """Which card each keyframe came from, in order (runs collapsed): a player's, or
    else the slate's."""
    names = {p.keyframe: p.name for p in players}
    out: list[str] = []
    for _, body in keyframes(messages):
        name = names.get(body, "slate")
        if not out or out[-1] != name:
            out.append(name)
    return out


async def played_and_dropped(live: Live, seconds: float) -> float:
    """A publisher plays for `seconds`, then its link dies: when it did (monotonic)."""
    player = Playing(live, live.stream["streamKey"], "first")
    await player.start()
    await asyncio.sleep(seconds)
    dropped = time.monotonic()
    await player.drop()
    return dropped


async def backup_key_and_primary(live: Live) -> tuple[str, Playing]:
    """The stream's backup key (created now), and its primary publishing."""
    path = f"/streams/{live.stream['id']}/backupKey"
    backup_key = (await call(live, "POST", path))["backupStreamKey"]
    primary = Playing(live, live.stream["streamKey"], "primary")
    await primary.start()
    return backup_key, primary


async def call(live: Live, method: str, path: str, body: dict | None = None) -> dict:
    async with live.http.request(
        method, live.rig_url + path, json=body, headers=live.headers
    ) as resp:
        payload = await resp.json()
        assert resp.status == 200, payload
        return payload["payload"]


async def stream_state(live: Live) -> str:
    return (await call(live, "GET", f"/streams/{live.stream['id']}"))["ingestState"]


async def until_state(live: Live, state: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while await stream_state(live) != state:
            await asyncio.sleep(0.1)


async def test_a_dropped_publisher_comes_back_into_the_same_publish(aiohttp_server, settings, db):
    protection = {"enabled": True, "graceSeconds": 30}
    async with live_stack(aiohttp_server, settings, db, protection) as live:
        first = Playing(live, live.stream["streamKey"], "first")
        assert isinstance(await first.start(), PublishStarted)
        await asyncio.sleep(2.5)
        await first.drop()
        await until_state(live, "holding")  # reported at once, not at the next beat
        await asyncio.sleep(3)
        back = Playing(live, live.stream["streamKey"], "back")
        assert isinstance(await back.start(), PublishStarted)
        await until_state(live, "live")
        await asyncio.sleep(2.5)
        await back.stop()
        session = await live.ended_session()
        assert session["endReason"] == "ended"
        assert 2.5 <= session["holdingSeconds"] <= 6
        for receiver in live.receivers.values():
            await receiver.wait_for(lambda r=receiver: r.publishes[0].unpublished)
            seen = sources_seen(receiver.publishes[0].messages, first, back)
            assert seen == ["first", "slate", "back"], seen
        assert_one_continuous_publish(live)


async def test_the_grace_running_out_ends_the_destinations_cleanly(aiohttp_server, settings, db):
    protection = {"enabled": True, "graceSeconds": 2}
    async with live_stack(aiohttp_server, settings, db, protection) as live:
        dropped = await played_and_dropped(live, 2)
        session = await live.ended_session()
        assert session["endReason"] == "grace expired"
        for receiver in live.receivers.values():
            await receiver.wait_for(lambda r=receiver: r.publishes[0].closed_at is not None)
            [publish] = receiver.publishes
            assert publish.unpublished  # a clean end: FCUnpublish, deleteStream
            assert 1.8 <= publish.closed_at - dropped <= 4
        assert_one_continuous_publish(live)


async def test_without_protection_a_dropped_publisher_ends_at_once(aiohttp_server, settings, db):
    async with live_stack(aiohttp_server, settings, db, {"enabled": False}) as live:
        dropped = await played_and_dropped(live, 1.5)
        session = await live.ended_session()
        assert session["endReason"] == "ended"  # a FIN, as a killed encoder's
        for receiver in live.receivers.values():
            await receiver.wait_for(lambda r=receiver: r.publishes[0].closed_at is not None)
            assert receiver.publishes[0].closed_at - dropped < 1.5


async def test_a_hung_publisher_is_replaced_and_an_active_one_is_not(aiohttp_server, settings, db):
    async with live_stack(aiohttp_server, settings, db) as live:
        key = live.stream["streamKey"]
        first = Playing(live, key, "first")
        await first.start()
        await asyncio.sleep(1.5)
        duplicate = Playing(live, key, "duplicate")
        assert isinstance(await duplicate.start(), PublishRefused)  # the first is live
        await duplicate.publisher.close()
        first.paused = True  # the link hangs: the connection stays open, nothing comes
        await until_state(live, "holding")
        second = Playing(live, key, "second")
        assert isinstance(await second.start(), PublishStarted)
        await until_state(live, "live")
        # The hung connection was closed by the agent.
        await wait_until(lambda: first.publisher.reader.at_eof(), timeout=5)
        await first.drop()
        await asyncio.sleep(1)
        await second.stop()
        await live.ended_session()
        assert_one_continuous_publish(live)


async def test_a_backup_takes_over_and_hands_back(aiohttp_server, settings, db):
    async with live_stack(aiohttp_server, settings, db) as live:
        stream_id = live.stream["id"]
        backup_key, primary = await backup_key_and_primary(live)
        await asyncio.sleep(1)
        backup = Playing(live, backup_key, "backup")
        assert isinstance(await backup.start(), PublishStarted)
        await asyncio.sleep(2.5)  # standby: read, kept ready, not sent
        await primary.drop()
        await until_state(live, "backup")
        await asyncio.sleep(2)
        again = Playing(live, live.stream["streamKey"], "again")
        await again.start()
        await until_state(live, "live")
        await asyncio.sleep(1.5)
        # The backup key rotated: only the backup publisher ends.
        await call(live, "POST", f"/streams/{stream_id}/backupKey")
        await wait_until(lambda: backup.publisher.reader.at_eof(), timeout=5)
        assert await stream_state(live) == "live"
        await again.stop()
        session = await live.ended_session()
        assert session["endReason"] == "ended" and session["holdingSeconds"] == 0
        for receiver in live.receivers.values():
            seen = sources_seen(receiver.publishes[0].messages, primary, backup, again)
            assert seen == ["primary", "backup", "again"], seen
        assert_one_continuous_publish(live)


async def test_a_new_resolution_on_return_sends_its_sequence_header(aiohttp_server, settings, db):
    async with live_stack(aiohttp_server, settings, db) as live:
        key = live.stream["streamKey"]
        first = Playing(live, key, "first")
        await first.start()
        await asyncio.sleep(2)
        await first.drop()
        await until_state(live, "holding")
        larger = Playing(live, key, "larger", LARGER)
        await larger.start()
        await until_state(live, "live")
        await asyncio.sleep(1)
        await larger.stop()
        await live.ended_session()
        header = card("larger", LARGER).video.headers[0]  # type: ignore[union-attr]
        for receiver in live.receivers.values():
            bodies = [body for t, _, body in receiver.publishes[0].messages if t == VIDEO]
            assert header in bodies
            # ... before the first keyframe of the larger picture.
            assert bodies.index(header) < bodies.index(larger.keyframe)


@pytest.mark.parametrize("grace", [0])
async def test_a_grace_of_zero_ends_at_once(aiohttp_server, settings, db, grace):
    protection = {"enabled": True, "graceSeconds": grace}
    async with live_stack(aiohttp_server, settings, db, protection) as live:
        await played_and_dropped(live, 1)
        session = await live.ended_session()
        assert session["endReason"] == "ended" and session["holdingSeconds"] == 0


async def test_a_backup_on_another_agent_is_refused_with_where_to_publish(
    aiohttp_server, settings, db
):
    async with live_stack(aiohttp_server, settings, db) as live:
        backup_key, primary = await backup_key_and_primary(live)
        _agent_id, api_key = await create_agent(db, "edge-other")
        other_settings = AgentSettings(
            rig_url=live.rig_url, agent_key=api_key, name="edge-other", rtmp_listen="127.0.0.1:0"
        )
        async with RigClient(live.rig_url, api_key) as rig:
            other = IngestServer(other_settings, rig, other_settings.egress())
            await other.start()
            try:
                publisher = Publisher(other.port, backup_key)
                refused = await publisher.publish()
                await publisher.close()
            finally:
                await other.close()
        assert isinstance(refused, PublishRefused)
        assert refused.code == "NetStream.Publish.Denied"
        where = live.server.ingest_url
        assert refused.description == (
            f"Publish the backup to the agent that holds the stream: {where} (agent edge-sessions)."
        )
        assert other.stats.refused["live_elsewhere"] == 1
        await primary.stop()
