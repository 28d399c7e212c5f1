"""What the legacy and the v1 clients share: call errors, times, the grpclib codecs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import grpclib.client
from grpclib.client import Stream
from grpclib.const import Status
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from pynumaflow._proto.google import rpc as rpc_pb

__all__ = [
    "EPOCH",
    "CallError",
    "aware",
    "call_errors",
    "channel",
    "ended_with",
    "epoch_millis",
    "error_of",
]

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEBUG_INFO = "type.googleapis.com/google.rpc.DebugInfo"


class CallError(Exception):
    """A call to the server did not succeed.

    Attributes:
        status: the gRPC status name, e.g. ``"UNKNOWN"`` when a legacy handler raised,
            ``"INTERNAL"`` when a v1 handler did, ``"DEADLINE_EXCEEDED"`` when it did
            not answer in time, ``"UNAVAILABLE"`` when the connection failed or was lost.
        details: the text the server sent with the status (the handler's error text).
        traceback: the handler's traceback, when the server sent one (v1 servers send
            it as ``google.rpc.DebugInfo`` in the ``grpc-status-details-bin`` trailer).

    """

    def __init__(self, status: str, details: str, traceback: Optional[str] = None) -> None:
        super().__init__(f"{status}: {details}" if details else status)
        self.status = status
        self.details = details
        self.traceback = traceback


class _Codec(CodecBase):
    """betterproto messages, or raw bytes for the probes."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if message_type is bytes else bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data if message_type is bytes else message_type().parse(data)


class _DebugInfoCodec(StatusDetailsCodecBase):
    """Reads ``grpc-status-details-bin``: the tracebacks of its ``DebugInfo`` details."""

    def encode(self, status: Status, message: Optional[str], details: Any) -> bytes:
        raise NotImplementedError("a client sends no status")

    def decode(self, status: Status, message: Optional[str], data: bytes) -> Any:
        try:
            parsed = rpc_pb.Status().parse(data)
            return [
                rpc_pb.DebugInfo().parse(any_.value).detail
                for any_ in parsed.details
                if any_.type_url == _DEBUG_INFO
            ]
        except Exception:  # a malformed trailer must not hide the status itself
            return None


def channel(sock_path: str) -> grpclib.client.Channel:
    """A channel to a Unix socket that reads betterproto messages and DebugInfo trailers."""
    return grpclib.client.Channel(
        path=sock_path, codec=_Codec(), status_details_codec=_DebugInfoCodec()
    )


def epoch_millis(moment: datetime) -> int:
    """Milliseconds since the epoch of a datetime (naive means UTC)."""
    return (aware(moment) - EPOCH) // timedelta(milliseconds=1)


def aware(moment: datetime) -> datetime:
    """The datetime with UTC as its zone if it has none (the platform's times are UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def error_of(err: GRPCError) -> CallError:
    """The CallError for a status the server ended a call with."""
    details = err.details if isinstance(err.details, list) else []
    traceback = "\n".join(d for d in details if d) or None
    return CallError(err.status.name, err.message or "", traceback)


@contextlib.contextmanager
def call_errors() -> Iterator[None]:
    """Turn what grpclib raises into :class:`CallError`."""
    try:
        yield
    except GRPCError as err:
        raise error_of(err) from None
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise CallError("DEADLINE_EXCEEDED", "no answer before the deadline") from None
    except (OSError, StreamTerminatedError, ProtocolError) as err:
        raise CallError("UNAVAILABLE", f"connection failed: {err or type(err).__name__}") from None


def ended_with(stream: Stream[Any, Any]) -> Optional[CallError]:
    """The error status a bidi stream ended with, read from trailers already received.

    A server that fails a stream the client has not half-closed sends its trailers
    and then resets the stream, and grpclib then raises the reset, not the status:
    the trailers it kept tell what the server said.
    """
    trailers = getattr(stream._stream, "trailers", None)
    if trailers is None:
        return None
    try:
        status, message, details = stream._process_grpc_status(dict(trailers))
    except GRPCError as err:
        return error_of(err)
    if status is Status.OK:
        return None
    return error_of(GRPCError(status, message, details))
