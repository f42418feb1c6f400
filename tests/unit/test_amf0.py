"""AMF0 encoder/decoder: exact byte vectors, errors, and property tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.rtmp import amf0
from agent.rtmp.amf0 import AMFDate, EcmaArray, TypedObject
from agent.rtmp.errors import AMFError, ProtocolError


def num(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


END = b"\x00\x00\x09"

# (value, exact AMF0 encoding); each row also round-trips.
VECTORS: list[tuple[Any, bytes]] = [
    (0.0, b"\x00" + bytes(8)),
    (1.0, b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"),
    (-2.5, num(-2.5)),
    (True, b"\x01\x01"),
    (False, b"\x01\x00"),
    ("", b"\x02\x00\x00"),
    ("connect", b"\x02\x00\x07connect"),
    ("é", b"\x02\x00\x02\xc3\xa9"),
    (None, b"\x05"),
    ({}, b"\x03" + END),
    ({"app": "live"}, b"\x03\x00\x03app\x02\x00\x04live" + END),
    ({"a": {"b": None}}, b"\x03\x00\x01a\x03\x00\x01b\x05" + END + END),
    (EcmaArray(), b"\x08\x00\x00\x00\x00" + END),
    (EcmaArray(width=320.0), b"\x08\x00\x00\x00\x01\x00\x05width" + num(320.0) + END),
    ([], b"\x0a\x00\x00\x00\x00"),
    ([1.0, "x", None], b"\x0a\x00\x00\x00\x03" + num(1.0) + b"\x02\x00\x01x\x05"),
    (AMFDate(1e12, 0), b"\x0b" + struct.pack(">d", 1e12) + b"\x00\x00"),
    (AMFDate(0.0, -60), b"\x0b" + bytes(8) + b"\xff\xc4"),
    (TypedObject("Cls", k=True), b"\x10\x00\x03Cls\x00\x01k\x01\x01" + END),
    ("x" * 65535, b"\x02\xff\xff" + b"x" * 65535),
    ("y" * 65536, b"\x0c\x00\x01\x00\x00" + b"y" * 65536),
]


def same(a: Any, b: Any) -> bool:
    """Equality that also compares container types (dict vs EcmaArray...)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, TypedObject) and a.class_name != b.class_name:
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize(("value", "encoded"), VECTORS)
def test_encode_vectors(value: Any, encoded: bytes) -> None:
    assert amf0.encode(value) == encoded


@pytest.mark.parametrize(("value", "encoded"), VECTORS)
def test_decode_vectors(value: Any, encoded: bytes) -> None:
    [decoded] = amf0.decode(encoded)
    assert same(decoded, value)


def test_encode_and_decode_several_values() -> None:
    data = amf0.encode("_result", 1, None, {"code": "NetStream.Publish.Start"})
    assert amf0.decode(data) == ["_result", 1.0, None, {"code": "NetStream.Publish.Start"}]
    assert amf0.decode(b"") == []


