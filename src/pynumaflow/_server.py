"""The one asyncio server core every facade runs on.

It binds each endpoint's Unix socket (creating the directory, replacing a stale socket
file), or serves the connections an endpoint's own listener accepts; hosts the
endpoint's services on grpclib, writes the server-info file atomically once the socket
accepts connections, and on SIGTERM/SIGINT stops intake, lets calls in flight finish
within a grace period (long-lived v1 streams end as soon as they are idle, see
:class:`IdleDrain`), then hangs up on its clients, closes and removes its files.

Its transport does not trust clients (docs/reliability.md): a request's gRPC framing is
checked before its body is read (:class:`_MessageBuffer`), a stream reset before its
handler started is freed (:class:`_Handler`), a connection that leaves an HTTP/2 frame
unfinished is closed (:data:`FRAME_TIMEOUT`), and every status text is made encodable
(:func:`_wire_safe_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import fcntl
import functools
import json
import logging
import os
import signal
import socket
import stat
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, NoReturn, Optional, Protocol

import anyio
import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.exceptions import GRPCError
from grpclib.protocol import Buffer, H2Protocol
from grpclib.protocol import Stream as H2Stream
from h2.settings import SettingCodes

from pynumaflow import __version__
from pynumaflow._batched_writes import BatchedWrites
from pynumaflow._errors import CodecError
from pynumaflow._h2streams import frame_pending, remember_resets_only
from pynumaflow._rpc import SERVICES, encode_status
from pynumaflow._wire import check_message, wire_safe

__all__ = [
    "SHUTTING_DOWN",
    "Endpoint",
    "IdleDrain",
    "Listener",
    "ServerCore",
    "Service",
    "SocketPathError",
    "draining",
    "is_ready_method",
    "service_mapping",
    "write_server_info",
]

_LOGGER = logging.getLogger("pynumaflow")

SERVER_INFO_END = "U+005C__END__"
# The platform keeps up to ~500 unary calls in flight on one connection; h2 advertises
# 100 concurrent streams unless told otherwise, and grpclib leaves that as it is.
MAX_CONCURRENT_STREAMS = 1024
SOCKET_MODE = 0o660
SHUTTING_DOWN = "server is shutting down"
"""The details of the UNAVAILABLE status a call refused or cut short by the drain ends with."""
# After the grace period, how long closing connections may take (flushing what is left
# to send) before they are aborted: a client that does not read cannot hold the stop.
_CLOSE_TIMEOUT = 1.0
FRAME_TIMEOUT = 10.0
"""Seconds a connection may leave the HTTP/2 preface or a frame unfinished before it is
closed (a frame taking longer comes from a stalled or hostile client, never the platform)."""


class Service(Protocol):
    """A gRPC service for grpclib: a mapping from method path to handler."""

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]: ...


RpcMethod = Callable[["grpclib.server.Stream[Any, Any]"], Awaitable[None]]


def service_mapping(
    service: str, methods: Mapping[str, RpcMethod]
) -> Dict[str, grpclib.const.Handler]:
    """Build a grpclib mapping for ``service`` (a full name in ``pynumaflow._rpc.SERVICES``).

    ``methods`` implements every RPC of the service by name; each exchanges bytes,
    decoded and encoded by the hand-written codecs (``pynumaflow._codec*``).
    """
    cardinalities = SERVICES[service]
    unknown = set(methods) - set(cardinalities)
    if unknown:
        raise ValueError(f"methods not in the proto service: {sorted(unknown)}")
    # A KeyError here means an RPC of the proto is not implemented.
    return {
        f"/{service}/{name}": grpclib.const.Handler(methods[name], cardinality, bytes, bytes)
        for name, cardinality in cardinalities.items()
    }


NOT_READY = b""
"""``ReadyResponse(ready=False)``: every field at its default."""


def is_ready_method(ready_response: bytes) -> RpcMethod:
    """The IsReady RPC of every service: check the Empty request, answer ``ready_response``.

    It runs on the event loop, never in the handler pool, so it answers while every
    pool thread is busy, and times out while an async handler blocks the loop. While the
    server's handler pool is stalled (:meth:`ServerCore.stalled`) it answers not ready.
    """

    async def is_ready(stream: grpclib.server.Stream[bytes, bytes]) -> None:
        data = await stream.recv_message()
        try:
            check_message(data or b"")
        except CodecError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed Empty: {err}") from None
        core = _CORE.get(None)
        stalled = core is not None and core.stalled()
        await stream.send_message(NOT_READY if stalled else ready_response)

    return is_ready


_CORE: contextvars.ContextVar[ServerCore] = contextvars.ContextVar("pynumaflow_core")


def draining() -> asyncio.Event:
    """An event set once the server running the current call starts to drain.

    A long-lived stream waits on it to end early when finishing would need the client
    (e.g. a reduce window still open), instead of holding the drain for the whole grace
    period. Outside a call served by a :class:`ServerCore` it is never set.
    """
    try:
        return _CORE.get()._drain_started
    except LookupError:
        return asyncio.Event()


class IdleDrain:
    """Ends a long-lived stream promptly when the server drains while it is idle.

    The v1 map, transformer and sink streams stay open for as long as the platform runs
    and are half-closed only when it stops itself, so an idle one would hold the drain
    for the whole grace period. A service reads its client's requests inside
    :meth:`reading` and marks the work it owes the client with :meth:`busy` (a request
    being answered, a batch up to its EOT). Once the server drains while nothing is in
    progress, the reading is cancelled and :meth:`reading` exits quietly; the service
    sends what it still owes, then calls :meth:`check`, which ends the stream
    ``UNAVAILABLE``: the client stopped getting answers because the server stopped, not
    because the conversation was over.
    """

    def __init__(self) -> None:
        self._in_progress = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scope = anyio.CancelScope()

    def begin(self) -> None:
        """One more piece of work is in progress."""
        self._in_progress += 1
        self._idle.clear()

    def end(self) -> None:
        """A piece of work :meth:`begin` announced is done (answered, or abandoned)."""
        self._in_progress -= 1
        if not self._in_progress:
            self._idle.set()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """The block is work in progress: the drain does not cut the stream during it."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """The block reading the client's requests; the drain cancels it while idle."""
        watcher = asyncio.ensure_future(self._cut_when_idle(draining()))
        try:
            with self._scope:
                yield
        finally:
            watcher.cancel()

    def check(self) -> None:
        """Raise ``UNAVAILABLE`` if the drain cut the reading.

        Raises:
            GRPCError: ``UNAVAILABLE`` (:data:`SHUTTING_DOWN`), once the drain cut it.

        """
        if self._scope.cancelled_caught:
            raise GRPCError(Status.UNAVAILABLE, SHUTTING_DOWN)

    async def _cut_when_idle(self, drain: asyncio.Event) -> None:
        await drain.wait()
        while True:
            await self._idle.wait()
            # A request that arrived in the same loop pass as the drain is read first.
            await asyncio.sleep(0)
            if self._idle.is_set():
                break
        self._scope.cancel()


