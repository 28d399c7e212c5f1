"""Serving in the test's loop: temporary folders, the local-run environment, servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple

from anyio.from_thread import BlockingPortal

from pynumaflow._client.legacy import Connection
from pynumaflow._client.v1 import V1Connection
from pynumaflow._core.options import CONTAINER_TYPE_ENV, LEGACY, V1
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import Family, Kind
from pynumaflow._faces.kit import running
from pynumaflow._types.function import Datum
from pynumaflow._types.modern import _HandlerClass
from pynumaflow.mapper._servers import MapAsyncServer
from pynumaflow.mapstreamer._servers import MapStreamAsyncServer
from pynumaflow.reducer._servers import ReduceAsyncServer
from pynumaflow.sinker._servers import SinkAsyncServer
from pynumaflow.sourcetransformer._servers import SourceTransformAsyncServer
from pynumaflow.testing._backends import (
    _V1,
    _Backend,
    _Legacy,
)
from pynumaflow.testing._data import make_datum

AnyHandler = Optional[Callable[..., Any]]
_CALL_TIMEOUT = 60.0
ProtocolName = Literal["v1", "legacy"]
"""The protocol generation the client speaks (see the module docstring)."""
_DEFAULT_PROTOCOL: ProtocolName = "v1"


@contextlib.contextmanager
def _socket_dir() -> Iterator[Path]:
    # A short folder of its own: Unix socket paths are limited to about 100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pnf-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_ENVIRONMENT = threading.Lock()


@contextlib.contextmanager
def _local_run() -> Iterator[None]:
    """Build a v1 server as for a local run, whatever ``$NUMAFLOW_UD_CONTAINER_TYPE`` says.

    A container type limits a server to its role's sockets (a sink's pod would serve no
    map): the kit, which may run inside a pod, is no pod itself. The server reads the
    variable once, when it is built.
    """
    with _ENVIRONMENT:
        saved = os.environ.pop(CONTAINER_TYPE_ENV, None)
        try:
            yield
        finally:
            if saved is not None:
                os.environ[CONTAINER_TYPE_ENV] = saved


def _check_protocol(protocol: str) -> None:
    if protocol not in (V1, LEGACY):
        raise ValueError(f"protocol must be 'v1' or 'legacy', got {protocol!r}")


def _sock_path(folder: Path, family: Family) -> str:
    # The legacy socket's folder is where the v1 sockets go too.
    assert family.legacy is not None
    return str(folder / family.legacy.sock_name)


def _is_modern(handler: object) -> bool:
    """A handler of the modern API's classes (an instance, or a ``Reducer`` class)."""
    return isinstance(handler, _HandlerClass) or (
        isinstance(handler, type) and issubclass(handler, _HandlerClass)
    )


# The modern API's async server of each kind.
_MODERN_SERVERS: Dict[str, Callable[..., Any]] = {
    kinds.MAP.name: MapAsyncServer,
    kinds.MAP_STREAM.name: MapStreamAsyncServer,
    kinds.MAPT.name: SourceTransformAsyncServer,
    kinds.REDUCE.name: ReduceAsyncServer,
    kinds.SINK.name: SinkAsyncServer,
}


def _modern_server(
    family: Family, group: Mapping[str, AnyHandler], folder: Path, max_threads: Optional[int]
) -> Any:
    ((keyword, handler),) = group.items()
    kind = next(k for k in family.kinds if k.keyword == keyword)
    assert kind.v1 is not None
    socket = kind.v1.sockets[0]
    return _MODERN_SERVERS[kind.name](
        handler,
        sock_path=str(folder / socket.sock),
        max_threads=max_threads,
        server_info_file=str(folder / socket.info),
    )


