"""map.v1 in batch mode (``batch-map``, Numaflow >= 1.4): the batch map handler, batch by batch.

The messages are map.v1's; the conversation is the sink's (handshake, then batches of
requests each ended by an EOT): :func:`pynumaflow._engines.batch.serve_batches`, each
batch fed to the handler by :func:`pynumaflow._engines.batch.feed_batch`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Callable, Dict, List, Optional

import grpclib.const
import grpclib.server

from pynumaflow._codec import results
from pynumaflow._codec.rpc import READY
from pynumaflow._codec.v1 import map as codec
from pynumaflow._engines.batch import BatchReader, feed_batch, serve_batches
from pynumaflow._engines.feed import Feed
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.function import Datum

__all__ = ["BatchMapV1Service"]


RawStream = grpclib.server.Stream[bytes, bytes]


class BatchMapV1Service:
    """Serves map.v1 MapFn (batch mode) and IsReady with one batch map handler.

    MapFn is one long-lived stream: the handshake, answered first, then batches of
    requests, each ended by the platform's EOT. The handler starts at a batch's first
    request and reads the others as they arrive; once it has returned, each id of the
    batch gets exactly one ``MapResponse{id, results}`` (in the handler's order) and the
    batch's ``MapResponse{status{eot}}`` follows the last of them at once (a late EOT is
    fatal on Numaflow 1.8.0-1.8.3). A handler that raises, returns something else than
    BatchResponses, or does not answer every id of the batch exactly once fails the
    stream ``INTERNAL "UDF_EXECUTION_ERROR(<role>): ..."`` before any response of the
    batch is sent, logged once. When the server drains, the stream ends UNAVAILABLE
    between batches: at once if it is idle, else after the batch in progress.
    """

    def __init__(
        self, handler: Handler, invoker: Invoker, *, container_type: str, nack: bool = False
    ) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type
        self._errors = HandlerErrors(handler, v1_container=container_type)
        self._encode = (
            codec.encode_map_response_own if handler.own_metadata else codec.encode_map_response
        )
        self._nack = nack
        own = handler.own_metadata  # the modern API's: system metadata kept too
        self._decode = codec.decode_map_request_own if own else codec.decode_map_request

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "map.v1.Map",
            {"MapFn": self._map_fn, "IsReady": is_ready_method(READY)},
        )

    async def _map_fn(self, stream: RawStream) -> None:
        await serve_batches(
            stream,
            BatchReader(stream, self._decode, "MapRequest", "MapFn"),
            self._answer,
            handshake_response=codec.HANDSHAKE_RESPONSE,
            eot_response=codec.BATCH_EOT,
            label=f"map.v1 Map, batch mode ({self._container_type})",
        )

    async def _answer(
        self, next_datum: Callable[[], Awaitable[Optional[Datum]]], first: Datum
    ) -> List[bytes]:
        """Run the handler over the batch starting at ``first``; its encoded responses."""
        received: Dict[str, Datum] = {}

        def note(datum: Datum) -> None:
            received[datum.metadata.id] = datum

        result = await feed_batch(self._call, self._handler, next_datum, first, received=note)
        # Checked once the whole batch is read (the handler may return early), and
        # encoded whole before any of it is sent.
        with self._errors:
            answers = results.read_batch_answers(result, received)
            encode, nack = self._encode, self._nack
            return [encode(messages, received[msg_id], nack) for msg_id, messages in answers]

    async def _call(self, feed: Feed[Datum]) -> object:
        try:
            with self._errors:
                return await self._invoker.call(self._handler, feed.iterator)
        finally:
            feed.abort()  # the handler stopped reading: drop what still arrives
