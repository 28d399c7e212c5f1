"""grpclib and h2 as the core uses them: raw-bytes codec, status details, connections.

A grpclib server that advertises more concurrent streams, reads into one reused buffer,
batches its writes, can stop intake without closing connections, serves what a
:class:`~pynumaflow._core.endpoint.Listener` accepts, and hangs up (then aborts)
connections on close.

It does not trust clients (docs/reliability.md): a request's gRPC framing is checked
before its body is read (:class:`_MessageBuffer`), a stream reset before its handler
started is freed (:class:`_Handler`), a connection that leaves an HTTP/2 frame
unfinished is closed (:data:`FRAME_TIMEOUT`), and every status text is made encodable
(:func:`wire_safe_status`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import struct
from collections.abc import Sequence
from typing import Any, Callable, Deque, Dict, NoReturn, Optional

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.exceptions import GRPCError
from grpclib.protocol import Buffer, H2Protocol
from grpclib.protocol import Stream as H2Stream
from h2.settings import SettingCodes

from pynumaflow._codec.rpc import encode_status
from pynumaflow._codec.wire import wire_safe
from pynumaflow._core.batched_writes import BatchedWrites
from pynumaflow._core.endpoint import Listener, Service
from pynumaflow._core.h2streams import frame_pending, remember_resets_only

__all__ = ["FRAME_TIMEOUT", "GrpclibServer", "MappedService", "wire_safe_status"]

_LOGGER = logging.getLogger("pynumaflow")

# The platform keeps up to ~500 unary calls in flight on one connection; h2 advertises
# 100 concurrent streams unless told otherwise, and grpclib leaves that as it is.
MAX_CONCURRENT_STREAMS = 1024
# After the grace period, how long closing connections may take (flushing what is left
# to send) before they are aborted: a client that does not read cannot hold the stop.
_CLOSE_TIMEOUT = 1.0
FRAME_TIMEOUT = 10.0
"""Seconds a connection may leave the HTTP/2 preface or a frame unfinished before it is
closed (a frame taking longer comes from a stalled or hostile client, never the platform)."""


class RawCodec(CodecBase):
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


class StatusDetailsCodec(StatusDetailsCodecBase):
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


def wire_safe_status(err: GRPCError) -> GRPCError:
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

    Received DATA is acknowledged when it is taken to be read, as grpclib does. Besides
    grpclib's ``read`` (one prefix, then one body: two awaits a message),
    :meth:`read_messages` hands over every complete message received so far at once:
    one DATA frame from the platform carries a hundred requests or more.
    """

    def __init__(
        self, stream: H2Stream, headers: Sequence[tuple[str, str]], max_message_size: int
    ) -> None:
        # grpclib's Buffer state (a queue, a deque of memoryviews) is not used.
        assert stream.id is not None
        self._ack = functools.partial(stream.connection.ack, stream.id)
        self._headers = headers
        self._max = max_message_size
        self._received: Deque[tuple[bytes, int]] = collections.deque()  # not yet acknowledged
        self._data = b""  # taken (acknowledged) and not yet read from self._pos on
        self._pos = 0
        self._eof = False
        self._waiter: Optional[asyncio.Future[None]] = None
        self._body: Optional[int] = None  # the length of the message whose prefix was read

    def add(self, data: bytes, ack_size: int) -> None:
        self._received.append((data, ack_size))
        self._wake()

    def eof(self) -> None:
        self._eof = True
        self._wake()

    def unacked_size(self) -> int:
        return sum(ack_size for _, ack_size in self._received)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _fill(self, size: int, *, wait: bool = True) -> bool:
        """Take received DATA until ``size`` bytes are unread; False if they cannot be.

        Waits for DATA to arrive only if ``wait``; never past the end of the stream.
        """
        unread = len(self._data) - self._pos
        if unread >= size:
            return True
        parts = [self._data[self._pos :]] if unread else []
        acked = 0
        try:
            while unread < size:
                if not self._received:
                    if self._eof or not wait:
                        break
                    if acked:  # let the client send the rest
                        self._ack(acked)
                        acked = 0
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
                    continue
                data, ack_size = self._received.popleft()
                parts.append(data)
                unread += len(data)
                acked += ack_size
        finally:
            self._data = parts[0] if len(parts) == 1 else b"".join(parts)
            self._pos = 0
            if acked:
                self._ack(acked)
        return unread >= size

    async def read(self, size: int) -> bytes:
        body, self._body = self._body, None
        complete = await self._fill(size)
        if body is not None:  # the message whose prefix came last
            if not complete:
                self._refuse(Status.INTERNAL, "the request stream ended inside a message")
            return self._take(size)
        if len(self._data) == self._pos:
            return b""  # the end of the stream
        if not complete:
            self._refuse(Status.INTERNAL, "the request stream ended inside a message prefix")
        prefix = self._take(size)
        self._body = self._check(*_PREFIX.unpack(prefix))
        return prefix

    async def read_messages(self, limit: int) -> list[bytes]:
        """The next messages received, at least one and at most ``limit``; none at the end.

        Takes (acknowledges) received DATA only as far as the messages it returns need,
        and checks every prefix before taking the body it announces.
        """
        messages: list[bytes] = []
        while True:
            data, pos = self._data, self._pos
            end = len(data)
            need = 5
            while len(messages) < limit and end - pos >= 5:
                flag, length = _PREFIX.unpack_from(data, pos)
                stop = pos + 5 + self._check(flag, length)
                if stop > end:
                    need = stop - pos
                    break
                messages.append(data[pos + 5 : stop])
                pos = stop
            self._pos = pos
            if len(messages) >= limit:
                return messages
            if not await self._fill(need, wait=not messages):
                if messages:
                    return messages
                if self._pos < len(self._data):
                    where = "a message" if need > 5 else "a message prefix"
                    self._refuse(Status.INTERNAL, f"the request stream ended inside {where}")
                return messages

    def _take(self, size: int) -> bytes:
        start = self._pos
        self._pos = start + size
        return self._data[start : self._pos]

    def _check(self, flag: int, length: int) -> int:
        if flag:
            self._refuse(Status.UNIMPLEMENTED, "compressed messages are not supported")
        if length > self._max:
            self._refuse(
                Status.RESOURCE_EXHAUSTED,
                f"request of {length} bytes exceeds max_message_size ({self._max})",
            )
        return length

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
        closes the connection on the GOAWAY; :meth:`GrpclibServer.wait_closed` aborts
        it if it does not.
        """
        with contextlib.suppress(Exception):
            self.connection._connection.close_connection()
            self.connection.flush()
        transport = self._transport
        if isinstance(transport, asyncio.WriteTransport) and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # the peer has gone (TCP: ENOTCONN), its reset not yet read
                transport.abort()
        elif transport is not None:
            transport.close()

    def abort(self) -> None:
        """Drop the connection without flushing what is left to send."""
        if isinstance(self._transport, asyncio.WriteTransport):
            self._transport.abort()


class _ListenerServer:
    """A Listener in the place of the asyncio server grpclib closes and awaits."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    def close(self) -> None:
        self._listener.close()

    async def wait_closed(self) -> None:
        await self._listener.wait_closed()


class GrpclibServer(grpclib.server.Server):
    """grpclib's server on our transport (see the module docstring), able to stop intake only."""

    def __init__(self, handlers: Sequence[Service], *, max_message_size: int) -> None:
        super().__init__(
            handlers,
            codec=RawCodec(max_message_size),
            status_details_codec=StatusDetailsCodec(),
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


class MappedService:
    """Services as one grpclib mapping (the core wraps every method)."""

    def __init__(self, mapping: Dict[str, grpclib.const.Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return self._mapping