@contextlib.asynccontextmanager
async def _serve(
    family: Family,
    handlers: Mapping[str, AnyHandler],
    protocol: str,
    call_timeout: Optional[float],
    start: Callable[[Mapping[str, AnyHandler], Path], Any],
    max_threads: Optional[int],
    processes: Optional[int] = None,
) -> AsyncIterator[_Backend]:
    """Serve ``handlers`` (by keyword) with ``start``; a backend calling them.

    A modern class handler (a ``Mapper`` & co. instance, or a ``Reducer`` class) is
    served by its modern server, which serves v1 only, as in a deployment.
    """
    _check_protocol(protocol)
    async with contextlib.AsyncExitStack() as stack:
        folder = stack.enter_context(_socket_dir())
        given = {k: h for k, h in handlers.items() if h is not None}
        modern = {k: h for k, h in given.items() if _is_modern(h)}
        if modern and protocol == LEGACY:
            raise ValueError(
                f"{', '.join(modern)}: the modern API's handlers are served on v1 only "
                "(Numaflow >= 1.4): use protocol='v1' (the default)"
            )
        if protocol == LEGACY:
            server = start(handlers, folder)
            await stack.enter_async_context(running(server, processes, max_threads))
            connection = stack.enter_context(Connection(server.sock_path, call_timeout))
            assert family.legacy is not None
            yield _Legacy(connection, family.legacy.service_name)
            return
        # v1 announces one MAP_MODE per server: map stream gets a server of its own.
        plain = {k: h for k, h in given.items() if k not in modern}
        groups = [plain] if plain or not modern else []
        stream_keyword = kinds.MAP_STREAM.keyword
        if kinds.MAP.keyword in plain and stream_keyword in plain:
            groups = [
                {k: h for k, h in plain.items() if k != stream_keyword},
                {stream_keyword: plain[stream_keyword]},
            ]
        groups += [{keyword: handler} for keyword, handler in modern.items()]
        connections: Dict[str, V1Connection] = {}
        for n, group in enumerate(groups):
            place = folder / str(n)
            place.mkdir()
            with _local_run():
                server = (
                    _modern_server(family, group, place, max_threads)
                    if set(group) <= set(modern)
                    else start(group, place)
                )
            await stack.enter_async_context(running(server, processes, max_threads))
            for kind in family.kinds:
                if kind.keyword in group and kind.v1 is not None:
                    sock = str(place / kind.v1.sockets[0].sock)
                    connections[kind.name] = await stack.enter_async_context(
                        V1Connection(sock, call_timeout)
                    )
        yield _V1(connections)


def _fields(arguments: Dict[str, Any]) -> Dict[str, Any]:
    """A sync method's arguments, for the async method it wraps."""
    return {k: v for k, v in arguments.items() if k not in ("self", "fields")}


def _v1_files(folder: Path, kind: Kind) -> Tuple[str, str]:
    assert kind.v1 is not None
    socket = kind.v1.sockets[0]
    return str(folder / socket.sock), str(folder / socket.info)


@contextlib.asynccontextmanager
async def _serve_v1(
    kind: Kind, build: Callable[[str, str], Any], call_timeout: Optional[float]
) -> AsyncIterator[V1Connection]:
    """Serve what ``build(sock, info)`` makes for ``kind``; a connection to its socket."""
    with _socket_dir() as folder:
        sock, info = _v1_files(folder, kind)
        with _local_run():
            server = build(sock, info)
        async with server.running(), V1Connection(sock, call_timeout) as connection:
            yield connection


def _datums(
    items: Iterable[Any], keys: Optional[Sequence[str]], headers: Optional[Mapping[str, str]]
) -> List[Datum]:
    """Values (their ids ``"1"``, ``"2"``... in order, given keys and headers) or Datums."""
    return [
        item if isinstance(item, Datum) else make_datum(item, keys, msg_id=str(n), headers=headers)
        for n, item in enumerate(items, 1)
    ]


class _SyncClient:
    """A sync client: each call runs the async client's on the server's loop, and waits."""

    def __init__(self, client: Any, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        result: bool = self._portal.call(self._client.is_ready)
        return result
