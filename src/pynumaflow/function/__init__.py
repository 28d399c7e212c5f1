"""User-defined functions: map, mapt, map stream and reduce (pynumaflow 0.4 API)."""

from pynumaflow.function._multiproc import MultiProcServer
from pynumaflow.function._servers import AsyncServer, Server
from pynumaflow.function._types import (
    DROP,
    Datum,
    DatumMetadata,
    IntervalWindow,
    Message,
    Messages,
    MessageT,
    MessageTs,
    Metadata,
)

__all__ = [
    "DROP",
    "AsyncServer",
    "Datum",
    "DatumMetadata",
    "IntervalWindow",
    "Message",
    "MessageT",
    "MessageTs",
    "Messages",
    "Metadata",
    "MultiProcServer",
    "Server",
]
