"""User-defined functions: map, mapt, map stream and reduce (pynumaflow 0.4 API)."""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pynumaflow.function._multiproc import MultiProcServer

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


def __getattr__(name: str) -> Any:
    # MultiProcServer pulls in multiprocessing: imported on first use, not at start-up.
    if name == "MultiProcServer":
        from pynumaflow.function._multiproc import MultiProcServer

        globals()[name] = MultiProcServer
        return MultiProcServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
