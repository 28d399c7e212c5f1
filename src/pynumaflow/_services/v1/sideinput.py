"""sideinput.v1 (Numaflow >= 1.4): the side-input retriever.

The platform's side-input manager calls ``RetrieveSideInput`` once at start and then on
its cron schedule. A retriever that raises fails that call ``INTERNAL`` (logged once);
the manager stores nothing and asks again at the next tick, and the server keeps serving.
"""

from __future__ import annotations

from typing import Dict

import grpclib.const
import grpclib.server

from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._codec.v1.sideinput import encode_side_input_response
from pynumaflow._codec.wire import check_message
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping

__all__ = ["SideInputV1Service"]


class SideInputV1Service:
    """Serves RetrieveSideInput and IsReady with one retriever."""

    def __init__(self, handler: Handler, invoker: Invoker, *, container_type: str) -> None:
        self._handler = handler
        self._invoker = invoker
        self._errors = HandlerErrors(handler, v1_container=container_type)

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "sideinput.v1.SideInput",
            {"RetrieveSideInput": self._retrieve, "IsReady": is_ready_method(READY)},
        )

    async def _retrieve(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        data = await stream.recv_message()
        decode_or_refuse(check_message, data or b"", "Empty")
        with self._errors:
            result = await self._invoker.call(self._handler)
            payload = encode_side_input_response(result)
        await stream.send_message(payload)
