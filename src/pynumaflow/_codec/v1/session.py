"""The sessionreduce.v1 wire codec (Numaflow >= 1.4): SessionReduceRequest in, responses out.

A ``SessionReduceRequest`` is ``{1 payload, 2 operation{1 event, 2 keyedWindows}}``;
the payload (``1 keys, 2 value, 3 event_time, 4 watermark, 5 headers, 6 metadata``)
decodes into the public :class:`~pynumaflow.function.Datum`. A session window keeps
its bounds as Timestamp parts (never converted to ``datetime``), its slot, its keys and
its bytes as received: a response echoes them exactly, and a merged window is encoded
from the parts.
"""

from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional, Tuple

from pynumaflow._codec.fields import (
    HEADER,
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
    decode_timestamp,
    encode_timestamp,
    read_varint,
    skip_field,
    varint,
)
from pynumaflow._types.errors import CodecError
from pynumaflow._types.function import Datum, DatumMetadata

__all__ = [
    "APPEND",
    "CLOSE",
    "EXPAND",
    "MERGE",
    "OPEN",
    "SessionRequest",
    "SessionWindow",
    "decode_session_request",
    "encode_session_eof",
    "encode_session_result",
    "merged_window",
]

OPEN = 0
CLOSE = 1
EXPAND = 2
MERGE = 3
APPEND = 4

_PAYLOAD = RequestLayout("Payload", {5: HEADER, 6: METADATA})
_NO_DELIVERY = DatumMetadata()


class SessionWindow(NamedTuple):
    """A session's window: its bounds, slot and keys, and its bytes."""

    start: TimestampParts
    end: TimestampParts
    slot: str
    keys: Tuple[str, ...]
    encoded: bytes

    @property
    def identity(self) -> Tuple[int, int, Tuple[str, ...]]:
        """What names a session: start and end in milliseconds, and keys (as the platform)."""
        return (_millis(self.start), _millis(self.end), self.keys)


def _millis(parts: TimestampParts) -> int:
    return parts[0] * 1000 + parts[1] // 1_000_000


class SessionRequest(NamedTuple):
    """One decoded SessionReduceRequest: the event, its windows, the datum (None: none)."""

    event: int
    windows: Tuple[SessionWindow, ...]
    datum: Optional[Datum]


def decode_session_request(data: bytes) -> SessionRequest:
    """Decode a SessionReduceRequest (unknown fields are skipped).

    A payload with no fields (Go 1.4-1.5 sends ``Payload{}`` with MERGE and CLOSE)
    counts as none.
    """
    payload, operation = split_window_request(data, "SessionReduceRequest")
    event, windows = decode_operation(*operation, decode_session_window)
    datum = None
    if payload is not None and payload[1] < payload[2]:
        datum = _decode_payload(*payload)
    return SessionRequest(event, tuple(windows), datum)


@functools.lru_cache(maxsize=1024)  # a session's requests name the same window
def decode_session_window(encoded: bytes) -> SessionWindow:
    """Decode a KeyedWindow (bounds kept as Timestamp parts)."""
    start: TimestampParts = (0, 0)
    end: TimestampParts = (0, 0)
    slot = ""
    keys: List[str] = []
    pos = 0
    size = len(encoded)
    try:
        while pos < size:
            tag, pos = read_varint(encoded, pos)
            field, wire_type = tag >> 3, tag & 7
            if field in (1, 2, 3, 4):
                if wire_type != 2:
                    raise CodecError(f"KeyedWindow field {field} has wire type {wire_type}")
                value_start, pos = read_length(encoded, pos, size, "KeyedWindow", field)
                if field == 1:
                    start = decode_timestamp(encoded, value_start, pos, start)
                elif field == 2:
                    end = decode_timestamp(encoded, value_start, pos, end)
                elif field == 3:
                    slot = encoded[value_start:pos].decode()
                else:
                    keys.append(encoded[value_start:pos].decode())
            else:
                pos = skip_field(encoded, pos, wire_type, field)
    except UnicodeDecodeError as err:
        raise CodecError(f"KeyedWindow string is not valid UTF-8: {err}") from None
    return SessionWindow(start, end, slot, tuple(keys), encoded)


def _field(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def merged_window(windows: Tuple[SessionWindow, ...]) -> SessionWindow:
    """The window of sessions merged: the earliest start, the latest end, the first's keys."""
    first = windows[0]
    start = min(w.start for w in windows)
    end = max(w.end for w in windows)
    body = [_field(b"\x0a", encode_timestamp(start)), _field(b"\x12", encode_timestamp(end))]
    if first.slot:
        body.append(_field(b"\x1a", first.slot.encode()))
    encode_strings(b"\x22", first.keys, body, "keys")
    return SessionWindow(start, end, first.slot, first.keys, b"".join(body))


def _decode_payload(data: bytes, pos: int, end: int) -> Datum:
    try:
        fields = decode_request(data, _PAYLOAD, pos, end)
    except UnicodeDecodeError as err:
        raise CodecError(f"Payload string is not valid UTF-8: {err}") from None
    return new_datum(fields, _NO_DELIVERY)


def encode_session_result(message: object, window: SessionWindow) -> bytes:
    """Encode one message a session emitted: ``{result{keys, value, tags, metadata}, keyedWindow}``.

    The metadata is the message's user metadata, sent only when it has some.

    Raises:
        ReturnTypeError: ``message`` is not a Message.

    """
    check_yielded(message)
    refuse_nack(message, NACK_NOT_IN_REDUCE)
    keys, value, tags = message_fields(message)
    body: List[bytes] = []
    encode_strings(b"\x0a", keys, body, "keys")
    if value:
        body.append(_field(b"\x12", value))
    encode_strings(b"\x1a", tags, body, "tags")
    body.append(set_metadata_field(b"\x22", message))
    return _field(b"\x0a", b"".join(body)) + _field(b"\x12", window.encoded)


def encode_session_eof(window: SessionWindow) -> bytes:
    """The response that ends a closed session: ``{keyedWindow, EOF: true}``."""
    return _field(b"\x12", window.encoded) + b"\x18\x01"
