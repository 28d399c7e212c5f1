"""sink.v1 Sink (Numaflow >= 1.4): the sink handler over batches ended by EOT, on one stream."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Callable, Dict, List, Optional

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._codec.v1 import sink as codec
from pynumaflow._core.messages import MessageReader
from pynumaflow._core.options import DEFAULT_MAX_MESSAGE_SIZE
from pynumaflow._engines.batch import Batch, BatchEngine
from pynumaflow._engines.drain import IdleDrain
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
    ) -> None:
        self._engine = BatchEngine(handler, invoker)
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
        drain = IdleDrain()  # busy from a batch's first request to its EOT response
        async with drain.reading():
            await self._converse(stream, _BatchReader(stream, self._decode), drain)
        drain.check()

    async def _converse(self, stream: RawStream, reader: _BatchReader, drain: IdleDrain) -> None:
        if not await reader.handshake():
            return
        await stream.send_message(codec.HANDSHAKE_RESPONSE)
        _LOGGER.debug("sink.v1 Sink (%s): stream opened", self._container_type)
        while True:
            first = await reader.next_datum()
            if first is None and reader.closed:
                break
            with drain.busy():
                if first is not None:
                    batch = await self._engine.run(reader.next_datum, first)
                    for message in _messages(self._results(batch), self._max_message_size):
                        await stream.send_message(message)
                await stream.send_message(codec.EOT_RESPONSE)
            if reader.closed:
                break
        _LOGGER.debug("sink.v1 Sink (%s): stream closed by the client", self._container_type)

    def _results(self, batch: Batch) -> Iterator[bytes]:
        """Encode a batch's results; one too big to send becomes a failure saying so."""
        for response in batch.responses:
            entry = codec.encode_result(response, batch.user_metadata[response.id])
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


class _BatchReader:
    """Reads a SinkFn stream: the handshake, then datums batch by batch."""

    def __init__(self, stream: RawStream, decode: Callable[[bytes], codec.SinkRequest]) -> None:
        self._requests = MessageReader(stream)
        self._decode = decode
        self._eot_pending = False
        self.closed = False
        """Whether the client has ended the stream."""

    async def _next(self) -> Optional[codec.SinkRequest]:
        data = await self._requests.next()
        if data is None:
            self.closed = True
            return None
        return decode_or_refuse(self._decode, data, "SinkRequest")

    async def handshake(self) -> bool:
        """Read the handshake; False if the stream ended before any message."""
        request = await self._next()
        if request is None:
            return False
        if request.handshake is not True or request.datum is not None or request.eot:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                "the first SinkRequest must be the handshake, {handshake: {sot: true}}",
            )
        return True

    async def next_datum(self) -> Optional[Datum]:
        """The batch's next datum; None at its EOT or when the stream ends."""
        if self._eot_pending or self.closed:
            self._eot_pending = False
            return None
        request = await self._next()
        if request is None:
            return None
        if request.handshake is not None:
            raise GRPCError(Status.INVALID_ARGUMENT, "a second handshake on the SinkFn stream")
        if request.datum is None:
            if request.eot:
                return None
            raise GRPCError(
                Status.INVALID_ARGUMENT, "a SinkRequest with neither a request nor status.eot"
            )
        self._eot_pending = request.eot
        return request.datum
