"""What a call can ask of the server core serving it: does it drain, is its pool stalled."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Protocol

__all__ = ["SHUTTING_DOWN", "ServingCore", "draining", "pool_stalled", "serve_call"]

SHUTTING_DOWN = "server is shutting down"
"""The details of the UNAVAILABLE status a call refused or cut short by the drain ends with."""


class ServingCore(Protocol):
    """The server core, as its calls see it."""

    @property
    def drain_started(self) -> asyncio.Event:
        """Set once the server starts to drain."""
        ...

    def stalled(self) -> bool:
        """Whether the handler pool is stalled."""
        ...


_CORE: contextvars.ContextVar[ServingCore] = contextvars.ContextVar("pynumaflow_core")


def serve_call(core: ServingCore) -> None:
    """Make ``core`` the one serving the current call's task (see :func:`draining`)."""
    _CORE.set(core)


def draining() -> asyncio.Event:
    """An event set once the server running the current call starts to drain.

    A long-lived stream waits on it to end early when finishing would need the client
    (e.g. a reduce window still open), instead of holding the drain for the whole grace
    period. Outside a call served by a server core it is never set.
    """
    try:
        return _CORE.get().drain_started
    except LookupError:
        return asyncio.Event()


def pool_stalled() -> bool:
    """Whether the handler pool of the server running the current call is stalled."""
    core = _CORE.get(None)
    return core is not None and core.stalled()
