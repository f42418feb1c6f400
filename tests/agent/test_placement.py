"""One stream, one connection, in process (agent/placement.py): a second publish of a
live key is refused while the first is active, and replaces it at once when the first
has hung (issue 12: a mobile link that died without a close); a backup key joins its
stream's broadcast on the worker holding it. A real rig app on the test database, a
real ingest server, publishers and a destination over real sockets."""

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest

from agent.channel import Link
from agent.hub import Hub
from agent.rig_client import RigClient
from agent.rtmp.events import PublishRefused, PublishStarted
from agent.rtmp.message import AUDIO, DATA_AMF0, VIDEO
from agent.server import IngestServer
from agent.settings import AgentSettings
from agent.tags import Kind, classify
from agent.timeline import Timeline
from agent.worker import LinkRegistry, Worker, share_limits
from rig.agents import create_agent
from rig.app import create_app

from .receiver import Receiver
from .streamer import new_stream
from .test_agent_ops import Publisher, capture_media
from .test_ingest_limits import closed_by_peer


@dataclass
class Live:
    servers: list[IngestServer]  # one per worker, numbered from 1
    destination: Receiver
    stream_key: str
    rig_url: str
    user_headers: dict[str, str]
    stream_id: str
    hub: Hub | None = None

    async def call(self, method: str, path: str, body: dict | None = None) -> dict:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.rig_url + path, json=body, headers=self.user_headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return (await resp.json())["payload"]


@asynccontextmanager
async def live_agent(
    aiohttp_server, settings, db, workers: int = 1, pack: int = 0
) -> AsyncIterator[Live]:
    """rig, a stream with one destination (a recording receiver), an agent. With
    `workers` > 1, that many ingest servers in this process, each with its own port,
    sharing a hub (the supervisor's part) over real socketpairs: a test chooses which
    worker a connection reaches."""
    rig_server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    rig_url = str(rig_server.make_url("")).rstrip("/")
    _agent_id, api_key = await create_agent(db, "edge-placement")
    async with aiohttp.ClientSession() as http, Receiver() as destination:
        headers, stream = await new_stream(http, rig_url)
        target = {
            "service": "Custom",
            "rtmpUrl": f"rtmp://127.0.0.1:{destination.port}/live2",
            "streamKey": "dest-" + secrets.token_hex(6),
        }
        async with http.post(
            f"{rig_url}/streams/{stream['id']}/destination", json=target, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
        agent_settings = AgentSettings(
            rig_url=rig_url,
            agent_key=api_key,
            rtmp_listen="127.0.0.1:0",
            heartbeat_interval=0.5,
            retry_initial=0.1,
            retry_max=0.5,
            shutdown_timeout=2,
            allow_private_destinations=True,  # the receiver listens on 127.0.0.1
        )
        async with RigClient(rig_url, api_key) as rig:
            hub = Hub(pack=pack) if workers > 1 else None
            servers, links = [], []
            for index in range(1, workers + 1):
                registry = None
                if hub is not None:
                    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                    hub.connect(index, ours)
                    worker = Worker(index)
                    link = Link(theirs, worker.handle, name=f"worker {index}")
                    links.append(link)
                    registry = LinkRegistry(link, index)
                server = IngestServer(agent_settings, rig, agent_settings.egress(), registry)
                await server.start()
                servers.append(server)
                if hub is not None:
                    share_limits(server, link)
                    worker.server = server
                    link.notify({"op": "ready", "port": server.port})
            if hub is not None:
                while len(hub.ready) < workers:
                    await asyncio.sleep(0.01)
            live = Live(servers, destination, stream["streamKey"], rig_url, headers, stream["id"])
            live.hub = hub
            try:
                yield live
            finally:
                for server in servers:
                    await server.close()
                for link in [*links, *(hub.links.values() if hub else ())]:
                    link.close()


async def is_streaming(live: Live) -> bool:
    return (await live.call("GET", f"/streams/{live.stream_id}"))["isStreaming"]


async def closed(publisher: Publisher, within: float) -> bool:
    """The agent closed this publisher's connection within `within` seconds."""
    return await closed_by_peer(publisher.reader, within)


async def publishing(port: int, key: str, media: list) -> Publisher:
    """A publisher whose publish was accepted, and that sent `media`."""
    publisher = Publisher(port, key)
    assert isinstance(await publisher.publish(), PublishStarted)
    await publisher.send(media)
    return publisher


async def denied(port: int, key: str) -> None:
    """A publish refused with NetStream.Publish.Denied, and its connection closed."""
    publisher = Publisher(port, key)
    refused = await publisher.publish()
    assert isinstance(refused, PublishRefused)
    assert refused.code == "NetStream.Publish.Denied"
    assert await closed(publisher, within=2)
    await publisher.close()


@asynccontextmanager
async def active(publisher: Publisher, media: list) -> AsyncIterator[None]:
    """The publisher keeps sending (a few messages every 100 ms) meanwhile."""
    done = asyncio.Event()

    async def keep_sending() -> None:
        offset = 0
        while not done.is_set():
            offset += 100
            await publisher.send(media[20:22], offset=offset)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(keep_sending())
    try:
        yield
    finally:
        done.set()
        await task


def kinds(messages: list[tuple[int, int, bytes]]) -> list[tuple[int, Kind]]:
    return [(t, classify(t, body).kind) for t, _, body in messages]


# A publishing connection that has sent nothing for this long is hung (the default
# RIG_AGENT_STALL_TIMEOUT).
HUNG_AFTER = AgentSettings().stall_timeout
# With 2 workers, the second connection reaches the other worker than the first.
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["same worker", "another worker"])


