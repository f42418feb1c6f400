"""Helpers for the RTMP unit tests: in-memory transfers and scripted raw peers."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from agent.rtmp import amf0
from agent.rtmp.chunk import ChunkReader, ChunkWriter
from agent.rtmp.client_session import ClientSession
from agent.rtmp.events import Event
from agent.rtmp.handshake import ClientHandshake, ServerHandshake
from agent.rtmp.message import COMMAND_AMF0, Message
from agent.rtmp.server_session import ServerSession


def seeded(seed: int = 1) -> Any:
    """Return a deterministic replacement for ``os.urandom``."""
    return random.Random(seed).randbytes


def pump(
    client: ClientSession, server: ServerSession, rounds: int = 50
) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until both sides are quiet; return (server, client) events."""
    server_events: list[Event] = []
    client_events: list[Event] = []
    for _ in range(rounds):
        to_server = client.data_to_send()
        if to_server:
            server_events += server.receive_data(to_server)
        to_client = server.data_to_send()
        if to_client:
            client_events += client.receive_data(to_client)
        if not to_server and not to_client:
            break
    return server_events, client_events


def command(stream_id: int, *values: Any) -> Message:
    """Build an AMF0 command message."""
    return Message(COMMAND_AMF0, stream_id, 0, amf0.encode(*values))


def commands(messages: list[Message]) -> list[list[Any]]:
    """Decode the AMF0 command messages among *messages*."""
    return [amf0.decode(m.payload) for m in messages if m.type_id == COMMAND_AMF0]


class RawClient:
    """A hand-driven RTMP client talking to a :class:`ServerSession` in memory."""

    def __init__(self, server: ServerSession, chunk_size: int = 128) -> None:
        self.server = server
        self.writer = ChunkWriter()
        self.reader = ChunkReader()
        self.events: list[Event] = []
        handshake = ClientHandshake(seeded(7))
        self.events += server.receive_data(handshake.start())
        c2 = handshake.feed(server.data_to_send())
        if not handshake.done:
            raise RuntimeError("server handshake incomplete")
        self.events += server.receive_data(c2)
        if chunk_size != 128:
            self.events += server.receive_data(self.writer.set_chunk_size(chunk_size))

    def send(self, *messages: Message) -> list[Event]:
        """Send messages; return the server events and keep the server's replies."""
        data = b"".join(self.writer.write(m) for m in messages)
        events = self.server.receive_data(data)
        self.events += events
        return events

    def replies(self) -> list[Message]:
        """Messages the server sent since the last call."""
        return self.reader.feed(self.server.data_to_send())


class RawServer:
    """A hand-driven RTMP server talking to a :class:`ClientSession` in memory."""

    def __init__(self, client: ClientSession) -> None:
        self.client = client
        self.writer = ChunkWriter()
        self.reader = ChunkReader()
        handshake = ServerHandshake(seeded(8))
        client.start()
        out = handshake.feed(client.data_to_send())
        self.events: list[Event] = client.receive_data(out)
        handshake.feed(client.data_to_send())
        if not handshake.done:
            raise RuntimeError("client handshake incomplete")
        self.received: list[Message] = self.reader.feed(handshake.leftover)

    def send(self, *messages: Message) -> list[Event]:
        """Send messages to the client; return its events and collect its output."""
        events = self.client.receive_data(b"".join(self.writer.write(m) for m in messages))
        self.events += events
        self.received += self.reader.feed(self.client.data_to_send())
        return events

    def take(self) -> list[Message]:
        """Messages the client sent since the last call."""
        self.received += self.reader.feed(self.client.data_to_send())
        taken, self.received = self.received, []
        return taken


def media_messages(max_size: int) -> st.SearchStrategy[list[tuple[int, int, bytes]]]:
    """Lists of (type, timestamp, body): audio, video and data messages of any content."""
    return st.lists(
        st.tuples(st.sampled_from([8, 9, 18]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)),
        max_size=max_size,
    )
