"""Wire codec of the sink.v1 ``Sink`` service (Numaflow >= 1.4): SinkRequest in, SinkResponse out.

Checked byte for byte against the betterproto classes in ``pynumaflow._proto.sink.v1``
(and, for decoding, against google.protobuf) by the tests. Decoding follows protobuf's
rules: unknown fields are skipped, and a sub-message that occurs more than once is the
merge of its occurrences.

A ``SinkResponse`` that carries results is the concatenation of the entries
:func:`encode_result` returns, so a service can group them into messages of any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Dict, List, NamedTuple, Optional, Tuple

from pynumaflow._codec_v1_common import decode_string_map_entry, result_metadata, user_metadata_of
from pynumaflow._errors import CodecError
from pynumaflow._wire import (
    TimestampParts,
    decode_timestamp,
    encode_text,
    naive_utc,
    read_varint,
    skip_field,
    varint,
)
from pynumaflow.function._types import NO_HEADERS
from pynumaflow.sink._types import Datum, Response

__all__ = [
    "EOT_RESPONSE",
    "HANDSHAKE_RESPONSE",
    "SinkRequest",
    "decode_sink_request",
    "encode_result",
]

HANDSHAKE_RESPONSE = b"\x12\x02\x08\x01"
"""``SinkResponse{handshake{sot: true}}``: the server's first message."""

EOT_RESPONSE = b"\x1a\x02\x08\x01"
"""``SinkResponse{status{eot: true}}``: ends the answer to a batch."""

# sink.v1 Status by Response.status; None means success or failure by Response.success.
_STATUS_NUMBER = {"fallback": 2, "serve": 3, "on_success": 4}


class SinkRequest(NamedTuple):
    """What one SinkRequest carries: a datum, the batch's end, a handshake."""

    datum: Optional[Datum]
    """The request, if the message has one."""
    eot: bool
    """Whether ``status.eot`` is set: the batch ends (after ``datum``, if any)."""
    handshake: Optional[bool]
    """``handshake.sot`` if the message has a handshake, else None."""


