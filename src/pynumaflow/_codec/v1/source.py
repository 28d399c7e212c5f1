"""source.v1 wire messages <-> the source datatypes (Numaflow >= 1.4; spec section 16).

==========================  ========================================================
message                     fields
==========================  ========================================================
``ReadRequest``             1 request{1 num_records u64, 2 timeout_in_ms u32},
                            2 handshake{1 sot}
``ReadResponse``            1 result, 2 status{1 eot, 2 code, 3 error, 4 msg},
                            3 handshake
``ReadResponse.Result``     1 payload, 2 offset{1 offset bytes, 2 partition_id i32},
                            3 event_time, 4 keys, 5 headers, 6 metadata
``AckRequest``              1 request{1 offsets}, 2 handshake
``AckResponse``             1 result{1 success Empty}, 2 handshake
``NackRequest``             1 request (repeated since 1.8.2){1 offsets, 2 nack_options}
``NackResponse``            1 result{1 success Empty}
``PendingResponse``         1 result{1 count i64}
``PartitionsResponse``      1 result{1 partitions (packed i32), 2 total_partitions}
==========================  ========================================================

A request field that occurs twice merges (proto3), so a 1.8.2+ ``NackRequest`` with a
``Request`` per offset decodes as the concatenation of their offsets.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Iterator, List, Optional, Tuple

from pynumaflow._codec.fields import decode_flag, read_length
from pynumaflow._codec.results import encode_strings
from pynumaflow._codec.wire import (
    encode_timestamp,
    read_varint,
    signed_varint,
    skip_field,
    timestamp_parts,
    to_int32,
    varint,
)
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow._types.source import (
    Message,
    Offset,
    PartitionsResponse,
    PendingResponse,
    ReadRequest,
)

__all__ = [
    "ACK_HANDSHAKE_RESPONSE",
    "ACK_RESPONSE",
    "NACK_RESPONSE",
    "READ_EOT",
    "READ_HANDSHAKE_RESPONSE",
    "decode_ack_request",
    "decode_nack_request",
    "decode_read_request",
    "encode_partitions_response",
    "encode_pending_response",
    "encode_read_result",
]

_HANDSHAKE = b"\x08\x01"  # Handshake{sot: true}
_SUCCESS = b"\x0a\x02\x0a\x00"  # {result{success{}}}: AckResponse and NackResponse
_NOT_EOT = b"\x12\x00"  # ReadResponse field 2: status{eot: false, code: SUCCESS}

READ_HANDSHAKE_RESPONSE = _NOT_EOT + b"\x1a\x02" + _HANDSHAKE
"""``ReadResponse{status{eot: false}, handshake{sot: true}}``, as the reference SDKs answer."""
READ_EOT = b"\x12\x02\x08\x01"
"""``ReadResponse{status{eot: true}}``: ends every read batch, even an empty one."""
ACK_HANDSHAKE_RESPONSE = _SUCCESS + b"\x12\x02" + _HANDSHAKE
"""``AckResponse{result{success{}}, handshake{sot: true}}``."""
ACK_RESPONSE = _SUCCESS
"""``AckResponse{result{success{}}}``: one per AckRequest, once the handler returned."""
NACK_RESPONSE = _SUCCESS
"""``NackResponse{result{success{}}}``."""

_MAX_PARTITION = 0xFFFF  # the platform keeps partition ids in 16 bits


def _fields(data: bytes, pos: int, end: int, what: str) -> Iterator[Tuple[int, int, int, int]]:
    """Each field of data[pos:end]: (field, wire type, value or start, end of a span)."""
    while pos < end:
        tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise CodecError(f"{what} has field number 0")
        if wire_type == 0:
            value, pos = read_varint(data, pos)
            yield field, 0, value, pos
        elif wire_type == 2:
            start, pos = read_length(data, pos, end, what, field)
            yield field, 2, start, pos
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError(f"{what} overruns its enclosing message")


def _expect(wire_type: int, expected: int, what: str, field: int) -> None:
    if wire_type != expected:
        raise CodecError(f"{what} field {field} has wire type {wire_type}, expected {expected}")


def _outer(data: bytes, what: str) -> Tuple[bool, List[Tuple[int, int]]]:
    """A request with 1 ``request`` (spans, merged) and 2 ``handshake``."""
    handshake = False
    spans: List[Tuple[int, int]] = []
    for field, wire_type, start, end in _fields(data, 0, len(data), what):
        if field in (1, 2):
            _expect(wire_type, 2, what, field)
            if field == 1:
                spans.append((start, end))
            else:
                handshake = decode_flag(data, start, end, handshake, "Handshake")
    return handshake, spans


def decode_read_request(data: bytes) -> Tuple[bool, Optional[ReadRequest]]:
    """A ReadRequest: (handshake with sot, its request or None).

    Raises:
        CodecError: the bytes are not a valid ReadRequest.

    """
    handshake, spans = _outer(data, "ReadRequest")
    if not spans:
        return handshake, None
    num_records = timeout = 0
    for pos, end in spans:
        for field, wire_type, value, _ in _fields(data, pos, end, "ReadRequest.Request"):
            if field in (1, 2):
                _expect(wire_type, 0, "ReadRequest.Request", field)
                if field == 1:
                    num_records = value & 0xFFFFFFFFFFFFFFFF
                else:
                    timeout = value & 0xFFFFFFFF
    return handshake, ReadRequest(num_records, timeout)


def _offset(data: bytes, pos: int, end: int) -> Offset:
    raw = b""
    partition = 0
    for field, wire_type, value, stop in _fields(data, pos, end, "Offset"):
        if field == 1:
            _expect(wire_type, 2, "Offset", 1)
            raw = data[value:stop]
        elif field == 2:
            _expect(wire_type, 0, "Offset", 2)
            partition = to_int32(value)
    return Offset(raw, partition)


def _offsets(data: bytes, spans: List[Tuple[int, int]], what: str, into: List[Offset]) -> None:
    """Append the ``1 offsets`` of each message at ``spans`` to ``into`` (other fields skipped)."""
    for pos, end in spans:
        for field, wire_type, start, stop in _fields(data, pos, end, what):
            if field == 1:
                _expect(wire_type, 2, what, 1)
                into.append(_offset(data, start, stop))


def decode_ack_request(data: bytes) -> Tuple[bool, Optional[List[Offset]]]:
    """An AckRequest: (handshake with sot, its offsets, or None without a request).

    Raises:
        CodecError: the bytes are not a valid AckRequest.

    """
    handshake, spans = _outer(data, "AckRequest")
    if not spans:
        return handshake, None
    offsets: List[Offset] = []
    _offsets(data, spans, "AckRequest.Request", offsets)
    return handshake, offsets


def decode_nack_request(data: bytes) -> List[Offset]:
    """A NackRequest's offsets, every ``Request`` of it in order (their nack_options skipped).

    Raises:
        CodecError: the bytes are not a valid NackRequest.

    """
    spans = []
    for field, wire_type, start, end in _fields(data, 0, len(data), "NackRequest"):
        if field == 1:
            _expect(wire_type, 2, "NackRequest", 1)
            spans.append((start, end))
    offsets: List[Offset] = []
    _offsets(data, spans, "NackRequest.Request", offsets)
    return offsets


# --- responses ---------------------------------------------------------------------------


def _delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


@functools.lru_cache(maxsize=1024)  # a source's messages often share their event times
def _event_time_field(moment: datetime) -> bytes:
    return _delimited(b"\x1a", encode_timestamp(timestamp_parts(moment)))


def _encode_offset(offset: object) -> bytes:
    if not isinstance(offset, Offset):
        raise ReturnTypeError(f"message offset must be an Offset, found {type(offset).__name__}")
    raw, partition = offset.offset, offset.partition_id
    if not isinstance(raw, bytes) or not raw:
        raise ReturnTypeError(f"message offset must be non-empty bytes, found {raw!r}")
    if not isinstance(partition, int) or not 0 <= partition <= _MAX_PARTITION:
        raise ReturnTypeError(f"partition_id must be an int in 0-65535, found {partition!r}")
    body = _delimited(b"\x0a", raw)
    if partition:
        body += b"\x10" + varint(partition)
    return body


def _encode_headers(headers: Any, out: List[bytes]) -> None:
    for key, value in dict(headers).items():
        entry: List[bytes] = []
        encode_strings(b"\x0a", (key,), entry, "header names")
        encode_strings(b"\x12", (value,), entry, "header values")
        out.append(_delimited(b"\x2a", b"".join(entry)))


def encode_read_result(message: object) -> bytes:
    """``ReadResponse{result, status{eot: false}}`` for one message a read handler put.

    Raises:
        ReturnTypeError: it is not a :class:`~pynumaflow.sourcer.Message`, or its offset is
            empty, its partition outside 0-65535, or a key or header not a str.

    """
    if not isinstance(message, Message):
        raise ReturnTypeError(f"expected a sourcer Message, found {type(message).__name__}")
    out: List[bytes] = []
    if message.payload:
        out.append(_delimited(b"\x0a", message.payload))
    out.append(_delimited(b"\x12", _encode_offset(message.offset)))
    out.append(_event_time_field(message.event_time))
    encode_strings(b"\x22", message.keys, out, "keys")
    _encode_headers(message.headers, out)
    return _delimited(b"\x0a", b"".join(out)) + _NOT_EOT


def encode_pending_response(result: object) -> bytes:
    """``PendingResponse{result{count}}`` (``result`` always set: old platforms need it).

    Raises:
        ReturnTypeError: ``result`` is not a PendingResponse.

    """
    if not isinstance(result, PendingResponse):
        raise ReturnTypeError(
            f"pending_handler returned {type(result).__name__}; expected PendingResponse"
        )
    count = result.count
    return _delimited(b"\x0a", b"\x08" + signed_varint(count) if count else b"")


def encode_partitions_response(result: object, total: object) -> bytes:
    """``PartitionsResponse{result{partitions, total_partitions}}``, the total only if not None.

    Raises:
        ReturnTypeError: ``result`` is not a PartitionsResponse, a partition or the total
            not an int.

    """
    if not isinstance(result, PartitionsResponse):
        raise ReturnTypeError(
            f"active_partitions_handler returned {type(result).__name__}; "
            "expected PartitionsResponse"
        )
    packed = []
    for partition in result.partitions:
        if not isinstance(partition, int) or isinstance(partition, bool):
            raise ReturnTypeError(f"partitions must be ints, found {partition!r}")
        packed.append(signed_varint(partition))
    body = _delimited(b"\x0a", b"".join(packed)) if packed else b""
    if total is not None:
        if not isinstance(total, int) or isinstance(total, bool):
            raise ReturnTypeError(
                f"total_partitions_handler returned {type(total).__name__}; expected int or None"
            )
        body += b"\x10" + signed_varint(total)
    return _delimited(b"\x0a", body)
