"""MultiProcServer: the function server in several processes, for CPU-bound sync handlers."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Optional, Union

from pynumaflow._core.multiproc import ProcessOptions, Serving, serve_in_processes
from pynumaflow._core.options import process_count
from pynumaflow._faces.kinds import FUNCTION
from pynumaflow._faces.multiproc import check_importable, serve_in_workers, worker_threads
from pynumaflow._invoke import Handler, Invoker
from pynumaflow.function._servers import AnyHandler, _FunctionServer

__all__ = ["MultiProcServer"]

DEFAULT_HOST = "0.0.0.0"  # the platform dials 0.0.0.0:55551 from its own container
DEFAULT_PORT = 55551


def _function_services(handlers: Mapping[str, Handler], max_threads: int) -> Serving:
    assert FUNCTION.legacy is not None  # function.v1 is what MultiProcServer serves
    invoker = Invoker(max_threads)
    return Serving([FUNCTION.legacy.service(handlers, invoker)], invoker.shutdown, invoker.stalled)


def _port(sock_path: Union[int, str, None], port: Optional[int]) -> int:
    if isinstance(sock_path, str):
        raise TypeError(
            "MultiProcServer listens on TCP, not on a Unix socket: sock_path is the TCP port "
            "(as in pynumaflow 0.4); give the port as port=..."
        )
    if sock_path is not None and port is not None:
        raise ValueError("give the port once: sock_path (the 0.4 spelling) or port")
    value = port if port is not None else sock_path if sock_path is not None else DEFAULT_PORT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"port must be an int from 1 to 65535, got {value!r}")
    return value


class MultiProcServer(_FunctionServer):
    """Serves user-defined functions from several processes; :meth:`start` blocks.

    For CPU-bound sync handlers, which threads cannot run in parallel. It runs N worker
    processes (``$NUM_CPU_MULTIPROC``, else ``$NUMAFLOW_CPU_LIMIT``, else 1, read when
    the server is constructed), each running the same handlers with the same invoker as
    :class:`Server`, in one of two modes (:attr:`legacy_tcp`):

    - **v1** (Numaflow >= 1.4: the container has a ``$NUMAFLOW_UD_CONTAINER_TYPE``, or
      ``protocols=["v1"]``): the parent serves the one socket the platform dials for
      the container's role (map.sock, mapstream.sock or sourcetransform.sock, with the
      same server-info file as :class:`Server`) and deals the requests of each stream to
      the worker with the fewest in progress; the workers answer, the parent sends the
      answers as they come. Reduce, if given, is served by the parent alone.
    - **legacy TCP** (Numaflow 0.8-0.9: no role, legacy protocol asked for, the default
      then), as pynumaflow 0.4: the workers share one TCP listening socket on
      ``0.0.0.0:55551``; server-info says ``"protocol": "tcp"`` with metadata
      ``CPU_LIMIT`` = the process count, so the platform opens that many connections
      and round-robins calls over them. Each process accepts a connection only while
      it holds no more than any other, so each serves 1/N of the calls.

    Worker processes are started with the "spawn" method: each imports the handlers
    afresh. Define handlers at the top level of a module or of the script (not inside
    the ``if __name__ == "__main__":`` block, not as lambdas), and start the server
    inside that block: the script is imported again in each worker, under another name.

    SIGTERM or SIGINT to the parent drains every worker (requests in flight get the
    grace period), removes the server-info file and returns. If a worker process dies,
    the error is logged with its exit code, its streams fail ``UNAVAILABLE`` (v1), the
    other workers are drained, and :meth:`start` raises ``WorkerExitedError`` (so the
    process exits non-zero and the pod restarts) rather than serving on fewer
    processes. Log records of the ``pynumaflow`` logger in workers reach the parent's
    logging.

    Args:
        map_handler: ``h(keys, datum) -> Messages``.
        map_stream_handler: a generator ``h(keys, datum)`` yielding ``Message``.
        mapt_handler: ``h(keys, datum) -> MessageTs``.
        reduce_handler: ``h(keys, datums, md) -> Messages``; each window's stream is
            served by one process.
        sock_path: the TCP port, as in pynumaflow 0.4 (a Unix socket path is refused).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of each process's sync handler pool (default ``$MAX_THREADS``,
            else in v1 mode 1, in legacy TCP mode 4 x CPUs). Give more for sync
            handlers that wait on I/O.
        server_info_file: where the server-info handshake is written.
        shutdown_grace_period: seconds calls in flight get to finish on SIGTERM (default 5).
        host: the address to listen on in legacy TCP mode (default ``0.0.0.0``).
        port: the TCP port in legacy TCP mode (default 55551, where the platform dials).
        protocols: as for :class:`Server`; it picks the mode (see above).
        map_mode: as for :class:`Server` (v1 mode, both map handlers given).

    Raises:
        ValueError: no handler was given, or an option or the process count variable is
            out of range.
        TypeError: a handler is not callable, has the wrong number of parameters, or
            cannot be imported by name in the worker processes.

    """

    def __init__(
        self,
        map_handler: AnyHandler = None,
        map_stream_handler: AnyHandler = None,
        mapt_handler: AnyHandler = None,
        reduce_handler: AnyHandler = None,
        sock_path: Union[int, str, None] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        *,
        server_info_file: Optional[str] = None,
        shutdown_grace_period: Optional[float] = None,
        host: str = DEFAULT_HOST,
        port: Optional[int] = None,
        protocols: Optional[Iterable[str]] = None,
        map_mode: Optional[str] = None,
    ) -> None:
        self._configure_function(
            map_handler=map_handler,
            mapt_handler=mapt_handler,
            map_stream_handler=map_stream_handler,
            reduce_handler=reduce_handler,
            sock_path=None,  # the legacy socket is TCP here (sock_path is its port)
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
            map_mode=map_mode,
        )
        check_importable(self, type(self).__name__)
        self._worker_threads = worker_threads(self, max_threads)
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, got {host!r}")
        common = self._options
        assert common.server_info_file is not None  # defaulted by the family's sock_name
        self._process_options = ProcessOptions(
            host=host,
            port=_port(sock_path, port),
            processes=process_count(),
            server_info_file=common.server_info_file,
            max_message_size=common.max_message_size,
            max_threads=common.max_threads,
            shutdown_grace_period=common.shutdown_grace_period,
        )

    @property
    def process_count(self) -> int:
        """How many worker processes :meth:`start` runs."""
        return self._process_options.processes

    @property
    def address(self) -> str:
        """The TCP address the workers listen on, ``host:port``."""
        return self._process_options.address

    @property
    def legacy_tcp(self) -> bool:
        """Whether :meth:`start` serves the legacy TCP mode (else map.v1 on one socket).

        Legacy (Numaflow 0.8-0.9) when the legacy protocol is asked for and no
        ``$NUMAFLOW_UD_CONTAINER_TYPE`` says otherwise (``protocols`` as for
        :class:`Server`); v1 when the container has a role or ``protocols=["v1"]``.
        """
        return self._serves_legacy()

    @property
    def server_info_file(self) -> str:
        """The legacy server-info file written once every worker is listening."""
        return str(self._process_options.server_info_file)

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain every process and return.

        Raises:
            OSError: the address cannot be listened on.
            WorkerExitedError: a worker process ended unasked (the others were stopped);
                a ``RuntimeError``, from :mod:`pynumaflow.errors`.

        """
        if self.legacy_tcp:
            serve_in_processes(
                functools.partial(_function_services, self._handlers), self._process_options
            )
        else:
            serve_in_workers(self, self._process_options.processes, self._worker_threads)
