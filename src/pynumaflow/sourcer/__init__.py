"""User-defined sources (the pynumaflow 0.14.0 ``pynumaflow.sourcer`` API, Numaflow >= 1.4)."""

import typing as _typing

from pynumaflow._faces import lazy as _lazy
from pynumaflow._types.source import (
    AckRequest,
    Message,
    NackRequest,
    Offset,
    PartitionsResponse,
    PendingResponse,
    ReadLimits,
    ReadOutput,
    ReadRequest,
    Sourcer,
    get_default_partitions,
    read_limits,
)

if _typing.TYPE_CHECKING:
    from pynumaflow.sourcer._servers import SourceAsyncServer

SourceCallable = Sourcer
"""What :class:`SourceAsyncServer` serves (0.14.0's alias)."""

__all__ = [
    "AckRequest",
    "Message",
    "NackRequest",
    "Offset",
    "PartitionsResponse",
    "PendingResponse",
    "ReadLimits",
    "ReadOutput",
    "ReadRequest",
    "SourceAsyncServer",
    "SourceCallable",
    "Sourcer",
    "get_default_partitions",
    "read_limits",
]

if not _typing.TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.lazy_exports(
        globals(), {"SourceAsyncServer": "pynumaflow.sourcer._servers"}
    )
