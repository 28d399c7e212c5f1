"""One server core in each of several processes that share one TCP port.

The parent binds and listens on the port once, then starts the workers with the
"spawn" method; they inherit the listening socket, and each runs a ServerCore whose
endpoint is a BalancedListener on it, so that connections spread evenly. The parent
writes server-info ("protocol": "tcp", metadata CPU_LIMIT = the process count) once
every worker accepts connections, passes SIGTERM/SIGINT on to the workers, relays their
``pynumaflow`` log records to its own logging, and stops them all if one of them ends
unasked (see :class:`WorkerExitedError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, Final, NamedTuple, Optional, Protocol, Union

import grpclib.const
import grpclib.server

from pynumaflow._core.balance import BalancedListener, LoadBoard
from pynumaflow._core.endpoint import Endpoint, Service
from pynumaflow._core.files import write_server_info
from pynumaflow._core.server import ServerCore
from pynumaflow._types.errors import WorkerExitedError

__all__ = [
    "START_METHOD",
    "ProcessOptions",
    "Reports",
    "Serving",
    "WorkerExitedError",
    "exit_text",
    "handle_relayed",
    "refuse_in_worker",
    "relay_logs",
    "serve_in_processes",
]

_LOGGER = logging.getLogger("pynumaflow")

# Not fork: forking a process with threads or a running loop is unsafe, and 3.14 no
# longer forks by default. Spawn works everywhere, at the cost of importing afresh.
START_METHOD: Final = "spawn"
BACKLOG = 128
# Past the grace period, how long the parent still waits for a worker before killing it.
KILL_MARGIN = 10.0


class Serving(NamedTuple):
    """What a worker serves: its services, what to call once it has stopped, its pool's state."""

    services: Sequence[Service]
    on_close: Callable[[], None]
    pool_stalled: Optional[Callable[[], Optional[str]]] = None
    """Why the handler pool is stalled, or None (IsReady then answers not ready)."""


ServicesFactory = Callable[[int], Serving]
"""Builds a worker's services, given the size of its sync handler pool."""


@dataclass(frozen=True)
class ProcessOptions:
    """What the parent and every worker need to know; picklable."""

    host: str
    port: int
    processes: int
    server_info_file: Path
    max_message_size: int
    max_threads: int
    shutdown_grace_period: float

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def serve_in_processes(services: ServicesFactory, options: ProcessOptions) -> None:
    """Serve ``services`` in ``options.processes`` processes until SIGTERM/SIGINT.

    ``services`` is called in each worker (with ``options.max_threads``) to build its
    services; with "spawn" it (and
    every handler it holds) is pickled by reference, so it must be importable by name.

    Raises:
        OSError: the port cannot be listened on.
        WorkerExitedError: a worker ended unasked; the others were stopped.
        RuntimeError: called while a worker imports the main script.

    """
    refuse_in_worker()
    sock = _listen(options)
    with contextlib.closing(sock), _Signals() as signals:
        _Supervisor(services, options, sock, signals).run()


