"""Reduce user-defined functions, as pynumaflow 0.9-0.14 wrote them (Numaflow >= 1.4).

A handler is ``async def h(keys, datums, md) -> Messages`` reading ``datums`` with
``async for``, a :class:`Reducer` subclass (given as the class, with ``init_args`` and
``init_kwargs``: a new instance per key and window), or an instance of one. Served on
``reduce.sock`` by :class:`ReduceAsyncServer`.
"""

from pynumaflow._types.function import DROP, IntervalWindow, Messages, Metadata
from pynumaflow._types.modern import Datum, Message, Reducer, SystemMetadata, UserMetadata
from pynumaflow.reducer._servers import ReduceAsyncServer

__all__ = [
    "DROP",
    "Datum",
    "IntervalWindow",
    "Message",
    "Messages",
    "Metadata",
    "ReduceAsyncServer",
    "Reducer",
    "SystemMetadata",
    "UserMetadata",
]
