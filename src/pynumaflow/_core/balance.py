"""Spreading the connections of one shared listening socket evenly over processes.

Every process holds the same listening socket (bound once, inherited), and accepts from
it only while it holds no more live connections than the least loaded process; the live
counts sit in shared memory, one slot per process, each written only by its owner.

Why not plain SO_REUSEPORT: the kernel then hashes each connection to one of the
listeners, so with N processes and N connections (the platform's pattern) some process
often gets none; and a process cannot decline its share, since closing a SO_REUSEPORT
listener resets the connections queued on it. With one shared socket a connection waits
in the one queue until a process that is due for one takes it, and a process that stops
watching the socket loses nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
from multiprocessing.context import BaseContext
from typing import Callable, Optional

__all__ = ["BalancedListener", "LoadBoard"]

_LOGGER = logging.getLogger("pynumaflow")

# How often a process that is not due for a connection looks at the board again. It
# only matters for evenness when connections come and go; whoever is least loaded
# accepts at once regardless.
POLL_INTERVAL = 0.05
# After an accept error such as EMFILE, stop watching for a while instead of spinning.
ACCEPT_RETRY_DELAY = 1.0


class LoadBoard:
    """Counters in shared memory, one slot per process: live connections, calls served.

    Pass it to the processes when they are started (it is inherited, not pickled later).
    """

    def __init__(self, context: BaseContext, processes: int) -> None:
        self.connections: ctypes.Array[ctypes.c_long] = context.RawArray(ctypes.c_long, processes)
        self.calls: ctypes.Array[ctypes.c_ulonglong] = context.RawArray(
            ctypes.c_ulonglong, processes
        )

    def __len__(self) -> int:
        return len(self.connections)


class _Counted(asyncio.Protocol):
    """Passes everything to the connection's real protocol; reports the end once."""

    def __init__(self, inner: asyncio.Protocol, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._release()


class BalancedListener:
    """A :class:`pynumaflow._core.server.Listener` taking this process's share of a shared socket.

    Args:
        sock: the listening socket, shared by every process of the board.
        board: the shared counters.
        index: this process's slot on the board.
        label: what ``str()`` says (where it listens), for the log.
        on_start: called once accepting has begun.

    """

    def __init__(
        self,
        sock: socket.socket,
        board: LoadBoard,
        index: int,
        *,
        label: str,
        on_start: Optional[Callable[[], object]] = None,
    ) -> None:
        self._sock = sock
        self._board = board
        self._index = index
        self._label = label
        self._on_start = on_start
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._factory: Optional[Callable[[], asyncio.Protocol]] = None
        self._open = False
        self._watching = False
        self._resume_at = 0.0
        self._timer: Optional[asyncio.TimerHandle] = None
        self._connecting: set[asyncio.Task[None]] = set()

    def __str__(self) -> str:
        return self._label

    async def start(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Begin accepting this process's share of connections."""
        self._loop = asyncio.get_running_loop()
        self._factory = protocol_factory
        self._sock.setblocking(False)
        self._open = True
        self._tick()
        if self._on_start is not None:
            self._on_start()

    def close(self) -> None:
        """Stop accepting and close this process's handle on the socket (idempotent).

        The socket itself stays open in the other processes: nothing queued is lost.
        """
        if not self._open:
            return
        self._open = False
        self._watch(False)
        if self._timer is not None:
            self._timer.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        """Wait for connections accepted just before :meth:`close` to be set up."""
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)

    def _due(self) -> bool:
        live = self._board.connections
        return bool(live[self._index] <= min(live))

    def _rebalance(self) -> None:
        assert self._loop is not None
        self._watch(self._open and self._loop.time() >= self._resume_at and self._due())

    def _tick(self) -> None:
        assert self._loop is not None
        self._rebalance()
        if self._open:
            self._timer = self._loop.call_later(POLL_INTERVAL, self._tick)

    def _watch(self, on: bool) -> None:
        if on == self._watching or self._loop is None:
            return
        if on:
            self._loop.add_reader(self._sock.fileno(), self._accept)
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._watching = on

    def _accept(self) -> None:
        assert self._loop is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or the client gave up
        except OSError as err:  # e.g. out of file descriptors
            _LOGGER.error(
                "cannot accept on %s: %s; retrying in %.0f s", self, err, ACCEPT_RETRY_DELAY
            )
            self._resume_at = self._loop.time() + ACCEPT_RETRY_DELAY
            self._watch(False)
            return
        conn.setblocking(False)
        self._board.connections[self._index] += 1
        self._rebalance()  # one at a time: the next one may be someone else's
        task = self._loop.create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        assert self._loop is not None
        assert self._factory is not None
        factory = self._factory
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._board.connections[self._index] -= 1
                if self._open:
                    self._rebalance()

        try:
            await self._loop.connect_accepted_socket(lambda: _Counted(factory(), release), conn)
        except Exception as err:
            _LOGGER.warning("dropped a connection on %s while setting it up: %s", self, err)
            conn.close()
            release()
