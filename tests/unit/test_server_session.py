"""ServerSession: the publish flow of OBS/FFmpeg, acks, pings, errors, a real capture."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from agent.rtmp import amf0
from agent.rtmp import message as msg
from agent.rtmp.amf0 import EcmaArray
from agent.rtmp.chunk import ChunkReader, ChunkWriter
from agent.rtmp.client_session import ClientSession
from agent.rtmp.errors import LocalProtocolError, MessageTooLarge, ProtocolError
from agent.rtmp.events import (
    ConnectRequested,
    Event,
    MediaReceived,
    PublishEnded,
    PublishRefused,
    PublishRequested,
    PublishStarted,
)
from agent.rtmp.message import Message
from agent.rtmp.server_session import ServerSession

from .rtmp_helpers import RawClient, command, commands, pump, seeded

CAPTURE = Path(__file__).resolve().parent.parent / "data" / "ffmpeg_publish.bin"

FFMPEG_CONNECT = {
    "app": "live",
    "type": "nonprivate",
    "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
    "tcUrl": "rtmp://127.0.0.1:1935/live",
}
METADATA = amf0.encode(
    "@setDataFrame",
    "onMetaData",
    EcmaArray(duration=0.0, width=320.0, height=240.0, videocodecid=7.0, audiocodecid=10.0),
)
AVC_SEQUENCE_HEADER = bytes.fromhex("1700000000014d401effe1000a674d401eeca0d07d0101000468ef3c80")
AAC_SEQUENCE_HEADER = bytes.fromhex("af001210")


def connected_pair() -> tuple[ClientSession, ServerSession, list[Event], list[Event]]:
    client = ClientSession("live", "rtmp://example/live", "key?token=1", random=seeded(1))
    server = ServerSession(random=seeded(2))
    client.start()
    server_events, client_events = pump(client, server)
    return client, server, server_events, client_events


def test_publish_flow_with_client_session() -> None:
    client, server, server_events, client_events = connected_pair()
    assert server_events == [
        ConnectRequested(
            "live",
            "rtmp://example/live",
            {
                "app": "live",
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
                "tcUrl": "rtmp://example/live",
            },
        ),
        PublishRequested("key?token=1", "live"),
    ]
    assert server.app == "live" and server.tc_url == "rtmp://example/live"
    assert server.stream_name == "key?token=1" and server.publish_pending
    assert not server.publishing and not client.publishing

    server.accept_publish()
    _, client_events = pump(client, server)
    assert client_events == [PublishStarted(1)]
    assert server.publishing and client.publishing and server.stream_id == 1

    client.send_media(msg.DATA_AMF0, 0, METADATA)
    client.send_media(msg.VIDEO, 0, AVC_SEQUENCE_HEADER)
    client.send_media(msg.AUDIO, 0, AAC_SEQUENCE_HEADER)
    frames = [
        (msg.VIDEO if i % 2 else msg.AUDIO, i * 21, bytes([i]) * (50 + i * 97)) for i in range(60)
    ]
    frames.append((msg.VIDEO, 0x01000000, b"\x27" + bytes(9000)))  # extended timestamp
    for type_id, ts, payload in frames:
        client.send_media(type_id, ts, payload)
    server_events, _ = pump(client, server)
    assert all(isinstance(e, MediaReceived) for e in server_events)
    messages = [e.message for e in server_events if isinstance(e, MediaReceived)]
    received = [(m.type_id, m.timestamp, m.payload) for m in messages]
    assert received == [
        (msg.DATA_AMF0, 0, METADATA),
        (msg.VIDEO, 0, AVC_SEQUENCE_HEADER),
        (msg.AUDIO, 0, AAC_SEQUENCE_HEADER),
        *frames,
    ]
    assert all(m.stream_id == 1 for m in messages)

    client.unpublish()
    server_events, _ = pump(client, server)
    assert server_events == [PublishEnded("FCUnpublish")]
    assert not server.publishing and not server.closed
    assert server.bytes_received == client.bytes_sent
    assert client.bytes_received == server.bytes_sent


def test_reject_publish() -> None:
    client, server, _, _ = connected_pair()
    server.reject_publish("NetStream.Publish.Denied", "Unknown stream key.")
    assert server.closed
    _, client_events = pump(client, server)
    assert client_events == [PublishRefused("NetStream.Publish.Denied", "Unknown stream key.")]
    assert client.closed
    assert server.receive_data(b"anything") == []
    with pytest.raises(LocalProtocolError, match="accept_publish\\(\\) in state closed"):
        server.accept_publish()


def test_accept_and_reject_need_a_pending_publish() -> None:
    server = ServerSession()
    with pytest.raises(LocalProtocolError, match="in state handshake"):
        server.accept_publish()
    with pytest.raises(LocalProtocolError, match="in state handshake"):
        server.reject_publish()


def test_media_before_publish_is_dropped_and_held_until_accept() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    assert raw.send(Message(msg.VIDEO, 1, 0, b"early")) == []
    assert raw.server.dropped_before_publish == 1
    # A client that does not wait for NetStream.Publish.Start: media is held...
    events = raw.send(
        command(1, "publish", 3, None, "k", "live"),
        Message(msg.DATA_AMF0, 1, 0, METADATA),
        Message(msg.VIDEO, 1, 0, AVC_SEQUENCE_HEADER),
    )
    assert events == [PublishRequested("k", "live")]
    assert raw.send(Message(msg.AUDIO, 1, 0, AAC_SEQUENCE_HEADER)) == []
    raw.server.accept_publish()
    # ... and returned, in order, by the next receive_data call (even with no data).
    assert raw.server.receive_data(b"") == [
        MediaReceived(Message(msg.DATA_AMF0, 1, 0, METADATA)),
        MediaReceived(Message(msg.VIDEO, 1, 0, AVC_SEQUENCE_HEADER)),
        MediaReceived(Message(msg.AUDIO, 1, 0, AAC_SEQUENCE_HEADER)),
    ]
    assert raw.send(Message(msg.AUDIO, 1, 5, b"a")) == [MediaReceived(Message(8, 1, 5, b"a"))]
    assert raw.server.dropped_before_publish == 1


def test_receive_media_gives_the_messages_before_the_events_they_came_before() -> None:
    """The publisher's read loop: held media first, then a read's audio, video, data
    and aggregated messages as they are, then the unpublish that followed them; media
    after the unpublish is not the publish's."""
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "k", "live"), Message(msg.AUDIO, 1, 0, b"held"))
    raw.server.accept_publish()
    aggregate = bytes((9,)) + (2).to_bytes(3, "big") + (7).to_bytes(3, "big") + bytes(4)
    aggregate += b"v2" + (13).to_bytes(4, "big")
    data = b"".join(
        raw.writer.write(m)
        for m in (
            Message(msg.DATA_AMF0, 1, 0, METADATA),
            Message(msg.VIDEO, 1, 1, b"v1"),
            Message(msg.AGGREGATE, 1, 5, aggregate),
            command(1, "FCUnpublish", 4, None, "k"),
            Message(msg.AUDIO, 1, 9, b"after"),
        )
    )
    media, events = raw.server.receive_media(data)
    assert media == [
        Message(msg.AUDIO, 1, 0, b"held"),
        Message(msg.DATA_AMF0, 1, 0, METADATA),
        Message(msg.VIDEO, 1, 1, b"v1"),
        Message(msg.VIDEO, 1, 5, b"v2"),
    ]
    assert events == [PublishEnded("FCUnpublish")]
    assert raw.server.dropped_before_publish == 1  # "after"
    assert raw.server.has_data_to_send  # the FCUnpublish answer