class _Codec(CodecBase):
    """Passes every RPC's raw bytes through (our codecs decode them).

    It refuses a response above the size limit; a request's size is checked from its
    length prefix, before its body is read (:class:`_MessageBuffer`).
    """

    __content_subtype__ = "proto"

    def __init__(self, max_message_size: int) -> None:
        self._max = max_message_size

    def encode(self, message: bytes, message_type: Any) -> bytes:
        if len(message) > self._max:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"response of {len(message)} bytes exceeds max_message_size ({self._max})",
            )
        return message

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


class _StatusDetailsCodec(StatusDetailsCodecBase):
    """Encodes a ``GRPCError``'s details (a traceback text) as google.rpc.Status.

    The v1 platform reads ``grpc-status-details-bin`` as google.rpc.Status whose details
    hold a google.rpc.DebugInfo; the legacy platform ignores the trailer.
    """

    def encode(self, status: Status, message: Optional[str], details: Any) -> bytes:
        return encode_status(status.value, message or "", str(details))

    def decode(self, status: Status, message: Optional[str], data: bytes) -> Any:
        from pynumaflow._proto.google import rpc  # only a client decodes; off the server path

        return rpc.Status().parse(data)


_PREFIX = struct.Struct(">BI")  # a gRPC message's prefix: compressed flag, length


