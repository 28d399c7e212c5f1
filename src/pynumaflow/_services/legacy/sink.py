"""sink.v1.UserDefinedSink (Numaflow 0.8-0.9): a batch of datums in, one response per datum out."""

from __future__ import annotations

from typing import Dict, Optional

import grpclib.const
import grpclib.server

from pynumaflow._codec.legacy import sink as _codec
from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._core.messages import MessageReader
from pynumaflow._engines.batch import OMITTED, BatchEngine
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.sink import Datum

__all__ = ["OMITTED", "SinkService"]

RawStream = grpclib.server.Stream[bytes, bytes]


class SinkService:
    """Serves SinkFn and IsReady with one sink handler.

    A call is one batch: the handler runs while the batch is still arriving, iterating
    over datums as they are received, and SinkFn answers them in one ResponseList by the
    rules of :mod:`pynumaflow._engines.batch` (exactly one response per datum id received,
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
        requests = MessageReader(stream)

        async def next_datum() -> Optional[Datum]:
            data = await requests.next()
            if data is None:
                return None
            return decode_or_refuse(_codec.decode_sink_datum_request, data, "DatumRequest")

        batch = await self._engine.run(next_datum)
        await stream.send_message(_codec.encode_response_list(batch.responses))
