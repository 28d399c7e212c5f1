"""The one hand-written wire codec: protobuf bytes of the hot messages <-> public datatypes.

betterproto message objects cost several times the transport itself per call, so the
hot RPCs decode requests and encode responses here, straight to and from the public
datatypes. Every function is checked byte for byte against the betterproto classes in
``pynumaflow._proto`` by the property tests. Nothing else in the package touches wire
bytes of these messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from pynumaflow._errors import CodecError, ReturnTypeError
from pynumaflow._wire import (
    U64,
    TimestampParts,
    decode_timestamp,
    encode_text,
    encode_timestamp,
    fast_varint,
    naive_utc,
    read_varint,
    skip_field,
    timestamp_parts,
    varint,
)
from pynumaflow.function._types import NO_HEADERS, Datum, DatumMetadata, Keys, Message, MessageT
from pynumaflow.sink._types import Datum as SinkDatum
from pynumaflow.sink._types import Response, check_response_extras

__all__ = [
    "LEGACY_FALLBACK_ERR",
    "MESSAGES",
    "MESSAGE_TS",
    "CodecError",
    "ReturnTypeError",
    "check_yielded",
    "decode_datum_request",
    "decode_sink_datum_request",
    "encode_datum_response",
    "encode_datum_response_list",
    "encode_datum_response_t_list",
    "encode_list",
    "encode_response_list",
    "message_event_time",
    "new_datum",
    "read_responses",
    "response_body",
]

_F = TypeVar("_F")

# What map and mapt handlers must return, for error messages.
MESSAGES = "Messages (an iterable of Message)"
MESSAGE_TS = "MessageTs (an iterable of MessageT)"


# --- timestamps -------------------------------------------------------------------------


def _decode_bare_time(
    data: bytes, pos: int, end: int, parts: TimestampParts, name: str
) -> TimestampParts:
    """Decode a google.protobuf.Timestamp field (as v1 requests carry their times).

    The TimeDecoder signature (``name`` unused) lets it stand in for the wrapper decoder.
    """
    return decode_timestamp(data, pos, end, parts)


def _decode_time_wrapper(
    data: bytes, pos: int, end: int, parts: TimestampParts, name: str
) -> TimestampParts:
    """Decode EventTime/Watermark: a message whose field 1 is a Timestamp."""
    # Fast path for what encoders write: 0a LEN Timestamp, nothing else.
    if end - pos >= 2 and data[pos] == 0x0A and data[pos + 1] == end - pos - 2:
        return _decode_bare_time(data, pos + 2, end, parts, name)
    return _decode_time_wrapper_slow(data, pos, end, parts, name)


def _decode_time_wrapper_slow(
    data: bytes, pos: int, end: int, parts: TimestampParts, name: str
) -> TimestampParts:
    while pos < end:
        tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 1:
            if wire_type != 2:
                raise CodecError(f"{name} field 1 has wire type {wire_type}, expected 2")
            length, pos = read_varint(data, pos)
            sub_end = pos + length
            if sub_end > end:
                raise CodecError(f"{name} is truncated")
            parts = decode_timestamp(data, pos, sub_end, parts)
            pos = sub_end
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError(f"{name} overruns its enclosing message")
    return parts


TimeDecoder = Callable[[bytes, int, int, TimestampParts, str], TimestampParts]
"""Decodes a time field in data[pos:end] over the parts seen so far (name: for errors)."""


def _encode_timestamp_wrapper(parts: TimestampParts) -> bytes:
    """Encode EventTime/Watermark {Timestamp field 1}; the epoch is an empty wrapper."""
    if not parts[0] and not parts[1]:
        return b""
    ts = encode_timestamp(parts)
    return b"\x0a" + varint(len(ts)) + ts


# --- function.v1 ------------------------------------------------------------------------


def decode_datum_request(data: bytes) -> Datum:
    """Decode a function.v1 DatumRequest into a Datum (unknown fields are skipped)."""
    keys, value, event_time, watermark, metadata = _decode_request(data, _decode_metadata, ("", 0))
    return new_datum(keys, value, event_time, watermark, DatumMetadata(*metadata))


_new_object = object.__new__


def new_datum(
    keys: List[str],
    value: bytes,
    event_time: TimestampParts,
    watermark: TimestampParts,
    metadata: DatumMetadata,
    headers: Mapping[str, str] = NO_HEADERS,
    user_metadata: bytes = b"",
) -> Datum:
    """A Datum from decoded fields, built without Datum.__init__'s argument checks.

    ``headers`` must be read-only (a ``MappingProxyType``); ``user_metadata`` is an
    encoded common.Metadata holding only the request's user metadata (see
    ``_codec_v1_common.user_metadata_of``).
    """
    datum = _new_object(Datum)
    datum._keys = Keys(keys)
    datum._value = value
    datum._event_time = naive_utc(event_time)
    datum._watermark = naive_utc(watermark)
    datum._metadata = metadata
    datum._headers = headers
    datum._user_metadata = user_metadata
    return datum


def _decode_request(
    data: bytes,
    decode_field5: Callable[[bytes, int, int, _F], _F],
    field5: _F,
    pos: int = 0,
    size: Optional[int] = None,
    decode_time: TimeDecoder = _decode_time_wrapper,
) -> Tuple[List[str], bytes, TimestampParts, TimestampParts, _F]:
    """Decode the fields a function.v1 and a sink.v1 DatumRequest share.

    Fields 1-4 (keys, value, event_time, watermark) are the same in both protocols (and
    in reduce.v1's ``Payload``, whose times are bare Timestamps: ``decode_time`` reads
    either form); field 5 (function.v1 ``Metadata``, sink.v1 ``id``, reduce.v1 a
    ``headers`` entry) is decoded by ``decode_field5`` from ``data[pos:end]`` and the
    value it had so far (``field5`` initially). The message is ``data[pos:size]`` (by
    default all of ``data``), so an embedded one needs no copy.
    """
    keys: List[str] = []
    value = b""
    event_time: TimestampParts = (0, 0)
    watermark: TimestampParts = (0, 0)
    if size is None:
        size = len(data)
    try:
        while pos < size:
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(data, pos)
            field = tag >> 3
            wire_type = tag & 7
            if 1 <= field <= 5:
                if wire_type != 2:
                    raise CodecError(
                        f"DatumRequest field {field} has wire type {wire_type}, expected 2"
                    )
                length = data[pos] if pos < size else 0x80
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = read_varint(data, pos)
                end = pos + length
                if end > size:
                    raise CodecError(f"DatumRequest field {field} is truncated")
                if field == 1:
                    keys.append(data[pos:end].decode())
                elif field == 2:
                    value = data[pos:end]
                elif field == 3:
                    event_time = decode_time(data, pos, end, event_time, "EventTime")
                elif field == 4:
                    watermark = decode_time(data, pos, end, watermark, "Watermark")
                else:
                    field5 = decode_field5(data, pos, end, field5)
                pos = end
            else:
                pos = skip_field(data, pos, wire_type, field)
    except UnicodeDecodeError as err:
        raise CodecError(f"DatumRequest string is not valid UTF-8: {err}") from None
    if pos > size:
        raise CodecError("DatumRequest overruns its enclosing message")
    return keys, value, event_time, watermark, field5


def _decode_metadata(data: bytes, pos: int, end: int, previous: Tuple[str, int]) -> Tuple[str, int]:
    msg_id, num_delivered = previous
    # Fast path for what encoders write: [0a LEN id] [10 num_delivered], nothing else.
    if pos < end and data[pos] == 0x0A and data[pos + 1] < 0x80:
        id_end = pos + 2 + data[pos + 1]
        if id_end == end or (id_end < end and data[id_end] == 0x10):
            cursor = id_end
            raw = num_delivered
            if id_end < end:
                raw, cursor = fast_varint(data, id_end + 1, end)
            if cursor == end:
                return data[pos + 2 : id_end].decode(), raw & (U64 - 1)
    while pos < end:
        tag, pos = read_varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 1 and wire_type == 2:
            length, pos = read_varint(data, pos)
            if pos + length > end:
                raise CodecError("Metadata.id is truncated")
            msg_id = data[pos : pos + length].decode()
            pos += length
        elif field == 2 and wire_type == 0:
            num_delivered, pos = read_varint(data, pos)
            num_delivered &= U64 - 1
        elif field in (1, 2):
            raise CodecError(f"Metadata field {field} has wire type {wire_type}")
        else:
            pos = skip_field(data, pos, wire_type, field)
    if pos != end:
        raise CodecError("Metadata overruns its enclosing message")
    return msg_id, num_delivered


def _encode_strings(tag: bytes, items: Iterable[str], out: List[bytes], what: str) -> None:
    for item in items:
        if not isinstance(item, str):
            raise ReturnTypeError(f"message {what} must be str, found {type(item).__name__}")
        try:
            raw = item.encode()
        except UnicodeEncodeError as err:
            raise ReturnTypeError(f"message {what} is not encodable as UTF-8: {err}") from None
        out.append(tag)
        out.append(varint(len(raw)))
        out.append(raw)


def _message_fields(message: Any) -> Tuple[Iterable[str], bytes, Iterable[str]]:
    """The keys, value and tags of a handler's output message, checked where not typed."""
    if type(message) is Message or type(message) is MessageT:
        return message._keys, message._value, message._tags
    try:
        keys, value, tags = message.keys, message.value, message.tags
    except AttributeError:
        raise ReturnTypeError(f"expected Message objects, found {type(message).__name__}") from None
    if not isinstance(value, bytes):
        raise ReturnTypeError(f"message value must be bytes, found {type(value).__name__}")
    return keys, value, tags