def refuse_in_worker() -> None:
    """Raise RuntimeError in a worker process importing the main script.

    What multiprocessing itself checks, said in our words: a script that starts the
    server outside ``if __name__ == "__main__":`` does so again in every worker.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "a worker process of a multi-process server started the server again while "
            'importing the main script: start it inside `if __name__ == "__main__":`'
        )


def exit_text(code: Optional[int]) -> str:
    """How a process ended, for the log: ``exited with code -9 (killed by SIGKILL)``."""
    how = f"exited with code {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            how += f" (killed by {signal.Signals(-code).name})"
    return how


def _listen(options: ProcessOptions) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as err:
        raise OSError(err.errno, f"cannot listen on {options.address}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # No SO_REUSEPORT: the workers share this one socket, and a second server started
        # on the same port by mistake should fail here rather than take a share.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot listen on {options.address}: {err.strerror}") from None
    sock.setblocking(False)
    return sock


class _Signals:
    """SIGTERM and SIGINT, as bytes on a pipe that the parent's wait can watch."""

    def __init__(self) -> None:
        self._received: list[int] = []
        self._previous: Dict[int, Any] = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self._received.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def fileno(self) -> int:
        return self._read

    def take(self) -> list[int]:
        """The signals received since the last call."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 512)
        taken, self._received = self._received, []
        return taken


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Optional[Connection]  # None once the worker closed its end
    ready: bool = False
    exited: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"

    def signal(self, signum: int) -> None:
        if not self.exited and self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)


class _Supervisor:
    def __init__(
        self,
        services: ServicesFactory,
        options: ProcessOptions,
        sock: socket.socket,
        signals: _Signals,
    ) -> None:
        self._services = services
        self._options = options
        self._sock = sock
        self._signals = signals
        self._context = multiprocessing.get_context(START_METHOD)
        self._board = LoadBoard(self._context, options.processes)
        self._workers: list[_Worker] = []
        self._stopping = False
        self._announced = False
        self._failures: list[str] = []

    def run(self) -> None:
        try:
            for index in range(self._options.processes):
                self._workers.append(self._spawn(index))
            while not all(w.exited for w in self._workers):
                self._step()
        finally:
            self._stop_stragglers()
            if self._announced:
                self._options.server_info_file.unlink(missing_ok=True)
        self._report()

    def _spawn(self, index: int) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        level = logging.getLogger("pynumaflow").getEffectiveLevel()
        process = self._context.Process(
            target=_worker_main,
            args=(self._services, self._options, index, self._sock, self._board, theirs, level),
            name=f"pynumaflow-worker-{index}",
        )
        process.start()
        theirs.close()
        return _Worker(index, process, ours)

    def _step(self) -> None:
        waitables: list[Union[Connection, int]] = [self._signals.fileno()]
        for w in self._workers:
            if not w.exited:
                waitables.append(w.process.sentinel)
            if w.conn is not None:
                waitables.append(w.conn)
        for ready in wait_for_any(waitables):
            if ready == self._signals.fileno():
                self._on_signals(self._signals.take())
            for w in self._workers:
                if ready is w.conn:
                    self._on_message(w)
                elif ready == w.process.sentinel and not w.exited:
                    self._on_exit(w)
        if not self._stopping and not self._announced and all(w.ready for w in self._workers):
            write_server_info(
                self._options.server_info_file,
                "tcp",
                {"CPU_LIMIT": str(self._options.processes)},
            )
            self._announced = True
            _LOGGER.info(
                "serving on %s with %d processes (pids %s)",
                self._options.address,
                len(self._workers),
                ", ".join(str(w.process.pid) for w in self._workers),
            )

    def _on_signals(self, signums: list[int]) -> None:
        for signum in signums:
            name = signal.Signals(signum).name
            if not self._stopping:
                _LOGGER.info("received %s, stopping %d worker(s)", name, len(self._workers))
                self._stop_workers()
            else:
                _LOGGER.warning("received %s again, stopping the workers now", name)
                for w in self._workers:
                    w.signal(signal.SIGTERM)

    def _stop_workers(self) -> None:
        self._stopping = True
        for w in self._workers:
            w.signal(signal.SIGTERM)

    def _on_message(self, w: _Worker) -> None:
        assert w.conn is not None
        try:
            kind, payload = w.conn.recv()
        except (EOFError, OSError):
            w.conn.close()
            w.conn = None
            return
        except Exception as err:  # e.g. a log record carrying an object we cannot unpickle
            _LOGGER.warning("%s sent a message that cannot be read: %r", w.name, err)
            return
        if kind == "ready":
            w.ready = True
        elif kind == "log":
            handle_relayed(payload)

    def _on_exit(self, w: _Worker) -> None:
        w.process.join()
        w.exited = True
        # Read what it sent last, then close: a process it forked may hold its end open.
        while w.conn is not None and w.conn.poll(0):
            self._on_message(w)
        if w.conn is not None:
            w.conn.close()
            w.conn = None
        code = w.process.exitcode
        if code == 0 and self._stopping:
            return
        if self._stopping and not w.ready and code == -signal.SIGTERM:
            return  # stopped before it had started serving
        how = exit_text(code)
        when = (
            "while stopping"
            if self._stopping
            else ("before it was ready" if not w.ready else "unexpectedly")
        )
        message = f"{w.name} {how} {when}"
        self._failures.append(message)
        if self._stopping:
            _LOGGER.error("%s", message)
        else:
            _LOGGER.error("%s; stopping the other workers and exiting", message)
            self._stop_workers()

    def _stop_stragglers(self) -> None:
        """Only after an error in the parent itself: make sure no worker outlives it."""
        live = [w for w in self._workers if not w.exited]
        if not live:
            return
        for w in live:
            w.signal(signal.SIGTERM)
        deadline = time.monotonic() + self._options.shutdown_grace_period + KILL_MARGIN
        for w in live:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.exitcode is None:
                w.signal(signal.SIGKILL)
                w.process.join()
            w.exited = True
        for w in self._workers:
            if w.conn is not None:
                w.conn.close()
                w.conn = None

    def _report(self) -> None:
        calls = ", ".join(f"{w.process.pid}: {self._board.calls[w.index]}" for w in self._workers)
        _LOGGER.info("calls served per process (pid: calls): %s", calls)
        if self._failures:
            raise WorkerExitedError("; ".join(self._failures))


# ---------------------------------------------------------------------------------------
# In the worker process


class _Report:
    """The worker's end of its pipe to the parent; safe to use from any thread."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._broken = False

    def send(self, kind: str, payload: Any = None) -> bool:
        with self._lock:
            if self._broken:
                return False
            try:
                self._conn.send((kind, payload))
            except (OSError, ValueError):
                self._broken = True  # the parent is gone
                return False
            return True


