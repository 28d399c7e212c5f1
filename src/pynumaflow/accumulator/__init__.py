"""Accumulators, as pynumaflow 0.14.0 wrote them (Numaflow >= 1.6).

An accumulator is a global window per key: ``async def h(datums, output)`` reads one
key's datums with ``async for`` as they come and puts messages on ``output`` whenever it
likes (``await output.put(Message.from_datum(datum))``), typically in event-time order
as the watermark moves; or an :class:`Accumulator` subclass (given as the class, with
``init_args`` and ``init_kwargs``: a new instance per key), or an instance of one.
Served on ``accumulator.sock`` by :class:`AccumulatorAsyncServer`.
"""

from pynumaflow._types.asynciter import NonBlockingIterator
from pynumaflow._types.function import DROP, IntervalWindow
from pynumaflow._types.modern import SystemMetadata, UserMetadata
from pynumaflow._types.windowed import Accumulator, KeyedWindow
from pynumaflow._types.windowed import AccumulatorDatum as Datum
from pynumaflow._types.windowed import AccumulatorMessage as Message
from pynumaflow.accumulator._servers import AccumulatorAsyncServer

__all__ = [
    "DROP",
    "Accumulator",
    "AccumulatorAsyncServer",
    "Datum",
    "IntervalWindow",
    "KeyedWindow",
    "Message",
    "NonBlockingIterator",
    "SystemMetadata",
    "UserMetadata",
]
