"""What every service shares: its grpclib mapping and the IsReady RPC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Dict

import grpclib.const
import grpclib.server

from pynumaflow._codec.rpc import SERVICES, decode_or_refuse
from pynumaflow._codec.wire import check_message
from pynumaflow._core.current import pool_stalled
from pynumaflow._core.endpoint import RpcMethod

__all__ = ["NOT_READY", "is_ready_method", "service_mapping"]

NOT_READY = b""
"""``ReadyResponse(ready=False)``: every field at its default."""


def service_mapping(
    service: str, methods: Mapping[str, RpcMethod]
) -> Dict[str, grpclib.const.Handler]:
    """Build a grpclib mapping for ``service`` (a full name in ``pynumaflow._codec.rpc.SERVICES``).

    ``methods`` implements every RPC of the service by name; each exchanges bytes,
    decoded and encoded by the hand-written codecs (``pynumaflow._codec``).
    """
    cardinalities = SERVICES[service]
    unknown = set(methods) - set(cardinalities)
    if unknown:
        raise ValueError(f"methods not in the proto service: {sorted(unknown)}")
    # A KeyError here means an RPC of the proto is not implemented.
    return {
        f"/{service}/{name}": grpclib.const.Handler(methods[name], cardinality, bytes, bytes)
        for name, cardinality in cardinalities.items()
    }


def is_ready_method(ready_response: bytes) -> RpcMethod:
    """The IsReady RPC of every service: check the Empty request, answer ``ready_response``.

    It runs on the event loop, never in the handler pool, so it answers while every
    pool thread is busy, and times out while an async handler blocks the loop. While the
    server's handler pool is stalled (:meth:`ServerCore.stalled`) it answers not ready.
    """

    async def is_ready(stream: grpclib.server.Stream[bytes, bytes]) -> None:
        data = await stream.recv_message()
        decode_or_refuse(check_message, data or b"", "Empty")
        await stream.send_message(NOT_READY if pool_stalled() else ready_response)

    return is_ready