def _wire_safe_status(err: GRPCError) -> GRPCError:
    """``err`` with its message and details encodable on the wire (lone surrogates escaped).

    grpclib cannot encode a status message that UTF-8 cannot: it then logs "Server
    error" and never ends the stream, and the client waits for good.
    """
    message = None if err.message is None else wire_safe(err.message)
    details = wire_safe(err.details) if isinstance(err.details, str) else err.details
    if message == err.message and details == err.details:
        return err
    return GRPCError(err.status, message, details)


class _MessageBuffer(Buffer):
    """A request stream's received DATA, read as gRPC length-prefixed messages, strictly.

    grpclib reads a message as its 5-byte prefix, then as many bytes as the prefix
    announces, acknowledging (so letting the client send more) as it goes: a message
    announcing 4 GiB was buffered in full before its size was checked. Here the prefix
    is checked first: too long a message is refused ``RESOURCE_EXHAUSTED`` without
    reading its body, so at most the stream's flow-control window is ever buffered; a
    compressed one ``UNIMPLEMENTED`` (no compression is negotiated), and a stream ending
    inside a prefix or a message ``INTERNAL`` (gRPC's rule for bad framing). Each refusal
    is one warning line in the log; grpclib then sends the status and resets the stream.
    """

    def __init__(
        self, stream: H2Stream, headers: Sequence[tuple[str, str]], max_message_size: int
    ) -> None:
        assert stream.id is not None
        super().__init__(functools.partial(stream.connection.ack, stream.id))
        self._headers = headers
        self._max = max_message_size
        self._body: Optional[int] = None  # the length of the message whose prefix was read

    async def read(self, size: int) -> bytes:
        try:
            data: Optional[bytes] = await super().read(size)
        except AssertionError:  # grpclib's Buffer: the stream ended before `size` bytes
            data = None
        if self._body is not None:  # the message whose prefix came last
            self._body = None
            if data is None or len(data) != size:
                self._refuse(Status.INTERNAL, "the request stream ended inside a message")
            return data
        if data is None or (data and len(data) != size):
            self._refuse(Status.INTERNAL, "the request stream ended inside a message prefix")
        if data:  # nothing at all is the end of the stream
            flag, length = _PREFIX.unpack(data)
            if flag:
                self._refuse(Status.UNIMPLEMENTED, "compressed messages are not supported")
            if length > self._max:
                self._refuse(
                    Status.RESOURCE_EXHAUSTED,
                    f"request of {length} bytes exceeds max_message_size ({self._max})",
                )
            self._body = length
        return data

    def _refuse(self, status: Status, text: str) -> NoReturn:
        path = dict(self._headers).get(":path", "?")
        _LOGGER.warning("refused a %s request: %s: %s", path, status.name, text)
        raise GRPCError(status, text)


class _Handler(grpclib.server.Handler):
    """grpclib's per-connection handler: strict framing, and no stream left behind.

    grpclib starts a task per stream whose ``finally`` frees the stream; a stream the
    client resets before the task first runs is cancelled before that ``try`` is
    entered, so it stayed in its connection's table (and its buffered data unacked) as
    long as the connection lived. Here the task's end frees the stream in every case.
    """

    def __init__(self, max_message_size: int, *args: Any) -> None:
        super().__init__(*args)
        self._max_message_size = max_message_size

    def accept(self, stream: H2Stream, headers: Any, release_stream: Callable[[], Any]) -> None:
        released = False

        def release_once() -> None:
            nonlocal released
            if not released:
                released = True
                release_stream()

        # Before any DATA of the stream is processed: the request's headers come first.
        stream.buffer = _MessageBuffer(stream, headers, self._max_message_size)
        super().accept(stream, headers, release_once)
        self._tasks[stream].add_done_callback(lambda _: release_once())


