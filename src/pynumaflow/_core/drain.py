"""Whether the server running the current call drains: what long-lived streams watch."""

from __future__ import annotations

import asyncio
import contextvars

__all__ = ["SHUTTING_DOWN", "draining", "serve_draining"]

SHUTTING_DOWN = "server is shutting down"
"""The details of the UNAVAILABLE status a call refused or cut short by the drain ends with."""

_DRAINING: contextvars.ContextVar[asyncio.Event] = contextvars.ContextVar("pynumaflow_draining")


def draining() -> asyncio.Event:
    """An event set once the server running the current call starts to drain.

    A long-lived stream waits on it to end early when finishing would need the client
    (e.g. a reduce window still open), instead of holding the drain for the whole grace
    period. Outside a call served by a :class:`ServerCore` it is never set.
    """
    try:
        return _DRAINING.get()
    except LookupError:
        return asyncio.Event()


def serve_draining(event: asyncio.Event) -> None:
    """Make ``event`` what :func:`draining` returns in the current call's task."""
    _DRAINING.set(event)