def response_body(
    message: Any,
    event_time: Optional[bytes] = None,
    watermark: Optional[bytes] = None,
    tags_tag: bytes = b"\x2a",
) -> bytes:
    """Encode one DatumResponse (without its own tag and length).

    Fields: keys 1, value 2, ``event_time`` 3 and ``watermark`` 4 (encoded bodies, left
    out when None), tags with ``tags_tag`` (field 5 here). The v1 results share the
    layout up to their tags: map.v1 ``Result`` has tags at 3, the transformer's at 4.
    """
    keys, value, tags = _message_fields(message)
    out: List[bytes] = []
    _encode_strings(b"\x0a", keys, out, "keys")
    if value:
        out.append(b"\x12")
        out.append(varint(len(value)))
        out.append(value)
    if event_time is not None:
        out.append(b"\x1a")
        out.append(varint(len(event_time)))
        out.append(event_time)
    if watermark is not None:
        out.append(b"\x22")
        out.append(varint(len(watermark)))
        out.append(watermark)
    _encode_strings(tags_tag, tags, out, "tags")
    return b"".join(out)


def _checked_iter(result: object, expected: str) -> Iterable[Any]:
    if result is None or isinstance(result, (str, bytes, bytearray, dict)):
        raise ReturnTypeError(f"handler returned {type(result).__name__}; expected {expected}")
    try:
        return iter(result)  # type: ignore[call-overload, no-any-return]
    except TypeError:
        raise ReturnTypeError(
            f"handler returned {type(result).__name__}; expected {expected}"
        ) from None


