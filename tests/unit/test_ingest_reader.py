"""The publisher's connection as the relay thread reads it, over a real socket pair."""

import socket
import time

import pytest

from agent.ingest_reader import IngestEnded, IngestReader
from agent.rtmp import ServerSession
from agent.rtmp.chunk import ChunkWriter
from agent.rtmp.message import Message

from .rtmp_helpers import RawClient, command

FFMPEG_CONNECT = {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://x/live"}


def publishing() -> tuple[ServerSession, ChunkWriter]:
    """A server session in the publishing state, and the client's chunk writer."""
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "key", "live"))
    raw.server.accept_publish()
    raw.server.data_to_send()
    return raw.server, raw.writer


@pytest.fixture
def pair():
    ours, publisher = socket.socketpair()
    yield ours, publisher
    ours.close()
    publisher.close()


def reader_for(ours: socket.socket, idle: float = 5.0):
    session, writer = publishing()
    media: list[tuple[int, int, bytes]] = []
    reader = IngestReader(ours, session, lambda *m: media.append(m), idle_timeout=idle)
    return reader, writer, media


def read_until(reader: IngestReader, what, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not what() and time.monotonic() < deadline:
        reader.on_readable()
        time.sleep(0.01)


def test_media_from_the_socket_and_from_the_event_loop_buffer(pair):
    ours, publisher = pair
    reader, writer, media = reader_for(ours)
    reader.feed(writer.write(Message(9, 1, 0, b"\x17\x01video")))  # read before hand-over
    publisher.sendall(writer.write(Message(8, 1, 21, b"\xaf\x01audio")))
    read_until(reader, lambda: len(media) == 2)
    assert media == [(9, 0, b"\x17\x01video"), (8, 21, b"\xaf\x01audio")]


def test_unpublish_ends_the_ingest_with_its_reason(pair):
    ours, publisher = pair
    reader, writer, media = reader_for(ours)
    publisher.sendall(
        writer.write(Message(9, 1, 0, b"\x17\x01v"))
        + writer.write(command(0, "deleteStream", 0, None, 1.0))
    )
    with pytest.raises(IngestEnded, match="deleteStream"):
        read_until(reader, lambda: False)
    assert media == [(9, 0, b"\x17\x01v")]  # what came before the end is kept


def test_garbage_and_a_closed_connection_end_the_ingest(pair):
    ours, publisher = pair
    reader, _, _ = reader_for(ours)
    publisher.sendall(b"\xc5" + bytes(512))  # a chunk on a chunk stream never opened
    with pytest.raises(IngestEnded, match="protocol error"):
        read_until(reader, lambda: False)

    other_ours, other_publisher = socket.socketpair()
    reader, _, _ = reader_for(other_ours)
    other_publisher.close()
    with pytest.raises(IngestEnded, match="connection closed"):
        read_until(reader, lambda: False)
    other_ours.close()


def test_the_idle_deadline(pair):
    ours, _ = pair
    reader, _, _ = reader_for(ours, idle=0.05)
    reader.check_idle(time.monotonic())  # fresh: fine
    with pytest.raises(IngestEnded, match="no data in time"):
        reader.check_idle(time.monotonic() + 1)


def test_close_shuts_the_connection_down_for_the_publisher(pair):
    ours, publisher = pair
    reader, _, _ = reader_for(ours)
    reader.close()
    publisher.settimeout(2)
    assert publisher.recv(100) == b""
