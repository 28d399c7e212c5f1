"""The gRPC contract the servers need at start-up, without importing betterproto.

Method paths and cardinalities of every service we serve, the IsReady answer, the
google.rpc.Status error details, and the one answer to a malformed request
(:func:`decode_or_refuse`). The generated code in ``pynumaflow._proto`` describes
the same (tests/codec/test_rpc.py checks that they agree, byte for byte where they encode),
but importing it costs betterproto and every message class: most of a server's start-up.
"""

from __future__ import annotations

from typing import Callable, Dict, TypeVar

from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.wire import encode_text, signed_varint, varint
from pynumaflow._types.errors import CodecError

__all__ = ["DEBUG_INFO_TYPE_URL", "READY", "SERVICES", "decode_or_refuse", "encode_status"]

_M = TypeVar("_M")

_UNARY = Cardinality.UNARY_UNARY

SERVICES: Dict[str, Dict[str, Cardinality]] = {
    "function.v1.UserDefinedFunction": {
        "MapFn": _UNARY,
        "MapStreamFn": Cardinality.UNARY_STREAM,
        "MapTFn": _UNARY,
        "ReduceFn": Cardinality.STREAM_STREAM,
        "IsReady": _UNARY,
    },
    "map.v1.Map": {"MapFn": Cardinality.STREAM_STREAM, "IsReady": _UNARY},
    "reduce.v1.Reduce": {"ReduceFn": Cardinality.STREAM_STREAM, "IsReady": _UNARY},
    "sessionreduce.v1.SessionReduce": {
        "SessionReduceFn": Cardinality.STREAM_STREAM,
        "IsReady": _UNARY,
    },
    "accumulator.v1.Accumulator": {"AccumulateFn": Cardinality.STREAM_STREAM, "IsReady": _UNARY},
    "sink.v1.UserDefinedSink": {"SinkFn": Cardinality.STREAM_UNARY, "IsReady": _UNARY},
    "sink.v1.Sink": {"SinkFn": Cardinality.STREAM_STREAM, "IsReady": _UNARY},
    "source.v1.Source": {
        "ReadFn": Cardinality.STREAM_STREAM,
        "AckFn": Cardinality.STREAM_STREAM,
        "NackFn": _UNARY,
        "PendingFn": _UNARY,
        "PartitionsFn": _UNARY,
        "IsReady": _UNARY,
    },
    "sideinput.v1.SideInput": {"RetrieveSideInput": _UNARY, "IsReady": _UNARY},
    "sourcetransformer.v1.SourceTransform": {
        "SourceTransformFn": Cardinality.STREAM_STREAM,
        "IsReady": _UNARY,
    },
}
"""Full service name -> method name -> cardinality, as in protos/."""

READY = b"\x08\x01"
"""``ReadyResponse(ready=True)`` of every service above (field 1, bool)."""

DEBUG_INFO_TYPE_URL = "type.googleapis.com/google.rpc.DebugInfo"


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


def encode_status(code: int, message: str, detail: str) -> bytes:
    """google.rpc.Status{code, message, details: [Any(google.rpc.DebugInfo{detail})]}.

    Fields at their proto3 defaults are left out, as every encoder does. Texts that
    UTF-8 cannot encode (lone surrogates) go out backslash-escaped.
    """
    debug_info = _length_delimited(b"\x12", encode_text(detail)) if detail else b""
    packed = _length_delimited(b"\x0a", DEBUG_INFO_TYPE_URL.encode())
    if debug_info:
        packed += _length_delimited(b"\x12", debug_info)
    out = b"\x08" + signed_varint(code) if code else b""
    if message:
        out += _length_delimited(b"\x12", encode_text(message))
    return out + _length_delimited(b"\x1a", packed)


def decode_or_refuse(decode: Callable[[bytes], _M], data: bytes, what: str) -> _M:
    """``decode(data)``; malformed bytes fail the call ``INVALID_ARGUMENT`` naming ``what``.

    The platform does not retry ``INVALID_ARGUMENT``: a malformed message is not the
    handler's fault and would be malformed again.

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` "malformed <what>: <why>".

    """
    try:
        return decode(data)
    except CodecError as err:
        raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {what}: {err}") from None
