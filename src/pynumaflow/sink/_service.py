"""sink.v1.UserDefinedSink (Numaflow 0.8-0.9): a batch of datums in, one response per datum out."""

from __future__ import annotations

from typing import Dict, Optional

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

# A module import, not names: _codec imports this package's types (see function._service).
from pynumaflow import _codec
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._rpc import READY
from pynumaflow._server import is_ready_method, service_mapping
from pynumaflow.sink._batch import OMITTED, BatchEngine
from pynumaflow.sink._types import Datum

__all__ = ["OMITTED", "SinkService"]

RawStream = grpclib.server.Stream[bytes, bytes]


class SinkService:
    """Serves SinkFn and IsReady with one sink handler.

    A call is one batch: the handler runs while the batch is still arriving, iterating
    over datums as they are received, and SinkFn answers them in one ResponseList by the
    rules of :mod:`pynumaflow.sink._batch` (exactly one response per datum id received,
    in the order received). It always ends with status OK, so nothing is lost; only a
    malformed request fails the call (INVALID_ARGUMENT), and then the platform retries
    the batch.
    """

    def __init__(self, handler: Handler, invoker: Invoker) -> None:
        self._engine = BatchEngine(handler, invoker)

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "sink.v1.UserDefinedSink",
            {
                "SinkFn": self._sink_fn,
                "IsReady": is_ready_method(READY),
            },
        )

    async def _sink_fn(self, stream: RawStream) -> None:
        async def next_datum() -> Optional[Datum]:
            data = await stream.recv_message()
            if data is None:
                return None
            try:
                return _codec.decode_sink_datum_request(data)
            except _codec.CodecError as err:
                raise GRPCError(Status.INVALID_ARGUMENT, f"malformed DatumRequest: {err}") from None

        batch = await self._engine.run(next_datum)
        await stream.send_message(_codec.encode_response_list(batch.responses))
