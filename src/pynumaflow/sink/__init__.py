"""User-defined sinks (pynumaflow 0.4 API)."""

import typing as _typing

from pynumaflow._faces import lazy as _lazy
from pynumaflow._types.nack import NackOptions
from pynumaflow._types.sink import Datum, Response, Responses

if _typing.TYPE_CHECKING:
    from pynumaflow.sink._servers import AsyncSink, Sink

__all__ = ["AsyncSink", "Datum", "NackOptions", "Response", "Responses", "Sink"]

# The servers import on first use: the datatypes alone are what pynumaflow.function's
# codecs need (see pynumaflow.function).
if not _typing.TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.lazy_exports(
        globals(),
        {"AsyncSink": "pynumaflow.sink._servers", "Sink": "pynumaflow.sink._servers"},
    )
