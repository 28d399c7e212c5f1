"""map.v1 (Numaflow >= 1.4): the map handler (unary mode) or map stream handler (stream mode)."""

from __future__ import annotations

from typing import Dict

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._invoke import Handler, Invoker
from pynumaflow._proto.map.v1 import MapBase, ReadyResponse
from pynumaflow._server import is_ready_method, service_mapping

__all__ = ["MapV1Service"]


class MapV1Service:
    """Serves map.v1 MapFn and IsReady with one handler (stub: not implemented yet)."""

    def __init__(
        self, handler: Handler, invoker: Invoker, *, stream: bool, container_type: str
    ) -> None:
        self._handler = handler
        self._invoker = invoker
        self._stream = stream
        self._container_type = container_type

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            MapBase,
            {"MapFn": self._map_fn, "IsReady": is_ready_method(bytes(ReadyResponse(ready=True)))},
            raw=("MapFn", "IsReady"),
        )

    async def _map_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "map.v1 is not implemented yet")
