"""The agent's connection to a destination: the address policy on the very address it
connects to, and lastError in words, never the peer's bytes (issue 12, item 8).
Real sockets on 127.0.0.1."""

import asyncio
import socket

import pytest

from agent.egress import EgressError, open_publish, parse_target
from agent.rtmp import PublishRequested, ServerSession


class Listener:
    """An asyncio TCP server on 127.0.0.1 counting connections; `refuse_with` makes it an
    RTMP server that refuses every publish with that onStatus code."""

    def __init__(self, refuse_with: str | None) -> None:
        self.refuse_with = refuse_with
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> "Listener":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        session = ServerSession()
        try:
            while self.refuse_with is not None and not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for event in session.receive_data(data):
                    if isinstance(event, PublishRequested):
                        session.reject_publish(self.refuse_with, "no")
                writer.write(session.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def listener():
    made: list[Listener] = []

    async def make(refuse_with: str | None = None) -> Listener:
        made.append(await Listener(refuse_with).start())
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def publish(url: str, public_only: bool) -> None:
    server, _, key = url.rpartition("/")
    connection = await open_publish(
        parse_target(server, key),
        chunk_size=4096,
        timeout=3,
        write_timeout=3,
        public_only=public_only,
    )
    connection.close(clean=False)  # not reached in these tests: every open fails


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_public_only_destination_never_connects_to_a_private_address(listener, host):
    server = await listener()
    with pytest.raises(EgressError) as raised:
        await publish(f"rtmp://{host}:{server.port}/live/key", public_only=True)
    assert str(raised.value).endswith("the destination's address is not public")
    assert server.accepted == 0


async def test_other_destinations_connect_anywhere(listener):
    server = await listener(refuse_with="NetStream.Publish.BadName")
    with pytest.raises(EgressError) as raised:
        await publish(f"rtmp://127.0.0.1:{server.port}/live/key", public_only=False)
    assert server.accepted == 1
    assert "refused the publish (bad stream key" in str(raised.value)


async def test_last_error_is_words_not_the_peers_bytes(listener):
    code = "NetStream.Publish.BadName\n" + "X" * 100_000  # a hostile destination's code
    server = await listener(refuse_with=code)
    with pytest.raises(EgressError) as raised:
        await publish(f"rtmp://127.0.0.1:{server.port}/live/key", public_only=False)
    message = str(raised.value)
    assert "XXXX" not in message
    assert "\n" not in message
    assert message.endswith("refused the publish")
    assert len(message) < 200


async def test_connection_refused_in_words():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(EgressError) as raised:
        await publish(f"rtmp://127.0.0.1:{port}/live/key", public_only=False)
    assert str(raised.value).lower().endswith("connection refused")