def test_input_kept_while_pending_is_bounded_and_dropped_on_reject() -> None:
    raw = RawClient(ServerSession(max_message_size=10_000))
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "k", "live"))
    for i in range(5):
        assert raw.send(Message(msg.VIDEO, 1, i, bytes(3000))) == []
    assert raw.server.buffered_bytes > 15_000  # kept unread, as sent
    raw.server.reject_publish()
    assert raw.server.receive_data(b"") == []
    # A publisher that does not wait for the answer may send a read's worth, not more.
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "k", "live"))
    with pytest.raises(ProtocolError, match="before the publish was answered"):
        for i in range(100):
            raw.send(Message(msg.VIDEO, 1, i, bytes(20_000)))


def test_before_publish_only_small_messages_are_accepted() -> None:
    """A stranger cannot make the session hold megabytes: 64 KiB per message (and
    twice that in partial messages) until a publish is accepted."""
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    header = ChunkWriter().write(Message(msg.VIDEO, 1, 0, bytes(65 * 1024)))[:12]
    with pytest.raises(MessageTooLarge, match="limit of 65536 bytes"):
        raw.server.receive_data(header)
    # Partial messages on several chunk streams: 128 KiB at most, all together.
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    writer = ChunkWriter()
    parked = 0
    with pytest.raises(ProtocolError, match="partially received messages"):
        for csid in range(4, 10):
            chunks = writer.write(Message(msg.VIDEO, 1, 0, bytes(60_000)), csid)
            raw.server.receive_data(chunks[: -(1 + 60_000 % 128)])  # all but the last chunk
            parked += 1
    assert parked == 2  # the third partial message would pass 128 KiB


