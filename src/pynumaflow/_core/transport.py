"""grpclib and h2 as the core uses them: raw-bytes codec, status details, connections.

A grpclib server that advertises more concurrent streams, reads into one reused buffer
per connection, batches its writes, can stop intake without closing connections, serves
what a :class:`~pynumaflow._core.endpoint.Listener` accepts, and hangs up (then aborts)
connections on close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Dict, Optional

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from h2.settings import SettingCodes

from pynumaflow._codec.rpc import encode_status
from pynumaflow._core.batched_writes import BatchedWrites
from pynumaflow._core.endpoint import Listener
from pynumaflow._core.h2streams import remember_resets_only

__all__ = ["GrpclibServer", "MappedService", "RawCodec", "StatusDetailsCodec"]

# The platform keeps up to ~500 unary calls in flight on one connection; h2 advertises
# 100 concurrent streams unless told otherwise, and grpclib leaves that as it is.
MAX_CONCURRENT_STREAMS = 1024
# After the grace period, how long closing connections may take (flushing what is left
# to send) before they are aborted: a client that does not read cannot hold the stop.
_CLOSE_TIMEOUT = 1.0


class RawCodec(CodecBase):
    """Passes every RPC's raw bytes through (our codecs decode them); enforces the size."""

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
        if len(data) > self._max:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"request of {len(data)} bytes exceeds max_message_size ({self._max})",
            )
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


# Reads go into one reused buffer per connection. A plain Protocol makes asyncio call
# recv(256 KiB), allocating and shrinking a 256 KiB bytes object per read: measured here
# at ~50 us a read, more than h2 spends parsing what was read.
_READ_BUFFER_SIZE = 64 * 1024


class _H2Protocol(H2Protocol, asyncio.BufferedProtocol):
    def __init__(self, base: H2Protocol, live: set[_H2Protocol]) -> None:
        super().__init__(base.handler, base.config, base.h2_config)
        self._live = live
        self._transport: Optional[asyncio.BaseTransport] = None
        self._read_buffer = memoryview(bytearray(_READ_BUFFER_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._read_buffer[:nbytes]))

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

    async def wait_closed(self) -> None:
        """Wait for the cancelled calls, hang up every connection, then wait for the close.

        From Python 3.12, asyncio's ``Server.wait_closed`` waits until every connection
        has closed, and a client keeps its connection open: hang up first, abort a
        connection still open after :data:`_CLOSE_TIMEOUT`.
        """
        handlers = [asyncio.ensure_future(h.wait_closed()) for h in self._handlers]
        if handlers:
            await asyncio.wait(handlers)
        for protocol in list(getattr(self, "_live", ())):
            protocol.hang_up()
        closed = asyncio.ensure_future(super().wait_closed())
        done, _ = await asyncio.wait([closed], timeout=_CLOSE_TIMEOUT)
        if not done:
            for protocol in list(getattr(self, "_live", ())):
                protocol.abort()
        await closed


class MappedService:
    """Services as one grpclib mapping (the core wraps every method)."""

    def __init__(self, mapping: Dict[str, grpclib.const.Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return self._mapping
