"""User-defined sinks (pynumaflow 0.4 API)."""

from pynumaflow.sink._servers import AsyncSink, Sink
from pynumaflow.sink._types import Datum, Response, Responses

__all__ = ["AsyncSink", "Datum", "Response", "Responses", "Sink"]