def encode_list(result: object, expected: str, body: Callable[[Any], bytes]) -> bytes:
    """Encode what a handler returned as repeated field 1, each item by ``body``.

    ``expected`` names what the handler should have returned, for the error message.
    """
    out: List[bytes] = []
    for message in _checked_iter(result, expected):
        encoded = body(message)
        out.append(b"\x0a")
        out.append(varint(len(encoded)))
        out.append(encoded)
    return b"".join(out)


def encode_datum_response_list(result: object) -> bytes:
    """Encode a map handler's Messages as a function.v1 DatumResponseList."""
    return encode_list(result, MESSAGES, response_body)


def encode_datum_response(message: object) -> bytes:
    """Encode one Message yielded by a map stream handler as a function.v1 DatumResponse."""
    check_yielded(message)
    return response_body(message)


def check_yielded(message: object) -> None:
    """Reject what a map stream handler yields that is plainly not a Message.

    Raises:
        ReturnTypeError: ``message`` is None, a str or bytes.

    """
    if isinstance(message, (str, bytes)) or message is None:
        raise ReturnTypeError(
            f"map stream handler yielded {type(message).__name__}; expected Message"
        )


def encode_datum_response_t_list(
    result: object, request_event_time: datetime, watermark: datetime
) -> bytes:
    """Encode a mapt handler's MessageTs as a DatumResponseList with event times.

    Each element carries the event time its MessageT assigned and the request's
    watermark. A bare ``datetime.time`` is resolved on the UTC date of the request's
    event time.
    """
    watermark_bytes = _encode_timestamp_wrapper(timestamp_parts(watermark))
    request_date = request_event_time.date()

    def body(message: Any) -> bytes:
        moment = message_event_time(message, request_date)
        event_time = _encode_timestamp_wrapper(timestamp_parts(moment))
        return response_body(message, event_time, watermark_bytes)

    return encode_list(result, MESSAGE_TS, body)


