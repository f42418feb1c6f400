"""The ingest server's hard limits, on a real socket: deadlines, connection caps per
server and per address, what strangers may buffer, bad input."""

import asyncio
import contextlib
import os

import pytest

from agent.rig_client import RigClient
from agent.rtmp import ClientHandshake, ClientSession
from agent.rtmp import message as msg
from agent.rtmp.amf0 import encode
from agent.rtmp.chunk import ChunkWriter
from agent.rtmp.events import PublishRefused
from agent.server import IngestServer
from agent.settings import AgentSettings


@contextlib.asynccontextmanager
async def ingest_server(**settings: object):
    """An agent ingest server on a free port; its rig is unreachable (a closed port)."""
    agent_settings = AgentSettings(
        rig_url="http://127.0.0.1:9",
        agent_key="unused",
        rtmp_listen="127.0.0.1:0",
        **settings,  # type: ignore[arg-type]
    )
    async with RigClient(agent_settings.rig_url, agent_settings.agent_key, timeout=1) as rig:
        server = IngestServer(agent_settings, rig, agent_settings.egress())
        await server.start()
        try:
            yield server
        finally:
            await server.close()


@pytest.fixture
async def ingest():
    async with ingest_server(handshake_timeout=0.5, max_connections=2) as server:
        yield server


