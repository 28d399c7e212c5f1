"""Worker processes behind one server: spawned, linked to the parent by framed pipes, supervised.

The parent keeps the gRPC sockets; each worker is started with the "spawn" method and
gets one end of a socket pair (:class:`Link`) over which frames travel both ways: a
frame is ``(channel, kind, payload)``, and the frames of one event-loop pass leave in
one write. Channel 0 is this module's (a worker's readiness, its log records, the
parent's stop); the others belong to what the workers serve (see
:mod:`pynumaflow._engines.dealt`), whose worker side a picklable factory builds in each
worker. The parent passes nothing but frames: it never sees a handler.

A worker that ends unasked is logged with its exit code, and :attr:`Workers.on_lost`
is told; :meth:`Workers.stop` then raises :class:`WorkerExitedError`, so that the
server exits non-zero and the pod restarts, rather than serving with fewer processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Optional, Protocol

from pynumaflow._core.multiproc import (
    KILL_MARGIN,
    START_METHOD,
    exit_text,
    handle_relayed,
    relay_logs,
)
from pynumaflow._types.errors import WorkerExitedError

__all__ = ["CONTROL", "Link", "WorkerApp", "WorkerFactory", "Workers"]

_LOGGER = logging.getLogger("pynumaflow")

_FRAME = struct.Struct(">IIB")  # payload length, channel, kind
_HEADER = _FRAME.size
CONTROL = 0
"""The channel of this module's own frames; the served ones use the others."""
_READY, _LOG, _STOP = range(3)

FrameHandler = Callable[[int, int, bytes], None]
"""Receives one frame: ``(channel, kind, payload)``."""


