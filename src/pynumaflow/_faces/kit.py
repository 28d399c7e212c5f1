"""The test kit's serving of one face: in the caller's process, or with worker processes.

With ``processes`` the face's v1 endpoints (the same sockets and server-info files, in
the kit's folder) are served as the multi-process servers serve them
(:func:`~pynumaflow._faces.multiproc.dealt_core`): each bidi stream's requests (map.v1,
map stream, sourcetransformer.v1) dealt to the workers, the rest (reduce, sink) answered
by the calling process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Optional

from pynumaflow._core.options import _positive_int
from pynumaflow._faces.facade import Facade
from pynumaflow._faces.multiproc import check_importable, dealt_core, worker_threads

__all__ = ["running"]


@contextlib.asynccontextmanager
async def running(
    face: Facade, processes: Optional[int], max_threads: Optional[int]
) -> AsyncIterator[None]:
    """Serve ``face`` in the running event loop until the block exits.

    Without ``processes``, in this process (``face.running()``); with it, with that many
    worker processes, each importing the handlers by name and running sync ones on
    ``max_threads`` threads (default 1). Leaving the block, however it is left, drains
    the server and stops and waits for every worker (killed past the grace period).

    Raises:
        ValueError: ``processes`` is not a positive int, or the face serves the legacy
            protocol (multi-process serving is v1 only here).
        TypeError: a handler cannot be imported by name in a worker; raised before any
            worker starts.
        WorkerExitedError: at the exit of the block, a worker had ended unasked (its
            streams failed ``UNAVAILABLE``, as in a pod).

    """
    if processes is None:
        async with face.running():
            yield
        return
    count = _positive_int("processes", processes)
    if face._serves_legacy():
        raise ValueError(
            "processes= serves the v1 protocols (Numaflow >= 1.4) only: a worker answers "
            "the requests of a map.v1 or sourcetransformer.v1 stream. Use protocol='v1' "
            "(the default)"
        )
    check_importable(face, f"processes={count}")
    threads = worker_threads(face, max_threads)
    async with dealt_core(face, count, threads) as core, core.running():
        yield
