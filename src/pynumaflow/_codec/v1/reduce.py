"""The reduce.v1 wire codec (Numaflow >= 1.4): ReduceRequest in, ReduceResponse out.

A ``ReduceRequest`` is ``{1 payload, 2 operation{1 event, 2 windows}}``. The payload
decodes straight into the public :class:`~pynumaflow.function.Datum` (with
``metadata=("", 0)``: v1 has no delivery metadata); each window into a
:class:`ReduceWindow`, cached by its bytes since every request of a stream carries the
same one. Responses are encoded straight from the handler's messages, each carrying
its window's bytes exactly as the request sent them. The request's ``common.Metadata``
is kept whole (user and system metadata, for the modern API's datum views); a result
carries its message's user metadata only when it has some (the platform ignores it).
"""

from __future__ import annotations

import functools
from datetime import timezone
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, TypeVar, cast

from pynumaflow._codec.fields import (
    HEADER,
    METADATA,
    RequestLayout,
    decode_request,
    new_datum,
    read_length,
)
from pynumaflow._codec.results import (
    MESSAGES,
    NACK_NOT_IN_REDUCE,
    check_yielded,
    checked_iter,
    encode_strings,
    message_fields,
    refuse_nack,
    set_metadata_field,
)
from pynumaflow._codec.wire import (
    TimestampParts,
    decode_timestamp,
    naive_utc,
    read_varint,
    skip_field,
    to_int32,
    varint,
)
from pynumaflow._types.errors import CodecError
from pynumaflow._types.function import Datum, DatumMetadata, IntervalWindow, Metadata

__all__ = [
    "APPEND",
    "CLOSE",
    "OPEN",
    "ReduceRequest",
    "ReduceWindow",
    "decode_operation",
    "decode_reduce_request",
    "encode_reduce_eof",
    "encode_reduce_result",
    "encode_reduce_results",
    "split_window_request",
]

OPEN = 0
CLOSE = 1
APPEND = 4

_NO_DELIVERY = DatumMetadata()
# The payload's field 5 is a headers entry, 6 the metadata; its error texts name
# DatumRequest, as ever.
_PAYLOAD = RequestLayout("DatumRequest", {5: HEADER, 6: METADATA})


class ReduceWindow(NamedTuple):
    """A window as a request named it.

    ``bounds`` (start and end as Timestamp parts) identifies it; ``encoded`` is the
    ``Window`` message's bytes as received, echoed in every response; ``metadata`` is
    what the handler gets, the bounds as timezone-aware UTC datetimes.
    """

    bounds: Tuple[TimestampParts, TimestampParts]
    slot: str
    encoded: bytes
    metadata: Metadata


class ReduceRequest(NamedTuple):
    """One decoded ReduceRequest: the operation's event and windows, and the payload."""

    event: int
    windows: Tuple[ReduceWindow, ...]
    datum: Datum


_new_request = tuple.__new__  # without the NamedTuple's Python-level __new__


def decode_reduce_request(data: bytes) -> ReduceRequest:
    """Decode a reduce.v1 ReduceRequest (unknown fields are skipped).

    A field that occurs twice merges, as protobuf says: the operation's windows add up
    and a payload's repeated fields add up.
    """
    payload, operation = split_window_request(data, "ReduceRequest")
    event, windows = decode_operation(*operation, decode_window)
    datum = _decode_payload(*(payload or (data, 0, 0)))
    return _new_request(ReduceRequest, (event, windows, datum))


Span = Tuple[bytes, int, int]
"""A message inside bytes: the bytes, its start and its end."""
_W = TypeVar("_W")


def split_window_request(data: bytes, name: str) -> Tuple[Optional[Span], Span]:
    """Find a window request's ``1 payload`` (None: absent) and ``2 operation``.

    The request shape reduce.v1, sessionreduce.v1 and accumulator.v1 share. A message
    that occurs twice merges, as protobuf says (its occurrences are concatenated).
    """
    common = _split_common(data)
    if common is not None:
        return common
    payloads: List[Tuple[int, int]] = []
    operations: List[Tuple[int, int]] = []
    pos = 0
    size = len(data)
    while pos < size:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field in (1, 2):
            if wire_type != 2:
                raise CodecError(f"{name} field {field} has wire type {wire_type}")
            start, pos = read_length(data, pos, size, name, field)
            (payloads if field == 1 else operations).append((start, pos))
        else:
            pos = skip_field(data, pos, wire_type, field)
    return (_merged(data, payloads) if payloads else None), _merged(data, operations)


def _split_common(data: bytes) -> Optional[Tuple[Span, Span]]:
    """The spans of what encoders write, ``0a LEN payload 12 LEN operation``; else None.

    Only for lengths of one or two bytes (a payload under 16 KiB, an operation under
    128 bytes); anything else takes the general loop.
    """
    size = len(data)
    if size < 4 or data[0] != 0x0A:
        return None
    length = data[1]
    start = 2
    if length >= 0x80:
        if data[2] >= 0x80:
            return None
        length = (length & 0x7F) | data[2] << 7
        start = 3
    end = start + length
    if end + 2 > size or data[end] != 0x12 or data[end + 1] != size - end - 2:
        return None
    return (data, start, end), (data, end + 2, size)