# Reads go into one reused buffer per server, shared by its connections (asyncio fills
# it and hands it over synchronously, and the bytes are copied out at once). A plain
# Protocol makes asyncio call recv(256 KiB), allocating and shrinking a 256 KiB bytes
# object per read: measured here at ~50 us a read, more than h2 spends parsing it.
_READ_BUFFER_SIZE = 64 * 1024


class _H2Protocol(H2Protocol, asyncio.BufferedProtocol):
    def __init__(
        self,
        handler: _Handler,
        base: grpclib.server.Server,
        live: set[_H2Protocol],
        read_buffer: memoryview,
    ) -> None:
        super().__init__(handler, base._config, base._h2_config)
        self._live = live
        self._transport: Optional[asyncio.BaseTransport] = None
        self._read_buffer = read_buffer
        self._received = 0
        self._stall_timer: Optional[asyncio.TimerHandle] = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once the connection is lost."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received += nbytes
        h2_connection = self.connection._connection
        before = frame_pending(h2_connection) + nbytes
        self.data_received(bytes(self._read_buffer[:nbytes]))
        self._watch_frames(progress=frame_pending(h2_connection) < before)

    def _watch_frames(self, *, progress: bool) -> None:
        """Arm the stall timer while a frame is unfinished; restart it when frames complete.

        Bytes trickling in without completing a frame do not restart it.
        """
        pending = self._received <= 24 or frame_pending(self.connection._connection) > 0
        timer = self._stall_timer
        if timer is not None and (progress or not pending):
            timer.cancel()
            self._stall_timer = timer = None
        if pending and timer is None and self._transport is not None:
            self._stall_timer = asyncio.get_running_loop().call_later(FRAME_TIMEOUT, self._stalled)

    def _stalled(self) -> None:
        self._stall_timer = None
        _LOGGER.warning(
            "closing a connection that left an HTTP/2 %s unfinished for %.0f s",
            "preface" if self._received <= 24 else "frame",
            FRAME_TIMEOUT,
        )
        self.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport = BatchedWrites(transport)
        super().connection_made(transport)
        self._transport = transport
        self._live.add(self)
        h2_connection = self.connection._connection
        h2_connection.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})
        remember_resets_only(h2_connection)
        self.connection.flush()
        self._watch_frames(progress=False)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._live.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().connection_lost(exc)

    def hang_up(self) -> None:
        """Say GOAWAY and stop sending (after the connection's calls have ended).

        Only our side is shut: a client that writes while it reads the last answers (its
        flow-control updates) would otherwise hit a closed socket, and grpcio then fails
        the calls whose answers it has received but not yet handed over. The client
        closes the connection on the GOAWAY; :meth:`_GrpclibServer.wait_closed` aborts
        it if it does not.
        """
        with contextlib.suppress(Exception):
            self.connection._connection.close_connection()
            self.connection.flush()
        transport = self._transport
        if isinstance(transport, asyncio.WriteTransport) and transport.can_write_eof():
            transport.write_eof()
        elif transport is not None:
            transport.close()

    def abort(self) -> None:
        """Drop the connection without flushing what is left to send."""
        if isinstance(self._transport, asyncio.WriteTransport):
            self._transport.abort()


