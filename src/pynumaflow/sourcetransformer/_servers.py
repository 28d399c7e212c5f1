"""The source transformer servers of the modern API."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from pynumaflow._faces.kinds import MAPT, SOURCE_TRANSFORMER, Family
from pynumaflow._faces.modern import ModernServer
from pynumaflow._faces.multiproc import InWorkers

__all__ = [
    "SourceTransformAsyncServer",
    "SourceTransformMultiProcServer",
    "SourceTransformServer",
]


class SourceTransformServer(ModernServer):
    """Serves a source transformer on sourcetransformer.v1 (``sourcetransform.sock``).

    ``start()`` blocks until shutdown. Arguments as :class:`pynumaflow.mapper.MapServer`
    (server-info file ``sourcetransformer-server-info``).
    """

    family: ClassVar[Family] = SOURCE_TRANSFORMER

    def __init__(
        self,
        source_transform_instance: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., Any]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._setup(
            MAPT,
            source_transform_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
        )


class SourceTransformAsyncServer(SourceTransformServer):
    """:class:`SourceTransformServer` for ``async def`` handlers (either works in either)."""


class SourceTransformMultiProcServer(InWorkers, SourceTransformServer):
    """:class:`SourceTransformServer` answered by ``server_count`` worker processes.

    The requests of each sourcetransformer.v1 stream on the one
    ``sourcetransform.sock`` are dealt to the workers, as
    :class:`pynumaflow.mapper.MapMultiprocServer` does for map.v1 (same arguments,
    defaults and rules for the handler).
    """

    def __init__(
        self,
        source_transform_instance: Callable[..., Any],
        server_count: Optional[int] = None,
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        super().__init__(
            source_transform_instance,
            sock_path,
            max_message_size,
            max_threads,
            server_info_file,
            shutdown_grace_period=shutdown_grace_period,
        )
        self._use_workers(server_count, max_threads)