def _merged(data: bytes, spans: List[Tuple[int, int]]) -> Span:
    """One message from its occurrences: in place if one, else their concatenation."""
    if len(spans) == 1:
        return data, spans[0][0], spans[0][1]
    joined = b"".join(data[start:end] for start, end in spans)
    return joined, 0, len(joined)


def decode_operation(
    data: bytes, pos: int, end: int, decode: Callable[[bytes], _W]
) -> Tuple[int, Tuple[_W, ...]]:
    """Decode a ``WindowOperation{1 event, 2 window(s)}``, each window with ``decode``."""
    return cast("Tuple[int, Tuple[_W, ...]]", _decode_operation(data[pos:end], decode))


# Every request of a window (of a key, for the accumulator) carries the same operation
# bytes, OPEN once and APPEND after.
@functools.lru_cache(maxsize=1024)
def _decode_operation(data: bytes, decode: Callable[[bytes], Any]) -> Tuple[int, Tuple[Any, ...]]:
    event = OPEN
    pos = 0
    end = len(data)
    windows: List[Any] = []
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 1 and wire_type == 0:
            raw, pos = read_varint(data, pos)
            event = to_int32(raw)
        elif field == 2 and wire_type == 2:
            start, pos = read_length(data, pos, len(data), "WindowOperation.windows")
            windows.append(decode(data[start:pos]))
        elif field in (1, 2):
            raise CodecError(f"WindowOperation field {field} has wire type {wire_type}")
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError("WindowOperation overruns its enclosing message")
    return event, tuple(windows)


@functools.lru_cache(maxsize=1024)  # every request of a stream names the same window
def decode_window(encoded: bytes) -> ReduceWindow:
    """Decode a reduce.v1 Window message."""
    start: TimestampParts = (0, 0)
    end: TimestampParts = (0, 0)
    slot = ""
    pos = 0
    size = len(encoded)
    try:
        while pos < size:
            tag, pos = read_varint(encoded, pos)
            field, wire_type = tag >> 3, tag & 7
            if field in (1, 2, 3):
                if wire_type != 2:
                    raise CodecError(f"Window field {field} has wire type {wire_type}")
                value_start, pos = read_length(encoded, pos, size, "Window", field)
                if field == 1:
                    start = decode_timestamp(encoded, value_start, pos, start)
                elif field == 2:
                    end = decode_timestamp(encoded, value_start, pos, end)
                else:
                    slot = encoded[value_start:pos].decode()
            else:
                pos = skip_field(encoded, pos, wire_type, field)
    except UnicodeDecodeError as err:
        raise CodecError(f"Window slot is not valid UTF-8: {err}") from None
    window = IntervalWindow(
        naive_utc(start).replace(tzinfo=timezone.utc), naive_utc(end).replace(tzinfo=timezone.utc)
    )
    return ReduceWindow((start, end), slot, encoded, Metadata(window))


def _decode_payload(data: bytes, pos: int, end: int) -> Datum:
    try:
        fields = decode_request(data, _PAYLOAD, pos, end)
    except UnicodeDecodeError as err:
        raise CodecError(f"DatumRequest string is not valid UTF-8: {err}") from None
    return new_datum(fields, _NO_DELIVERY)


def _window_field(window: ReduceWindow) -> bytes:
    return b"\x12" + varint(len(window.encoded)) + window.encoded


def encode_reduce_results(result: object, window: ReduceWindow) -> List[bytes]:
    """Encode a reduce handler's Messages: one ReduceResponse per message, each with window."""
    window_field = _window_field(window)
    return [_response(message, window_field) for message in checked_iter(result, MESSAGES)]


def encode_reduce_result(message: object, window: ReduceWindow) -> bytes:
    """Encode one Message a reduce stream handler emitted as a ReduceResponse with window.

    Raises:
        ReturnTypeError: ``message`` is not a Message.

    """
    check_yielded(message)
    return _response(message, _window_field(window))


def _response(message: object, window_field: bytes) -> bytes:
    refuse_nack(message, NACK_NOT_IN_REDUCE)
    keys, value, tags = message_fields(message)
    body: List[bytes] = []
    encode_strings(b"\x0a", keys, body, "keys")
    if value:
        body += (b"\x12", varint(len(value)), value)
    encode_strings(b"\x1a", tags, body, "tags")
    body.append(set_metadata_field(b"\x22", message))
    encoded = b"".join(body)
    return b"\x0a" + varint(len(encoded)) + encoded + window_field


def encode_reduce_eof(window: ReduceWindow) -> bytes:
    """Encode the ReduceResponse that ends a window: the window, EOF true, no result."""
    return _window_field(window) + b"\x18\x01"