def test_encoder_conversions() -> None:
    assert amf0.encode(3) == num(3.0)
    assert amf0.encode((1, 2)) == amf0.encode([1.0, 2.0])
    when = dt.datetime(2001, 9, 9, 1, 46, 40, tzinfo=dt.UTC)
    assert amf0.encode(when) == amf0.encode(AMFDate(1e12))
    assert amf0.encode(when.replace(tzinfo=None)) == amf0.encode(AMFDate(1e12))
    assert AMFDate(1e12).to_datetime() == when


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x06", None),  # undefined
        (b"\x0d", None),  # unsupported
        (b"\x0f\x00\x00\x00\x03<a>", "<a>"),  # XML document
        (b"\x0c\x00\x00\x00\x02hi", "hi"),  # short long string
        (b"\x01\x07", True),  # any non-zero boolean byte
        # ECMA array count is advisory: read up to the end marker.
        (b"\x08\x00\x00\x00\x09\x00\x01a\x05" + END, EcmaArray(a=None)),
        # An empty key that is not followed by the end marker is a real property.
        (b"\x03\x00\x00\x05" + END, {"": None}),
    ],
)
def test_decode_only(data: bytes, value: Any) -> None:
    assert same(amf0.decode(data), [value])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x3f\xf0", "truncated AMF0 number at offset 1"),
        (b"\x01", "truncated AMF0 boolean at offset 1"),
        (b"\x02\x00", "truncated AMF0 string length at offset 1"),
        (b"\x02\x00\x05abc", "truncated AMF0 string at offset 3"),
        (b"\x03\x00\x01a", "truncated AMF0 object property at offset 4"),
        (b"\x03\x00\x01a\x05", "truncated AMF0 string length at offset 5"),
        (b"\x08\x00\x00", "truncated AMF0 ECMA array count at offset 1"),
        (b"\x0a\x00\x00\x00\x03\x05", "truncated AMF0 strict array of 3 values at offset 5"),
        (b"\x0a\xff\xff\xff\xff", "truncated AMF0 strict array of 4294967295 values at offset 5"),
        (b"\x0b\x00", "truncated AMF0 date at offset 1"),
        (b"\x0c\x00\x00\x01\x00ab", "truncated AMF0 long string at offset 5"),
        (b"\x10\x00\x03Cl", "truncated AMF0 string at offset 3"),
        (b"\x02\x00\x01\xff", "invalid UTF-8 in AMF0 string at offset 3"),
        (b"\x07\x00\x01", "AMF0 reference at offset 0 is not supported"),
        (b"\x11\x02", "AMF3 value (avmplus marker) at offset 0 is not supported"),
        (b"\x09", "unexpected AMF0 object end marker at offset 0"),
        (b"\x05\x42", "unknown AMF0 type marker 0x42 at offset 1"),
        (b"\x04", "unknown AMF0 type marker 0x04 at offset 0"),
        (b"", None),
    ],
)
def test_decode_errors(data: bytes, message: str | None) -> None:
    if message is None:
        assert amf0.decode(data) == []
        return
    with pytest.raises(AMFError) as info:
        amf0.decode(data)
    assert str(info.value) == message
    assert isinstance(info.value, ProtocolError)


def test_every_truncation_of_a_command_raises() -> None:
    data = amf0.encode(
        {"app": "live", "list": [1, EcmaArray(x=AMFDate(5.0))], "t": TypedObject("C", y=1)}
    )
    for cut in range(1, len(data)):
        with pytest.raises(AMFError):
            amf0.decode(data[:cut])


def test_nesting_limit() -> None:
    ok = b"\x0a\x00\x00\x00\x01" * amf0.MAX_DEPTH + b"\x05"
    assert amf0.decode(ok)
    too_deep = b"\x0a\x00\x00\x00\x01" * (amf0.MAX_DEPTH + 1) + b"\x05"
    with pytest.raises(AMFError, match="nesting deeper than 32 levels"):
        amf0.decode(too_deep)
    nested: Any = None
    for _ in range(amf0.MAX_DEPTH + 1):
        nested = {"n": nested}
    with pytest.raises(AMFError, match="nesting deeper than 32 levels"):
        amf0.encode(nested)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(AMFError):
        amf0.encode(loop)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "cannot encode object as AMF0"),
        ({1: 2}, "AMF0 object keys must be str, not int"),
        (10**400, f"integer {10**400} is too large for an AMF0 number"),
        (AMFDate(0.0, 40000), "AMF0 date time zone 40000 out of range"),
        ({"k" * 65536: 1}, "AMF0 object key longer than 65535 bytes"),
    ],
)
def test_encode_errors(value: Any, message: str) -> None:
    with pytest.raises(AMFError) as info:
        amf0.encode(value)
    assert str(info.value) == message


@given(st.binary(max_size=300))
def test_decode_arbitrary_bytes_never_crashes(data: bytes) -> None:
    try:
        values = amf0.decode(data)
    except AMFError:
        return
    assert isinstance(values, list)


@given(st.binary(max_size=64), st.sampled_from(range(0x12)))
def test_decode_marker_prefixed_bytes_never_crashes(data: bytes, marker: int) -> None:
    with contextlib.suppress(AMFError):
        amf0.decode(bytes((marker,)) + data)


keys = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
dates = st.builds(
    AMFDate, st.floats(allow_nan=False), st.integers(min_value=-32768, max_value=32767)
)
values = st.recursive(
    scalars | dates,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(keys, children, max_size=4)
        | st.dictionaries(keys, children, max_size=4).map(EcmaArray)
        | st.builds(TypedObject, st.text(max_size=5), st.dictionaries(keys, children, max_size=3))
    ),
    max_leaves=20,
)


@given(st.lists(values, max_size=5))
def test_round_trip(items: list[Any]) -> None:
    decoded = amf0.decode(amf0.encode(*items))
    assert same(decoded, items)