@WORKERS
async def test_a_hung_publisher_is_replaced_by_a_new_connection_at_once(
    aiohttp_server, settings, db, workers
):
    media = capture_media()
    async with live_agent(aiohttp_server, settings, db, workers) as live:
        # Without disconnect protection, so that nothing but the publishers' media is
        # relayed (with it, the slate fills the hang: tests/agent/test_disconnect.py).
        protection = {"disconnectProtection": {"enabled": False}}
        await live.call("PATCH", f"/streams/{live.stream_id}", protection)
        holder, other = live.servers[0], live.servers[-1]
        destination = live.destination
        first = await publishing(holder.port, live.stream_key, media)
        await destination.wait_for(
            lambda: (
                len(destination.publishes) == 1
                and len(destination.publishes[0].messages) >= len(media)
            )
        )
        relay = next(iter(holder.relays))
        before = len(destination.publishes[0].messages)
        # The first publisher hangs: its connection stays open, nothing more comes.
        await asyncio.sleep(HUNG_AFTER + 0.3)

        started = asyncio.get_running_loop().time()
        second = await publishing(other.port, live.stream_key, [])
        assert asyncio.get_running_loop().time() - started < 1.0  # at once, not after 30 s
        assert await closed(first, within=2), "the hung connection was not closed"
        await first.close()
        await second.send(media)
        await destination.wait_for(
            lambda: len(destination.publishes[0].messages) >= before + len(media)
        )

        # The same relay (on the worker holding the stream), the same destination
        # connection, the same claim.
        if live.hub is not None:
            assert live.hub.handoffs == {"adopted": 1, "failed": 0}
            assert not other.live and not other.relays and not other.connections
        assert list(holder.relays) == [relay] and not relay.ended
        assert len(destination.publishes) == 1 and destination.publishes[0].closed_at is None
        assert await is_streaming(live)
        assert holder.stats.replaced == 1
        # After the switch, the new publisher's metadata and sequence headers come before
        # its media, every message's body unchanged; its timestamps continue the
        # broadcast's (its clock started at 0 again: agent/timeline.py).
        messages = destination.publishes[0].messages
        after = messages[before:]
        assert [(t, body) for t, _, body in after] == [(t, body) for t, _, body in media]
        last_before = max(ts for _, ts, _ in messages[:before])
        assert after[3][1] == last_before + Timeline().step_ms  # its keyframe, one frame on
        for type_id in (AUDIO, VIDEO):
            stamps = [ts for t, ts, _ in messages if t == type_id]
            assert stamps == sorted(stamps)
        switch = kinds(after)
        assert switch[0] == (DATA_AMF0, Kind.METADATA)
        first_frame = next(i for i, (_, kind) in enumerate(switch) if kind is Kind.KEYFRAME)
        headers = {t for t, kind in switch[:first_frame] if kind is Kind.SEQUENCE_HEADER}
        assert headers == {AUDIO, VIDEO}
        # A destination (re)connecting now starts with the new publisher's configuration.
        head, _ = relay.start_messages(next(iter(relay.workers.values())))
        assert [m.body for m in head[:3]] == [body for _, _, body in media[:3]]
        ingest = holder.live[live.stream_key]
        [connection] = ingest.connections.values()
        host, port = second.writer.get_extra_info("sockname")[:2]
        assert connection.peer == f"{host}:{port}"
        assert ingest.bytes_in > 2 * sum(len(body) for _, _, body in media)

        await second.stop()
        await holder.close()
        assert relay.done
        assert not await is_streaming(live)