def test_large_media_sent_with_the_publish_is_read_with_the_publishers_limit() -> None:
    """A publisher that sends a keyframe in the same read as `publish` (before the
    answer) loses nothing: the rest of the read waits, then gets the normal limit."""
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    keyframe = Message(msg.VIDEO, 1, 40, b"\x17\x01" + bytes(300_000))
    events = raw.send(command(1, "publish", 3, None, "k", "live"), keyframe)
    assert events == [PublishRequested("k", "live")]
    raw.server.accept_publish()
    assert raw.server.receive_data(b"") == [MediaReceived(keyframe)]
    big = Message(msg.VIDEO, 1, 80, bytes(2_000_000))
    assert raw.send(big) == [MediaReceived(big)]


def test_ffmpeg_command_sequence() -> None:
    """The exact sequence libavformat/rtmpproto.c sends when publishing."""
    server = ServerSession(chunk_size=4096)
    raw = RawClient(server, chunk_size=4096)
    events = raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    assert events == [ConnectRequested("live", "rtmp://127.0.0.1:1935/live", FFMPEG_CONNECT)]
    replies = raw.replies()
    assert [(m.type_id, m.payload) for m in replies[:3]] == [
        (msg.WINDOW_ACK_SIZE, (2_500_000).to_bytes(4, "big")),
        (msg.SET_PEER_BANDWIDTH, (2_500_000).to_bytes(4, "big") + b"\x02"),
        (msg.SET_CHUNK_SIZE, (4096).to_bytes(4, "big")),
    ]
    assert commands(replies) == [
        [
            "_result",
            1.0,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        ]
    ]
    assert raw.reader.chunk_size == 4096

    events = raw.send(
        command(0, "releaseStream", 2, None, "testkey"),
        command(0, "FCPublish", 3, None, "testkey"),
        command(0, "createStream", 4, None),
    )
    assert events == []
    assert commands(raw.replies()) == [
        ["_result", 2.0, None],
        ["_result", 3.0, None],
        ["_result", 4.0, None, 1.0],
    ]
    assert raw.send(command(1, "publish", 5, None, "testkey", "live")) == [
        PublishRequested("testkey", "live")
    ]
    assert raw.replies() == []
    server.accept_publish()
    replies = raw.replies()
    assert replies[0] == msg.stream_begin(1)
    assert commands(replies) == [
        [
            "onStatus",
            0.0,
            None,
            {
                "level": "status",
                "code": "NetStream.Publish.Start",
                "description": "testkey is now published.",
            },
        ]
    ]
    assert replies[1].stream_id == 1

    media = [
        Message(msg.DATA_AMF0, 1, 0, METADATA),
        Message(msg.VIDEO, 1, 0, AVC_SEQUENCE_HEADER),
        Message(msg.AUDIO, 1, 0, AAC_SEQUENCE_HEADER),
        Message(msg.VIDEO, 1, 0, b"\x17\x01\x00\x00\x00" + bytes(10_000)),
        Message(msg.AUDIO, 1, 23, b"\xaf\x01" + bytes(300)),
        Message(msg.VIDEO, 1, 33, b"\x27\x01\x00\x00\x00" + bytes(900)),
    ]
    assert raw.send(*media) == [MediaReceived(m) for m in media]

    events = raw.send(
        command(0, "FCUnpublish", 6, None, "testkey"),
        command(0, "deleteStream", 7, None, 1.0),
    )
    assert events == [PublishEnded("FCUnpublish")]
    assert commands(raw.replies()) == [["_result", 6.0, None]]