class Reports(Protocol):
    """Sends a message to the parent: ``send(kind, payload)``, False once it is gone."""

    def send(self, kind: str, payload: Any = None) -> bool: ...


def relay_logs(report: Reports, level: int) -> None:
    """In a worker: send the ``pynumaflow`` logger's records to the parent's logging."""
    logger = logging.getLogger("pynumaflow")
    logger.handlers[:] = [_ToParent(report)]
    logger.setLevel(level)
    logger.propagate = False


def handle_relayed(payload: Dict[str, Any]) -> None:
    """In the parent: hand a record a worker relayed to the parent's own logging."""
    record = logging.makeLogRecord(payload)
    logging.getLogger(record.name).handle(record)


class _ToParent(logging.Handler):
    """Relays log records to the parent, which hands them to its own handlers."""

    def __init__(self, report: Reports) -> None:
        super().__init__()
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        try:
            attrs = dict(vars(record))
            attrs["msg"] = record.getMessage()
            attrs["args"] = None
            if record.exc_info:
                attrs["exc_text"] = logging.Formatter().formatException(record.exc_info)
            attrs["exc_info"] = None
            if not self._report.send("log", attrs) and logging.lastResort is not None:
                logging.lastResort.handle(record)  # the parent is gone: say it here
        except Exception:
            self.handleError(record)


class _CountedService:
    """Counts the calls of a service (not the IsReady probes) on the load board."""

    def __init__(self, service: Service, board: LoadBoard, index: int) -> None:
        self._service = service
        self._board = board
        self._index = index

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return {
            path: spec if path.endswith("/IsReady") else spec._replace(func=self._count(spec.func))
            for path, spec in self._service.__mapping__().items()
        }

    def _count(
        self, method: Callable[[grpclib.server.Stream[Any, Any]], Any]
    ) -> Callable[[grpclib.server.Stream[Any, Any]], Any]:
        async def counted(stream: grpclib.server.Stream[Any, Any]) -> None:
            self._board.calls[self._index] += 1
            await method(stream)

        return counted


def _worker_main(
    services: ServicesFactory,
    options: ProcessOptions,
    index: int,
    sock: socket.socket,
    board: LoadBoard,
    conn: Connection,
    log_level: int,
) -> None:
    # Only the parent gets terminal and init-system signals (e.g. Ctrl-C, or dumb-init
    # signalling the whole group): a worker also hit directly would take the parent's
    # forwarded SIGTERM as a second signal and skip the drain.
    with contextlib.suppress(OSError):  # then it stays in the parent's group: still works
        os.setpgid(0, 0)
    report = _Report(conn)
    relay_logs(report, log_level)
    asyncio.run(_serve_worker(services, options, index, sock, board, conn, report))


async def _serve_worker(
    services: ServicesFactory,
    options: ProcessOptions,
    index: int,
    sock: socket.socket,
    board: LoadBoard,
    conn: Connection,
    report: _Report,
) -> None:
    loop = asyncio.get_running_loop()
    serving = services(options.max_threads)
    listener = BalancedListener(
        sock,
        board,
        index,
        label=f"{options.address} (worker {index} of {options.processes}, pid {os.getpid()})",
        on_start=functools.partial(report.send, "ready"),
    )
    endpoint = Endpoint(
        None, None, [_CountedService(s, board, index) for s in serving.services], listener=listener
    )
    core = ServerCore(
        [endpoint],
        max_message_size=options.max_message_size,
        shutdown_grace_period=options.shutdown_grace_period,
        on_close=serving.on_close,
        pool_stalled=serving.pool_stalled,
    )

    def parent_gone() -> None:
        # The parent never writes to this pipe: it turns readable at end of file only.
        loop.remove_reader(conn.fileno())
        _LOGGER.warning("worker %d: the parent process is gone; stopping", index)
        core.request_stop()

    loop.add_reader(conn.fileno(), parent_gone)
    try:
        await core.serve()
    finally:
        loop.remove_reader(conn.fileno())
