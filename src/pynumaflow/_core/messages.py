"""A long-lived bidi stream's messages, read and written a loop pass at a time.

grpclib reads a message with two awaits (its prefix, then its body) and sends each
message as an HTTP/2 DATA frame of its own. On a map.v1 stream, where one DATA frame
from the platform carries a hundred requests or more and the answers of a loop pass
can leave together, that per-message transport work was two thirds of the server's
CPU per message (benchmarks/FINDINGS.md). :func:`read_messages` hands over every
complete message received so far (framing checked as for every request, see
``transport._MessageBuffer``), and :class:`MessageWriter` sends the messages queued
during a loop pass as one DATA write. The bytes on the wire are the same gRPC
length-prefixed messages.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import AsyncIterator
from typing import Deque, Optional

import grpclib.server

from pynumaflow._core.transport import _MessageBuffer

__all__ = ["HIGH_WATER", "MessageReader", "MessageWriter", "read_messages"]

RawStream = grpclib.server.Stream[bytes, bytes]

_PREFIX = struct.Struct(">BI")

HIGH_WATER = 1 << 20
"""Bytes queued to send above which :attr:`MessageWriter.full` says so (the stream's
reader then stops reading, and a stream handler's sends wait)."""


async def read_messages(stream: RawStream, limit: int) -> list[bytes]:
    """The stream's next request messages: at least one, at most ``limit``; none at its end.

    Raises:
        GRPCError: the framing is bad (see ``transport._MessageBuffer``).

    """
    buffer = stream._stream.buffer
    assert isinstance(buffer, _MessageBuffer)  # every stream of our server gets one
    return await buffer.read_messages(limit)


class MessageReader:
    """A stream's request messages one by one (``async for``), read up to ``ahead`` at once.

    For the streams whose services take one message at a time (sink, reduce): what
    grpclib's ``recv_message`` gives, without its two awaits per message.
    """

    def __init__(self, stream: RawStream, ahead: int = 256) -> None:
        self._stream = stream
        self._ahead = ahead
        self._ready: Deque[bytes] = collections.deque()

    async def next(self) -> Optional[bytes]:
        """The next request message; None once the client has half-closed."""
        if not self._ready:
            self._ready.extend(await read_messages(self._stream, self._ahead))
            if not self._ready:
                return None
        return self._ready.popleft()

    async def batch(self) -> list[bytes]:
        """The next messages, at least one (those read ahead, else one read's); none at the end.

        For a loop that handles each message without awaiting: no coroutine per message.
        """
        if self._ready:
            ready = list(self._ready)
            self._ready.clear()
            return ready
        return await read_messages(self._stream, self._ahead)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._ready:
            self._ready.extend(await read_messages(self._stream, self._ahead))
            if not self._ready:
                raise StopAsyncIteration
        return self._ready.popleft()


class MessageWriter:
    """Sends a server stream's messages, those queued in one loop pass as one DATA write.

    :meth:`send` queues a message (checking its size at once, so that the failure is
    the sender's); a task of the caller's (:meth:`run`) writes what is queued, waiting
    for HTTP/2 flow control as grpclib does. The stream's headers must have been sent
    (a first message with ``stream.send_message``, or ``send_initial_metadata``) before
    :meth:`run` writes.
    """

    def __init__(self, stream: RawStream) -> None:
        self._h2 = stream._stream
        self._check = stream._codec.encode  # RawCodec: refuses a message above the limit
        self._queued: list[bytes] = []
        self.pending = 0
        """Bytes queued or being written."""
        self._wake: Optional[asyncio.Future[None]] = None
        self._drained: Optional[asyncio.Future[None]] = None
        self._closing = False
        self._stopped = False  # run() has returned or failed: nothing drains any more

    @property
    def full(self) -> bool:
        """Whether :data:`HIGH_WATER` bytes or more are queued or being written."""
        return self.pending >= HIGH_WATER

    def send(self, payload: bytes) -> None:
        """Queue one message; it leaves with the others of this loop pass.

        Raises:
            GRPCError: ``RESOURCE_EXHAUSTED``: the message exceeds ``max_message_size``.

        """
        self._check(payload, None)
        self._queued.append(_PREFIX.pack(0, len(payload)))
        self._queued.append(payload)
        self.pending += 5 + len(payload)
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def drained(self) -> None:
        """Wait until less than :data:`HIGH_WATER` is queued or being written.

        Returns at once if :meth:`run` has stopped (its failure is its caller's to report).
        """
        while self.full and not self._stopped:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    async def run(self) -> None:
        """Write what is queued until :meth:`close`; raises what writing raised."""
        try:
            await self._write_queued()
        finally:
            self._stopped = True
            self._wake_drained()

    async def _write_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queued:
                if self._closing:
                    return
                self._wake = loop.create_future()
                await self._wake
                continue
            queued, self._queued = self._queued, []
            data = b"".join(queued)
            await self._h2.send_data(data)
            self.pending -= len(data)
            if not self.full:
                self._wake_drained()

    def _wake_drained(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def close(self) -> None:
        """Let :meth:`run` return once everything queued is written."""
        self._closing = True
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)