async def connect_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def handshaken(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that did the RTMP handshake and sent `connect` (and no publish)."""
    reader, writer = await connect_from(source, port)
    handshake = ClientHandshake()
    writer.write(handshake.start())
    while not handshake.done:
        data = await reader.read(65536)
        assert data, "closed during the handshake"
        writer.write(handshake.feed(data))
    connect = encode("connect", 1.0, {"app": "live", "tcUrl": f"rtmp://127.0.0.1:{port}/live"})
    writer.write(ChunkWriter().write(msg.Message(msg.COMMAND_AMF0, 0, 0, connect)))
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True if the server closes the connection within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_a_silent_client_is_closed_after_the_handshake_deadline(ingest):
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    assert await closed_by_peer(reader, within=3)
    writer.close()


async def test_connections_over_the_limit_are_closed_at_once(ingest):
    held = [await asyncio.open_connection("127.0.0.1", ingest.port) for _ in range(2)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    assert await closed_by_peer(reader, within=0.3)  # well before the 0.5 s deadline
    for _, w in held:
        w.close()
    writer.close()


async def test_garbage_closes_that_connection_only(ingest):
    bystander_reader, bystander = await asyncio.open_connection("127.0.0.1", ingest.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    writer.write(b"\x07" + os.urandom(4000))  # C0 must be version 3
    assert await closed_by_peer(reader, within=0.3)
    assert not bystander_reader.at_eof()  # the other connection was left alone
    # The server still completes a handshake and answers a publish on another connection.
    bystander.close()
    session = ClientSession("live", "rtmp://127.0.0.1/live", "somekey")
    session.start()
    r, w = await asyncio.open_connection("127.0.0.1", ingest.port)
    events = []
    async with asyncio.timeout(5):
        while not any(isinstance(e, PublishRefused) for e in events):
            w.write(session.data_to_send())
            data = await r.read(65536)
            assert data, "closed before answering the publish"
            events += session.receive_data(data)
    refused = next(e for e in events if isinstance(e, PublishRefused))
    assert refused.code == "NetStream.Publish.Denied"  # rig is unreachable here
    w.close()
    writer.close()


async def refusal(port: int, app: str, key: str) -> PublishRefused:
    """Publish `key` to application `app`; the agent's refusal."""
    session = ClientSession(app, f"rtmp://127.0.0.1/{app}", key)
    session.start()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    events: list[PublishRefused] = []
    try:
        async with asyncio.timeout(5):
            while not events:
                w.write(session.data_to_send())
                data = await r.read(65536)
                assert data
                events += [e for e in session.receive_data(data) if isinstance(e, PublishRefused)]
    finally:
        w.close()
    return events[0]


async def test_wrong_application_is_refused_with_badname_and_a_hint(ingest):
    refused = await refusal(ingest.port, "other", "somekey")
    assert refused.code == "NetStream.Publish.BadName"
    url = f"rtmp://127.0.0.1:{ingest.port}/live"
    assert refused.description == f"Unknown application; publish to {url}/<stream key>."


async def test_a_stream_key_pasted_into_the_application_is_not_logged(ingest, caplog):
    # OBS's server field set to rtmp://host/live/KEY as well as the key field: the
    # application is "live/KEY". The refusal is logged, the key is not.
    key = "rIiroI8xC1tcjT28ulZWhQ"
    for app in (f"live/{key}", key, f"live/{key}/more"):
        assert (await refusal(ingest.port, app, key)).code == "NetStream.Publish.BadName"
    refusals = [r.getMessage() for r in caplog.records if "unknown application" in r.getMessage()]
    assert len(refusals) == 3, refusals
    assert not any(key in r.getMessage() for r in caplog.records)
    assert 'unknown application "live/<22 characters>"' in refusals[0]


async def test_a_slow_answer_from_rig_is_not_the_publishers_deadline():
    """The deadline is to send `publish`; rig's answer has its own (RigClient's timeout).
    rig here accepts connections and never answers: after its 1 s timeout the publish is
    refused with NetStream.Publish.Denied, although the handshake deadline is 0.5 s."""
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    rig_url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    settings = AgentSettings(
        rig_url=rig_url, agent_key="unused", rtmp_listen="127.0.0.1:0", handshake_timeout=0.5
    )
    async with RigClient(settings.rig_url, settings.agent_key, timeout=1) as rig:
        server = IngestServer(settings, rig, settings.egress())
        await server.start()
        try:
            session = ClientSession("live", "rtmp://127.0.0.1/live", "somekey")
            session.start()
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            events = []
            async with asyncio.timeout(5):
                while not events:
                    w.write(session.data_to_send())
                    data = await r.read(65536)
                    assert data, "closed before rig answered"
                    events += [
                        e for e in session.receive_data(data) if isinstance(e, PublishRefused)
                    ]
            assert events[0].code == "NetStream.Publish.Denied"
            assert loop.time() - started >= 0.9  # it waited for rig, past the 0.5 s deadline
            w.close()
        finally:
            await server.close()
            for writer in held:
                writer.close()
            silent.close()
            await silent.wait_closed()


async def test_the_publish_deadline_follows_the_handshake():
    async with ingest_server(handshake_timeout=0.5, publish_timeout=1.0) as server:
        reader, writer = await handshaken("127.0.0.1", server.port)
        # Handshaken: the handshake deadline (0.5 s) no longer applies; the publish one does.
        assert not await closed_by_peer(reader, within=0.8)
        assert await closed_by_peer(reader, within=1.0)
        writer.close()
        refused = server.stats.connections_refused
        assert refused == {"publish_timeout": 1}


async def test_one_address_cannot_take_every_slot():
    async with ingest_server(
        max_connections=10, max_connections_per_address=6, max_unauthenticated_per_address=3
    ) as server:
        held = [await connect_from("127.0.0.2", server.port) for _ in range(3)]
        reader, writer = await connect_from("127.0.0.2", server.port)
        assert await closed_by_peer(reader, within=0.3)  # a 4th stranger from .2: at once
        others = [await connect_from(f"127.0.0.{n}", server.port) for n in (3, 4, 3)]
        await asyncio.sleep(0.1)
        assert not any(r.at_eof() for r, _ in [*held, *others])
        assert server.admission.connections == 6
        assert server.stats.connections_refused == {"address_unauthenticated": 1}
        for _, w in [*held, *others]:
            w.close()
        writer.close()
        await asyncio.sleep(0.1)
        assert server.admission.connections == 0


async def test_strangers_together_buffer_a_bounded_amount():
    """Each parks a 40 KB partial message (under its own limits); the third goes over
    the 100 KB they may hold all together and is closed; the first two are not."""
    async with ingest_server(unauthenticated_buffer_bytes=100_000) as server:
        connections = []
        for n in range(3):
            reader, writer = await handshaken(f"127.0.0.{n + 2}", server.port)
            data = ChunkWriter().write(msg.Message(msg.VIDEO, 1, 0, bytes(40_000)), 4)
            writer.write(data[:-100])  # all but the end: a partial message
            connections.append((reader, writer))
            await asyncio.sleep(0.1)
        closed = [await closed_by_peer(r, within=0.3) for r, _ in connections]
        assert closed == [False, False, True]
        assert server.stats.connections_refused == {"buffer_limit": 1}
        assert 70_000 < server.admission.unauthenticated_bytes <= 100_000
        for _, writer in connections:
            writer.close()
        await asyncio.sleep(0.1)
        assert server.admission.unauthenticated_bytes == 0


async def test_a_strangers_large_message_closes_its_connection():
    async with ingest_server() as server:
        reader, writer = await handshaken("127.0.0.1", server.port)
        header = ChunkWriter().write(msg.Message(msg.VIDEO, 1, 0, bytes(65 * 1024)), 4)[:12]
        writer.write(header)
        assert await closed_by_peer(reader, within=1)
        writer.close()
        assert server.stats.connections_refused == {"protocol_error": 1}
