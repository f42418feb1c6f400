"""AMF0 encoding and decoding (Action Message Format 0 specification, Adobe 2007).

Python mapping:

=====================  =========================================
AMF0 type (§2.x)       Python value
=====================  =========================================
number (§2.2)          ``float`` (``int`` is accepted when encoding)
boolean (§2.3)         ``bool``
string / long string   ``str`` (long string when > 65535 UTF-8 bytes)
object (§2.5)          ``dict[str, Any]``
null (§2.7)            ``None``
undefined (§2.8)       ``None`` when decoding
ECMA array (§2.10)     :class:`EcmaArray` (a ``dict`` subclass)
strict array (§2.12)   ``list`` (``tuple`` is accepted when encoding)
date (§2.13)           :class:`AMFDate` (``datetime`` accepted when encoding)
XML document (§2.17)   ``str`` when decoding
typed object (§2.18)   :class:`TypedObject` (a ``dict`` subclass)
=====================  =========================================

References (§2.9) and AMF3 switches (§3.1) are rejected with :class:`AMFError`.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass
from typing import Any

from .errors import AMFError

__all__ = [
    "MAX_DEPTH",
    "AMFDate",
    "EcmaArray",
    "TypedObject",
    "decode",
    "encode",
]

# Type markers, AMF0 §2.1.
NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS_OBJECT = 0x11

#: Maximum nesting of objects/arrays, when decoding and when encoding.
MAX_DEPTH = 32

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class EcmaArray(dict[str, Any]):
    """A dict that is encoded as an AMF0 ECMA array (§2.10) rather than an object."""


class TypedObject(dict[str, Any]):
    """An AMF0 typed object (§2.18): an object plus its registered class name."""

    def __init__(self, class_name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_name = class_name

    def __repr__(self) -> str:
        return f"TypedObject({self.class_name!r}, {dict.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class AMFDate:
    """An AMF0 date (§2.13): milliseconds since the Unix epoch, UTC, and a time zone."""

    milliseconds: float
    timezone: int = 0

    def to_datetime(self) -> _dt.datetime:
        """Return the date as an aware UTC :class:`datetime.datetime`."""
        return _EPOCH + _dt.timedelta(milliseconds=self.milliseconds)


# --------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every AMF0 value in *data*; raise :class:`AMFError` if it is malformed."""
    buf = bytes(data)
    values: list[Any] = []
    pos = 0
    end = len(buf)
    while pos < end:
        value, pos = _decode_value(buf, pos, 0)
        values.append(value)
    return values


