"""map.v1 and sourcetransformer.v1 wire messages <-> public datatypes (Numaflow >= 1.4).

The two protocols carry near-identical messages, so one decoder and one result encoder
serve both, told apart by a field layout:

==========================  =========================  ===============================
                            map.v1                     sourcetransformer.v1
==========================  =========================  ===============================
request message             1 request, 2 id,           1 request, 2 handshake
                            3 handshake, 4 status
``Request``                 1 keys, 2 value, 3 event_time, 4 watermark, 5 headers, then
                            6 metadata                 6 id, 7 metadata
response message            1 results, 2 id, 3 handshake (map also 4 status)
``Result``                  1 keys, 2 value, then      1 keys, 2 value, 3 event_time,
                            3 tags, 4 metadata         4 tags, 5 metadata
==========================  =========================  ===============================

A request becomes a :class:`~pynumaflow.function.Datum` whose ``metadata.id`` is the
request id and ``num_delivered`` 0 (v1 has no delivery count); its headers and user
metadata come along, and the user metadata is echoed into every result so that it is
not lost downstream. Results are encoded by the legacy codec's message encoder
(:func:`pynumaflow._codec.response_body`), so a handler's return value is checked the
same way in every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

# A module import: _codec imports pynumaflow.function, whose servers import this module,
# so _codec may still be initialising here (its names are looked up at call time).
from pynumaflow import _codec
from pynumaflow._codec_v1_common import decode_string_map_entry, result_metadata, user_metadata_of
from pynumaflow._errors import CodecError
from pynumaflow._wire import (
    TimestampParts,
    decode_timestamp,
    encode_timestamp,
    read_varint,
    skip_field,
    timestamp_parts,
    varint,
)
from pynumaflow.function._types import NO_HEADERS, Datum, DatumMetadata

__all__ = [
    "HANDSHAKE_RESPONSE",
    "Incoming",
    "decode_map_request",
    "decode_transform_request",
    "encode_map_eot",
    "encode_map_response",
    "encode_map_stream_response",
    "encode_transform_response",
]

HANDSHAKE_RESPONSE = b"\x1a\x02\x08\x01"
"""``{handshake{sot: true}}``: field 3 of both MapResponse and SourceTransformResponse."""

_EOT_STATUS = b"\x22\x02\x08\x01"  # MapResponse field 4: status{eot: true}


class Incoming(NamedTuple):
    """One decoded request message.

    Attributes:
        handshake: it carries a handshake with ``sot`` set (the start of the stream).
        datum: its request, or None when it carries none but a handshake or a
            transmission status (a message with neither is an all-default request).

    """

    handshake: bool
    datum: Optional[Datum]


_REQUEST, _ID, _HANDSHAKE, _STATUS = range(4)


@dataclass(frozen=True)
class _Layout:
    """Where one protocol puts its fields (see the module docstring)."""

    name: str
    outer: Dict[int, int]  # request-message field number -> _REQUEST, _ID, ...
    inner_id: int  # the Request field holding the id, 0 when the id is outside
    metadata: int  # the Request field holding common.Metadata


_MAP = _Layout("MapRequest", {1: _REQUEST, 2: _ID, 3: _HANDSHAKE, 4: _STATUS}, 0, 6)
_TRANSFORM = _Layout("SourceTransformRequest", {1: _REQUEST, 2: _HANDSHAKE}, 6, 7)


def decode_map_request(data: bytes) -> Incoming:
    """Decode a map.v1 MapRequest (unknown fields are skipped).

    Raises:
        CodecError: the bytes are not a valid MapRequest.

    """
    return _decode(data, _MAP)


def decode_transform_request(data: bytes) -> Incoming:
    """Decode a sourcetransformer.v1 SourceTransformRequest (unknown fields are skipped).

    Raises:
        CodecError: the bytes are not a valid SourceTransformRequest.

    """
    return _decode(data, _TRANSFORM)


def _decode(data: bytes, layout: _Layout) -> Incoming:
    spans: List[Tuple[int, int]] = []  # a message field may occur more than once: merged
    msg_id = ""
    handshake: Optional[bool] = None
    status: Optional[bool] = None
    pos = 0
    size = len(data)
    try:
        while pos < size:
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(data, pos)
            field, wire_type = tag >> 3, tag & 7
            role = layout.outer.get(field)
            if role is None:
                pos = skip_field(data, pos, wire_type, field)
                continue
            if wire_type != 2:
                raise CodecError(
                    f"{layout.name} field {field} has wire type {wire_type}, expected 2"
                )
            length = data[pos] if pos < size else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(data, pos)
            end = pos + length
            if end > size:
                raise CodecError(f"{layout.name} field {field} is truncated")
            if role == _REQUEST:
                spans.append((pos, end))
            elif role == _ID:
                msg_id = data[pos:end].decode()
            elif role == _HANDSHAKE:
                handshake = _decode_flag(data, pos, end, "Handshake", handshake)
            else:
                status = _decode_flag(data, pos, end, "TransmissionStatus", status)
            pos = end
        datum = None
        if spans or (handshake is None and status is None):
            datum = _decode_request(data, spans, layout, msg_id)
    except UnicodeDecodeError as err:
        raise CodecError(f"{layout.name} string is not valid UTF-8: {err}") from None
    return Incoming(bool(handshake), datum)


def _decode_flag(data: bytes, pos: int, end: int, name: str, previous: Optional[bool]) -> bool:
    """Decode Handshake{1 sot} or TransmissionStatus{1 eot}: the one bool."""
    flag = bool(previous)
    while pos < end:
        tag, pos = read_varint(data, pos)
        if tag == 0x08:
            raw, pos = read_varint(data, pos)
            flag = raw != 0
        elif tag >> 3 == 1:
            raise CodecError(f"{name} field 1 has wire type {tag & 7}, expected 0")
        else:
            pos = skip_field(data, pos, tag & 7, tag >> 3)
    if pos != end:
        raise CodecError(f"{name} overruns its enclosing message")
    return flag


def _decode_request(
    data: bytes, spans: List[Tuple[int, int]], layout: _Layout, msg_id: str
) -> Datum:
    """Decode the ``Request`` occurrences at ``spans`` (merged) into a Datum."""
    keys: List[str] = []
    value = b""
    event_time: TimestampParts = (0, 0)
    watermark: TimestampParts = (0, 0)
    headers: Dict[str, str] = {}
    user_metadata = b""
    last = layout.metadata
    for pos, end in spans:
        while pos < end:
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(data, pos)
            field, wire_type = tag >> 3, tag & 7
            if not 1 <= field <= last:
                pos = skip_field(data, pos, wire_type, field)
                continue
            if wire_type != 2:
                raise CodecError(f"Request field {field} has wire type {wire_type}, expected 2")
            length = data[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(data, pos)
            sub_end = pos + length
            if sub_end > end:
                raise CodecError(f"Request field {field} is truncated")
            if field == 1:
                keys.append(data[pos:sub_end].decode())
            elif field == 2:
                value = data[pos:sub_end]
            elif field == 3:
                event_time = decode_timestamp(data, pos, sub_end, event_time)
            elif field == 4:
                watermark = decode_timestamp(data, pos, sub_end, watermark)
            elif field == 5:
                decode_string_map_entry(data, pos, sub_end, headers)
            elif field == last:
                user_metadata += user_metadata_of(data, pos, sub_end)
            else:  # layout.inner_id: the only field left between 5 and the metadata
                msg_id = data[pos:sub_end].decode()
            pos = sub_end
        if pos != end:
            raise CodecError("Request overruns its enclosing message")
    return _codec.new_datum(
        keys,
        value,
        event_time,
        watermark,
        DatumMetadata(msg_id, 0),
        MappingProxyType(headers) if headers else NO_HEADERS,
        user_metadata,
    )


# --- responses ---------------------------------------------------------------------------


def _id_field(datum: Datum) -> bytes:
    """Field 2 of both response messages: the id of the request answered."""
    raw = datum.metadata.id.encode()
    return b"\x12" + varint(len(raw)) + raw if raw else b""


def _map_result(message: Any, user_metadata: bytes) -> bytes:
    """A MapResponse.Result body: keys 1, value 2, tags 3, metadata 4."""
    return _codec.response_body(message, None, None, b"\x1a") + result_metadata(
        b"\x22", user_metadata
    )


def encode_map_response(result: object, datum: Datum) -> bytes:
    """Encode a map handler's Messages as the MapResponse answering ``datum``'s request.

    Raises:
        ReturnTypeError: ``result`` is not an iterable of Message.

    """
    user_metadata = datum._user_metadata
    results = _codec.encode_list(
        result, _codec.MESSAGES, lambda message: _map_result(message, user_metadata)
    )
    return results + _id_field(datum)


def encode_map_stream_response(message: object, datum: Datum) -> bytes:
    """Encode one Message a map stream handler yielded: ``MapResponse{id, results: [r]}``.

    Raises:
        ReturnTypeError: ``message`` is not a Message.

    """
    _codec.check_yielded(message)
    result = _map_result(message, datum._user_metadata)
    return b"\x0a" + varint(len(result)) + result + _id_field(datum)


def encode_map_eot(datum: Datum) -> bytes:
    """The end of a map stream handler's output: ``MapResponse{id, status{eot: true}}``."""
    return _id_field(datum) + _EOT_STATUS


def encode_transform_response(result: object, datum: Datum) -> bytes:
    """Encode a mapt handler's MessageTs as the SourceTransformResponse for ``datum``.

    Every result carries its event time (the platform needs it), even the epoch; a
    bare ``datetime.time`` is resolved on the UTC date of ``datum``'s event time, and
    ``MessageT.to_drop()``'s ``datetime(1, 1, 1)`` is -62135596800 s.

    Raises:
        ReturnTypeError: ``result`` is not an iterable of MessageT.

    """
    request_date = datum.event_time.date()
    user_metadata = datum._user_metadata

    def body(message: Any) -> bytes:
        moment = _codec.message_event_time(message, request_date)
        event_time = encode_timestamp(timestamp_parts(moment))
        return _codec.response_body(message, event_time, None, b"\x22") + result_metadata(
            b"\x2a", user_metadata
        )

    return _codec.encode_list(result, _codec.MESSAGE_TS, body) + _id_field(datum)
