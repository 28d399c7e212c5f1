"""function.v1.UserDefinedFunction: wire messages <-> handler calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.legacy import function as _codec
from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.function import Datum

__all__ = ["FunctionHandlers", "FunctionService"]

RawStream = grpclib.server.Stream[bytes, bytes]


@dataclass(frozen=True)
class FunctionHandlers:
    """The handlers one function server was given (any may be missing)."""

    map: Optional[Handler] = None
    mapt: Optional[Handler] = None
    map_stream: Optional[Handler] = None
    reduce: Optional[Handler] = None


def _require(handler: Optional[Handler], keyword: str) -> Handler:
    if handler is None:
        raise GRPCError(Status.UNIMPLEMENTED, f"this server was started without {keyword}")
    return handler


async def _recv_datum(stream: RawStream) -> Datum:
    data = await stream.recv_message()
    if data is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "expected one DatumRequest, got none")
    return decode_or_refuse(_codec.decode_datum_request, data, "DatumRequest")


class FunctionService:
    """Serves MapFn, MapTFn, MapStreamFn, ReduceFn and IsReady with the given handlers."""

    def __init__(self, handlers: FunctionHandlers, invoker: Invoker) -> None:
        self._handlers = handlers
        self._invoker = invoker

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "function.v1.UserDefinedFunction",
            {
                "MapFn": self._map_fn,
                "MapTFn": self._map_t_fn,
                "MapStreamFn": self._map_stream_fn,
                "ReduceFn": self._reduce_fn,
                "IsReady": is_ready_method(READY),
            },
        )

    async def _map_fn(self, stream: RawStream) -> None:
        handler = _require(self._handlers.map, "map_handler")
        datum = await _recv_datum(stream)
        with HandlerErrors(handler):
            result = await self._invoker.call(handler, datum.keys, datum)
            payload = _codec.encode_datum_response_list(result)
        await stream.send_message(payload)

    async def _map_t_fn(self, stream: RawStream) -> None:
        handler = _require(self._handlers.mapt, "mapt_handler")
        datum = await _recv_datum(stream)
        with HandlerErrors(handler):
            result = await self._invoker.call(handler, datum.keys, datum)
            payload = _codec.encode_datum_response_t_list(result, datum.event_time, datum.watermark)
        await stream.send_message(payload)

    async def _map_stream_fn(self, stream: RawStream) -> None:
        handler = _require(self._handlers.map_stream, "map_stream_handler")
        datum = await _recv_datum(stream)
        await self._invoker.relay(
            handler, (datum.keys, datum), _codec.encode_datum_response, stream.send_message
        )

    async def _reduce_fn(self, stream: RawStream) -> None:
        handler = _require(self._handlers.reduce, "reduce_handler")
        # Imported on first use: a server without a reduce handler never loads the engine.
        from pynumaflow._services.legacy.reduce import reduce_fn

        await reduce_fn(stream, handler, self._invoker)
