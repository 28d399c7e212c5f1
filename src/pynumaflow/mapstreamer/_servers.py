"""The map stream servers of the modern API: MapStreamAsyncServer and MapStreamServer."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from pynumaflow._faces.kinds import MAP_STREAM, MAP_STREAMER, Family
from pynumaflow._faces.modern import ModernServer

__all__ = ["MapStreamAsyncServer", "MapStreamServer"]


class MapStreamAsyncServer(ModernServer):
    """Serves a map stream handler on map.v1 stream mode (``mapstream.sock``).

    Each message is sent as soon as it is yielded. ``start()`` blocks until shutdown;
    ``await aexec()`` serves from a running loop. Arguments as
    :class:`pynumaflow.mapper.MapAsyncServer` (server-info file ``mapper-server-info``).
    """

    family: ClassVar[Family] = MAP_STREAMER

    def __init__(
        self,
        map_stream_instance: Callable[..., Any],
        sock_path: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_threads: Optional[int] = None,
        server_info_file: Optional[str] = None,
        shutdown_callback: Optional[Callable[..., Any]] = None,
        *,
        shutdown_grace_period: Optional[float] = None,
    ) -> None:
        self._setup(
            MAP_STREAM,
            map_stream_instance,
            sock_path=sock_path,
            max_message_size=max_message_size,
            max_threads=max_threads,
            server_info_file=server_info_file,
            shutdown_callback=shutdown_callback,
            shutdown_grace_period=shutdown_grace_period,
        )


class MapStreamServer(MapStreamAsyncServer):
    """:class:`MapStreamAsyncServer` under the name of a sync server (not in 0.14.0).

    Both take sync generators (run in the thread pool) and async generators alike.
    """
