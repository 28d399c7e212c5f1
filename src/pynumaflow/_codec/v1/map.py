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
(:func:`pynumaflow._codec.results.response_body`), so a handler's return value is checked the
same way in every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from pynumaflow._codec import results
from pynumaflow._codec.fields import (
    HEADER,
    ID,
    METADATA,
    USER_METADATA,
    RequestFields,
    RequestLayout,
    decode_flag,
    decode_request,
    new_datum,
    result_metadata,
)
from pynumaflow._codec.wire import (
    encode_timestamp,
    read_varint,
    skip_field,
    timestamp_parts,
    varint,
)
from pynumaflow._types.errors import CodecError, ReturnTypeError
from pynumaflow._types.function import Datum, DatumMetadata

__all__ = [
    "BATCH_EOT",
    "HANDSHAKE_RESPONSE",
    "NACK_REFUSED",
    "Incoming",
    "decode_map_request",
    "decode_map_request_own",
    "decode_transform_request",
    "decode_transform_request_own",
    "encode_map_eot",
    "encode_map_response",
    "encode_map_response_own",
    "encode_map_stream_response",
    "encode_map_stream_response_own",
    "encode_transform_response",
    "encode_transform_response_own",
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
        eot: it carries a transmission status with ``eot`` set (map.v1 only: the end
            of a batch in batch mode).

    """

    handshake: bool
    datum: Optional[Datum]
    eot: bool = False


_REQUEST, _ID, _HANDSHAKE, _STATUS = range(4)


@dataclass(frozen=True)
class _Layout:
    """Where one protocol puts its fields (see the module docstring)."""

    name: str
    outer: Dict[int, int]  # request-message field number -> _REQUEST, _ID, ...
    request: RequestLayout


_MAP = _Layout(
    "MapRequest",
    {1: _REQUEST, 2: _ID, 3: _HANDSHAKE, 4: _STATUS},
    RequestLayout("Request", {5: HEADER, 6: USER_METADATA}),
)
_TRANSFORM = _Layout(
    "SourceTransformRequest",
    {1: _REQUEST, 2: _HANDSHAKE},
    RequestLayout("Request", {5: HEADER, 6: ID, 7: USER_METADATA}),
)
# The modern API's: the request's common.Metadata kept whole (user and system metadata).
_MAP_OWN = _Layout(_MAP.name, _MAP.outer, RequestLayout("Request", {5: HEADER, 6: METADATA}))
_TRANSFORM_OWN = _Layout(
    _TRANSFORM.name, _TRANSFORM.outer, RequestLayout("Request", {5: HEADER, 6: ID, 7: METADATA})
)


def decode_map_request(data: bytes) -> Incoming:
    """Decode a map.v1 MapRequest (unknown fields are skipped).

    Raises:
        CodecError: the bytes are not a valid MapRequest.

    """
    return _decode(data, _MAP)


def decode_map_request_own(data: bytes) -> Incoming:
    """:func:`decode_map_request` keeping the request's Metadata whole (the modern API)."""
    return _decode(data, _MAP_OWN)


def decode_transform_request_own(data: bytes) -> Incoming:
    """:func:`decode_transform_request` keeping the Metadata whole (the modern API)."""
    return _decode(data, _TRANSFORM_OWN)


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
            # read_length, inlined: the hot path of every map.v1 request.
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
                handshake = decode_flag(data, pos, end, bool(handshake), "Handshake")
            else:
                status = decode_flag(data, pos, end, bool(status), "TransmissionStatus")
            pos = end
        datum = None
        if spans or (handshake is None and status is None):
            datum = _decode_request(data, spans, layout, msg_id)
    except UnicodeDecodeError as err:
        raise CodecError(f"{layout.name} string is not valid UTF-8: {err}") from None
    return Incoming(bool(handshake), datum, bool(status))


def _decode_request(
    data: bytes, spans: List[Tuple[int, int]], layout: _Layout, msg_id: str
) -> Datum:
    """Decode the ``Request`` occurrences at ``spans`` (merged) into a Datum."""
    fields: Optional[RequestFields] = None
    for pos, end in spans:
        fields = decode_request(data, layout.request, pos, end, fields)
    if fields is None:  # no Request at all: an all-default one
        fields = decode_request(b"", layout.request)
    request_id = fields[4]
    return new_datum(fields, DatumMetadata(request_id or msg_id, 0))


# --- responses ---------------------------------------------------------------------------


def _id_field(datum: Datum) -> bytes:
    """Field 2 of both response messages: the id of the request answered."""
    raw = datum.metadata.id.encode()
    return b"\x12" + varint(len(raw)) + raw if raw else b""


NACK_REFUSED = (
    "a NACK result (to_nack()) needs Numaflow >= 1.8.2; set PYNUMAFLOW_NACK=1 "
    "when the platform is that new (older ones ack the input and forward the result)"
)
"""Why a NACK result fails its request when ``$PYNUMAFLOW_NACK`` is not set."""


def _map_result(message: Any, user_metadata: bytes, nack: bool) -> bytes:
    """A MapResponse.Result body: keys 1, value 2, tags 3, metadata 4, nack_options 5.

    A NACK result (one with nack options) is refused unless ``nack``.
    """
    body = results.response_body(message, None, None, b"\x1a") + result_metadata(
        b"\x22", user_metadata
    )
    return _with_nack(body, message, nack, _MAP_NACK_OPTIONS)


def _own_map_result(message: Any, nack: bool) -> bytes:
    """A MapResponse.Result body carrying the message's own metadata (the modern API)."""
    body = results.response_body(message, None, None, b"\x1a") + results.own_metadata_field(
        b"\x22", message
    )
    return _with_nack(body, message, nack, _MAP_NACK_OPTIONS)


_MAP_NACK_OPTIONS = b"\x2a"  # MapResponse.Result field 5
_TRANSFORM_NACK_OPTIONS = b"\x32"  # SourceTransformResponse.Result field 6


def _with_nack(body: bytes, message: Any, nack: bool, tag: bytes) -> bytes:
    """``body`` and, for a NACK result, its nack_options field ``tag`` (refused unless ``nack``)."""
    options = getattr(message, "_nack", None)
    if options is None:
        return body
    if not nack:
        raise ReturnTypeError(NACK_REFUSED)
    encoded = results.encode_nack_options(options)
    return body + tag + varint(len(encoded)) + encoded


def encode_map_response(result: object, datum: Datum, nack: bool = False) -> bytes:
    """Encode a map handler's Messages as the MapResponse answering ``datum``'s request.

    ``nack``: NACK results may be sent (Numaflow >= 1.8.2), else they are refused.

    Raises:
        ReturnTypeError: ``result`` is not an iterable of Message, or holds a NACK
            result and ``nack`` is false.

    """
    user_metadata = datum._user_metadata
    encoded = results.encode_list(
        result, results.MESSAGES, lambda message: _map_result(message, user_metadata, nack)
    )
    return encoded + _id_field(datum)


def encode_map_response_own(result: object, datum: Datum, nack: bool = False) -> bytes:
    """:func:`encode_map_response` for the modern API: each result carries its own metadata."""
    encoded = results.encode_list(
        result,
        results.MESSAGES,
        lambda message: _own_map_result(message, nack),
    )
    return encoded + _id_field(datum)


def encode_map_stream_response(message: object, datum: Datum, nack: bool = False) -> bytes:
    """Encode one Message a map stream handler yielded: ``MapResponse{id, results: [r]}``.

    Raises:
        ReturnTypeError: ``message`` is not a Message, or a NACK result and not ``nack``.

    """
    results.check_yielded(message)
    result = _map_result(message, datum._user_metadata, nack)
    return b"\x0a" + varint(len(result)) + result + _id_field(datum)


def encode_map_stream_response_own(message: object, datum: Datum, nack: bool = False) -> bytes:
    """:func:`encode_map_stream_response` for the modern API: the message's own metadata."""
    results.check_yielded(message)
    result = _own_map_result(message, nack)
    return b"\x0a" + varint(len(result)) + result + _id_field(datum)


def encode_map_eot(datum: Datum) -> bytes:
    """The end of a map stream handler's output: ``MapResponse{id, status{eot: true}}``."""
    return _id_field(datum) + _EOT_STATUS


BATCH_EOT = _EOT_STATUS
"""The end of a batch's responses in batch mode: ``MapResponse{status{eot: true}}``, no id."""


def encode_transform_response(result: object, datum: Datum, nack: bool = False) -> bytes:
    """Encode a mapt handler's MessageTs as the SourceTransformResponse for ``datum``.

    Every result carries its event time (the platform needs it), even the epoch; a
    bare ``datetime.time`` is resolved on the UTC date of ``datum``'s event time, and
    ``MessageT.to_drop()``'s ``datetime(1, 1, 1)`` is -62135596800 s. ``nack``: as
    for :func:`encode_map_response` (nack_options are field 6 here).

    Raises:
        ReturnTypeError: ``result`` is not an iterable of MessageT, or holds a NACK
            result and ``nack`` is false.

    """
    request_date = datum.event_time.date()
    metadata = result_metadata(b"\x2a", datum._user_metadata)

    def body(message: Any) -> bytes:
        encoded = _transform_result(message, request_date) + metadata
        return _with_nack(encoded, message, nack, _TRANSFORM_NACK_OPTIONS)

    return results.encode_list(result, results.MESSAGE_TS, body) + _id_field(datum)


def encode_transform_response_own(result: object, datum: Datum, nack: bool = False) -> bytes:
    """:func:`encode_transform_response` for the modern API: each result's own metadata."""
    request_date = datum.event_time.date()

    def body(message: Any) -> bytes:
        encoded = _transform_result(message, request_date) + results.own_metadata_field(
            b"\x2a", message
        )
        return _with_nack(encoded, message, nack, _TRANSFORM_NACK_OPTIONS)

    return results.encode_list(result, results.MESSAGE_TS, body) + _id_field(datum)


def _transform_result(message: Any, request_date: date) -> bytes:
    """A SourceTransformResponse.Result body up to its metadata: keys, value, event time, tags."""
    moment = results.message_event_time(message, request_date)
    event_time = encode_timestamp(timestamp_parts(moment))
    return results.response_body(message, event_time, None, b"\x22")