def decode_sink_request(data: bytes) -> SinkRequest:
    """Decode a sink.v1 SinkRequest.

    Raises:
        CodecError: the bytes are not a valid SinkRequest.

    """
    requests: List[Tuple[int, int]] = []
    eot = False
    handshake: Optional[bool] = None
    pos = 0
    size = len(data)
    while pos < size:
        tag, pos = _read_small(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if 1 <= field <= 3:
            if wire_type != 2:
                raise CodecError(f"SinkRequest field {field} has wire type {wire_type}, expected 2")
            length, pos = _read_small(data, pos)
            end = pos + length
            if end > size:
                raise CodecError(f"SinkRequest field {field} is truncated")
            if field == 1:
                requests.append((pos, end))
            elif field == 2:
                eot = _decode_flag(data, pos, end, eot, "TransmissionStatus")
            else:
                handshake = _decode_flag(data, pos, end, bool(handshake), "Handshake")
            pos = end
        else:
            pos = skip_field(data, pos, wire_type, field)
    if not requests:
        return SinkRequest(None, eot, handshake)
    if len(requests) == 1:
        start, end = requests[0]
        return SinkRequest(_decode_request(data, start, end), eot, handshake)
    # Occurrences of a sub-message merge: decoding their concatenation does just that.
    merged = b"".join(data[start:end] for start, end in requests)
    return SinkRequest(_decode_request(merged, 0, len(merged)), eot, handshake)


def _read_small(data: bytes, pos: int) -> Tuple[int, int]:
    """Read a varint, fast when it is one byte (tags and short lengths)."""
    if pos < len(data) and data[pos] < 0x80:
        return data[pos], pos + 1
    return read_varint(data, pos)


def _decode_flag(data: bytes, pos: int, end: int, value: bool, name: str) -> bool:
    """Decode a message whose field 1 is a bool (Handshake.sot, TransmissionStatus.eot)."""
    while pos < end:
        tag, pos = read_varint(data, pos)
        if tag == 0x08:
            raw, pos = read_varint(data, pos)
            value = raw != 0
        elif tag >> 3 == 1:
            raise CodecError(f"{name} field 1 has wire type {tag & 7}, expected 0")
        else:
            pos = skip_field(data, pos, tag & 7, tag >> 3)
    if pos != end:
        raise CodecError(f"{name} overruns its enclosing message")
    return value


_new_datum = object.__new__


def _decode_request(data: bytes, pos: int, size: int) -> Datum:
    """Decode SinkRequest.Request in data[pos:size] into a sink Datum (user metadata encoded)."""
    keys: List[str] = []
    value = b""
    event_time: TimestampParts = (0, 0)
    watermark: TimestampParts = (0, 0)
    msg_id = ""
    headers: Dict[str, str] = {}
    user_metadata: List[bytes] = []
    try:
        while pos < size:
            tag, pos = _read_small(data, pos)
            field, wire_type = tag >> 3, tag & 7
            if not 1 <= field <= 7:
                pos = skip_field(data, pos, wire_type, field)
                continue
            if wire_type != 2:
                raise CodecError(f"Request field {field} has wire type {wire_type}, expected 2")
            length, pos = _read_small(data, pos)
            end = pos + length
            if end > size:
                raise CodecError(f"Request field {field} is truncated")
            if field == 1:
                keys.append(data[pos:end].decode())
            elif field == 2:
                value = data[pos:end]
            elif field == 3:
                event_time = decode_timestamp(data, pos, end, event_time)
            elif field == 4:
                watermark = decode_timestamp(data, pos, end, watermark)
            elif field == 5:
                msg_id = data[pos:end].decode()
            elif field == 6:
                decode_string_map_entry(data, pos, end, headers)
            else:
                user_metadata.append(user_metadata_of(data, pos, end))
            pos = end
    except UnicodeDecodeError as err:
        raise CodecError(f"Request string is not valid UTF-8: {err}") from None
    if pos != size:  # an unknown field ran past the request's end
        raise CodecError("Request overruns its enclosing message")
    # Built without Datum.__init__'s argument checks: the codec's values are already right.
    datum = _new_datum(Datum)
    datum._keys = keys
    datum._id = msg_id
    datum._value = value
    datum._event_time = naive_utc(event_time)
    datum._watermark = naive_utc(watermark)
    datum._headers = MappingProxyType(headers) if headers else NO_HEADERS
    datum._user_metadata = b"".join(user_metadata)
    return datum


def encode_result(response: Response, user_metadata: bytes = b"") -> bytes:
    """Encode a checked response as one ``SinkResponse.results`` entry (tag and length included).

    ``user_metadata`` (an encoded common.Metadata, see :func:`user_metadata_of`) goes
    into an on-success replacement message, so that the datum's user metadata is not
    lost. An error text that is not encodable as UTF-8 is sent backslash-escaped.
    """
    out: List[bytes] = []
    if response.id:
        raw = response.id.encode()
        out += (b"\x0a", varint(len(raw)), raw)
    status = response.status
    number = _STATUS_NUMBER[status] if status is not None else 0 if response.success else 1
    if number:
        out += (b"\x10", varint(number))
    if response.err:
        raw = encode_text(response.err)
        out += (b"\x1a", varint(len(raw)), raw)
    value = response.value
    if value is not None and status == "serve":
        out += (b"\x22", varint(len(value)), value)
    elif value is not None and status == "on_success":
        message = _on_success_message(value, response.keys or (), user_metadata)
        out += (b"\x2a", varint(len(message)), message)
    body = b"".join(out)
    return b"\x0a" + varint(len(body)) + body


def _on_success_message(value: bytes, keys: Sequence[str], metadata: bytes) -> bytes:
    """Encode SinkResponse.Result.Message{1 value, 2 keys, 3 metadata}."""
    out: List[bytes] = []
    if value:
        out += (b"\x0a", varint(len(value)), value)
    for key in keys:
        raw = key.encode()
        out += (b"\x12", varint(len(raw)), raw)
    out.append(result_metadata(b"\x1a", metadata))
    return b"".join(out)