def message_event_time(message: Any, request_date: date) -> datetime:
    """The event time a mapt handler's MessageT assigned, as a datetime (naive means UTC).

    A bare ``datetime.time`` is that time of day on ``request_date``, the UTC date of
    the request's event time (keeping the time's tzinfo, if any).

    Raises:
        ReturnTypeError: ``message`` has no ``event_time``, or it is not a time.

    """
    try:
        moment = message.event_time
    except AttributeError:
        raise ReturnTypeError(
            f"expected MessageT objects, found {type(message).__name__}"
        ) from None
    if isinstance(moment, time) and not isinstance(moment, datetime):
        resolved = datetime.combine(request_date, moment.replace(tzinfo=None))
        return resolved if moment.tzinfo is None else resolved.replace(tzinfo=moment.tzinfo)
    if not isinstance(moment, datetime):
        raise ReturnTypeError(
            f"MessageT event_time must be a datetime, found {type(moment).__name__}"
        )
    return moment


# --- sink.v1 ----------------------------------------------------------------------------


def decode_sink_datum_request(data: bytes) -> SinkDatum:
    """Decode a sink.v1 DatumRequest (field 5 is the datum's id) into a sink Datum."""
    keys, value, event_time, watermark, msg_id = _decode_request(data, _decode_id, "")
    return SinkDatum(keys, msg_id, value, naive_utc(event_time), naive_utc(watermark))


def _decode_id(data: bytes, pos: int, end: int, previous: str) -> str:
    return data[pos:end].decode()


_RESPONSES = "Responses (an iterable of Response)"


def read_responses(result: object) -> List[Response]:
    """Check what a sink handler returned and list its responses.

    Objects with ``id`` (str), ``success`` (bool) and ``err`` (str or None) attributes
    count as responses, like :class:`~pynumaflow.sink.Response` itself; only a Response
    (or subclass) carries a v1 ``status``, ``value`` and ``keys``.

    Raises:
        ReturnTypeError: ``result`` is not an iterable of such objects.

    """
    responses: List[Response] = []
    for item in _checked_iter(result, _RESPONSES):
        try:
            msg_id, success, err = item.id, item.success, item.err
        except AttributeError:
            raise ReturnTypeError(
                f"expected Response objects, found {type(item).__name__}"
            ) from None
        if not isinstance(msg_id, str):
            raise ReturnTypeError(f"Response id must be str, found {type(msg_id).__name__}")
        if not isinstance(success, bool):
            raise ReturnTypeError(f"Response success must be bool, found {type(success).__name__}")
        if err is not None and not isinstance(err, str):
            raise ReturnTypeError(f"Response err must be str or None, found {type(err).__name__}")
        if not isinstance(item, Response):
            responses.append(Response(msg_id, success, err))
            continue
        if item.status is not None or item.value is not None or item.keys is not None:
            check_response_extras(item)
        if type(item) is not Response:
            item = Response(msg_id, success, err, item.status, item.value, item.keys)
        responses.append(item)
    return responses


LEGACY_FALLBACK_ERR = "the sink handler chose the fallback sink, which Numaflow 0.8-0.9 lacks"
"""The error the legacy protocol reports, with a failure, for ``Response.as_fallback``."""


def encode_response_list(responses: Iterable[Response]) -> bytes:
    """Encode checked responses (see :func:`read_responses`) as a sink.v1 ResponseList.

    Error texts that are not encodable as UTF-8 (lone surrogates, e.g. from file names)
    are sent with those characters backslash-escaped rather than failing the batch. The
    protocol knows only success and failure: ``success`` is sent, and a fallback without
    an error text gets :data:`LEGACY_FALLBACK_ERR`.
    """
    out: List[bytes] = []
    for response in responses:
        err = response.err
        if not err and response.status == "fallback":
            err = LEGACY_FALLBACK_ERR
        body: List[bytes] = []
        if response.id:
            raw = response.id.encode()
            body += (b"\x0a", varint(len(raw)), raw)
        if response.success:
            body.append(b"\x10\x01")
        if err:
            raw = encode_text(err)
            body += (b"\x1a", varint(len(raw)), raw)
        encoded = b"".join(body)
        out += (b"\x0a", varint(len(encoded)), encoded)
    return b"".join(out)
