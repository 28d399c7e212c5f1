"""The accumulator.v1 wire codec (Numaflow >= 1.6): AccumulatorRequest in, AccumulatorResponse out.

An ``AccumulatorRequest`` is ``{1 payload, 2 operation{1 event, 2 keyedWindow}}``; the
payload decodes into the public :class:`~pynumaflow.function.Datum` (its ``id`` as the
delivery metadata's id). A window is kept as its keys and its bytes exactly as
received: its bounds are never converted, so the far-future ``end`` of Numaflow 1.8.1+
(year 262142, beyond ``datetime``) cannot break a stream, and the EOF that ends a
closed key echoes the ``CLOSE``'s window byte for byte.

A result carries its message's keys, value, event time (always present: the platform
needs it; the epoch when the message has none), watermark, id, headers and user
metadata (only when it has some; the platform ignores it), its tags, and a window
``{start: epoch, end: <watermark>, slot: "slot-0", keys}``.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, List, NamedTuple, Optional, Tuple

from pynumaflow._codec.fields import (
    HEADER,
    ID,
    METADATA,
    RequestLayout,
    decode_request,
    new_datum,
    read_length,
)
from pynumaflow._codec.results import (
    NACK_NOT_IN_REDUCE,
    check_yielded,
    encode_strings,
    message_fields,
    refuse_nack,
    set_metadata_field,
)
from pynumaflow._codec.v1.reduce import decode_operation, split_window_request
from pynumaflow._codec.wire import (
    TimestampParts,
    encode_timestamp,
    read_varint,
    skip_field,
    timestamp_parts,
    varint,
)
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow._types.function import Datum, DatumMetadata

__all__ = [
    "APPEND",
    "CLOSE",
    "OPEN",
    "AccumulatorRequest",
    "KeyedWindow",
    "decode_accumulator_request",
    "encode_accumulator_eof",
    "encode_accumulator_result",
    "encode_window",
]

OPEN = 0
CLOSE = 1
APPEND = 2  # not reduce.v1's numbering

_PAYLOAD = RequestLayout("Payload", {5: ID, 6: HEADER, 7: METADATA})
_SLOT = b"\x1a\x06slot-0"
_EPOCH_START = b"\x0a\x00"


class KeyedWindow(NamedTuple):
    """A keyed window as a request named it: its keys and its bytes as received."""

    keys: Tuple[str, ...]
    encoded: bytes


class AccumulatorRequest(NamedTuple):
    """One decoded AccumulatorRequest: the event, its window, and the datum (None: none)."""

    event: int
    window: KeyedWindow
    datum: Optional[Datum]


def decode_accumulator_request(data: bytes) -> AccumulatorRequest:
    """Decode an accumulator.v1 AccumulatorRequest (unknown fields are skipped).

    The operation names one window; if it names more, the last counts (protobuf).
    """
    payload, operation = split_window_request(data, "AccumulatorRequest")
    event, windows = decode_operation(*operation, decode_keyed_window)
    window = windows[-1] if windows else KeyedWindow((), b"")
    return AccumulatorRequest(event, window, None if payload is None else _decode_payload(*payload))


@functools.lru_cache(maxsize=1024)  # a key's requests name the same window
def decode_keyed_window(encoded: bytes) -> KeyedWindow:
    """A KeyedWindow's keys (its bounds are skipped, never converted)."""
    keys: List[str] = []
    pos = 0
    size = len(encoded)
    try:
        while pos < size:
            tag, pos = read_varint(encoded, pos)
            field, wire_type = tag >> 3, tag & 7
            if field in (1, 2, 3, 4) and wire_type != 2:
                raise CodecError(f"KeyedWindow field {field} has wire type {wire_type}")
            if field == 4:
                start, pos = read_length(encoded, pos, size, "KeyedWindow", field)
                keys.append(encoded[start:pos].decode())
            else:
                pos = skip_field(encoded, pos, wire_type, field)
    except UnicodeDecodeError as err:
        raise CodecError(f"KeyedWindow key is not valid UTF-8: {err}") from None
    return KeyedWindow(tuple(keys), encoded)


