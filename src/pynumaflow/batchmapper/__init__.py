"""Batch map user-defined functions, as pynumaflow 0.14.0 wrote them (Numaflow >= 1.4).

A handler is ``async h(datums) -> BatchResponses`` (or a sync one taking an iterator),
or an instance of a :class:`BatchMapper` subclass implementing ``handler``. It gets the
datums of one batch (up to the vertex's ``readBatchSize``) as they arrive, and answers
each datum, by its ``id``, with exactly one :class:`BatchResponse`. Served on
``batchmap.sock`` (``MAP_MODE`` ``batch-map``) by :class:`BatchMapAsyncServer`.
"""

from pynumaflow._types.batchmap import BatchMapper, BatchResponse, BatchResponses
from pynumaflow._types.function import DROP
from pynumaflow._types.modern import Datum, Message, SystemMetadata, UserMetadata
from pynumaflow._types.nack import NACK, NackOptions
from pynumaflow.batchmapper._servers import BatchMapAsyncServer

__all__ = [
    "DROP",
    "NACK",
    "BatchMapAsyncServer",
    "BatchMapper",
    "BatchResponse",
    "BatchResponses",
    "Datum",
    "Message",
    "NackOptions",
    "SystemMetadata",
    "UserMetadata",
]