def test_delete_stream_ends_publish_and_answers_unpublish() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "k"))
    assert raw.server.publish_type == "live"
    raw.server.accept_publish()
    raw.replies()
    assert raw.send(command(0, "deleteStream", 0, None, 1.0)) == [PublishEnded("deleteStream")]
    assert commands(raw.replies())[0][3]["code"] == "NetStream.Unpublish.Success"


def test_close_stream_ends_publish_and_republish_works() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "k", "live"))
    raw.server.accept_publish()
    assert raw.send(command(1, "closeStream", 0, None)) == [PublishEnded("closeStream")]
    assert raw.send(command(1, "publish", 4, None, "k2", "live")) == [
        PublishRequested("k2", "live")
    ]


def test_acknowledgements_follow_the_window() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    raw.replies()
    raw.send(msg.window_ack_size(5000))
    sent_before = server.bytes_received
    for i in range(10):
        raw.send(Message(msg.AUDIO, 1, i, bytes(1000)))
    acks = [m for m in raw.replies() if m.type_id == msg.ACK]
    assert len(acks) >= 2
    values = [int.from_bytes(m.payload, "big") for m in acks]
    assert values == sorted(values)
    assert values[0] >= 5000 and values[-1] <= server.bytes_received
    assert server.bytes_received - sent_before > 10_000
    assert all(b - a >= 5000 for a, b in itertools.pairwise(values))


def test_default_window_before_any_announcement() -> None:
    server = ServerSession()
    raw = RawClient(server)
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    raw.replies()
    for i in range(50):  # before a publish: messages of at most 64 KiB
        raw.send(Message(msg.VIDEO, 1, i, bytes(60_000)))
    acks = [m for m in raw.replies() if m.type_id == msg.ACK]
    assert len(acks) == 1 and int.from_bytes(acks[0].payload, "big") >= 2_500_000


def test_ping_request_is_answered() -> None:
    raw = RawClient(ServerSession())
    raw.send(msg.ping_request(123456))
    assert raw.replies() == [msg.ping_response(123456)]
    raw.send(msg.user_control(msg.UC_SET_BUFFER_LENGTH, 1), msg.ping_response(5))
    assert raw.replies() == []


def test_set_peer_bandwidth_from_client_is_answered_once() -> None:
    raw = RawClient(ServerSession())
    raw.send(msg.set_peer_bandwidth(1_000_000))
    raw.send(msg.set_peer_bandwidth(1_000_000))
    assert raw.replies() == [msg.window_ack_size(1_000_000)]


def test_amf3_command_message() -> None:
    raw = RawClient(ServerSession())
    payload = b"\x00" + amf0.encode("connect", 1, {"app": "app3"})
    events = raw.send(Message(msg.COMMAND_AMF3, 0, 0, payload))
    assert events == [ConnectRequested("app3", None, {"app": "app3"})]


def test_aggregate_messages_are_split() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    raw.send(command(1, "publish", 3, None, "k", "live"))
    raw.server.accept_publish()

    def sub(type_id: int, ts: int, body: bytes) -> bytes:
        header = bytes((type_id,)) + len(body).to_bytes(3, "big")
        header += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes((ts >> 24,)) + bytes(3)
        return header + body + (11 + len(body)).to_bytes(4, "big")

    payload = sub(9, 1000, b"v1") + sub(8, 1010, b"a1")
    events = raw.send(Message(msg.AGGREGATE, 1, 5000, payload))
    assert events == [
        MediaReceived(Message(9, 1, 5000, b"v1")),
        MediaReceived(Message(8, 1, 5010, b"a1")),
    ]


