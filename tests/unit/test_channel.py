"""Frames between the supervisor and its workers (agent/channel.py): byte vectors for the
framing and its limits, and a real socketpair for descriptors and requests."""

import asyncio
import os
import socket
import struct

import pytest

from agent.channel import (
    HEADER,
    MAX_BLOB,
    MAX_JSON,
    ChannelClosed,
    ChannelError,
    Frame,
    FrameReader,
    Link,
    encode,
)


def test_a_frame_is_header_json_blob():
    data = encode({"op": "reserve", "key": "ab"}, b"\x00\x01")
    body = b'{"op":"reserve","key":"ab"}'
    assert data == struct.pack(">IIB", len(body), 2, 0) + body + b"\x00\x01"
    assert HEADER.size == 9
    (frame,) = FrameReader().feed(data)
    assert frame.message == {"op": "reserve", "key": "ab"}
    assert frame.blob == b"\x00\x01"
    assert frame.fds == []


def test_frames_split_anywhere_and_joined_come_out_whole():
    data = encode({"n": 1}) + encode({"n": 2}, b"x" * 1000) + encode({"n": 3})
    for cut in (1, 5, 9, 10, 17, 500, len(data) - 1):
        reader = FrameReader()
        frames = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert [f.message["n"] for f in frames] == [1, 2, 3]
        assert frames[1].blob == b"x" * 1000
    reader = FrameReader()
    frames = [f for byte in data for f in reader.feed(bytes([byte]))]
    assert [f.message["n"] for f in frames] == [1, 2, 3]


def test_descriptors_go_with_the_frame_that_announces_them():
    read_end, write_end = os.pipe()
    try:
        data = encode({"n": 1}) + encode({"n": 2}, fds=1)
        reader = FrameReader()
        first = reader.feed(data[:12])  # the first frame (and none of the second's header)
        second = reader.feed(data[12:], [read_end])  # the fd arrives with the second's bytes
        assert [f.fds for f in first + second] == [[], [read_end]]
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (struct.pack(">IIB", MAX_JSON + 1, 0, 0), "over the limits"),
        (struct.pack(">IIB", 2, MAX_BLOB + 1, 0), "over the limits"),
        (struct.pack(">IIB", 2, 0, 2), "over the limits"),
        (struct.pack(">IIB", 2, 0, 1) + b"{}", "announces 1 fds, 0 arrived"),
        (struct.pack(">IIB", 3, 0, 0) + b"{x}", "does not parse"),
        (struct.pack(">IIB", 2, 0, 0) + b"[]", "not an object"),
        (struct.pack(">IIB", 4, 0, 0) + b"\xff\xfe{}", "does not parse"),
    ],
)
def test_malformed_frames_are_refused(data, why):
    with pytest.raises(ChannelError, match=why):
        FrameReader().feed(data)


def test_a_malformed_frame_closes_the_descriptors_it_brought():
    read_end, write_end = os.pipe()
    os.close(write_end)
    reader = FrameReader()
    with pytest.raises(ChannelError):
        reader.feed(struct.pack(">IIB", 2, 0, 1) + b"[]", [read_end])
    with pytest.raises(OSError):
        os.fstat(read_end)  # closed


def test_descriptors_without_a_frame_are_refused_and_closed():
    read_end, write_end = os.pipe()
    os.close(write_end)
    reader = FrameReader()
    with pytest.raises(ChannelError, match="without a frame"):
        reader.feed(encode({"n": 1}), [read_end])
    reader.close()
    with pytest.raises(OSError):
        os.fstat(read_end)


def test_encode_refuses_what_the_reader_would():
    with pytest.raises(ChannelError):
        encode({}, b"x" * (MAX_BLOB + 1))
    with pytest.raises(ChannelError):
        encode({}, fds=2)


async def test_requests_answers_and_a_socket_passed_between_links():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    served: list[Frame] = []

    async def serve(frame: Frame):
        served.append(frame)
        if frame.message.get("op") == "take":
            fd = frame.fds.pop()  # adopted: the link does not close it
            with socket.socket(fileno=fd) as sock:
                sock.sendall(b"hello from the other side")
            return ({"took": True}, frame.blob[::-1], [])
        return None

    client = Link(ours, lambda frame: asyncio.sleep(0, None), name="client")
    server = Link(theirs, serve, name="server")
    left, right = socket.socketpair()
    try:
        answer = await client.ask({"op": "take"}, b"abc", [os.dup(left.fileno())])
        assert answer.message == {"took": True, "re": 1}
        assert answer.blob == b"cba"
        right.settimeout(5)
        assert right.recv(100) == b"hello from the other side"
        client.notify({"op": "note"})
        big = os.urandom(3 * 1024 * 1024)  # more than a socket buffer: sent in parts
        answer = await client.ask({"op": "echo"}, big)
        assert answer.message == {"re": 2}
        assert served[-1].blob == big
        assert [f.message.get("op") for f in served] == ["take", "note", "echo"]
    finally:
        left.close()
        right.close()
        server.close()
    # The other end going away fails what is waiting, and what is sent later.
    assert await asyncio.wait_for(client.closed, 5) is None
    with pytest.raises(ChannelClosed):
        client.notify({"op": "late"})
    with pytest.raises(ChannelClosed):
        await client.ask({"op": "late"})
    client.close()


async def test_a_corrupted_stream_ends_the_link():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    link = Link(ours, lambda frame: asyncio.sleep(0, None), name="victim")
    waiting = link.request({"op": "anything"})
    theirs.sendall(struct.pack(">IIB", MAX_JSON + 1, 0, 0))
    error = await asyncio.wait_for(link.closed, 5)
    assert isinstance(error, ChannelError)
    with pytest.raises(ChannelClosed):
        await waiting
    theirs.close()
