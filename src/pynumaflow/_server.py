"""The one asyncio server core every facade runs on.

It binds each endpoint's Unix socket (creating the directory, replacing a stale socket
file), or serves the connections an endpoint's own listener accepts; hosts the
endpoint's services on grpclib, writes the server-info file atomically once the socket
accepts connections, and on SIGTERM/SIGINT stops intake, lets calls in flight finish
within a grace period, then closes and removes its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import json
import logging
import os
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol

import betterproto.lib.google.protobuf as betterproto_lib_google_protobuf
import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from h2.settings import SettingCodes

from pynumaflow import __version__
from pynumaflow._errors import CodecError
from pynumaflow._h2streams import remember_resets_only
from pynumaflow._proto.google import rpc
from pynumaflow._wire import check_message

__all__ = [
    "Endpoint",
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


class Service(Protocol):
    """A gRPC service for grpclib: a mapping from method path to handler."""

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]: ...


RpcMethod = Callable[["grpclib.server.Stream[Any, Any]"], Awaitable[None]]


def service_mapping(
    generated_base: type, methods: Mapping[str, RpcMethod], raw: Sequence[str]
) -> Dict[str, grpclib.const.Handler]:
    """Build a grpclib mapping from a betterproto-generated service base.

    The generated base supplies each method's path and cardinality, so the proto stays
    the single source of the contract. ``methods`` implements every RPC by name; the
    ones named in ``raw`` exchange bytes (decoded by ``pynumaflow._codec``) instead of
    betterproto messages.
    """
    mapping = {}
    generated = generated_base().__mapping__()
    for path, spec in generated.items():
        name = path.rsplit("/", 1)[1]
        func = methods[name]  # a KeyError here means an RPC of the proto is not implemented
        if name in raw:
            mapping[path] = grpclib.const.Handler(func, spec.cardinality, bytes, bytes)
        else:
            mapping[path] = grpclib.const.Handler(
                func, spec.cardinality, spec.request_type, spec.reply_type
            )
    unknown = set(methods) - {path.rsplit("/", 1)[1] for path in generated}
    if unknown:
        raise ValueError(f"methods not in the proto service: {sorted(unknown)}")
    return mapping


def is_ready_method(ready_response: bytes) -> RpcMethod:
    """The IsReady RPC of every service: check the Empty request, answer ``ready_response``.

    It runs on the event loop, never in the handler pool, so it answers while every
    pool thread is busy, and times out while an async handler blocks the loop.
    """

    async def is_ready(stream: grpclib.server.Stream[bytes, bytes]) -> None:
        data = await stream.recv_message()
        try:
            check_message(data or b"")
        except CodecError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed Empty: {err}") from None
        await stream.send_message(ready_response)

    return is_ready


_DRAINING: contextvars.ContextVar[asyncio.Event] = contextvars.ContextVar("pynumaflow_draining")


def draining() -> asyncio.Event:
    """An event set once the server running the current call starts to drain.

    A long-lived stream waits on it to end early when finishing would need the client
    (e.g. a reduce window still open), instead of holding the drain for the whole grace
    period. Outside a call served by a :class:`ServerCore` it is never set.
    """
    try:
        return _DRAINING.get()
    except LookupError:
        return asyncio.Event()


class _Codec(CodecBase):
    """Passes raw bytes through for the hot RPCs, betterproto for the rest; enforces size."""

    __content_subtype__ = "proto"

    def __init__(self, max_message_size: int) -> None:
        self._max = max_message_size

    def encode(self, message: Any, message_type: Any) -> bytes:
        data = message if message_type is bytes else bytes(message)
        if len(data) > self._max:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"response of {len(data)} bytes exceeds max_message_size ({self._max})",
            )
        return data

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self._max:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"request of {len(data)} bytes exceeds max_message_size ({self._max})",
            )
        if message_type is bytes:
            return data
        try:
            return message_type().parse(data)
        except Exception as err:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed request: {err}") from None


class _StatusDetailsCodec(StatusDetailsCodecBase):
    """Encodes a ``GRPCError``'s details (a traceback text) as google.rpc.Status.

    The v1 platform reads ``grpc-status-details-bin`` as google.rpc.Status whose details
    hold a google.rpc.DebugInfo; the legacy platform ignores the trailer.
    """

    def encode(self, status: Status, message: Optional[str], details: Any) -> bytes:
        debug = rpc.DebugInfo(detail=str(details))
        packed = betterproto_lib_google_protobuf.Any(
            type_url="type.googleapis.com/google.rpc.DebugInfo", value=bytes(debug)
        )
        return bytes(rpc.Status(code=status.value, message=message or "", details=[packed]))

    def decode(self, status: Status, message: Optional[str], data: bytes) -> Any:
        return rpc.Status().parse(data)


class _H2Protocol(H2Protocol):
    def __init__(self, base: H2Protocol, live: set[_H2Protocol]) -> None:
        super().__init__(base.handler, base.config, base.h2_config)
        self._live = live
        self._transport: Optional[asyncio.BaseTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._transport = transport
        self._live.add(self)
        h2_connection = self.connection._connection
        h2_connection.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})
        remember_resets_only(h2_connection)
        self.connection.flush()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._live.discard(self)
        super().connection_lost(exc)

    def hang_up(self) -> None:
        """Say GOAWAY and close the connection (after its calls have ended)."""
        with contextlib.suppress(Exception):
            self.connection._connection.close_connection()
            self.connection.flush()
        if self._transport is not None:
            self._transport.close()


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
    """grpclib's server, advertising more concurrent streams and able to stop intake only."""

    _live: set[_H2Protocol]

    def _protocol_factory(self) -> H2Protocol:
        if not hasattr(self, "_live"):
            self._live = set()
        return _H2Protocol(super()._protocol_factory(), self._live)

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

    def hang_up(self) -> None:
        for protocol in list(getattr(self, "_live", ())):
            protocol.hang_up()


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

    def __post_init__(self) -> None:
        if (self.sock_path is None) == (self.listener is None):
            raise ValueError("an Endpoint needs exactly one of sock_path and listener")

    @property
    def address(self) -> str:
        """Where the endpoint listens, for the log."""
        return str(self.sock_path if self.listener is None else self.listener)