def _need(buf: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(buf):
        raise AMFError(f"truncated AMF0 {what} at offset {pos}")


def _decode_utf8(raw: bytes, pos: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AMFError(f"invalid UTF-8 in AMF0 string at offset {pos}") from None


def _read_short_string(buf: bytes, pos: int) -> tuple[str, int]:
    # UTF-8 with a 16-bit length, AMF0 §1.3.1 (used for strings and property names).
    _need(buf, pos, 2, "string length")
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    _need(buf, pos, n, "string")
    return _decode_utf8(buf[pos : pos + n], pos), pos + n


def _decode_properties(buf: bytes, pos: int, depth: int, into: dict[str, Any]) -> int:
    # Property list terminated by an empty name and the object-end marker, AMF0 §2.5.
    while True:
        key, pos = _read_short_string(buf, pos)
        _need(buf, pos, 1, "object property")
        if not key and buf[pos] == OBJECT_END:
            return pos + 1
        into[key], pos = _decode_value(buf, pos, depth)


def _decode_value(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise AMFError(f"AMF0 nesting deeper than {MAX_DEPTH} levels")
    _need(buf, pos, 1, "type marker")
    marker = buf[pos]
    pos += 1
    if marker == NUMBER:
        _need(buf, pos, 8, "number")
        return _DOUBLE.unpack_from(buf, pos)[0], pos + 8
    if marker == BOOLEAN:
        _need(buf, pos, 1, "boolean")
        return buf[pos] != 0, pos + 1
    if marker == STRING:
        return _read_short_string(buf, pos)
    if marker == OBJECT:
        obj: dict[str, Any] = {}
        return obj, _decode_properties(buf, pos, depth + 1, obj)
    if marker in (NULL, UNDEFINED, UNSUPPORTED):
        return None, pos
    if marker == ECMA_ARRAY:
        # The count (§2.10) is advisory; encoders get it wrong, so read to the end marker.
        _need(buf, pos, 4, "ECMA array count")
        arr = EcmaArray()
        return arr, _decode_properties(buf, pos + 4, depth + 1, arr)
    if marker == STRICT_ARRAY:
        _need(buf, pos, 4, "strict array count")
        (count,) = _U32.unpack_from(buf, pos)
        pos += 4
        if count > len(buf) - pos:  # every value takes at least one byte
            raise AMFError(f"truncated AMF0 strict array of {count} values at offset {pos}")
        items = []
        for _ in range(count):
            item, pos = _decode_value(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == DATE:
        _need(buf, pos, 10, "date")
        ms, tz = _DATE.unpack_from(buf, pos)
        return AMFDate(ms, tz), pos + 10
    if marker in (LONG_STRING, XML_DOCUMENT):
        _need(buf, pos, 4, "long string length")
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        _need(buf, pos, n, "long string")
        return _decode_utf8(buf[pos : pos + n], pos), pos + n
    if marker == TYPED_OBJECT:
        name, pos = _read_short_string(buf, pos)
        typed = TypedObject(name)
        return typed, _decode_properties(buf, pos, depth + 1, typed)
    if marker == REFERENCE:
        raise AMFError(f"AMF0 reference at offset {pos - 1} is not supported")
    if marker == AVMPLUS_OBJECT:
        raise AMFError(f"AMF3 value (avmplus marker) at offset {pos - 1} is not supported")
    if marker == OBJECT_END:
        raise AMFError(f"unexpected AMF0 object end marker at offset {pos - 1}")
    raise AMFError(f"unknown AMF0 type marker 0x{marker:02x} at offset {pos - 1}")


# --------------------------------------------------------------------------- encoding


def encode(*values: Any) -> bytes:
    """Encode *values* one after another as AMF0; raise :class:`AMFError` if impossible."""
    out = bytearray()
    for value in values:
        _encode_value(out, value, 0)
    return bytes(out)


def _encode_string_body(out: bytearray, raw: bytes) -> None:
    out += _U16.pack(len(raw))
    out += raw


def _encode_properties(out: bytearray, obj: dict[Any, Any], depth: int) -> None:
    for key, val in obj.items():
        if not isinstance(key, str):
            raise AMFError(f"AMF0 object keys must be str, not {type(key).__name__}")
        raw = key.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise AMFError("AMF0 object key longer than 65535 bytes")
        _encode_string_body(out, raw)
        _encode_value(out, val, depth + 1)
    out += b"\x00\x00\x09"  # empty name + object end, AMF0 §2.5


def _encode_value(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AMFError(f"AMF0 nesting deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise AMFError(f"integer {value} is too large for an AMF0 number") from None
        out.append(NUMBER)
        out += _DOUBLE.pack(number)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            _encode_string_body(out, raw)
        elif len(raw) <= 0xFFFFFFFF:
            out.append(LONG_STRING)  # AMF0 §2.14
            out += _U32.pack(len(raw))
            out += raw
        else:
            raise AMFError("string too long for AMF0")
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value) & 0xFFFFFFFF)
        _encode_properties(out, value, depth)
    elif isinstance(value, TypedObject):
        raw = value.class_name.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise AMFError("AMF0 class name longer than 65535 bytes")
        out.append(TYPED_OBJECT)
        _encode_string_body(out, raw)
        _encode_properties(out, value, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(out, value, depth)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1)
    elif isinstance(value, AMFDate):
        try:
            packed = _DATE.pack(value.milliseconds, value.timezone)
        except struct.error:
            raise AMFError(f"AMF0 date time zone {value.timezone} out of range") from None
        out.append(DATE)
        out += packed
    elif isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        ms = (aware - _EPOCH) / _dt.timedelta(milliseconds=1)
        out.append(DATE)
        out += _DATE.pack(ms, 0)
    else:
        raise AMFError(f"cannot encode {type(value).__name__} as AMF0")
