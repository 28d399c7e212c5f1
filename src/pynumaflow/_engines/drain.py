"""IdleDrain: a long-lived stream ends promptly when the server drains while it is idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._core.current import SHUTTING_DOWN, draining

__all__ = ["IdleDrain"]


class IdleDrain:
    """Ends a long-lived stream promptly when the server drains while it is idle.

    The v1 map, transformer and sink streams stay open for as long as the platform runs
    and are half-closed only when it stops itself, so an idle one would hold the drain
    for the whole grace period. A service reads its client's requests inside
    :meth:`reading` and marks the work it owes the client with :meth:`busy` (a request
    being answered, a batch up to its EOT). Once the server drains while nothing is in
    progress, the reading is cancelled and :meth:`reading` exits quietly; the service
    sends what it still owes, then calls :meth:`check`, which ends the stream
    ``UNAVAILABLE``: the client stopped getting answers because the server stopped, not
    because the conversation was over.
    """

    def __init__(self) -> None:
        self._in_progress = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scope = anyio.CancelScope()

    def begin(self, count: int = 1) -> None:
        """``count`` more pieces of work are in progress."""
        self._in_progress += count
        self._idle.clear()

    def end(self, count: int = 1) -> None:
        """``count`` pieces of work :meth:`begin` announced are done (answered, or abandoned)."""
        self._in_progress -= count
        if not self._in_progress:
            self._idle.set()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """The block is work in progress: the drain does not cut the stream during it."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """The block reading the client's requests; the drain cancels it while idle."""
        watcher = asyncio.ensure_future(self._cut_when_idle(draining()))
        try:
            with self._scope:
                yield
        finally:
            watcher.cancel()

    def check(self) -> None:
        """Raise ``UNAVAILABLE`` if the drain cut the reading.

        Raises:
            GRPCError: ``UNAVAILABLE`` (:data:`SHUTTING_DOWN`), once the drain cut it.

        """
        if self._scope.cancelled_caught:
            raise GRPCError(Status.UNAVAILABLE, SHUTTING_DOWN)

    async def _cut_when_idle(self, drain: asyncio.Event) -> None:
        await drain.wait()
        while True:
            await self._idle.wait()
            # A request that arrived in the same loop pass as the drain is read first.
            await asyncio.sleep(0)
            if self._idle.is_set():
                break
        self._scope.cancel()
