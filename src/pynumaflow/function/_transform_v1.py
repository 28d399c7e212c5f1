"""sourcetransformer.v1 (Numaflow >= 1.4): the mapt handler."""

from __future__ import annotations

from typing import Dict

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._invoke import Handler, Invoker
from pynumaflow._proto.sourcetransformer.v1 import ReadyResponse, SourceTransformBase
from pynumaflow._server import is_ready_method, service_mapping

__all__ = ["SourceTransformV1Service"]


class SourceTransformV1Service:
    """Serves SourceTransformFn and IsReady with one handler (stub: not implemented yet)."""

    def __init__(self, handler: Handler, invoker: Invoker, *, container_type: str) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            SourceTransformBase,
            {
                "SourceTransformFn": self._transform_fn,
                "IsReady": is_ready_method(bytes(ReadyResponse(ready=True))),
            },
            raw=("SourceTransformFn", "IsReady"),
        )

    async def _transform_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "sourcetransformer.v1 is not implemented yet")
