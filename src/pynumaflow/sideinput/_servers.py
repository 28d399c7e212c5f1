"""The side-input retriever server: SideInputServer (pynumaflow 0.14.0 API)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from pynumaflow._faces.facade import Facade
from pynumaflow._faces.kinds import SIDE_INPUT_SERVER
from pynumaflow._types.sideinput import SIDE_INPUT_DIR_PATH, SideInput

__all__ = ["SideInputServer"]


class SideInputServer(Facade):
    """Serves a side-input retriever on sideinput.sock (Numaflow >= 1.4); :meth:`start` blocks.

    The platform's side-input manager calls the retriever once at start and then on the
    side input's schedule. A :class:`~pynumaflow.sideinput.SideInput` (its
    ``retrieve_handler``) or a plain function ``() -> Response``; sync ones run in the
    handler pool, ``async def`` ones on the event loop. A retriever that raises fails
    that call ``INTERNAL`` (logged once) and the server keeps serving: the manager
    stores nothing and asks again at its next tick. (pynumaflow 0.14.0 stops its server
    after the first error.)

    Args:
        side_input_instance: the retriever.
        sock_path: its Unix socket (default ``/var/run/numaflow/sideinput.sock``, or
            ``sideinput.sock`` in ``$PYNUMAFLOW_RUN_DIR``).
        max_message_size: largest response in bytes (default 64 MiB; the Rust manager of
            Numaflow 1.6+ may accept only 4 MiB).
        max_threads: size of the pool for a sync retriever.
        side_input_dir_path: accepted for 0.14.0 compatibility; a retriever does not use
            it (see :class:`~pynumaflow.sideinput.SideInputWatcher` for the vertices' side).
        server_info_file: where the server-info file is written.
        shutdown_grace_period: seconds calls in flight get to finish on SIGTERM (default 5).

    Raises:
        TypeError: the retriever is not callable or takes parameters.
        ValueError: an option is out of range.

    """

    family = SIDE_INPUT_SERVER

    def __init__(
        self,
        side_input_instance: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        side_input_dir_path: str = SIDE_INPUT_DIR_PATH,
        server_info_file: Optional[str] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self.side_input_dir_path = side_input_dir_path
        handler = (
            side_input_instance.retrieve_handler
            if isinstance(side_input_instance, SideInput)
            else side_input_instance
        )
        self._configure(
            {"side_input_instance": handler},
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_grace_period=shutdown_grace_period,
            protocols=None,
        )

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        self._serve_blocking()

    async def aexec(self) -> None:
        """Serve from a running event loop until SIGTERM or SIGINT, then drain."""
        await self._serve_async()
