"""sourcetransformer.v1 (Numaflow >= 1.4): the mapt handler.

The conversation is map.v1's unary mode (see :mod:`pynumaflow._engines.bidi`): a
handshake, then one ``SourceTransformResponse{id: request.id, results}`` per request,
each result carrying the event time its ``MessageT`` assigned.
"""

from __future__ import annotations

import functools
from typing import Dict

import grpclib.const
import grpclib.server

from pynumaflow._codec.rpc import READY
from pynumaflow._codec.v1 import map as codec
from pynumaflow._engines.bidi import serve_requests, unary_answer
from pynumaflow._engines.dealt import Conversation
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping

__all__ = ["SourceTransformV1Service"]


class SourceTransformV1Service:
    """Serves SourceTransformFn and IsReady with one (mapt) handler."""

    def __init__(
        self, handler: Handler, invoker: Invoker, *, container_type: str, nack: bool = False
    ) -> None:
        encode = (
            codec.encode_transform_response_own
            if handler.own_metadata
            else codec.encode_transform_response
        )
        if nack:  # NACK results are sent (Numaflow >= 1.8.2), not refused
            encode = functools.partial(encode, nack=True)
        decode = (
            codec.decode_transform_request_own
            if handler.own_metadata
            else codec.decode_transform_request
        )
        self.conversation = Conversation(
            "/sourcetransformer.v1.SourceTransform/SourceTransformFn",
            decode,
            unary_answer(handler, invoker, container_type, encode),
            "SourceTransformRequest",
            codec.HANDSHAKE_RESPONSE,
        )
        """SourceTransformFn's bidi conversation (what a multi-process server deals)."""

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "sourcetransformer.v1.SourceTransform",
            {
                "SourceTransformFn": self._transform_fn,
                "IsReady": is_ready_method(READY),
            },
        )

    async def _transform_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        _, decode, answer, what, handshake_response = self.conversation
        await serve_requests(
            stream, decode, answer, what=what, handshake_response=handshake_response
        )
