"""sink.v1 Sink (Numaflow >= 1.4): the sink handler over batches ended by EOT, on one stream."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Dict, List

import grpclib.const
import grpclib.server

from pynumaflow._codec.rpc import READY
from pynumaflow._codec.v1 import sink as codec
from pynumaflow._core.options import DEFAULT_MAX_MESSAGE_SIZE
from pynumaflow._engines.batch import Batch, BatchEngine, BatchReader, NextDatum, serve_batches
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.sink import Datum, Response

__all__ = ["SinkV1Service"]

_LOGGER = logging.getLogger("pynumaflow")

RawStream = grpclib.server.Stream[bytes, bytes]

# Results are sent in SinkResponses of at most this many bytes (or max_message_size, if
# smaller), well under the platform's 64 MiB limit: a batch of large serve or on-success
# payloads never makes one message too big to send.
_CHUNK_BYTES = 4 * 1024 * 1024


class SinkV1Service:
    """Serves sink.v1 Sink: SinkFn and IsReady with one sink handler.

    SinkFn is one long-lived stream. The platform's first message is the handshake,
    answered first; then come batches, each N requests and an EOT. The handler gets each
    batch as it arrives, and every datum is answered by the rules of
    :mod:`pynumaflow._engines.batch` (one result per id, in the order received; a handler
    that raises fails the batch's datums, not the stream), in one or more SinkResponses,
    followed by an EOT. A bare EOT is answered with a bare EOT; a stream that ends in
    the middle of a batch has that batch answered. Only a malformed or out-of-order
    request fails the stream (INVALID_ARGUMENT). When the server drains, the stream
    ends UNAVAILABLE between batches: at once if it is idle, else after the batch in
    progress is answered up to its EOT.
    """

    def __init__(
        self,
        handler: Handler,
        invoker: Invoker,
        *,
        container_type: str,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        nack: bool = False,
    ) -> None:
        self._engine = BatchEngine(handler, invoker)
        self._nack = nack
        self._decode = (
            codec.decode_sink_request_own if handler.own_metadata else codec.decode_sink_request
        )
        self._container_type = container_type
        self._max_message_size = max_message_size

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "sink.v1.Sink",
            {"SinkFn": self._sink_fn, "IsReady": is_ready_method(READY)},
        )

    async def _sink_fn(self, stream: RawStream) -> None:
        await serve_batches(
            stream,
            BatchReader(stream, self._decode, "SinkRequest", "SinkFn"),
            self._answer,
            handshake_response=codec.HANDSHAKE_RESPONSE,
            eot_response=codec.EOT_RESPONSE,
            label=f"sink.v1 Sink ({self._container_type})",
        )

    async def _answer(self, next_datum: NextDatum, first: Datum) -> Iterator[bytes]:
        batch = await self._engine.run(next_datum, first)
        return _messages(self._results(batch), self._max_message_size)

    def _results(self, batch: Batch) -> Iterator[bytes]:
        """Encode a batch's results; one too big to send becomes a failure saying so."""
        for response in batch.responses:
            entry = codec.encode_result(response, batch.user_metadata[response.id], self._nack)
            if len(entry) > self._max_message_size:
                error = (
                    f"the sink handler's response for this datum is {len(entry)} bytes, "
                    f"more than max_message_size ({self._max_message_size})"
                )
                _LOGGER.warning(
                    "sink.v1 Sink (%s): %r: %s", self._container_type, response.id, error
                )
                entry = codec.encode_result(Response.as_failure(response.id, error))
            yield entry


def _messages(entries: Iterable[bytes], max_message_size: int) -> Iterator[bytes]:
    """Group encoded results into SinkResponses of at most _CHUNK_BYTES (one if larger)."""
    limit = min(_CHUNK_BYTES, max_message_size)
    chunk: List[bytes] = []
    size = 0
    for entry in entries:
        if chunk and size + len(entry) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(entry)
        size += len(entry)
    if chunk:
        yield b"".join(chunk)
