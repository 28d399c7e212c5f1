"""Reduce stream user-defined functions, as pynumaflow 0.14.0 wrote them (Numaflow >= 1.4).

A handler is ``async def h(keys, datums, output, md)`` reading ``datums`` with
``async for`` and putting each result on ``output`` (``await output.put(Message(...))``),
which sends it at once, while the window is still open; or a :class:`ReduceStreamer`
subclass (given as the class, with ``init_args`` and ``init_kwargs``: a new instance per
key and window), or an instance of one. Served on ``reducestream.sock`` by
:class:`ReduceStreamAsyncServer`.
"""

from pynumaflow._types.asynciter import NonBlockingIterator
from pynumaflow._types.function import DROP, IntervalWindow, Metadata
from pynumaflow._types.modern import Datum, Message, SystemMetadata, UserMetadata
from pynumaflow._types.windowed import ReduceStreamer, ReduceWindow
from pynumaflow.reducestreamer._servers import ReduceStreamAsyncServer

__all__ = [
    "DROP",
    "Datum",
    "IntervalWindow",
    "Message",
    "Metadata",
    "NonBlockingIterator",
    "ReduceStreamAsyncServer",
    "ReduceStreamer",
    "ReduceWindow",
    "SystemMetadata",
    "UserMetadata",
]
