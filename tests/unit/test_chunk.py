"""Chunk stream reader and writer: byte vectors, splitting, limits, round trips, fuzz."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rtmp import message as msg
from agent.rtmp.chunk import ChunkReader, ChunkWriter, csid_for, message_chunks
from agent.rtmp.errors import ChunkError, LocalProtocolError, MessageTooLarge, ProtocolError
from agent.rtmp.message import Message

from .rtmp_helpers import media_messages


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def fmt0(csid: int, ts: int, length: int, type_id: int, sid: int) -> bytes:
    """Basic header (1 byte csid) + type 0 message header, no extended timestamp."""
    return bytes((csid,)) + u24(ts) + u24(length) + bytes((type_id,)) + struct.pack("<I", sid)


def feed_all(data: bytes, reader: ChunkReader | None = None) -> list[Message]:
    return (reader or ChunkReader()).feed(data)


# ------------------------------------------------------------------- byte vectors


def test_formats_0_1_2_3() -> None:
    data = (
        fmt0(3, 1000, 5, 20, 0) + b"hello"
        # type 1: delta 10, new length 3, type 8
        + b"\x43" + u24(10) + u24(3) + b"\x08" + b"abc"
        # type 2: delta 5
        + b"\x83" + u24(5) + b"xyz"
        # type 3 starting a new message: same delta, length, type
        + b"\xc3" + b"123"
    )  # fmt: skip
    assert feed_all(data) == [
        Message(20, 0, 1000, b"hello"),
        Message(8, 0, 1010, b"abc"),
        Message(8, 0, 1015, b"xyz"),
        Message(8, 0, 1020, b"123"),
    ]


def test_type3_after_type0_uses_its_timestamp_as_delta() -> None:
    # RTMP spec 1.0 §5.3.1.2.4: the delta of a type 3 chunk after a type 0 one is
    # the type 0 timestamp.
    data = fmt0(4, 40, 2, 8, 1) + b"aa" + b"\xc4" + b"bb" + b"\xc4" + b"cc"
    assert [m.timestamp for m in feed_all(data)] == [40, 80, 120]


def test_stream_id_is_little_endian_and_kept() -> None:
    data = fmt0(5, 0, 1, 18, 0x01020304) + b"d" + b"\x85" + u24(1) + b"e"
    assert feed_all(data) == [Message(18, 0x01020304, 0, b"d"), Message(18, 0x01020304, 1, b"e")]


@pytest.mark.parametrize(
    ("csid", "basic"),
    [
        (2, b"\x02"),
        (63, b"\x3f"),
        (64, b"\x00\x00"),
        (319, b"\x00\xff"),
        (320, b"\x01\x00\x01"),
        (65599, b"\x01\xff\xff"),
    ],
)
def test_basic_header_sizes(csid: int, basic: bytes) -> None:
    body = u24(7) + u24(2) + b"\x09" + bytes(4) + b"vv"
    cont = bytes((0xC0 | basic[0],)) + basic[1:] + b"ww"
    reader = ChunkReader()
    assert reader.feed(basic + body + cont) == [Message(9, 0, 7, b"vv"), Message(9, 0, 14, b"ww")]
    writer = ChunkWriter()
    assert writer.write(Message(9, 0, 7, b"vv"), csid) == basic + body


def test_extended_timestamp_repeated_on_continuation_chunks() -> None:
    payload = bytes(range(200))
    ext = b"\x01\x00\x00\x00"
    head = b"\x06" + b"\xff\xff\xff" + u24(200) + b"\x09" + b"\x01\x00\x00\x00" + ext
    data = head + payload[:128] + b"\xc6" + ext + payload[128:]
    expected = [Message(9, 1, 0x01000000, payload)]
    assert feed_all(data) == expected
    # Our writer produces exactly this (FFmpeg/librtmp style).
    assert ChunkWriter().write(expected[0]) == data


def test_extended_timestamp_missing_on_continuation_chunks() -> None:
    # Some librtmp versions do not repeat it: accepted as well.
    payload = bytes(range(200))
    head = b"\x06\xff\xff\xff" + u24(200) + b"\x09" + b"\x01\x00\x00\x00" + b"\x01\x00\x00\x00"
    data = head + payload[:128] + b"\xc6" + payload[128:]
    assert feed_all(data) == [Message(9, 1, 0x01000000, payload)]


def test_extended_delta_on_type3_new_message() -> None:
    big = 0x01000000
    data = (
        fmt0(4, 0, 1, 8, 1) + b"a"
        + b"\x84\xff\xff\xff" + big.to_bytes(4, "big") + b"b"
        + b"\xc4" + big.to_bytes(4, "big") + b"c"
    )  # fmt: skip
    assert [m.timestamp for m in feed_all(data)] == [0, big, 2 * big]


def test_timestamp_wraps_at_2_32() -> None:
    data = (
        b"\x04\xff\xff\xff" + u24(1) + b"\x08" + b"\x01\x00\x00\x00" + b"\xff\xff\xff\xf0" + b"a"
        + b"\x84" + u24(0x20) + b"b"
    )  # fmt: skip
    assert [m.timestamp for m in feed_all(data)] == [0xFFFFFFF0, 0x10]


def test_set_chunk_size_applied_mid_stream() -> None:
    payload = b"0123456789"
    data = (
        fmt0(2, 0, 4, 1, 0) + b"\x00\x00\x00\x04"
        + fmt0(3, 0, 10, 20, 0) + payload[:4] + b"\xc3" + payload[4:8] + b"\xc3" + payload[8:]
    )  # fmt: skip
    reader = ChunkReader()
    assert reader.feed(data) == [
        Message(msg.SET_CHUNK_SIZE, 0, 0, b"\x00\x00\x00\x04"),
        Message(20, 0, 0, payload),
    ]
    assert reader.chunk_size == 4


def test_abort_discards_partial_message() -> None:
    reader = ChunkReader()
    assert reader.feed(fmt0(4, 0, 200, 8, 1) + bytes(128)) == []
    abort = fmt0(2, 0, 4, 2, 0) + b"\x00\x00\x00\x04"
    assert reader.feed(abort) == [Message(msg.ABORT, 0, 0, b"\x00\x00\x00\x04")]
    # The chunk stream is free again: a new message may start with a type 0 chunk.
    assert reader.feed(fmt0(4, 5, 2, 8, 1) + b"ok") == [Message(8, 1, 5, b"ok")]
    # Abort for a chunk stream with nothing in flight is harmless.
    assert len(reader.feed(fmt0(2, 0, 4, 2, 0) + b"\x00\x00\x00\x09")) == 1


def test_interleaved_chunk_streams() -> None:
    video, audio = bytes(range(256)) + bytes(44), b"A" * 200
    data = (
        fmt0(6, 10, 300, 9, 1) + video[:128]
        + fmt0(4, 12, 200, 8, 1) + audio[:128]
        + b"\xc6" + video[128:256]
        + b"\xc4" + audio[128:]
        + b"\xc6" + video[256:]
    )  # fmt: skip
    assert feed_all(data) == [Message(8, 1, 12, audio), Message(9, 1, 10, video)]


def test_zero_length_message() -> None:
    data = fmt0(3, 1, 0, 20, 0) + b"\xc3" + fmt0(5, 0, 1, 18, 0) + b"x"
    assert feed_all(data) == [
        Message(20, 0, 1, b""),
        Message(20, 0, 2, b""),
        Message(18, 0, 0, b"x"),
    ]


# ------------------------------------------------------------------- splitting


def sample_stream() -> tuple[bytes, list[Message]]:
    writer = ChunkWriter()
    messages = [
        Message(20, 0, 0, b"c" * 300),
        Message(9, 1, 0x00FFFFFF, b"v" * 500),  # extended timestamp
        Message(8, 1, 0x01000010, b"a" * 130),
        Message(8, 1, 0x01000030, b"b" * 130),
        Message(18, 1, 5, b"d" * 10),
    ]
    data = b"".join(writer.write(m, csid=3 if m.type_id == 20 else 300) for m in messages)
    data += writer.set_chunk_size(7)
    more = [Message(9, 1, 0x01000040, b"w" * 40), Message(9, 2, 0x01000050, b"x" * 3)]
    data += b"".join(writer.write(m) for m in more)
    return data, [*messages, msg.set_chunk_size(7), *more]


def test_every_split_point_gives_the_same_messages() -> None:
    data, expected = sample_stream()
    assert feed_all(data) == expected
    for cut in range(len(data) + 1):
        reader = ChunkReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == expected, cut


def test_one_byte_at_a_time() -> None:
    data, expected = sample_stream()
    reader = ChunkReader()
    out: list[Message] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert out == expected
    assert reader.bytes_received == len(data)


def test_reads_into_a_reused_buffer() -> None:
    """The ingest reads into one buffer and feeds a view of it: what the reader keeps
    (an incomplete chunk, a partial message) must be its own copy, not the view."""
    data, expected = sample_stream()
    buffer = bytearray(13)
    reader = ChunkReader()
    out: list[Message] = []
    for start in range(0, len(data), len(buffer)):
        piece = data[start : start + len(buffer)]
        buffer[: len(piece)] = piece
        out += reader.feed(memoryview(buffer)[: len(piece)])
        buffer[:] = b"\xff" * len(buffer)  # the next read overwrites it
    assert out == expected


# ------------------------------------------------------------------- writer


def test_writer_header_compression() -> None:
    writer = ChunkWriter()
    first = writer.write(Message(8, 1, 100, b"ab"))
    assert first == b"\x04" + u24(100) + u24(2) + b"\x08" + b"\x01\x00\x00\x00" + b"ab"
    # After type 0, never type 3 for a new message (readers disagree on the delta).
    assert writer.write(Message(8, 1, 200, b"cd")) == b"\x84" + u24(100) + b"cd"
    assert writer.write(Message(8, 1, 300, b"ef")) == b"\xc4" + b"ef"
    assert writer.write(Message(8, 1, 310, b"gh")) == b"\x84" + u24(10) + b"gh"
    assert writer.write(Message(9, 1, 320, b"ijk"), 4) == b"\x44" + u24(10) + u24(3) + b"\x09ijk"
    # Timestamp going backwards, or another message stream: type 0 again.
    assert writer.write(Message(9, 1, 0, b"l"), 4)[0] == 0x04
    assert writer.write(Message(9, 2, 0, b"l"), 4)[0] == 0x04


def test_writer_set_chunk_size() -> None:
    writer = ChunkWriter()
    assert writer.set_chunk_size(4) == fmt0(2, 0, 4, 1, 0) + b"\x00\x00\x00\x04"
    assert writer.chunk_size == 4
    assert writer.write(Message(20, 0, 0, b"0123456789")) == (
        fmt0(3, 0, 10, 20, 0) + b"0123" + b"\xc34567" + b"\xc389"
    )
    for bad in (0, 0x80000000):
        with pytest.raises(LocalProtocolError):
            writer.set_chunk_size(bad)


def test_writer_rejects_bad_input() -> None:
    writer = ChunkWriter()
    with pytest.raises(LocalProtocolError, match="chunk stream id 1 outside"):
        writer.write(Message(8, 1, 0, b""), csid=1)
    with pytest.raises(LocalProtocolError, match="exceeds the 16777215-byte header limit"):
        writer.write(Message(9, 1, 0, bytes(0x1000000)))


def test_csid_for() -> None:
    assert [csid_for(Message(t, 0, 0, b"")) for t in (1, 4, 20, 17, 8, 9, 18, 15, 22)] == [
        2,
        2,
        3,
        3,
        4,
        6,
        5,
        5,
        6,
    ]


message_st = st.builds(
    Message,
    st.sampled_from([8, 9, 18, 20, 22]),
    st.integers(0, 3),
    st.one_of(st.integers(0, 1000), st.integers(0, 0xFFFFFFFF)),
    st.binary(max_size=700),
)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(message_st, st.sampled_from([None, 3, 64, 400])), min_size=1, max_size=12),
    st.integers(1, 300),
    st.integers(0, 12),
    st.integers(1, 300),
)
def test_writer_reader_round_trip(
    items: list[tuple[Message, int | None]], size1: int, switch_at: int, size2: int
) -> None:
    writer = ChunkWriter()
    data = bytearray(writer.set_chunk_size(size1))
    expected = [msg.set_chunk_size(size1)]
    for i, (message, csid) in enumerate(items):
        if i == switch_at:
            data += writer.set_chunk_size(size2)
            expected.append(msg.set_chunk_size(size2))
        data += writer.write(message, csid)
        expected.append(message)
    reader = ChunkReader()
    half = len(data) // 3
    assert reader.feed(bytes(data[:half])) + reader.feed(bytes(data[half:])) == expected


# ------------------------------------------------------------------- limits


def test_message_too_large() -> None:
    reader = ChunkReader(max_message_size=100)
    assert reader.feed(fmt0(3, 0, 100, 20, 0) + bytes(100))
    with pytest.raises(MessageTooLarge) as info:
        reader.feed(fmt0(3, 0, 101, 20, 0))
    assert str(info.value) == "chunk stream 3: message of 101 bytes exceeds the limit of 100 bytes"
    assert isinstance(info.value, ChunkError)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, "set chunk size 0 outside 1..65536"),
        (65537, "set chunk size 65537 outside 1..65536"),
        (0x80000080, "set chunk size 0x80000080 has bit 31 set"),
    ],
)
def test_bad_set_chunk_size(value: int, error: str) -> None:
    reader = ChunkReader(max_chunk_size=65536)
    with pytest.raises(ChunkError) as info:
        reader.feed(fmt0(2, 0, 4, 1, 0) + struct.pack(">I", value))
    assert str(info.value) == error


def test_short_set_chunk_size() -> None:
    with pytest.raises(ChunkError, match="message type 1 payload shorter than 4 bytes"):
        feed_all(fmt0(2, 0, 2, 1, 0) + b"\x00\x01")


def test_default_chunk_size_limit_is_the_spec_maximum() -> None:
    reader = ChunkReader()
    reader.feed(fmt0(2, 0, 4, 1, 0) + b"\x7f\xff\xff\xff")
    assert reader.chunk_size == 0x7FFFFFFF
    assert reader.feed(fmt0(3, 0, 1000, 20, 0) + bytes(1000)) == [Message(20, 0, 0, bytes(1000))]


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_undeclared_chunk_stream(fmt: int) -> None:
    with pytest.raises(ChunkError) as info:
        feed_all(bytes(((fmt << 6) | 7,)) + bytes(20))
    assert str(info.value) == f"chunk stream 7: format {fmt} chunk before any format 0 chunk"


def test_new_header_in_the_middle_of_a_message() -> None:
    data = fmt0(4, 0, 200, 8, 1) + bytes(128) + b"\x84" + u24(1)
    with pytest.raises(ChunkError, match="format 2 header before the previous message"):
        feed_all(data)


def test_too_many_partial_messages() -> None:
    reader = ChunkReader(max_in_flight=2)
    reader.feed(fmt0(4, 0, 200, 8, 1) + bytes(128) + fmt0(5, 0, 200, 8, 1) + bytes(128))
    with pytest.raises(ChunkError, match="more than 2 chunk streams with a partial message"):
        reader.feed(fmt0(6, 0, 200, 8, 1) + bytes(128))


def test_too_much_partial_data() -> None:
    reader = ChunkReader(max_message_size=1000)
    reader.feed(fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 999))
    reader.feed(fmt0(4, 0, 1000, 8, 1) + bytes(999) + fmt0(5, 0, 1000, 8, 1) + bytes(999))
    with pytest.raises(ChunkError, match="more than 2000 bytes of partially received"):
        reader.feed(fmt0(6, 0, 1000, 8, 1) + bytes(999))


def test_too_many_chunk_streams() -> None:
    reader = ChunkReader()
    data = b"".join(
        b"\x01" + (csid - 64).to_bytes(2, "little") + u24(0) + u24(0) + b"\x08" + bytes(4)
        for csid in range(64, 64 + 1024)
    )
    assert len(reader.feed(data)) == 1024
    with pytest.raises(ChunkError, match="more than 1024 chunk streams"):
        reader.feed(b"\x01\xff\xff" + u24(0) + u24(0) + b"\x08" + bytes(4))


def test_buffer_is_bounded_by_one_chunk() -> None:
    reader = ChunkReader()
    data, _ = sample_stream()
    for i in range(0, len(data), 50):
        reader.feed(data[i : i + 50])
        assert reader.buffered < 128 + 18 + 50


# ------------------------------------------------------------------- fuzz


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_arbitrary_bytes_give_messages_or_protocol_error(data: bytes, step: int) -> None:
    reader = ChunkReader(max_message_size=4096)
    try:
        for i in range(0, len(data), step):
            for m in reader.feed(data[i : i + step]):
                assert isinstance(m, Message)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_mutated_stream_gives_messages_or_protocol_error(data: st.DataObject) -> None:
    stream, _ = sample_stream()
    raw = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        ChunkReader(max_message_size=100_000).feed(bytes(raw))


# ------------------------------------------------------------------- message_chunks


def test_message_chunks_single_chunk_bytes() -> None:
    parts = message_chunks(6, 1, 9, 0x010203, b"\x17\x01abc", 4096)
    assert b"".join(parts) == fmt0(6, 0x010203, 5, 9, 1) + b"\x17\x01abc"


def test_message_chunks_continuations_are_format_3() -> None:
    data = b"".join(message_chunks(4, 1, 8, 10, b"abcdefgh", 3))
    assert data == fmt0(4, 10, 8, 8, 1) + b"abc" + b"\xc4def" + b"\xc4gh"


def test_message_chunks_repeat_the_extended_timestamp() -> None:
    # §5.3.1.3: 0xFFFFFF in the header, the 32-bit time after it and after each
    # continuation's basic header.
    data = b"".join(message_chunks(6, 1, 9, 0x01000000, b"abcd", 2))
    ext = struct.pack(">I", 0x01000000)
    assert data == fmt0(6, 0xFFFFFF, 4, 9, 1) + ext + b"ab" + b"\xc6" + ext + b"cd"


def test_message_chunks_large_csid_and_empty_payload() -> None:
    # §5.3.1.1: csid 64-319 in two bytes, above in three (little-endian after 64).
    data = b"".join(message_chunks(300, 7, 18, 0, b"", 128))
    assert data == b"\x00" + bytes((300 - 64,)) + fmt0(0, 0, 0, 18, 7)[1:]
    data = b"".join(message_chunks(400, 7, 18, 0, b"", 128))
    assert data == b"\x01" + (400 - 64).to_bytes(2, "little") + fmt0(0, 0, 0, 18, 7)[1:]


def test_message_chunks_rejects_a_message_too_long() -> None:
    with pytest.raises(LocalProtocolError):
        message_chunks(6, 1, 9, 0, bytes(0x1000000), 65536)


@settings(max_examples=200)
@given(media_messages(max_size=8), st.integers(1, 200), st.integers(1, 97))
def test_message_chunks_round_trip_through_the_reader(
    messages: list[tuple[int, int, bytes]], chunk_size: int, step: int
) -> None:
    """What any reader (ours here) reassembles is exactly what was chunked, whatever the
    chunk size, each header standing alone, fed in any split."""
    data = b"".join(
        b"".join(message_chunks(csid_for(Message(t, 1, ts, p)), 1, t, ts, p, chunk_size))
        for t, ts, p in messages
    )
    reader = ChunkReader()
    reader.chunk_size = chunk_size
    got = []
    for i in range(0, len(data), step):
        got += reader.feed(data[i : i + step])
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in got] == [
        (t, 1, ts, p) for t, ts, p in messages
    ]


def test_feed_until_command_leaves_what_follows_a_command_unread() -> None:
    writer = ChunkWriter()
    control = msg.window_ack_size(1000)
    command = Message(msg.COMMAND_AMF0, 0, 0, b"\x02\x00\x07publish")
    video = Message(msg.VIDEO, 1, 0, bytes(300_000))
    video_bytes = writer.write(video)
    data = writer.write(control) + writer.write(command) + video_bytes
    reader = ChunkReader(max_message_size=1000)
    assert reader.feed_until_command(data) == [control, command]
    assert reader.buffered == len(video_bytes)  # raw: its size was never checked
    reader.keep(b"")
    reader.set_max_message_size(1_000_000)
    assert reader.feed(b"") == [video]
    assert reader.buffered == 0 and reader.partial_bytes == 0
    assert reader.bytes_received == len(data)


def test_a_smaller_limit_holds_fewer_partial_bytes() -> None:
    reader = ChunkReader(max_message_size=1000)
    writer = ChunkWriter()
    data = writer.write(Message(msg.VIDEO, 1, 0, bytes(900)), 4)
    reader.feed(data[:-100])
    assert reader.partial_bytes == 900  # the whole message, once it spans reads
    with pytest.raises(MessageTooLarge):
        reader.feed(writer.write(Message(msg.VIDEO, 1, 0, bytes(1001)), 5))


# ------------------------------------------------------------------- bytes copied


def test_a_chunk_trickling_in_is_joined_once() -> None:
    """A chunk that comes a byte at a time: its bytes wait, appended, until the chunk is
    complete, and are joined then (not again with every read: a peer sending a large
    chunk byte by byte would cost its length squared)."""
    writer = ChunkWriter(65536)
    video = Message(msg.VIDEO, 1, 0, bytes(range(256)) * 200)
    data = writer.write(video)
    reader = ChunkReader()
    reader.chunk_size = 65536
    assert reader.feed(data[:100]) == []
    waiting = reader._data
    for i in range(100, len(data) - 1):
        assert reader.feed(data[i : i + 1]) == []
    assert reader._data is waiting  # the first read's part, never copied since
    assert reader.buffered == len(data) - 1
    assert reader.feed(data[-1:]) == [video]
    assert reader.buffered == 0


def test_many_commands_in_one_read_are_read_one_by_one_without_copying_the_rest() -> None:
    """`feed_until_command` takes one command per call: what follows is read on where
    it lies, copied out only once it is the smaller part (a stranger's read of many
    small commands costs its length, not its length times their number)."""
    writer = ChunkWriter()
    commands = [Message(msg.COMMAND_AMF0, 0, n, b"\x02\x00\x04ping") for n in range(1000)]
    reader = ChunkReader()
    got = reader.feed_until_command(b"".join(writer.write(m) for m in commands))
    held = {id(reader._data)}
    while True:
        messages = reader.feed_until_command(b"")
        if not messages:
            break
        got += messages
        held.add(id(reader._data))
    assert got == commands
    assert len(held) <= 12  # one copy per halving: log2(1000) + 2


def test_message_chunks_stream_id_is_little_endian() -> None:
    header = message_chunks(4, 0x01020304, msg.AUDIO, 5, b"ab", 128)[0]
    assert header == bytes((4, 0, 0, 5, 0, 0, 2, msg.AUDIO, 4, 3, 2, 1))
    assert message_chunks(4, 0xFFFFFFFF, msg.AUDIO, 5, b"ab", 128)[0][-4:] == b"\xff" * 4