def _prepare_socket_path(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SocketPathError(
            err.errno, f"cannot create the socket directory {path.parent}: {err.strerror}"
        ) from None
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(info) + SERVER_INFO_END)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    ) -> None:
        self._endpoints = endpoints
        self._max_message_size = max_message_size
        self._grace = shutdown_grace_period
        self._on_close = on_close
        self._servers: list[_GrpclibServer] = []
        self._owned_files: list[Path] = []  # removed on stop: what this core created
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
                raise GRPCError(Status.UNAVAILABLE, "server is shutting down")
            self._active += 1
            self._idle.clear()
            _DRAINING.set(self._drain_started)  # this call's task only: see draining()
            try:
                await method(stream)
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

        return tracked

    async def start(self) -> None:
        """Bind every endpoint, then announce each in its server-info file."""
        codec = _Codec(self._max_message_size)
        try:
            for endpoint in self._endpoints:
                mapping: Dict[str, grpclib.const.Handler] = {}
                for service in endpoint.services:
                    for path, spec in service.__mapping__().items():
                        mapping[path] = spec._replace(func=self._tracked(spec.func))
                server = _GrpclibServer(
                    [_Mapped(mapping)], codec=codec, status_details_codec=_StatusDetailsCodec()
                )
                if endpoint.listener is not None:
                    await server.start_on(endpoint.listener)
                    self._servers.append(server)
                    continue
                assert endpoint.sock_path is not None  # one of the two, by construction
                _prepare_socket_path(endpoint.sock_path)
                try:
                    await server.start(path=str(endpoint.sock_path))
                except OSError as err:
                    raise SocketPathError(
                        err.errno, f"cannot listen on {endpoint.sock_path}: {err.strerror}"
                    ) from None
                self._servers.append(server)
                self._owned_files.append(endpoint.sock_path)
                os.chmod(endpoint.sock_path, SOCKET_MODE)
            for endpoint in self._endpoints:
                if endpoint.server_info_file is not None:
                    write_server_info(
                        endpoint.server_info_file,
                        endpoint.protocol,
                        endpoint.info_metadata,
                        endpoint.minimum_numaflow_version,
                    )
                    self._owned_files.append(endpoint.server_info_file)
                _LOGGER.info(
                    "pynumaflow %s serving %s on %s",
                    __version__,
                    ", ".join(sorted(_service_names(endpoint))),
                    endpoint.address,
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
        if self._active and grace > 0:
            _LOGGER.info("draining %d call(s) in flight (up to %.1f s)", self._active, grace)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            if self._active:
                _LOGGER.warning(
                    "cancelling %d call(s) still running after %.1f s", self._active, grace
                )
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
            server.hang_up()
        self._servers.clear()
        for path in reversed(self._owned_files):
            path.unlink(missing_ok=True)
        self._owned_files.clear()
        if self._on_close is not None:
            self._on_close()

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
