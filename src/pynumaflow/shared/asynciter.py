"""NonBlockingIterator: an async iterator fed through a queue (as in pynumaflow 0.14.0)."""

from pynumaflow._types.asynciter import STREAM_EOF, NonBlockingIterator

__all__ = ["STREAM_EOF", "NonBlockingIterator"]
