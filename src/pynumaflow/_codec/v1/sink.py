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
from typing import List, NamedTuple, Optional, Tuple

from pynumaflow._codec.fields import (
    HEADER,
    ID,
    METADATA,
    USER_METADATA,
    RequestLayout,
    decode_flag,
    decode_request,
    new_sink_datum,
    read_length,
    result_metadata,
)
from pynumaflow._codec.results import encode_nack_options, own_metadata_field
from pynumaflow._codec.wire import encode_text, read_varint, skip_field, varint
from pynumaflow._types.errors import CodecError
from pynumaflow._types.modern import MetadataResponse
from pynumaflow._types.sink import Datum, NackResponse, Response

__all__ = [
    "EOT_RESPONSE",
    "HANDSHAKE_RESPONSE",
    "SinkRequest",
    "decode_sink_request",
    "decode_sink_request_own",
    "encode_result",
]

HANDSHAKE_RESPONSE = b"\x12\x02\x08\x01"
"""``SinkResponse{handshake{sot: true}}``: the server's first message."""

EOT_RESPONSE = b"\x1a\x02\x08\x01"
"""``SinkResponse{status{eot: true}}``: ends the answer to a batch."""

# sink.v1 Status by Response.status; None means success or failure by Response.success.
_STATUS_NUMBER = {"fallback": 2, "serve": 3, "on_success": 4}
_REQUEST = RequestLayout("Request", {5: ID, 6: HEADER, 7: USER_METADATA})
_REQUEST_OWN = RequestLayout("Request", {5: ID, 6: HEADER, 7: METADATA})  # the modern API's


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
    return _decode_sink_request(data, _REQUEST)


def decode_sink_request_own(data: bytes) -> SinkRequest:
    """:func:`decode_sink_request` keeping the request's Metadata whole (the modern API)."""
    return _decode_sink_request(data, _REQUEST_OWN)


def _decode_sink_request(data: bytes, layout: RequestLayout) -> SinkRequest:
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
            pos, end = read_length(data, pos, size, "SinkRequest", field)
            if field == 1:
                requests.append((pos, end))
            elif field == 2:
                eot = decode_flag(data, pos, end, eot, "TransmissionStatus")
            else:
                handshake = decode_flag(data, pos, end, bool(handshake), "Handshake")
            pos = end
        else:
            pos = skip_field(data, pos, wire_type, field)
    if not requests:
        return SinkRequest(None, eot, handshake)
    if len(requests) == 1:
        start, end = requests[0]
        return SinkRequest(_decode_request(data, start, end, layout), eot, handshake)
    # Occurrences of a sub-message merge: decoding their concatenation does just that.
    merged = b"".join(data[start:end] for start, end in requests)
    return SinkRequest(_decode_request(merged, 0, len(merged), layout), eot, handshake)


def _read_small(data: bytes, pos: int) -> Tuple[int, int]:
    """Read a varint, fast when it is one byte (tags and short lengths)."""
    if pos < len(data) and data[pos] < 0x80:
        return data[pos], pos + 1
    return read_varint(data, pos)


def _decode_request(data: bytes, pos: int, size: int, layout: RequestLayout) -> Datum:
    """Decode SinkRequest.Request in data[pos:size] into a sink Datum (user metadata encoded)."""
    try:
        return new_sink_datum(decode_request(data, layout, pos, size))
    except UnicodeDecodeError as err:
        raise CodecError(f"Request string is not valid UTF-8: {err}") from None


def encode_result(response: Response, user_metadata: bytes = b"", nack: bool = False) -> bytes:
    """Encode a checked response as one ``SinkResponse.results`` entry (tag and length included).

    ``user_metadata`` (an encoded common.Metadata, see :func:`user_metadata_of`) goes
    into an on-success replacement message, so that the datum's user metadata is not
    lost. An error text that is not encodable as UTF-8 is sent backslash-escaped. A NACK
    (:meth:`Response.as_nack`) is sent as status NACK with its options when ``nack``
    (Numaflow >= 1.8.2), else as a failure with its reason.
    """
    out: List[bytes] = []
    if response.id:
        raw = response.id.encode()
        out += (b"\x0a", varint(len(raw)), raw)
    status = response.status
    if status == "nack" and nack and isinstance(response, NackResponse):
        options = encode_nack_options(response.nack_options)
        out += (b"\x10\x05\x32", varint(len(options)), options)
        body = b"".join(out)
        return b"\x0a" + varint(len(body)) + body
    number = _STATUS_NUMBER.get(status, 1) if status is not None else 0 if response.success else 1
    if number:
        out += (b"\x10", varint(number))
    if response.err:
        raw = encode_text(response.err)
        out += (b"\x1a", varint(len(raw)), raw)
    value = response.value
    if value is not None and status == "serve":
        out += (b"\x22", varint(len(value)), value)
    elif value is not None and status == "on_success":
        message = _on_success_message(value, response.keys or (), user_metadata, response)
        out += (b"\x2a", varint(len(message)), message)
    body = b"".join(out)
    return b"\x0a" + varint(len(body)) + body


def _on_success_message(
    value: bytes, keys: Sequence[str], metadata: bytes, response: Response
) -> bytes:
    """Encode SinkResponse.Result.Message{1 value, 2 keys, 3 metadata}.

    The metadata is the datum's, or (the modern API) the response's own.
    """
    out: List[bytes] = []
    if value:
        out += (b"\x0a", varint(len(value)), value)
    for key in keys:
        raw = key.encode()
        out += (b"\x12", varint(len(raw)), raw)
    if isinstance(response, MetadataResponse):
        out.append(own_metadata_field(b"\x1a", response))
    else:
        out.append(result_metadata(b"\x1a", metadata))
    return b"".join(out)
