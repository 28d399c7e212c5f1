"""Protobuf wire-format primitives: varints, field skipping, a well-formedness check.

Free of any message or public type, so every codec and the core can use them.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from typing import Tuple

from pynumaflow._types.errors import CodecError

__all__ = [
    "I64_MAX",
    "U64",
    "TimestampParts",
    "check_message",
    "decode_timestamp",
    "encode_text",
    "encode_timestamp",
    "fast_varint",
    "naive_utc",
    "read_varint",
    "signed_varint",
    "skip_field",
    "timestamp_parts",
    "to_int32",
    "to_int64",
    "varint",
    "wire_safe",
]

U64 = 1 << 64
I64_MAX = (1 << 63) - 1
_SMALL_VARINTS = [bytes((i,)) for i in range(128)]
_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_AWARE = datetime(1970, 1, 1, tzinfo=timezone.utc)

# (seconds, nanos) of a google.protobuf.Timestamp.
TimestampParts = Tuple[int, int]


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise CodecError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise CodecError("varint longer than 10 bytes")


def skip_field(data: bytes, pos: int, wire_type: int, field: int) -> int:
    """Skip an unknown field's value; return the position after it.

    Every decoder passes the fields it does not know here, so this is also where field
    number 0, which no message has and protobuf parsers reject, is refused.
    """
    if field == 0:
        raise CodecError("field number 0 is invalid")
    if wire_type == 0:
        _, pos = read_varint(data, pos)
        return pos
    if wire_type == 2:
        length, pos = read_varint(data, pos)
        end = pos + length
    elif wire_type == 1:
        end = pos + 8
    elif wire_type == 5:
        end = pos + 4
    else:
        # Groups (3, 4) are not proto3; 6 and 7 do not exist.
        raise CodecError(f"field {field} has unsupported wire type {wire_type}")
    if end > len(data):
        raise CodecError(f"field {field} is truncated")
    return end


def varint(value: int) -> bytes:
    if value < 128:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def signed_varint(value: int) -> bytes:
    return varint(value + U64 if value < 0 else value)


def to_int64(value: int) -> int:
    value &= U64 - 1
    return value - U64 if value > I64_MAX else value


def to_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value > 0x7FFFFFFF else value


def check_message(data: bytes) -> None:
    """Check that bytes are well-formed protobuf (for requests whose fields we ignore)."""
    pos = 0
    size = len(data)
    while pos < size:
        tag, pos = read_varint(data, pos)
        pos = skip_field(data, pos, tag & 7, tag >> 3)


def encode_text(text: str) -> bytes:
    """UTF-8 of a text bound for the wire, with what UTF-8 cannot encode backslash-escaped.

    Error texts and tracebacks can hold lone surrogates (``os.fsdecode`` of a non-UTF-8
    file name, ``surrogateescape`` decoding); encoding them strictly would fail the
    status or the response that carries them.
    """
    return text.encode("utf-8", "backslashreplace")


def wire_safe(text: str) -> str:
    """``text`` with lone surrogates backslash-escaped, so that it encodes as UTF-8."""
    return encode_text(text).decode("utf-8")


def fast_varint(data: bytes, pos: int, end: int) -> Tuple[int, int]:
    """Read a varint that must end before ``end``; return (value, pos), pos -1 if it does not."""
    raw = 0
    shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return raw, pos
        shift += 7
    return 0, -1


# --- google.protobuf.Timestamp -------------------------------------------------------


# Decoded Timestamps by their bytes: within a stream, watermarks and event times repeat.
_DECODED: dict[bytes, TimestampParts] = {}
_DECODED_LIMIT = 1024


def decode_timestamp(data: bytes, pos: int, end: int, parts: TimestampParts) -> TimestampParts:
    """Decode a google.protobuf.Timestamp from data[pos:end] over the parts seen so far."""
    if parts != (0, 0):  # a repeated field merges into what came before: not cacheable
        return _decode_timestamp(data, pos, end, parts)
    raw = data[pos:end]
    decoded = _DECODED.get(raw)
    if decoded is None:
        decoded = _decode_timestamp(data, pos, end, parts)
        if len(_DECODED) >= _DECODED_LIMIT:
            _DECODED.clear()
        _DECODED[raw] = decoded
    return decoded


def _decode_timestamp(data: bytes, pos: int, end: int, parts: TimestampParts) -> TimestampParts:
    seconds, nanos = parts
    # Fast path for what encoders write: [08 seconds] [10 nanos], nothing else.
    cursor = pos
    if cursor < end and data[cursor] == 0x08:
        raw, cursor = fast_varint(data, cursor + 1, end)
        seconds = raw - U64 if raw > I64_MAX else raw
    if 0 <= cursor < end and data[cursor] == 0x10:
        raw, cursor = fast_varint(data, cursor + 1, end)
        nanos = to_int32(raw)
    if cursor == end:
        return seconds, nanos
    seconds, nanos = parts
    while pos < end:
        tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 1 and wire_type == 0:
            raw, pos = read_varint(data, pos)
            seconds = to_int64(raw)
        elif field == 2 and wire_type == 0:
            raw, pos = read_varint(data, pos)
            nanos = to_int32(raw)
        elif field in (1, 2):
            raise CodecError(f"Timestamp field {field} has wire type {wire_type}, expected 0")
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError("Timestamp overruns its enclosing message")
    return seconds, nanos


# Watermarks and event times repeat across requests, recent ones most: when full, 1,024
# entries hold ~0.3 MiB (4,096 held 1.2 MiB).
@functools.lru_cache(maxsize=1024)
def naive_utc(parts: TimestampParts) -> datetime:
    """The naive UTC datetime of a timestamp, microsecond exact."""
    seconds, nanos = parts
    try:
        return _EPOCH_NAIVE + timedelta(0, seconds, nanos // 1000)
    except OverflowError:
        raise CodecError(f"timestamp {seconds}s {nanos}ns is outside datetime's range") from None


def timestamp_parts(moment: datetime) -> TimestampParts:
    """Return (seconds, nanos) since the epoch of a datetime; naive means UTC."""
    offset = moment - (_EPOCH_NAIVE if moment.tzinfo is None else _EPOCH_AWARE)
    return offset.days * 86400 + offset.seconds, offset.microseconds * 1000


def encode_timestamp(parts: TimestampParts) -> bytes:
    """Encode a google.protobuf.Timestamp body (proto3: zero fields are left out)."""
    seconds, nanos = parts
    out = b""
    if seconds:
        out = b"\x08" + signed_varint(seconds)
    if nanos:
        out += b"\x10" + signed_varint(nanos)
    return out
