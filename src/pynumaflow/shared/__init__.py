"""Helpers pynumaflow 0.14.0's examples import: queue-backed iterators, the server base."""

from pynumaflow._faces.modern import ModernServer as NumaflowServer
from pynumaflow.shared.asynciter import NonBlockingIterator
from pynumaflow.shared.synciter import SyncIterator

__all__ = ["NonBlockingIterator", "NumaflowServer", "SyncIterator"]
