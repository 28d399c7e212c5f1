"""User-defined sinks (pynumaflow 0.4 API)."""

from typing import TYPE_CHECKING

from pynumaflow._lazy import lazy_exports
from pynumaflow.sink._types import Datum, Response, Responses

if TYPE_CHECKING:
    from pynumaflow.sink._servers import AsyncSink, Sink

__all__ = ["AsyncSink", "Datum", "Response", "Responses", "Sink"]

# The servers import on first use: the datatypes alone are what pynumaflow.function's
# codecs need (see pynumaflow.function).
__getattr__, __dir__ = lazy_exports(
    globals(),
    {"AsyncSink": "pynumaflow.sink._servers", "Sink": "pynumaflow.sink._servers"},
)
