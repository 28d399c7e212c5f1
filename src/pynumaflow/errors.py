"""The errors a user of pynumaflow can meet, in one place.

- :class:`SocketPathError` (an ``OSError``): a server cannot listen on its socket path.
- :class:`WorkerExitedError` (a ``RuntimeError``): a ``MultiProcServer`` worker died.
- :class:`FeedAborted`: raised inside a reduce or sink handler still reading its input
  when the call was abandoned; let it propagate.
"""

from pynumaflow._types.errors import FeedAborted, SocketPathError, WorkerExitedError

__all__ = ["FeedAborted", "SocketPathError", "WorkerExitedError"]