@WORKERS
async def test_an_active_duplicate_is_refused(aiohttp_server, settings, db, workers):
    media = capture_media()
    async with live_agent(aiohttp_server, settings, db, workers) as live:
        holder, other = live.servers[0], live.servers[-1]
        first = await publishing(holder.port, live.stream_key, media[:20])
        async with active(first, media):
            await asyncio.sleep(HUNG_AFTER + 0.5)
            await denied(other.port, live.stream_key)
            assert not await closed(first, within=0.3)  # the first one goes on
        # Refused by the worker holding the stream (the other one handed it over).
        if live.hub is not None:
            assert live.hub.handoffs == {"adopted": 1, "failed": 0}
            assert sum(other.stats.refused.values()) == 0
            assert not other.connections and not other.live
        assert holder.stats.replaced == 0
        assert holder.stats.refused["already_live_here"] == 1
        assert await is_streaming(live)
        await first.stop()


async def test_a_backup_key_goes_to_the_worker_holding_its_stream(aiohttp_server, settings, db):
    """rig says which stream a backup key is only when it is claimed: the second lookup
    (after the claim) sends it to the worker relaying the stream, where it joins the
    broadcast as its standby (agent/broadcast.py); a second backup publish meanwhile is
    an active duplicate."""
    media = capture_media()
    async with live_agent(aiohttp_server, settings, db, workers=2) as live:
        one, two = live.servers
        backup_key = (await live.call("POST", f"/streams/{live.stream_id}/backupKey"))[
            "backupStreamKey"
        ]
        first = await publishing(one.port, live.stream_key, media[:20])
        async with active(first, media):
            await asyncio.sleep(0.5)
            backup = await publishing(two.port, backup_key, media[:20])
            async with active(backup, media):
                await asyncio.sleep(0.3)
                await denied(two.port, backup_key)
        assert live.hub.handoffs == {"adopted": 2, "failed": 0}
        assert one.stats.refused["already_live_here"] == 1
        assert len(live.hub.registry) == 2  # both keys, with the worker holding the stream
        assert not two.live and not two.relays
        [broadcast] = {id(i): i for i in one.live.values()}.values()
        assert broadcast.ingest_state == "live"
        assert sorted(s.role for s in broadcast.broadcast.sources) == ["backup", "primary"]
        assert await is_streaming(live)  # the claim is the holder's: nobody released it
        await first.stop()
        await backup.stop()


async def test_a_connection_that_cannot_be_handed_over_is_refused(aiohttp_server, settings, db):
    media = capture_media()
    async with live_agent(aiohttp_server, settings, db, workers=2) as live:
        one, two = live.servers
        first = await publishing(one.port, live.stream_key, media[:10])
        live.hub.ready.discard(1)  # worker 1 stops taking connections (it is dying)

        await denied(two.port, live.stream_key)
        assert live.hub.handoffs == {"adopted": 0, "failed": 1}
        assert two.stats.refused["handoff_failed"] == 1
        await first.stop()


