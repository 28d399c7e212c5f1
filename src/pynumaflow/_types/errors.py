"""Every exception of the package.

The public ones are re-exported by ``pynumaflow.errors``; the codec, the invoker and the
services share the other two.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "FeedAborted",
    "ReturnTypeError",
    "SocketPathError",
    "WorkerExitedError",
]


class SocketPathError(OSError):
    """The socket path cannot be used (not writable, or another server is live there)."""


class WorkerExitedError(RuntimeError):
    """A worker process ended without being asked to (or failed while stopping).

    The other workers are then drained and stopped too, and :meth:`MultiProcServer.start`
    raises this: a server silently running on fewer processes than the platform opens
    connections for would hide the crash and serve with less capacity than announced.
    """


class FeedAborted(Exception):  # noqa: N818 - it reads as what happened to the feed
    """Raised inside a handler still reading its input when the call was abandoned.

    A reduce or sink handler's iterator raises it once the stream failed or was
    cancelled, or the server stopped: let it propagate.
    """


class CodecError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


class ReturnTypeError(TypeError):
    """A handler returned something that cannot be sent (wrong type or content)."""
