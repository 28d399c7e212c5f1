"""The platform's side of the wire: a grpclib client that calls a UDF or sink server.

Used by the ``pynumaflow`` command and by :mod:`pynumaflow.testing`. Requests are built
from the public datatypes (function and sink ``Datum``) and answers come back as the
public datatypes (``Messages``, ``MessageTs``, ``Responses``), through the betterproto
stubs generated from ``protos/``, so nothing here needs grpcio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any, Literal, Optional, Type, Union

import betterproto
from betterproto.lib.google.protobuf import Empty
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from pynumaflow._client.base import EPOCH, CallError, aware, call_errors, channel, epoch_millis
from pynumaflow._proto.function import v1 as fn_pb
from pynumaflow._proto.sink import v1 as sink_pb
from pynumaflow._types.function import (
    Datum,
    IntervalWindow,
    Message,
    Messages,
    MessageT,
    MessageTs,
)
from pynumaflow._types.sink import Datum as SinkDatum
from pynumaflow._types.sink import Response, Responses

__all__ = [
    "FUNCTION_METHODS",
    "WINDOW_END_HEADER",
    "WINDOW_START_HEADER",
    "CallError",
    "Connection",
    "epoch_millis",
]


WINDOW_START_HEADER = "x-numaflow-win-start-time"
WINDOW_END_HEADER = "x-numaflow-win-end-time"

FUNCTION_SERVICE = "/function.v1.UserDefinedFunction/"
SINK_SERVICE = "/sink.v1.UserDefinedSink/"

FunctionMethod = Literal["MapFn", "MapTFn", "MapStreamFn", "ReduceFn"]
FUNCTION_METHODS: dict[FunctionMethod, Cardinality] = {
    "MapFn": Cardinality.UNARY_UNARY,
    "MapTFn": Cardinality.UNARY_UNARY,
    "MapStreamFn": Cardinality.UNARY_STREAM,
    "ReduceFn": Cardinality.STREAM_STREAM,
}

# Field 1 with wire type 7, which does not exist: no server can decode it as a request.
_MALFORMED = b"\x0f"


def _time_or_none(wrapper: Any, name: str) -> Optional[datetime]:
    if wrapper is None or not betterproto.serialized_on_wire(wrapper):
        return None
    moment: datetime = getattr(wrapper, name)
    return moment


def _datum_request(datum: Datum) -> fn_pb.DatumRequest:
    return fn_pb.DatumRequest(
        keys=list(datum.keys),
        value=datum.value,
        event_time=fn_pb.EventTime(event_time=aware(datum.event_time)),
        watermark=fn_pb.Watermark(watermark=aware(datum.watermark)),
        metadata=fn_pb.Metadata(id=datum.metadata.id, num_delivered=datum.metadata.num_delivered),
    )


def _sink_request(datum: SinkDatum) -> sink_pb.DatumRequest:
    return sink_pb.DatumRequest(
        keys=list(datum.keys),
        value=datum.value,
        event_time=sink_pb.EventTime(event_time=aware(datum.event_time)),
        watermark=sink_pb.Watermark(watermark=aware(datum.watermark)),
        id=datum.id,
    )


def _message(element: fn_pb.DatumResponse) -> Message:
    return Message(element.value, list(element.keys), list(element.tags))


def _message_t(element: fn_pb.DatumResponse) -> MessageT:
    event_time = _time_or_none(element.event_time, "event_time") or EPOCH
    return MessageT(element.value, event_time, list(element.keys), list(element.tags))


class Connection:
    """One HTTP/2 connection to a server's Unix socket; calls raise :class:`CallError`.

    Args:
        sock_path: the server's socket.
        timeout: seconds each call may take (``None``: no limit).

    """

    def __init__(self, sock_path: str, timeout: Optional[float] = None) -> None:
        self._channel = channel(sock_path)
        self._timeout = timeout
        self._fn = fn_pb.UserDefinedFunctionStub(self._channel, timeout=timeout)
        self._sink = sink_pb.UserDefinedSinkStub(self._channel, timeout=timeout)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def is_ready(self, service: Literal["function", "sink"]) -> bool:
        """Ask the service's IsReady; ``False`` when it is not served or not reachable."""
        stub: Union[fn_pb.UserDefinedFunctionStub, sink_pb.UserDefinedSinkStub]
        stub = self._fn if service == "function" else self._sink
        try:
            with call_errors():
                reply = await stub.is_ready(Empty())
        except CallError:
            return False
        return bool(reply.ready)

    async def serves(self, method: FunctionMethod) -> bool:
        """Whether the function server has a handler for ``method``, running no user code.

        The request body is malformed on purpose: a server without the handler answers
        UNIMPLEMENTED before it reads the body; one with it rejects the body (or, for
        ReduceFn, the missing window headers) with INVALID_ARGUMENT.
        """
        stream_type: Type[bytes] = bytes
        with call_errors():
            try:
                async with self._channel.request(
                    FUNCTION_SERVICE + method,
                    FUNCTION_METHODS[method],
                    stream_type,
                    stream_type,
                    timeout=self._timeout,
                ) as stream:
                    await stream.send_message(_MALFORMED, end=True)
                    await stream.recv_message()
            except GRPCError as err:
                if err.status is Status.UNIMPLEMENTED:
                    return False
                if err.status is Status.INVALID_ARGUMENT:
                    return True
                raise
        raise CallError("UNKNOWN", f"{method} accepted a malformed request")

    async def map(self, datum: Datum) -> Messages:
        """Call MapFn with one datum."""
        with call_errors():
            reply = await self._fn.map_fn(_datum_request(datum))
        return Messages(*map(_message, reply.elements))

    async def mapt(self, datum: Datum) -> MessageTs:
        """Call MapTFn with one datum; each answer carries the event time it was given."""
        with call_errors():
            reply = await self._fn.map_t_fn(_datum_request(datum))
        return MessageTs(*map(_message_t, reply.elements))

    async def map_stream(self, datum: Datum) -> AsyncIterator[Message]:
        """Call MapStreamFn with one datum; yield each message as it arrives."""
        with call_errors():
            async for element in self._fn.map_stream_fn(_datum_request(datum)):
                yield _message(element)

    async def reduce(self, datums: Iterable[Datum], window: IntervalWindow) -> list[Messages]:
        """Send one window's datums on one ReduceFn stream; one Messages per key group."""
        headers = {
            WINDOW_START_HEADER: str(epoch_millis(window.start)),
            WINDOW_END_HEADER: str(epoch_millis(window.end)),
        }
        answers = []
        with call_errors():
            async for reply in self._fn.reduce_fn(
                [_datum_request(d) for d in datums], metadata=headers
            ):
                answers.append(Messages(*map(_message, reply.elements)))
        return answers

    async def sink(self, datums: Iterable[SinkDatum]) -> Responses:
        """Send one batch on one SinkFn stream; one Response per datum."""
        with call_errors():
            reply = await self._sink.sink_fn([_sink_request(d) for d in datums])
        return Responses(*(Response(r.id, r.success, r.err_msg or None) for r in reply.responses))
