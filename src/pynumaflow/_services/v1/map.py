"""map.v1 (Numaflow >= 1.4): the map handler (unary mode) or map stream handler (stream mode).

The conversation is the bidi engine's (:mod:`pynumaflow._engines.bidi`); this service
says how one request is answered.
"""

from __future__ import annotations

import functools
from typing import Dict

import grpclib.const
import grpclib.server

from pynumaflow._codec.rpc import READY
from pynumaflow._codec.v1 import map as codec
from pynumaflow._engines.bidi import Answer, serve_requests, stream_answer, unary_answer
from pynumaflow._engines.dealt import Conversation
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping

__all__ = ["MapV1Service"]

RawStream = grpclib.server.Stream[bytes, bytes]


class MapV1Service:
    """Serves map.v1 MapFn and IsReady with one handler.

    Unary mode (``map_handler``, map.sock): exactly one ``MapResponse{id, results}``
    per request. Stream mode (``map_stream_handler``, mapstream.sock): one
    ``MapResponse{id, results: [r]}`` per message as soon as it is yielded, then
    ``MapResponse{id, status{eot}}``.
    """

    def __init__(
        self,
        handler: Handler,
        invoker: Invoker,
        *,
        stream: bool,
        container_type: str,
        nack: bool = False,
    ) -> None:
        own = handler.own_metadata
        encode_message = (
            codec.encode_map_stream_response_own if own else codec.encode_map_stream_response
        )
        encode = codec.encode_map_response_own if own else codec.encode_map_response
        if nack:  # NACK results are sent (Numaflow >= 1.8.2), not refused
            encode_message = functools.partial(encode_message, nack=True)
            encode = functools.partial(encode, nack=True)
        self._decode = codec.decode_map_request_own if own else codec.decode_map_request
        self._answer: Answer = (
            stream_answer(handler, invoker, container_type, encode_message, codec.encode_map_eot)
            if stream
            else unary_answer(handler, invoker, container_type, encode)
        )
        self.conversation = Conversation(
            "/map.v1.Map/MapFn", self._decode, self._answer, "MapRequest", codec.HANDSHAKE_RESPONSE
        )
        """MapFn's bidi conversation (what a multi-process server deals to its workers)."""

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "map.v1.Map",
            {"MapFn": self._map_fn, "IsReady": is_ready_method(READY)},
        )

    async def _map_fn(self, stream: RawStream) -> None:
        _, decode, answer, what, handshake_response = self.conversation
        await serve_requests(
            stream, decode, answer, what=what, handshake_response=handshake_response
        )
