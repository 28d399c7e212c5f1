"""User-defined functions: map, mapt, map stream and reduce (pynumaflow 0.4 API)."""

import typing as _typing

from pynumaflow._faces import lazy as _lazy
from pynumaflow._types.function import (
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
from pynumaflow._types.nack import NACK, NackOptions

if _typing.TYPE_CHECKING:
    from pynumaflow.function._multiproc import MultiProcServer
    from pynumaflow.function._servers import AsyncServer, Server

__all__ = [
    "DROP",
    "NACK",
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
    "NackOptions",
    "Server",
]

# The servers import on first use: the datatypes alone are what pynumaflow.sink needs,
# and MultiProcServer would bring multiprocessing into every server's start-up.
if not _typing.TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.lazy_exports(
        globals(),
        {
            "AsyncServer": "pynumaflow.function._servers",
            "Server": "pynumaflow.function._servers",
            "MultiProcServer": "pynumaflow.function._multiproc",
        },
    )
