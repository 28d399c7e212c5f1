"""SIGTERM and SIGINT while a server runs: the first drains, a second stops at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, Callable, Dict, List

__all__ = ["signals_handled"]


@contextlib.contextmanager
def signals_handled(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Call ``on_signal(signum)`` for SIGTERM and SIGINT during the block (main thread only).

    On leaving, the previous handlers are restored; if a signal was received and aiorun
    had installed its handler, that handler gets the signal too (see below).
    """
    loop = asyncio.get_running_loop()
    previous: Dict[signal.Signals, Any] = {}
    received: List[int] = []

    def handle(signum: int) -> None:
        received.append(signum)
        on_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            before = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, handle, sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not Unix
                continue
            previous[sig] = before
    try:
        yield
    finally:
        for signum, before in previous.items():
            loop.remove_signal_handler(signum)
            if received and callable(before) and _is_aiorun_handler(before):
                # aiorun keeps its loop running after our coroutine returns; after
                # the drain, hand it the signal so it stops the loop and exits.
                signal.signal(signum, before)
                loop.call_soon(before, signum, None)


def _is_aiorun_handler(handler: Callable[..., Any]) -> bool:
    target = getattr(handler, "func", handler)  # aiorun installs a functools.partial
    return getattr(target, "__module__", None) == "aiorun"
