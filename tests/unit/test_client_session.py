"""ClientSession: our publisher to a destination, against ServerSession and scripted servers."""

from __future__ import annotations

import itertools

import pytest

from agent.rtmp import message as msg
from agent.rtmp.client_session import ClientSession
from agent.rtmp.errors import LocalProtocolError, ProtocolError
from agent.rtmp.events import (
    ClientConnected,
    ConnectRequested,
    MediaReceived,
    PublishEnded,
    PublishRefused,
    PublishRequested,
    PublishStarted,
    ServerClosed,
    StatusReceived,
)
from agent.rtmp.message import Message
from agent.rtmp.server_session import ServerSession

from .rtmp_helpers import RawServer, command, commands, pump, seeded

SUCCESS = {"level": "status", "code": "NetConnection.Connect.Success", "description": "ok"}


def new_client(chunk_size: int = 4096) -> ClientSession:
    return ClientSession("app", "rtmp://dest/app", "secret", chunk_size, random=seeded(1))


def publish_via_raw_server(client: ClientSession) -> RawServer:
    """Drive the client to PublishStarted with a scripted server; return it."""
    server = RawServer(client)
    server.send(command(0, "_result", 1, {"fmsVer": "x"}, SUCCESS))
    server.send(command(0, "_result", 4, None, 1.0))
    server.send(
        command(1, "onStatus", 0, None, {"level": "status", "code": "NetStream.Publish.Start"})
    )
    server.take()
    return server


def test_against_server_session() -> None:
    client = new_client(chunk_size=1000)
    server = ServerSession(random=seeded(2))
    client.start()
    server_events, client_events = pump(client, server)
    assert client_events == [
        ClientConnected(
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        )
    ]
    assert server_events[-1] == PublishRequested("secret", "live")
    assert not client.publishing
    server.accept_publish()
    _, client_events = pump(client, server)
    assert client_events == [PublishStarted(1)]
    assert client.publishing and client.stream_id == 1

    client.send_media(msg.VIDEO, 40, b"\x17\x01" + bytes(2500))
    client.send_media(msg.AUDIO, 0x1_0000_0005, b"\xaf\x01")  # wrapped to 32 bits
    server_events, _ = pump(client, server)
    assert server_events == [
        MediaReceived(Message(msg.VIDEO, 1, 40, b"\x17\x01" + bytes(2500))),
        MediaReceived(Message(msg.AUDIO, 1, 5, b"\xaf\x01")),
    ]
    client.unpublish()
    assert not client.publishing
    server_events, _ = pump(client, server)
    assert server_events == [PublishEnded("FCUnpublish")]
    assert client.bytes_sent == server.bytes_received
    assert client.bytes_received == server.bytes_sent


def test_command_sequence() -> None:
    client = new_client()
    server = RawServer(client)
    first = server.take()
    assert first[0] == msg.set_chunk_size(4096)
    assert commands(first) == [
        [
            "connect",
            1.0,
            {
                "app": "app",
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
                "tcUrl": "rtmp://dest/app",
            },
        ]
    ]
    server.send(
        msg.window_ack_size(5_000_000),
        msg.set_peer_bandwidth(5_000_000),
        msg.set_chunk_size(60_000),
    )
    assert server.take() == [msg.window_ack_size(5_000_000)]  # §5.4.5 answer
    assert server.send(command(0, "_result", 1, {"fmsVer": "x"}, SUCCESS)) == [
        ClientConnected({"fmsVer": "x"}, SUCCESS)
    ]
    assert commands(server.take()) == [
        ["releaseStream", 2.0, None, "secret"],
        ["FCPublish", 3.0, None, "secret"],
        ["createStream", 4.0, None],
    ]
    # Errors for releaseStream/FCPublish are ignored, as FFmpeg does.
    failed = {"level": "error", "code": "NetConnection.Call.Failed"}
    assert server.send(command(0, "_error", 2, None, failed)) == []
    assert server.send(command(0, "onFCPublish", 0, None, {"code": "x"})) == []
    assert server.send(command(0, "_result", 4, None, 7.0)) == []
    [publish] = server.take()
    assert publish.stream_id == 7
    assert commands([publish]) == [["publish", 5.0, None, "secret", "live"]]
    start = {"level": "status", "code": "NetStream.Publish.Start", "description": "go"}
    assert server.send(command(7, "onStatus", 0, None, start)) == [PublishStarted(7)]

    client.send_media(msg.DATA_AMF0, 0, b"\x02\x00\x0d@setDataFrame")
    client.send_media(msg.VIDEO, 0, b"v" * 5000)
    sent = server.take()
    assert [(m.type_id, m.stream_id, len(m.payload)) for m in sent] == [(18, 7, 16), (9, 7, 5000)]

    client.unpublish()
    assert commands(server.take()) == [
        ["FCUnpublish", 6.0, None, "secret"],
        ["deleteStream", 0.0, None, 7.0],
    ]
    info = {"level": "status", "code": "NetStream.Unpublish.Success", "description": "bye"}
    assert server.send(command(7, "onStatus", 0, None, info)) == [
        StatusReceived("status", "NetStream.Unpublish.Success", "bye")
    ]