async def test_a_publish_right_after_the_last_on_another_worker_waits_for_its_release(
    aiohttp_server, settings, db
):
    """rig answers a claim from this agent with the claim the last publish's release is
    about to end (docs/agent-protocol.md#claim): until that release is done, the key stays with the
    worker releasing it, and a new publish reaching another worker is handed there."""
    media = capture_media()
    async with live_agent(aiohttp_server, settings, db, workers=2) as live:
        one, two = live.servers
        release = one.rig.release

        async def slow_release(*args: object, **kwargs: object) -> None:
            await asyncio.sleep(1.0)  # rig answers late: the release is in flight a while
            await release(*args, **kwargs)

        one.rig.release = slow_release  # type: ignore[method-assign]
        first = await publishing(one.port, live.stream_key, media)
        await first.stop()
        await asyncio.sleep(0.2)  # the publish has ended; its release has not
        second = await publishing(two.port, live.stream_key, media)
        assert live.hub.handoffs == {"adopted": 1, "failed": 0}
        await asyncio.sleep(2)  # the release went out; heartbeats every 0.5 s
        assert await is_streaming(live), "the release of the last publish ended this one"
        sessions = await live.call("GET", f"/streams/{live.stream_id}/sessions")
        assert [s["endReason"] for s in sessions] == [None, "ended"]
        assert one.stats.accepted == 2 and two.stats.accepted == 0
        await second.stop()


async def test_wrong_keys_cost_the_agents_budget_whichever_worker_they_reach(
    aiohttp_server, settings, db
):
    """An address's budget of refused publishes and the refused-key cache are the agent's,
    not each worker's (agent/shared_limits.py)."""
    async with live_agent(aiohttp_server, settings, db, workers=2) as live:
        burst = live.servers[0].settings.failed_publish_burst
        answers = []
        for attempt in range(burst + 4):  # alternating between the workers
            publisher = Publisher(live.servers[attempt % 2].port, f"wrong-{attempt}")
            answers.append(await publisher.publish())
            await publisher.close()
        codes = [a.code for a in answers]  # type: ignore[attr-defined]
        assert codes == ["NetStream.Publish.BadName"] * burst + ["NetStream.Publish.Denied"] * 4
        assert "Too many refused publishes" in answers[-1].description  # type: ignore[attr-defined]
        refused = [s.stats.refused for s in live.servers]
        assert refused[0]["unknown_key"] + refused[1]["unknown_key"] == burst
        assert refused[0]["throttled"] + refused[1]["throttled"] == 4
        # A key rig refused on one worker is refused on the other without asking rig.
        assert "wrong-0" in live.servers[1].refused_keys
        assert "wrong-1" in live.servers[0].refused_keys


async def test_packed_streams_go_to_the_first_worker_until_it_has_its_share(
    aiohttp_server, settings, db
):
    """RIG_AGENT_PACK_STREAMS (agent/hub.py): a new stream reaching the second worker is
    handed to the first while the first relays fewer than that many; beyond, it stays."""
    media = capture_media()
    async with live_agent(aiohttp_server, settings, db, workers=2, pack=1) as live:
        one, two = live.servers
        first = await publishing(two.port, live.stream_key, media[:20])
        await live.destination.wait_for(lambda: live.destination.publishes)
        assert live.hub.handoffs == {"adopted": 1, "failed": 0}
        assert live.stream_key in one.live and not two.live  # relayed by worker 1
        assert live.hub.registry.streams_of(1) == 1
        # Worker 1 has its share (1): a second stream stays on worker 2.
        other = (await live.call("POST", "/streams/"))["streamKey"]
        second = await publishing(two.port, other, media[:20])
        await asyncio.sleep(0.3)
        assert other in two.live and live.hub.handoffs["adopted"] == 1
        await first.stop()
        await second.stop()
