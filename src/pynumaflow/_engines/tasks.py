"""The tasks serving one stream: started together, cancelled together, awaited together.

A reduce window runs one handler call per key and a map.v1 stream one task per request
in flight, so a window of 10,000 keys has 10,000 tasks alive at once. anyio's task
group gives each task a handle, a cancel scope and two events (anyio 4.14 and later):
a dozen objects more per task for the garbage collector to scan again and again while
the window lasts. These are plain asyncio tasks with a set around them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Callable, Optional

__all__ = ["StreamTasks"]

_LOGGER = logging.getLogger("pynumaflow")


class StreamTasks:
    """A set of asyncio tasks one stream's handler waits for.

    The first failure a task reports with :meth:`fail` is kept as :attr:`failure` and
    cancels every task. It is taken under the stream's send lock, so that cancelling
    never cuts a message in half on the wire. A task that raises instead of reporting
    is logged and cancels the others too.
    """

    def __init__(self, send_lock: asyncio.Lock) -> None:
        self._send_lock = send_lock
        self.failure: Optional[Exception] = None
        """The first failure reported with :meth:`fail`."""
        self._loop = asyncio.get_running_loop()
        # One bound method and one context for every task's done callback, instead of a
        # new pair per task (add_done_callback copies the context by default).
        self._on_done = self._finished
        self._callback_context = contextvars.copy_context()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: Optional[asyncio.Future[None]] = None
        self.cancelled = False
        """Whether :meth:`cancel` was called; tasks started after it are cancelled at once."""

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in a new task of this set."""
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._on_done, context=self._callback_context)
        if self.cancelled:
            task.cancel()  # before its first step: its body never runs
        return task

    def start_guarded(self, work: Callable[..., Awaitable[None]], *args: Any) -> asyncio.Task[None]:
        """Run ``work(*args)`` in a new task whose failure is reported with :meth:`fail`.

        The work's coroutine is made in the task, so that a task cancelled before it
        starts leaves no coroutine never awaited.
        """
        return self.start(self._guarded(work, *args))

    async def fail(self, err: Exception) -> None:
        """Keep ``err`` if it is the first failure, and cancel every task."""
        async with self._send_lock:
            self.fail_nowait(err)

    def fail_nowait(self, err: Exception) -> None:
        """:meth:`fail` without the send lock, for a stream whose sends no task makes."""
        if self.failure is None:
            self.failure = err
        self.cancel()

    def cancel(self) -> None:
        """Cancel every task still running, and every task started from now on."""
        self.cancelled = True
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        """Wait until every task has finished, including those started meanwhile."""
        while self._tasks:
            self._idle = self._loop.create_future()
            await self._idle

    async def close(self) -> None:
        """Cancel what still runs and wait for it, even if the caller is being cancelled."""
        self.cancel()
        while self._tasks:
            try:
                await self.wait()
            except asyncio.CancelledError:
                # Cancelled again while the tasks unwind: keep waiting for them (they are
                # already cancelled), then let the cancellation through.
                await asyncio.shield(self.wait())
                raise

    async def _guarded(self, work: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await work(*args)
        except Exception as err:
            await self.fail(err)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("a stream task failed", exc_info=task.exception())
            self.cancel()
        if not self._tasks and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