def _decode_payload(data: bytes, pos: int, end: int) -> Datum:
    try:
        fields = decode_request(data, _PAYLOAD, pos, end)
    except UnicodeDecodeError as err:
        raise CodecError(f"Payload string is not valid UTF-8: {err}") from None
    return new_datum(fields, DatumMetadata(fields[4]))


def _field(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def encode_window(keys: Tuple[str, ...], end: TimestampParts) -> bytes:
    """A result's window: ``{start: epoch, end, slot: "slot-0", keys}``."""
    body = [_EPOCH_START, _field(b"\x12", encode_timestamp(end)), _SLOT]
    encode_strings(b"\x22", keys, body, "keys")
    return b"".join(body)


@functools.lru_cache(maxsize=1024)  # a key's messages repeat their event times
def _time_field(tag: bytes, moment: datetime) -> Tuple[TimestampParts, bytes]:
    """A datetime's (seconds, nanos) and its Timestamp as field ``tag``."""
    parts = timestamp_parts(moment)
    return parts, _field(tag, encode_timestamp(parts))


def _time(message: Any, name: str, tag: bytes) -> Optional[Tuple[TimestampParts, bytes]]:
    moment = getattr(message, name, None)
    if moment is None:
        return None
    try:
        return _time_field(tag, moment)
    except (TypeError, AttributeError):
        raise ReturnTypeError(
            f"message {name} must be a datetime, found {type(moment).__name__}"
        ) from None


@functools.lru_cache(maxsize=1024)  # a key's results share a window until its watermark moves
def _window_field(keys: Tuple[str, ...], end: TimestampParts) -> bytes:
    return _field(b"\x12", encode_window(keys, end))


_EPOCH_TIME = ((0, 0), _field(b"\x1a", encode_timestamp((0, 0))))


def encode_accumulator_result(
    message: object, keys: Tuple[str, ...], watermark: TimestampParts
) -> Tuple[bytes, TimestampParts]:
    """Encode one message an accumulator emitted for ``keys``.

    ``watermark`` is the highest watermark emitted for the key so far; the message's
    own raises it. Returns the AccumulatorResponse and the new highest watermark.

    Raises:
        ReturnTypeError: ``message`` is not a Message, or has fields of wrong types.

    """
    check_yielded(message)
    refuse_nack(message, NACK_NOT_IN_REDUCE)
    out_keys, value, tags = message_fields(message)
    event_time = _time(message, "event_time", b"\x1a") or _EPOCH_TIME
    own = _time(message, "watermark", b"\x22")
    if own is not None and own[0] > watermark:
        watermark = own[0]
    body: List[bytes] = []
    encode_strings(b"\x0a", out_keys, body, "keys")
    if value:
        body.append(_field(b"\x12", value))
    body.append(event_time[1])
    if own is not None:
        body.append(own[1])
    msg_id = getattr(message, "id", "") or ""
    if not isinstance(msg_id, str):
        raise ReturnTypeError(f"message id must be str, found {type(msg_id).__name__}")
    if msg_id:
        body.append(_field(b"\x2a", msg_id.encode()))
    headers = getattr(message, "headers", None) or {}
    for name, text in headers.items():
        entry: List[bytes] = []
        encode_strings(b"\x0a", (name,), entry, "header names")
        encode_strings(b"\x12", (text,), entry, "header values")
        body.append(_field(b"\x32", b"".join(entry)))
    body.append(set_metadata_field(b"\x3a", message))
    response = [_field(b"\x0a", b"".join(body)), _window_field(keys, watermark)]
    encode_strings(b"\x1a", tags, response, "tags")
    return b"".join(response), watermark


def encode_accumulator_eof(window: bytes) -> bytes:
    """The AccumulatorResponse that ends a key: ``{window, EOF: true}``, no payload."""
    return _field(b"\x12", window) + b"\x20\x01"