class Listener(Protocol):
    """Accepts connections for an endpoint, in place of a Unix socket the core binds.

    The core calls :meth:`start` once with a factory making one protocol per accepted
    connection, and :meth:`close` then :meth:`wait_closed` to stop accepting; the
    connections already accepted stay open until the core ends them. ``str()`` of a
    listener names where it listens (for the log).
    """

    async def start(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Begin accepting; each connection gets a protocol from ``protocol_factory``."""
        ...

    def close(self) -> None:
        """Stop accepting (idempotent)."""
        ...

    async def wait_closed(self) -> None:
        """Wait until accepting has stopped."""
        ...


class _ListenerServer:
    """A Listener in the place of the asyncio server grpclib closes and awaits."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    def close(self) -> None:
        self._listener.close()

    async def wait_closed(self) -> None:
        await self._listener.wait_closed()


class _GrpclibServer(grpclib.server.Server):
    """grpclib's server on our transport (see the module docstring), able to stop intake only."""

    def __init__(self, handlers: Sequence[Service], *, max_message_size: int) -> None:
        super().__init__(
            handlers,
            codec=_Codec(max_message_size),
            status_details_codec=_StatusDetailsCodec(),
        )
        self._max_message_size = max_message_size
        self._live: set[_H2Protocol] = set()
        self._read_buffer = memoryview(bytearray(_READ_BUFFER_SIZE))

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = _Handler(
            self._max_message_size,
            self._mapping,
            self._codec,
            self._status_details_codec,
            self.__dispatch__,
        )
        self._handlers.add(handler)
        return _H2Protocol(handler, self, self._live, self._read_buffer)

    async def start_on(self, listener: Listener) -> None:
        """Serve what ``listener`` accepts (as grpclib's ``start`` does for a socket)."""
        if self._server is not None:
            raise RuntimeError("Server is already started")
        await listener.start(self._protocol_factory)
        # grpclib calls only close() and wait_closed() on its asyncio server.
        self._server = _ListenerServer(listener)  # type: ignore[assignment]
        self._server_closed_fut = self._loop.create_future()

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Wait for the cancelled calls, hang up every connection, then wait for the close.

        From Python 3.12, asyncio's ``Server.wait_closed`` waits until every connection
        has closed, and a client keeps its connection open: hang up first, and abort a
        connection its client has not closed after :data:`_CLOSE_TIMEOUT`.
        """
        handlers = [asyncio.ensure_future(h.wait_closed()) for h in self._handlers]
        if handlers:
            await asyncio.wait(handlers)
        for protocol in list(self._live):
            protocol.hang_up()
        if self._live:
            await asyncio.wait([p.closed for p in self._live], timeout=_CLOSE_TIMEOUT)
        for protocol in list(self._live):
            protocol.abort()
        await super().wait_closed()


class SocketPathError(OSError):
    """The socket path cannot be used (not writable, or another server is live there)."""


@dataclass(frozen=True)
class Endpoint:
    """One listening socket: its services and the server-info file announcing it.

    The socket is either the Unix socket ``sock_path``, bound by the core, or whatever
    ``listener`` accepts (then ``sock_path`` is None). Without a ``server_info_file``
    the endpoint is not announced (someone else writes the handshake).
    """

    sock_path: Optional[Path]
    server_info_file: Optional[Path]
    services: Sequence[Service]
    info_metadata: Mapping[str, str] = field(default_factory=dict)
    protocol: str = "uds"
    listener: Optional[Listener] = None
    minimum_numaflow_version: Optional[str] = None
    label: str = ""
    """What the endpoint is, for the start-up log (e.g. the protocol generation and kind)."""

    def __post_init__(self) -> None:
        if (self.sock_path is None) == (self.listener is None):
            raise ValueError("an Endpoint needs exactly one of sock_path and listener")

    @property
    def address(self) -> str:
        """Where the endpoint listens, for the log."""
        return str(self.sock_path if self.listener is None else self.listener)


_FIX_PERMISSION = (
    " (outside a Numaflow pod, set $PYNUMAFLOW_RUN_DIR to a folder you can write, or pass "
    "sock_path= and server_info_file=)"
)


def _path_error(err: OSError, what: str) -> SocketPathError:
    """``what`` failed with ``err``: the error to raise, naming the fix for a permission."""
    hint = _FIX_PERMISSION if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
    return SocketPathError(err.errno, f"{what}: {err.strerror}{hint}")


def _prepare_socket_path(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _path_error(err, f"cannot create the socket directory {path.parent}") from None
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketPathError(
            errno.EEXIST, f"{path} exists and is not a socket; remove it or pick another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: a stale socket from an earlier run
        _LOGGER.info("removed stale socket %s", path)
    else:
        raise SocketPathError(errno.EADDRINUSE, f"another server is listening on {path}")
    finally:
        probe.close()


class _InfoClaim:
    """A server's hold on a server-info file, so that two servers never share one.

    Servers started in one folder would otherwise overwrite, and on stop delete, each
    other's file. The hold is an exclusive lock on a hidden file beside it, which the
    system releases when the process dies: a file left by a crashed run blocks nobody.
    """

    def __init__(self, info: Path) -> None:
        self._path = info.with_name(f".{info.name}.lock")
        try:
            info.parent.mkdir(parents=True, exist_ok=True)
            self._fd: Optional[int] = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise _path_error(err, f"cannot write the server-info file {info}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release(unlink=False)
            raise SocketPathError(
                errno.EADDRINUSE,
                f"another server running in {info.parent} announces itself in {info}: "
                "give each server its own server_info_file (and sock_path), or its own "
                "folder ($PYNUMAFLOW_RUN_DIR); in a pod, each container gets its role "
                "from $NUMAFLOW_UD_CONTAINER_TYPE",
            ) from None

    def release(self, *, unlink: bool = True) -> None:
        """Let the file go (removing the lock file while still holding it)."""
        if self._fd is None:
            return
        if unlink:
            self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def write_server_info(
    path: Path,
    protocol: str,
    metadata: Mapping[str, str],
    minimum_numaflow_version: Optional[str] = None,
) -> None:
    """Write the server-info file atomically: JSON followed by the end marker.

    ``minimum_numaflow_version`` is written only for the v1 protocols' files.
    """
    info: Dict[str, Any] = {"protocol": protocol, "language": "python"}
    if minimum_numaflow_version is not None:
        info["minimum_numaflow_version"] = minimum_numaflow_version
    info["version"] = __version__
    info["metadata"] = dict(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: importing tempfile (shutil, random, bz2, lzma...) costs ~4 ms
    # of start-up. One process writes one file at a time, so its pid makes the name unique.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(info) + SERVER_INFO_END)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ServerCore:
    """Serves endpoints until told to stop; see the module docstring for the lifecycle."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        max_message_size: int,
        shutdown_grace_period: float,
        on_close: Optional[Callable[[], None]] = None,
        pool_stalled: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        self._endpoints = endpoints
        self._pool_stalled = pool_stalled
        self._stall_reported = False
        self._max_message_size = max_message_size
        self._grace = shutdown_grace_period
        self._on_close = on_close
        self._servers: list[_GrpclibServer] = []
        self._owned_files: list[Path] = []  # removed on stop: what this core created
        self._claims: list[_InfoClaim] = []
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._drain_started = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._signal_count = 0

    def _tracked(self, method: RpcMethod) -> RpcMethod:
        async def tracked(stream: grpclib.server.Stream[Any, Any]) -> None:
            if self._draining:
                raise GRPCError(Status.UNAVAILABLE, SHUTTING_DOWN)
            self._active += 1
            self._idle.clear()
            _CORE.set(self)  # this call's task only: see draining()
            try:
                await method(stream)
            except GRPCError as err:
                raise _wire_safe_status(err) from None
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

        return tracked

    def stalled(self) -> bool:
        """Whether the handler pool is stalled (IsReady then answers not ready).

        A stall is logged once, as a warning, and its end once, as information.
        """
        reason = None if self._pool_stalled is None else self._pool_stalled()
        if (reason is not None) != self._stall_reported:
            self._stall_reported = reason is not None
            if reason is not None:
                _LOGGER.warning("reporting not ready: %s", reason)
            else:
                _LOGGER.info("the handler pool is making progress again: reporting ready")
        return reason is not None

    async def start(self) -> None:
        """Bind every endpoint, then announce each in its server-info file."""
        try:
            for endpoint in self._endpoints:
                mapping: Dict[str, grpclib.const.Handler] = {}
                for service in endpoint.services:
                    for path, spec in service.__mapping__().items():
                        mapping[path] = spec._replace(func=self._tracked(spec.func))
                server = _GrpclibServer([_Mapped(mapping)], max_message_size=self._max_message_size)
                if endpoint.listener is not None:
                    await server.start_on(endpoint.listener)
                    self._servers.append(server)
                    continue
                assert endpoint.sock_path is not None  # one of the two, by construction
                _prepare_socket_path(endpoint.sock_path)
                try:
                    await server.start(path=str(endpoint.sock_path))
                except OSError as err:
                    raise _path_error(err, f"cannot listen on {endpoint.sock_path}") from None
                self._servers.append(server)
                self._owned_files.append(endpoint.sock_path)
                os.chmod(endpoint.sock_path, SOCKET_MODE)
            for endpoint in self._endpoints:
                if endpoint.server_info_file is not None:
                    self._claims.append(_InfoClaim(endpoint.server_info_file))
            for endpoint in self._endpoints:
                if endpoint.server_info_file is not None:
                    try:
                        write_server_info(
                            endpoint.server_info_file,
                            endpoint.protocol,
                            endpoint.info_metadata,
                            endpoint.minimum_numaflow_version,
                        )
                    except OSError as err:
                        raise _path_error(
                            err, f"cannot write the server-info file {endpoint.server_info_file}"
                        ) from None
                    self._owned_files.append(endpoint.server_info_file)
                _LOGGER.info(
                    "serving %s%s on %s, server-info %s",
                    f"{endpoint.label}: " if endpoint.label else "",
                    ", ".join(sorted(_service_names(endpoint))),
                    endpoint.address,
                    endpoint.server_info_file or "(none)",
                )
        except BaseException:
            await self.stop(grace=0)
            raise

    async def stop(self, grace: Optional[float] = None) -> None:
        """Stop intake, wait up to ``grace`` seconds for calls in flight, close, clean up."""
        grace = self._grace if grace is None else grace
        self._draining = True
        self._drain_started.set()
        for server in self._servers:
            server.stop_listening()
        started = bool(self._servers)
        in_flight = self._active
        if self._active and grace > 0:
            _LOGGER.info("draining %d call(s) in flight (up to %.1f s)", self._active, grace)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            if self._active:
                _LOGGER.warning(
                    "cancelling %d call(s) still running after %.1f s", self._active, grace
                )
        cancelled = self._active
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for path in reversed(self._owned_files):
            path.unlink(missing_ok=True)
        self._owned_files.clear()
        for claim in self._claims:
            claim.release()
        self._claims.clear()
        if self._on_close is not None:
            self._on_close()
        if started:
            _LOGGER.info(
                "stopped: %d call(s) in flight at the stop, %d finished in the drain, %d cancelled",
                in_flight,
                in_flight - cancelled,
                cancelled,
            )

    def request_stop(self) -> None:
        """Ask :meth:`serve` to drain and return (what SIGTERM and SIGINT do)."""
        self._stop_requested.set()

    def _on_signal(self, signum: int) -> None:
        self._signal_count += 1
        if self._signal_count == 1:
            _LOGGER.info("received %s, shutting down", signal.Signals(signum).name)
            self.request_stop()
        else:
            _LOGGER.warning("received %s again, stopping now", signal.Signals(signum).name)
            self._grace = 0
            self._idle.set()

    async def serve(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then stop."""
        with self._signals_handled():
            await self.start()
            try:
                await self._stop_requested.wait()
            finally:
                await self.stop(grace=None if self._stop_requested.is_set() else 0)

    @contextlib.contextmanager
    def _signals_handled(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                before = signal.getsignal(signum)
                try:
                    loop.add_signal_handler(signum, self._on_signal, signum)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not Unix
                    continue
                previous[signum] = before
        try:
            yield
        finally:
            for signum, before in previous.items():
                loop.remove_signal_handler(signum)
                if self._signal_count and callable(before) and _is_aiorun_handler(before):
                    # aiorun keeps its loop running after our coroutine returns; after
                    # the drain, hand it the signal so it stops the loop and exits.
                    signal.signal(signum, before)
                    loop.call_soon(before, signum, None)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ServerCore]:
        """Serve in the background of the caller's event loop until the block exits."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


class _Mapped:
    def __init__(self, mapping: Dict[str, grpclib.const.Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return self._mapping


def _is_aiorun_handler(handler: Callable[..., Any]) -> bool:
    target = getattr(handler, "func", handler)  # aiorun installs a functools.partial
    return getattr(target, "__module__", None) == "aiorun"


def _service_names(endpoint: Endpoint) -> set[str]:
    return {path.split("/")[1] for s in endpoint.services for path in s.__mapping__()}