class Link(asyncio.Protocol):
    """One end of a parent-worker socket pair: frames out batched per loop pass, frames in."""

    def __init__(self, on_frame: FrameHandler, on_lost: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._transport: Optional[asyncio.Transport] = None
        self._out: list[bytes] = []
        self._rest = bytearray()  # an unfinished frame
        self._wanted = 0  # how long the unfinished frame is, once its header is in
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        rest = self._rest
        if rest:
            # A large frame comes in many reads: gather them, and parse once it is whole.
            rest += data
            if len(rest) < self._wanted:
                return
            data = bytes(rest)
            rest.clear()
        pos, size = 0, len(data)
        unpack, on_frame = _FRAME.unpack_from, self.on_frame
        while size - pos >= _HEADER:
            length, channel, kind = unpack(data, pos)
            end = pos + _HEADER + length
            if end > size:
                break
            on_frame(channel, kind, data[pos + _HEADER : end])
            pos = end
        if pos < size:
            rest += data[pos:]
            self._wanted = _HEADER + unpack(data, pos)[0] if size - pos >= _HEADER else 0

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.on_lost()

    def send(self, channel: int, kind: int, payload: bytes = b"") -> None:
        """Queue a frame; the frames of this loop pass leave together."""
        if self.closed:
            return
        out = self._out
        if not out:
            self._loop.call_soon(self._flush)
        out.append(_FRAME.pack(len(payload), channel, kind))
        out.append(payload)

    def send_threadsafe(self, channel: int, kind: int, payload: bytes = b"") -> None:
        """:meth:`send` from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self._loop.call_soon_threadsafe(self.send, channel, kind, payload)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    def close(self) -> None:
        """Send what is queued, then close."""
        if self._out:
            self._flush()
        if self._transport is not None:
            self._transport.close()


class WorkerApp(Protocol):
    """What a worker serves: the frames of the served channels, then a close."""

    def on_frame(self, channel: int, kind: int, payload: bytes) -> None:
        """One frame from the parent (never a :data:`CONTROL` one)."""

    async def close(self) -> None:
        """The parent stopped the worker (or is gone): end what runs, free the pool."""


WorkerFactory = Callable[[Link, int], WorkerApp]
"""Builds a worker's app in the worker, given its link and the size of its handler pool.

Pickled by reference with every handler it holds: it must be importable by name.
"""


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    link: Link
    ready: asyncio.Future[None]
    exited: asyncio.Future[None]

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"


class Workers:
    """The parent's ``count`` worker processes, each running ``factory``'s app.

    :attr:`on_frame` receives ``(worker index, channel, kind, payload)`` for every
    served-channel frame; :attr:`on_lost` the message saying which worker ended unasked.
    """

    def __init__(
        self,
        factory: WorkerFactory,
        count: int,
        *,
        max_threads: int,
        shutdown_grace_period: float,
    ) -> None:
        self._factory = factory
        self.count = count
        self._max_threads = max_threads
        self._grace = shutdown_grace_period
        self._workers: list[_Worker] = []
        self._stopping = False
        self._failures: list[str] = []
        self.on_frame: Callable[[int, int, int, bytes], None] = lambda *frame: None
        self.on_lost: Callable[[str], None] = lambda message: None

    @property
    def pids(self) -> list[Optional[int]]:
        """The workers' process ids, by index."""
        return [w.process.pid for w in self._workers]

    async def start(self) -> None:
        """Start every worker and wait until each is ready to serve.

        Raises:
            WorkerExitedError: a worker ended before it was ready (the others are stopped).

        """
        context = multiprocessing.get_context(START_METHOD)
        level = logging.getLogger("pynumaflow").getEffectiveLevel()
        try:
            for index in range(self.count):
                self._workers.append(await self._spawn(context, index, level))
            pending = [w.ready for w in self._workers] + [w.exited for w in self._workers]
            while not all(w.ready.done() for w in self._workers):
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if self._failures:
                    raise WorkerExitedError("; ".join(self._failures))
                pending = [f for f in pending if not f.done()]
        except BaseException:
            await self.stop(check=False)
            raise
        _LOGGER.info(
            "%d worker process(es) ready (pids %s)",
            self.count,
            ", ".join(str(pid) for pid in self.pids),
        )

    async def _spawn(self, context: Any, index: int, level: int) -> _Worker:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        process = context.Process(
            target=_worker_main,
            args=(self._factory, index, theirs, self._max_threads, level),
            name=f"pynumaflow-worker-{index}",
        )
        process.start()
        theirs.close()
        ready, exited = loop.create_future(), loop.create_future()

        def on_frame(channel: int, kind: int, payload: bytes) -> None:
            if channel != CONTROL:
                self.on_frame(index, channel, kind, payload)
            elif kind == _LOG:
                handle_relayed(pickle.loads(payload))
            elif kind == _READY and not ready.done():
                ready.set_result(None)

        _, link = await loop.create_unix_connection(lambda: Link(on_frame, lambda: None), sock=ours)
        worker = _Worker(index, process, link, ready, exited)
        loop.add_reader(process.sentinel, self._on_exit, worker)
        return worker

    def send(self, index: int, channel: int, kind: int, payload: bytes = b"") -> None:
        """Send a frame to worker ``index``."""
        self._workers[index].link.send(channel, kind, payload)

    def broadcast(self, channel: int, kind: int, payload: bytes = b"") -> None:
        """Send a frame to every worker."""
        for w in self._workers:
            w.link.send(channel, kind, payload)

    def _on_exit(self, w: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(w.process.sentinel)
        w.process.join()
        code = w.process.exitcode
        if not w.exited.done():
            w.exited.set_result(None)
        if code == 0 and self._stopping:
            return
        when = (
            "while stopping"
            if self._stopping
            else ("before it was ready" if not w.ready.done() else "unexpectedly")
        )
        message = f"{w.name} {exit_text(code)} {when}"
        self._failures.append(message)
        if self._stopping:
            _LOGGER.error("%s", message)
            return
        _LOGGER.error("%s; stopping the other workers and exiting", message)
        self.on_lost(message)

    async def stop(self, *, check: bool = True) -> None:
        """Stop every worker (kill it past the grace period and a margin), wait for it.

        Raises:
            WorkerExitedError: with ``check``, if a worker ended unasked or failed to stop.

        """
        self._stopping = True
        live = [w for w in self._workers if not w.exited.done()]
        for w in live:
            w.link.send(CONTROL, _STOP)
        if live:
            await asyncio.wait([w.exited for w in live], timeout=self._grace + KILL_MARGIN)
        for w in live:
            if not w.exited.done() and w.process.pid is not None:
                _LOGGER.error("%s did not stop in time: killing it", w.name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signal.SIGKILL)
                await w.exited
        for w in self._workers:
            w.link.close()
        if check and self._failures:
            raise WorkerExitedError("; ".join(self._failures))


# ---------------------------------------------------------------------------------------
# In the worker process


class _LinkReport:
    """Log records to the parent as frames, from any thread."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def send(self, kind: str, payload: Any = None) -> bool:
        if self._link.closed:
            return False
        self._link.send_threadsafe(CONTROL, _LOG, pickle.dumps(payload))
        return True


def _worker_main(
    factory: WorkerFactory, index: int, sock: socket.socket, max_threads: int, log_level: int
) -> None:
    # Only the parent gets terminal and init-system signals: it stops the workers itself.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    asyncio.run(_serve_worker(factory, index, sock, max_threads, log_level))


async def _serve_worker(
    factory: WorkerFactory, index: int, sock: socket.socket, max_threads: int, log_level: int
) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    app: Optional[WorkerApp] = None

    def on_frame(channel: int, kind: int, payload: bytes) -> None:
        if channel != CONTROL:
            assert app is not None  # frames come only after _READY
            app.on_frame(channel, kind, payload)
        elif kind == _STOP and not stopped.done():
            stopped.set_result(None)

    def on_lost() -> None:
        if not stopped.done():
            _LOGGER.warning("worker %d: the parent process is gone; stopping", index)
            stopped.set_result(None)

    _, link = await loop.create_unix_connection(lambda: Link(on_frame, on_lost), sock=sock)
    if threading.current_thread() is threading.main_thread():
        relay_logs(_LinkReport(link), log_level)
    app = factory(link, max_threads)
    link.send(CONTROL, _READY)
    await stopped
    await app.close()
    link.close()
