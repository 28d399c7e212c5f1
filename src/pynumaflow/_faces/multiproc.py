"""A face's v1 endpoints in several processes: the parent keeps the sockets, workers answer.

The parent serves exactly the endpoints the face would serve in one process (the same
sockets, server-info files and metadata, as the kind table says for the container's
role), but each bidi RPC with a ``conversation`` (map.v1, map stream, sourcetransformer.v1)
is dealt to worker processes (:class:`~pynumaflow._engines.dealt.Dealer`); the rest
(e.g. reduce) is served by the parent itself. Each worker builds the face's services
with an invoker of its own and answers what it is dealt
(:class:`~pynumaflow._engines.dealt.Answering`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator
from typing import Optional

from pynumaflow import __version__
from pynumaflow._core.multiproc import refuse_in_worker
from pynumaflow._core.options import CONTAINER_TYPE_ENV, _positive_int, process_count
from pynumaflow._core.server import ServerCore
from pynumaflow._core.spawned import names_missing_in_workers
from pynumaflow._core.workers import Link, Workers
from pynumaflow._engines.dealt import Answering, Conversation, Dealer
from pynumaflow._faces.facade import Facade
from pynumaflow._invoke import Invoker

__all__ = [
    "InWorkers",
    "check_importable",
    "dealt_core",
    "serve_in_workers",
    "serve_in_workers_async",
    "worker_threads",
]

_LOGGER = logging.getLogger("pynumaflow")


def check_importable(face: Facade, owner: str) -> None:
    """Raise TypeError unless a spawned worker can import every handler of ``face`` by name.

    Worker processes are spawned: they import each handler by its module and name, and
    run the main script under another name (its ``if __name__ == "__main__":`` block
    does not run there).
    """
    for handler in face._handlers.values():
        try:
            missing, script = names_missing_in_workers(handler.func)
        except Exception as err:
            raise TypeError(
                f"{handler.name} must be importable by name for {owner} (a function "
                f"defined at the top level of a module or script, not a lambda or a nested "
                f"function): its worker processes import it. Pickling failed: {err}"
            ) from None
        if missing:
            where = (
                f'inside the `if __name__ == "__main__":` block of {script}, which its '
                "worker processes do not run"
                if script is not None
                else "in a main script that has no file (python -c, a prompt), which its "
                "worker processes cannot import"
            )
            raise TypeError(
                f"{handler.name} must be importable by name for {owner}: "
                f"{', '.join(missing)} is defined {where}. Define it at the top level of "
                "a module or of the script"
            )


def worker_threads(face: Facade, max_threads: Optional[int]) -> int:
    """A worker's sync handler pool: 1 thread unless asked for (max_threads, $MAX_THREADS).

    CPU-bound handlers gain nothing from more, and lose CPU to GIL hand-offs on a busy
    machine (benchmarks/RESULTS.md).
    """
    explicit = max_threads is not None or bool(os.environ.get("MAX_THREADS", "").strip())
    return face._options.max_threads if explicit else 1


def _answering(face: Facade, link: Link, max_threads: int) -> Answering:
    """In a worker: the face's conversations, answered with an invoker of its own."""
    invoker = Invoker(max_threads)
    conversations = {}
    for endpoint in face._endpoints(invoker):
        for service in endpoint.services:
            conversation: Optional[Conversation] = getattr(service, "conversation", None)
            if conversation is not None:
                conversations[conversation.path] = conversation
    return Answering(link, conversations, invoker.shutdown)


def serve_in_workers(face: Facade, processes: int, max_threads: Optional[int] = None) -> None:
    """Serve ``face``'s endpoints with ``processes`` workers until SIGTERM/SIGINT; block.

    ``face`` is pickled to every worker (with its handlers, by reference). Each worker's
    sync handler pool has ``max_threads`` threads (default: the face's option).

    Raises:
        WorkerExitedError: a worker ended unasked; the others were stopped.
        RuntimeError: called while a worker imports the main script.

    """
    refuse_in_worker()
    asyncio.run(_serve(face, processes, max_threads or face._options.max_threads))


async def serve_in_workers_async(
    face: Facade, processes: int, max_threads: Optional[int] = None
) -> None:
    """:func:`serve_in_workers` from a running event loop (in the main thread)."""
    refuse_in_worker()
    await _serve(face, processes, max_threads or face._options.max_threads)


async def _serve(face: Facade, processes: int, max_threads: int) -> None:
    async with dealt_core(face, processes, max_threads) as core:
        await core.serve()


@contextlib.asynccontextmanager
async def dealt_core(face: Facade, processes: int, max_threads: int) -> AsyncIterator[ServerCore]:
    """Start ``processes`` workers for ``face``; the core dealing to them (not started yet).

    Leaving the block stops every worker, after the core (whose ``request_stop`` a dead
    worker calls).

    Raises:
        WorkerExitedError: at the exit, a worker ended unasked (the others were stopped).

    """
    options = face._options
    workers = Workers(
        functools.partial(_answering, face),
        processes,
        max_threads=max_threads,
        shutdown_grace_period=options.shutdown_grace_period,
    )
    core: Optional[ServerCore] = None

    def stop_core() -> None:
        if core is not None:
            core.request_stop()

    dealer = Dealer(workers, stop_core)
    role = options.container_type
    _LOGGER.info(
        "pynumaflow %s starting %s: %s, requests dealt to %d worker process(es), sync "
        "handlers on up to %d threads in each",
        __version__,
        type(face).__name__,
        f"{CONTAINER_TYPE_ENV}={role}" if role else f"{CONTAINER_TYPE_ENV} unset",
        processes,
        max_threads,
    )
    for note in face._notes():
        _LOGGER.warning("%s", note)
    await workers.start()
    invoker = Invoker(options.max_threads)  # the parent's own: for what is not dealt
    try:
        endpoints = [
            dataclasses.replace(e, services=[dealer.service(s) for s in e.services])
            for e in face._endpoints(invoker)
        ]
        core = ServerCore(
            endpoints,
            max_message_size=options.max_message_size,
            shutdown_grace_period=options.shutdown_grace_period,
            on_close=invoker.shutdown,
            pool_stalled=invoker.stalled,
        )
        yield core
    finally:
        pids, served = workers.pids, dealer.served
        counts = ", ".join(f"{pids[i]}: {served[i]}" for i in range(len(pids)))
        _LOGGER.info("requests answered per process (pid: requests): %s", counts)
        await workers.stop()


class InWorkers(Facade):
    """A face whose v1 endpoints are served from worker processes (the modern API's).

    With one process it serves as the face alone would, in the calling process.
    """

    _processes = 1
    _worker_threads = 1

    def _use_workers(self, processes: Optional[int], max_threads: Optional[int]) -> None:
        """Check the handlers pickle; take the process count (default :func:`process_count`).

        Raises:
            TypeError: a handler cannot be imported by name in a worker.
            ValueError: ``processes`` or the process count variable is not positive.

        """
        check_importable(self, type(self).__name__)
        if processes is None:
            self._processes = process_count()
        else:
            self._processes = _positive_int("server_count", processes)
        self._worker_threads = worker_threads(self, max_threads)

    @property
    def process_count(self) -> int:
        """How many worker processes serve the requests (1: the server process itself)."""
        return self._processes

    async def _serve_async(self) -> None:
        if self._processes == 1:
            await super()._serve_async()
        else:
            await serve_in_workers_async(self, self._processes, self._worker_threads)
