"""The sink server facades: Sink (blocking start) and AsyncSink (awaitable start)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Optional

from pynumaflow._faces.facade import Facade
from pynumaflow._faces.kinds import SINK_SERVER

__all__ = ["AsyncSink", "Sink"]


class _SinkServer(Facade):
    """Serves a user-defined sink; see :class:`Sink` for the arguments."""

    family = SINK_SERVER

    def __init__(
        self,
        sink_handler: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        *,
        server_info_file: Optional[str] = None,
        shutdown_grace_period: Optional[float] = None,
        protocols: Optional[Iterable[str]] = None,
    ) -> None:
        self._configure(
            {"sink_handler": sink_handler},
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=protocols,
        )


class Sink(_SinkServer):
    """Serves a user-defined sink; :meth:`start` blocks until shutdown.

    The handler gets the datums of a batch as they arrive and returns one
    :class:`~pynumaflow.sink.Response` per datum. A sync handler
    (``def h(datums: Iterator[Datum]) -> Responses``) runs in a bounded thread pool
    (``max_threads``, default ``$MAX_THREADS`` or 4 x CPUs); an async one
    (``async def h(datums: AsyncIterable[Datum]) -> Responses``) runs on the event loop.

    Every datum gets exactly one response, in the order received:

    - a datum the handler did not answer is reported as failed;
    - if the handler answers an id twice, the first answer counts (the rest are logged);
    - answers for ids that were not in the batch are dropped with a warning;
    - if the handler raises, or returns something other than Responses, every datum of
      the batch (including those not yet consumed) is reported as failed with the error
      text, and the platform retries them.

    Args:
        sink_handler: the handler, sync or async.
        sock_path: the Unix socket (default ``/var/run/numaflow/udsink.sock``, or
            ``udsink.sock`` in ``$PYNUMAFLOW_RUN_DIR``).
        max_message_size: largest request or response in bytes (default 64 MiB).
        max_threads: size of the sync handler pool.
        server_info_file: where the server-info handshake is written.
        shutdown_grace_period: seconds calls in flight get to finish on SIGTERM (default 5).
        protocols: the protocol generations to serve, ``"legacy"`` (udsink.sock, Numaflow
            0.8-0.9) and/or ``"v1"`` (sink.sock, fb-sink.sock or ons-sink.sock by
            ``$NUMAFLOW_UD_CONTAINER_TYPE``: Numaflow >= 1.4); default
            ``$PYNUMAFLOW_PROTOCOLS`` or both. With ``$NUMAFLOW_UD_CONTAINER_TYPE`` set
            (Numaflow >= 1.2 sets it) only that v1 socket is served, no legacy one.

    Raises:
        TypeError: the handler is not callable or cannot take one argument.
        ValueError: an option is out of range.

    """

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        self._serve_blocking()


class AsyncSink(_SinkServer):
    """Serves a user-defined sink from a running event loop: ``await sink.start()``.

    Takes the same arguments, and answers by the same rules, as :class:`Sink`. Run it
    with ``aiorun.run(sink.start())`` or ``asyncio.run(sink.start())``.
    """

    async def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        await self._serve_async()