def test_connect_rejected_with_error() -> None:
    client = new_client()
    server = RawServer(client)
    rejected = {
        "level": "error",
        "code": "NetConnection.Connect.Rejected",
        "description": "Authentication failed",
    }
    assert server.send(command(0, "_error", 1, None, rejected)) == [
        PublishRefused("NetConnection.Connect.Rejected", "Authentication failed")
    ]
    assert client.closed
    assert client.receive_data(b"more") == []


def test_connect_rejected_with_on_status() -> None:
    client = new_client()
    server = RawServer(client)
    info = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": "no"}
    assert server.send(command(0, "onStatus", 0, None, info)) == [
        PublishRefused("NetConnection.Connect.Rejected", "no")
    ]


def test_publish_refused_with_bad_name() -> None:
    client = new_client()
    server = RawServer(client)
    server.send(command(0, "_result", 1, {}, SUCCESS))
    server.send(command(0, "_result", 4, None, 1.0))
    info = {"level": "error", "code": "NetStream.Publish.BadName", "description": "taken"}
    assert server.send(command(1, "onStatus", 0, None, info)) == [
        PublishRefused("NetStream.Publish.BadName", "taken")
    ]
    assert client.closed and not client.publishing


def test_create_stream_error_without_info() -> None:
    client = new_client()
    server = RawServer(client)
    server.send(command(0, "_result", 1, {}, SUCCESS))
    assert server.send(command(0, "_error", 4, None)) == [
        PublishRefused("createStream.Failed", "createStream refused")
    ]


def test_bad_create_stream_answer() -> None:
    client = new_client()
    server = RawServer(client)
    server.send(command(0, "_result", 1, {}, SUCCESS))
    with pytest.raises(ProtocolError, match=r"invalid stream id \(str\)"):
        server.send(command(0, "_result", 4, None, "x"))


def test_server_close_command() -> None:
    client = new_client()
    server = publish_via_raw_server(client)
    assert server.send(command(0, "close", 0, None)) == [ServerClosed("close")]
    assert client.closed


def test_error_status_while_publishing_is_reported() -> None:
    client = new_client()
    server = publish_via_raw_server(client)
    info = {"level": "error", "code": "NetStream.Publish.Idle", "description": "idle"}
    assert server.send(command(1, "onStatus", 0, None, info)) == [
        StatusReceived("error", "NetStream.Publish.Idle", "idle")
    ]


def test_acknowledgements_and_ping() -> None:
    client = new_client()
    server = publish_via_raw_server(client)
    server.send(msg.window_ack_size(1000))
    for _ in range(5):
        server.send(command(0, "onBWDone", 0, None, "x" * 400))
    acks = [m for m in server.take() if m.type_id == msg.ACK]
    values = [int.from_bytes(m.payload, "big") for m in acks]
    assert len(values) >= 2 and values[-1] <= client.bytes_received
    assert all(b - a >= 1000 for a, b in itertools.pairwise(values))
    server.send(msg.ping_request(42))
    assert server.take() == [msg.ping_response(42)]


def test_misuse() -> None:
    client = new_client()
    with pytest.raises(LocalProtocolError, match="before start"):
        client.receive_data(b"\x03")
    with pytest.raises(LocalProtocolError, match="send_media\\(\\) in state idle"):
        client.send_media(msg.AUDIO, 0, b"")
    with pytest.raises(LocalProtocolError, match="unpublish\\(\\) in state idle"):
        client.unpublish()
    server = publish_via_raw_server(client)
    assert server is not None
    with pytest.raises(LocalProtocolError, match="start\\(\\) called twice"):
        client.start()
    with pytest.raises(LocalProtocolError, match="cannot send message type 20"):
        client.send_media(msg.COMMAND_AMF0, 0, b"")


def test_handshake_fed_one_byte_at_a_time() -> None:
    client = new_client()
    server = ServerSession(random=seeded(2))
    client.start()
    reply = server.receive_data(client.data_to_send())
    assert reply == []
    data = server.data_to_send()
    for i in range(len(data)):
        assert client.receive_data(data[i : i + 1]) == []
    [connect] = server.receive_data(client.data_to_send())
    assert isinstance(connect, ConnectRequested) and connect.app == "app"