def test_unknown_commands() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    raw.replies()
    assert raw.send(command(0, "getStreamLength", 0, None, "x")) == []
    assert raw.replies() == []
    raw.send(command(0, "play", 9, None, "x"))
    [[name, tx, _, info]] = commands(raw.replies())
    assert (name, tx, info["code"]) == ("_error", 9.0, "NetConnection.Call.Failed")
    raw.send(command(0, "_result", 1, None), command(0, "onStatus", 0, None, {}))
    assert raw.replies() == []


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([command(0, "createStream", 2, None)], "command 'createStream' before connect"),
        ([command(1, "publish", 2, None, "k")], "command 'publish' before connect"),
        (
            [command(0, "connect", 1, FFMPEG_CONNECT), command(0, "connect", 2, {"app": "x"})],
            "connect received twice",
        ),
        ([command(0, "connect", 1, None)], "connect without a command object"),
        ([command(0, "connect", 1, {"app": 5})], "connect: app is not a string"),
        ([command(0, "connect", 1, {"tcUrl": 5})], "connect: tcUrl is not a string"),
        (
            [command(0, "connect", 1, FFMPEG_CONNECT), command(1, "publish", 2, None, "k")],
            "publish on message stream 1, which was not created",
        ),
        (
            [
                command(0, "connect", 1, FFMPEG_CONNECT),
                command(0, "createStream", 2, None),
                command(1, "publish", 3, None, None),
            ],
            "publish without a stream name",
        ),
        ([Message(msg.COMMAND_AMF0, 0, 0, amf0.encode(1.0, 2.0))], "command message without"),
        ([Message(msg.USER_CONTROL, 0, 0, b"\x00")], "user control message shorter than 6"),
        ([Message(msg.WINDOW_ACK_SIZE, 0, 0, b"\x00")], "message type 5 payload shorter"),
    ],
)
def test_protocol_violations(messages: list[Message], error: str) -> None:
    raw = RawClient(ServerSession())
    with pytest.raises(ProtocolError, match=error):
        raw.send(*messages)


def test_a_second_publish_is_read_once_the_first_is_answered() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT), command(0, "createStream", 2, None))
    events = raw.send(command(1, "publish", 3, None, "k"), command(1, "publish", 4, None, "k"))
    assert events == [PublishRequested("k", "live")]
    raw.server.accept_publish()
    with pytest.raises(ProtocolError, match="publish in state publishing"):
        raw.server.receive_data(b"")


def test_too_many_streams() -> None:
    raw = RawClient(ServerSession())
    raw.send(command(0, "connect", 1, FFMPEG_CONNECT))
    raw.send(*[command(0, "createStream", 2 + i, None) for i in range(16)])
    with pytest.raises(ProtocolError, match="more than 16 streams created"):
        raw.send(command(0, "createStream", 99, None))


def test_bad_handshake_version() -> None:
    with pytest.raises(ProtocolError, match="unsupported RTMP version 6"):
        ServerSession().receive_data(b"\x06" + bytes(1536))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replay_real_ffmpeg_capture(seed: int) -> None:
    """Bytes recorded from `ffmpeg ... -f flv rtmp://...` (tests/unit/make_ffmpeg_fixture.py)."""
    data = CAPTURE.read_bytes()
    rng = random.Random(seed)
    server = ServerSession()
    events: list[object] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 3000)
        for event in server.receive_data(data[pos : pos + step]):
            events.append(event)
            if isinstance(event, PublishRequested):
                server.accept_publish()
        server.data_to_send()
        pos += step

    connect, publish, *media, ended = events
    assert isinstance(connect, ConnectRequested) and connect.app == "live"
    assert connect.properties["flashVer"].startswith("FMLE/3.0 (compatible; Lavf")
    assert publish == PublishRequested("testkey", "live")
    assert ended == PublishEnded("FCUnpublish")
    assert all(isinstance(e, MediaReceived) for e in media)
    messages = [e.message for e in media if isinstance(e, MediaReceived)]
    assert amf0.decode(messages[0].payload)[:2] == ["@setDataFrame", "onMetaData"]
    counts = {t: sum(m.type_id == t for m in messages) for t in (8, 9, 18)}
    assert counts == {msg.AUDIO: 89, msg.VIDEO: 62, msg.DATA_AMF0: 1}
    video = [m for m in messages if m.type_id == msg.VIDEO]
    assert video[0].payload[:2] == b"\x17\x00"  # AVC sequence header
    assert video[1].payload[:2] == b"\x17\x01"  # first keyframe
    timestamps = [m.timestamp for m in video]
    assert timestamps == sorted(timestamps) and timestamps[-1] < 2100
    assert server.bytes_received == len(data) and server.dropped_before_publish == 0


