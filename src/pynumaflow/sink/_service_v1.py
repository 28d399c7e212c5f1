"""sink.v1 Sink (Numaflow >= 1.4): the sink handler, batches ended by EOT."""

from __future__ import annotations

from typing import Dict

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._invoke import Handler, Invoker
from pynumaflow._proto.sink.v1 import ReadyResponse, SinkBase
from pynumaflow._server import is_ready_method, service_mapping

__all__ = ["SinkV1Service"]


class SinkV1Service:
    """Serves SinkFn and IsReady with one handler (stub: not implemented yet)."""

    def __init__(self, handler: Handler, invoker: Invoker, *, container_type: str) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            SinkBase,
            {"SinkFn": self._sink_fn, "IsReady": is_ready_method(bytes(ReadyResponse(ready=True)))},
            raw=("SinkFn", "IsReady"),
        )

    async def _sink_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "sink.v1 Sink is not implemented yet")
