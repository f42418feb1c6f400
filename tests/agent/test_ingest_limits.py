"""The ingest server's hard limits, on a real socket: deadlines, connection cap, bad input."""

import asyncio
import os

import pytest

from agent.rig_client import RigClient
from agent.rtmp import ClientSession
from agent.rtmp.events import PublishRefused
from agent.server import IngestServer
from agent.settings import AgentSettings


@pytest.fixture
async def ingest():
    """An agent ingest server on a free port; its rig is unreachable (a closed port)."""
    settings = AgentSettings(
        rig_url="http://127.0.0.1:9",
        agent_key="unused",
        rtmp_listen="127.0.0.1:0",
        handshake_timeout=0.5,
        max_connections=2,
    )
    async with RigClient(settings.rig_url, settings.agent_key, timeout=1) as rig:
        server = IngestServer(settings, rig, settings.egress())
        await server.start()
        yield server
        await server.close()


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


async def test_wrong_application_is_refused_with_badname(ingest):
    session = ClientSession("other", "rtmp://127.0.0.1/other", "somekey")
    session.start()
    r, w = await asyncio.open_connection("127.0.0.1", ingest.port)
    events = []
    async with asyncio.timeout(5):
        while not events:
            w.write(session.data_to_send())
            data = await r.read(65536)
            assert data
            events += [e for e in session.receive_data(data) if isinstance(e, PublishRefused)]
    assert events[0].code == "NetStream.Publish.BadName"
    w.close()


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
