"""The legacy sink.v1 ``UserDefinedSink`` codec (Numaflow 0.8-0.9): DatumRequest, ResponseList."""

from __future__ import annotations

from collections.abc import Iterable
from typing import List

from pynumaflow._codec.fields import (
    ID,
    RequestLayout,
    decode_request,
    new_sink_datum,
)
from pynumaflow._codec.wire import encode_text, varint
from pynumaflow._types.errors import CodecError
from pynumaflow._types.sink import Datum, Response

__all__ = ["LEGACY_FALLBACK_ERR", "decode_sink_datum_request", "encode_response_list"]

_LAYOUT = RequestLayout("DatumRequest", {5: ID}, wrapped_times=True)


def decode_sink_datum_request(data: bytes) -> Datum:
    """Decode a sink.v1 DatumRequest (field 5 is the datum's id) into a sink Datum.

    Raises:
        CodecError: the bytes are not a valid DatumRequest.

    """
    try:
        return new_sink_datum(decode_request(data, _LAYOUT))
    except UnicodeDecodeError as err:
        raise CodecError(f"DatumRequest string is not valid UTF-8: {err}") from None


LEGACY_FALLBACK_ERR = "the sink handler chose the fallback sink, which Numaflow 0.8-0.9 lacks"
"""The error the legacy protocol reports, with a failure, for ``Response.as_fallback``."""


def encode_response_list(responses: Iterable[Response]) -> bytes:
    """Encode checked responses (see ``read_responses``) as a sink.v1 ResponseList.

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
