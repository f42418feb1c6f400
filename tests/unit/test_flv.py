"""FLV tags: byte vectors, round trips, any split of the input."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.flv import (
    FLV_HEADER,
    FlvTagReader,
    add_set_data_frame,
    flv_tag,
    strip_set_data_frame,
)
from agent.rtmp import amf0

from .rtmp_helpers import media_messages


def test_tag_bytes_match_the_spec_layout():
    tag = flv_tag(9, 0x01020304, b"\x17\x00")
    assert tag == (
        b"\x09"  # type
        b"\x00\x00\x02"  # data size
        b"\x02\x03\x04"  # timestamp, low 24 bits
        b"\x01"  # timestamp extension (bits 24-31)
        b"\x00\x00\x00"  # stream id
        b"\x17\x00"  # body
        b"\x00\x00\x00\x0d"  # previous tag size = 11 + 2
    )


def test_reader_returns_tags_after_the_header():
    stream = FLV_HEADER + flv_tag(8, 5, b"a") + flv_tag(9, 0xFFFFFFFF, b"bc")
    assert FlvTagReader().feed(stream) == [(8, 5, b"a"), (9, 0xFFFFFFFF, b"bc")]


def test_reader_rejects_a_non_flv_stream():
    with pytest.raises(ValueError, match="not an FLV stream"):
        FlvTagReader().feed(b"GIF89a" + bytes(20))


def test_reader_rejects_oversized_tags():
    with pytest.raises(ValueError, match="exceeds the limit"):
        FlvTagReader(max_tag_size=10).feed(FLV_HEADER + flv_tag(9, 0, bytes(11)))


@given(media_messages(max_size=20), st.integers(1, 64))
def test_round_trip_at_any_split(tags, piece):
    stream = FLV_HEADER + b"".join(flv_tag(*tag) for tag in tags)
    reader = FlvTagReader()
    got = []
    for start in range(0, len(stream), piece):
        got += reader.feed(stream[start : start + piece])
    assert got == tags


def test_set_data_frame_wrapper_is_added_and_stripped():
    body = amf0.encode("onMetaData", {"width": 1280.0})
    wrapped = add_set_data_frame(body)
    assert amf0.decode(wrapped)[0] == "@setDataFrame"
    assert strip_set_data_frame(wrapped) == body
    assert strip_set_data_frame(body) == body  # already plain: untouched