def test_capture_replies_parse() -> None:
    """Our replies to the capture are a valid chunk stream for a client."""
    data = CAPTURE.read_bytes()
    server = ServerSession(random=seeded(3))
    out = bytearray()
    for event in server.receive_data(data[:5000]):
        if isinstance(event, PublishRequested):
            server.accept_publish()
    out += server.data_to_send()
    replies = ChunkReader().feed(bytes(out[1 + 2 * 1536 :]))
    codes = [c[3]["code"] for c in commands(replies) if len(c) > 3 and isinstance(c[3], dict)]
    assert codes == ["NetConnection.Connect.Success", "NetStream.Publish.Start"]


def test_a_chunk_size_above_the_limit_is_a_protocol_error() -> None:
    """A server may cap the chunk size it accepts (nginx-rtmp's limit is 10 MiB): the
    ClientSession's 65536 then fails the connection, which our relay answers by
    retrying with 4096."""
    client = ClientSession("live", "rtmp://example/live", "key", chunk_size=65536)
    server = ServerSession(max_chunk_size=4096, random=seeded(2))
    client.start()
    with pytest.raises(ProtocolError, match=r"set chunk size 65536 outside 1\.\.4096"):
        pump(client, server)
    fine = ClientSession("live", "rtmp://example/live", "key", chunk_size=4096)
    server = ServerSession(max_chunk_size=4096, random=seeded(2))
    fine.start()
    server_events, _ = pump(fine, server)
    assert any(isinstance(e, PublishRequested) for e in server_events)


def test_sessions_keep_nothing_of_the_buffer_they_read_from() -> None:
    """A session may be fed views of a buffer that the next read overwrites (a loop
    reading every connection into one buffer of its own): it must copy what it keeps.
    Two publishes go through one buffer in small interleaved pieces, scribbled over
    after each, handshake included."""
    shared = bytearray(700)
    pairs = []
    for n in range(2):
        client = ClientSession("live", "rtmp://example/live", f"key{n}", random=seeded(n))
        pairs.append((client, ServerSession(random=seeded(10 + n)), []))
        client.start()
    pending = [b"", b""]

    def step() -> bool:
        """One read of at most 700 bytes for each publish in turn; False when quiet."""
        moved = False
        for n, (client, server, events) in enumerate(pairs):
            pending[n] += client.data_to_send()
            piece, pending[n] = pending[n][: len(shared)], pending[n][len(shared) :]
            if piece:
                moved = True
                shared[: len(piece)] = piece
                events += server.receive_data(memoryview(shared)[: len(piece)])
                shared[:] = b"\xee" * len(shared)  # the next connection's read
            answer = server.data_to_send()
            if answer:
                moved = True
                client.receive_data(answer)
        return moved

    while step():
        pass
    for _, server, _ in pairs:
        server.accept_publish()
    while step():
        pass
    sent: list[list[tuple[int, int, bytes]]] = [[], []]
    for i in range(40):
        for n, (client, _, _) in enumerate(pairs):
            frame = (msg.VIDEO if i % 3 else msg.AUDIO, i * 33, bytes([n, i]) * (40 + i * 211))
            client.send_media(*frame)
            sent[n].append(frame)
    while step():
        pass
    for n, (_, _, events) in enumerate(pairs):
        received = [
            (e.message.type_id, e.message.timestamp, e.message.payload)
            for e in events
            if isinstance(e, MediaReceived)
        ]
        assert received == sent[n]
        assert PublishRequested(f"key{n}", "live") in events
