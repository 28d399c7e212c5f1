"""The function.v1 codec (Numaflow 0.8-0.9): DatumRequest in, DatumResponse(List) out.

betterproto message objects cost several times the transport itself per call, so the
hot RPCs decode requests and encode responses here, straight to and from the public
datatypes. Every function is checked byte for byte against the betterproto classes in
``pynumaflow._proto`` by the property tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynumaflow._codec.fields import (
    DELIVERY,
    RequestLayout,
    decode_request,
    new_datum,
)
from pynumaflow._codec.results import (
    MESSAGE_TS,
    MESSAGES,
    NACK_NOT_ON_LEGACY,
    check_yielded,
    encode_list,
    message_event_time,
    refuse_nack,
    response_body,
)
from pynumaflow._codec.wire import TimestampParts, encode_timestamp, timestamp_parts, varint
from pynumaflow._types.errors import CodecError
from pynumaflow._types.function import Datum, DatumMetadata

__all__ = [
    "decode_datum_request",
    "encode_datum_response",
    "encode_datum_response_list",
    "encode_datum_response_t_list",
]

_LAYOUT = RequestLayout("DatumRequest", {5: DELIVERY}, wrapped_times=True)


def decode_datum_request(data: bytes) -> Datum:
    """Decode a function.v1 DatumRequest into a Datum (unknown fields are skipped).

    Raises:
        CodecError: the bytes are not a valid DatumRequest.

    """
    try:
        fields = decode_request(data, _LAYOUT)
    except UnicodeDecodeError as err:
        raise CodecError(f"DatumRequest string is not valid UTF-8: {err}") from None
    return new_datum(fields, DatumMetadata(fields[4], fields[5]))


def _encode_timestamp_wrapper(parts: TimestampParts) -> bytes:
    """Encode EventTime/Watermark {Timestamp field 1}; the epoch is an empty wrapper."""
    if not parts[0] and not parts[1]:
        return b""
    ts = encode_timestamp(parts)
    return b"\x0a" + varint(len(ts)) + ts


def encode_datum_response_list(result: object) -> bytes:
    """Encode a map handler's Messages as a function.v1 DatumResponseList."""
    return encode_list(result, MESSAGES, _body)


def encode_datum_response(message: object) -> bytes:
    """Encode one Message yielded by a map stream handler as a function.v1 DatumResponse."""
    check_yielded(message)
    return _body(message)


def _body(message: object) -> bytes:
    refuse_nack(message, NACK_NOT_ON_LEGACY)  # function.v1 has no NACK: a failure instead
    return response_body(message)


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
        refuse_nack(message, NACK_NOT_ON_LEGACY)
        moment = message_event_time(message, request_date)
        event_time = _encode_timestamp_wrapper(timestamp_parts(moment))
        return response_body(message, event_time, watermark_bytes)

    return encode_list(result, MESSAGE_TS, body)
