"""source.v1 (Numaflow >= 1.4): a user-defined source's read, ack, nack, pending and partitions.

Read and ack are long-lived streams answered in order (:mod:`pynumaflow._engines.ordered`).
A read request is answered by the messages the read handler puts, then an EOT, by the
request's timeout at the latest: when it passes, the handler is cancelled and the batch
ends with what was put until then. The server never acks anything itself: an offset is
acked only by the platform's AckRequest, through ``ack_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Dict, List, Optional

import grpclib.const
import grpclib.server

from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._codec.v1 import source as codec
from pynumaflow._codec.wire import check_message
from pynumaflow._core.messages import MessageWriter
from pynumaflow._engines.ordered import serve_in_order
from pynumaflow._invoke import Handler, HandlerErrors, Invoker, inspect_methods
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.source import AckRequest, Message, NackRequest, Offset, ReadRequest

__all__ = ["SOURCER_METHODS", "SourceV1Service"]

RawStream = grpclib.server.Stream[bytes, bytes]

SOURCER_METHODS = {
    "read_handler": "datum, output",
    "ack_handler": "ack_request",
    "nack_handler": "nack_request",
    "pending_handler": "",
    "active_partitions_handler": "",
}
"""A Sourcer's handler methods and their parameters; ``read_handler`` must be async."""

# Encoded messages a read handler may put ahead of the stream sending them.
_SEND_AHEAD = 64


class _Output:
    """The ``output`` a read handler puts its messages into, for one read batch."""

    __slots__ = ("_room", "_wake", "open", "pending")

    def __init__(self, wake: asyncio.Event) -> None:
        self.pending: List[bytes] = []
        self.open = True
        self._wake = wake
        self._room = asyncio.Event()

    async def put(self, message: Message) -> None:
        """Add ``message`` to the batch: once this returns it is sent, and only then.

        A handler cancelled at the read timeout is cancelled before the message is
        taken, never after, so a put that raised put nothing.

        Raises:
            ReturnTypeError: it cannot be sent (not a Message, empty offset, ...).
            RuntimeError: the batch has ended (its timeout passed).

        """
        payload = codec.encode_read_result(message)
        if len(self.pending) >= _SEND_AHEAD:
            # The only await: a handler putting in a tight loop lets the sender take
            # what it put, a send-ahead's worth at a time.
            self._room.clear()
            await self._room.wait()
        if not self.open:
            raise RuntimeError(
                "this read batch has ended: put messages only while read_handler runs"
            )
        self.pending.append(payload)
        self._wake.set()

    def take(self) -> List[bytes]:
        """The messages put since the last take; their putters may go on."""
        taken, self.pending = self.pending, []
        self._room.set()
        return taken


class SourceV1Service:
    """Serves source.v1 with a Sourcer: ReadFn, AckFn, NackFn, PendingFn, PartitionsFn, IsReady."""

    def __init__(self, handler: Handler, invoker: Invoker, *, container_type: str) -> None:
        sourcer = handler.func
        self._handlers = inspect_methods(
            handler.name, sourcer, SOURCER_METHODS, need_async=("read_handler",)
        )
        total = getattr(sourcer, "total_partitions_handler", None)
        self._total: Optional[Handler] = (
            inspect_methods(handler.name, sourcer, {"total_partitions_handler": ""})[
                "total_partitions_handler"
            ]
            if total is not None
            else None
        )
        self._invoker = invoker
        self._errors = {
            name: HandlerErrors(method, v1_container=container_type)
            for name, method in self._handlers.items()
        }
        if self._total is not None:
            self._errors["total_partitions_handler"] = HandlerErrors(
                self._total, v1_container=container_type
            )

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "source.v1.Source",
            {
                "ReadFn": self._read_fn,
                "AckFn": self._ack_fn,
                "NackFn": self._nack_fn,
                "PendingFn": self._pending_fn,
                "PartitionsFn": self._partitions_fn,
                "IsReady": is_ready_method(READY),
            },
        )

    # --- read -------------------------------------------------------------------------------

    async def _read_fn(self, stream: RawStream) -> None:
        # The results of a loop pass leave as one DATA write (the handshake answer, sent
        # first with stream.send_message, carries the headers).
        writer = MessageWriter(stream)

        async def answer(request: ReadRequest) -> None:
            await self._read_batch(writer, request)

        writing = asyncio.ensure_future(writer.run())
        try:
            try:
                await serve_in_order(
                    stream,
                    codec.decode_read_request,
                    answer,
                    what="ReadRequest",
                    handshake_response=codec.READ_HANDSHAKE_RESPONSE,
                )
            except Exception:
                # What a failing batch put before its failure goes out before the status.
                writer.close()
                with contextlib.suppress(Exception):
                    await writing
                raise
            writer.close()
            await writing
        finally:
            writing.cancel()

    async def _read_batch(self, writer: MessageWriter, request: ReadRequest) -> None:
        """Send what the handler puts as it comes, then the EOT, by the timeout at the latest."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        output = _Output(wake)
        handler = self._handlers["read_handler"]
        task = asyncio.ensure_future(self._invoker.call(handler, request, output))
        task.add_done_callback(lambda _: wake.set())
        expired = asyncio.Event()  # set by the timer itself: asyncio may run a timer up to
        # a clock resolution early, so comparing loop.time() with the deadline could miss it

        def expire() -> None:
            expired.set()
            wake.set()

        timer = (
            loop.call_later(request.timeout_in_ms / 1000, expire) if request.timeout_in_ms else None
        )
        try:
            while not task.done():
                await wake.wait()
                wake.clear()
                for payload in output.take():
                    writer.send(payload)
                if writer.full:
                    await writer.drained()
                if expired.is_set() and not task.done():
                    break  # the timeout passed: end the batch with what was put
        finally:
            output.open = False
            if timer is not None:
                timer.cancel()
            if not task.done():
                task.cancel()
        # What the handler put before it returned, failed or was cancelled is in the batch.
        failed = task.done() and not task.cancelled() and task.exception() is not None
        if not failed:
            for payload in output.take():
                writer.send(payload)
            writer.send(codec.READ_EOT)
        await asyncio.wait((task,))  # a handler cancelled at the timeout may still be ending
        if not task.cancelled():
            with self._errors["read_handler"]:
                task.result()

    # --- ack and nack -----------------------------------------------------------------------

    async def _ack_fn(self, stream: RawStream) -> None:
        handler = self._handlers["ack_handler"]
        errors = self._errors["ack_handler"]

        async def answer(offsets: List[Offset]) -> None:
            with errors:
                await self._invoker.call(handler, AckRequest(offsets))
            await stream.send_message(codec.ACK_RESPONSE)

        await serve_in_order(
            stream,
            codec.decode_ack_request,
            answer,
            what="AckRequest",
            handshake_response=codec.ACK_HANDSHAKE_RESPONSE,
        )

    async def _nack_fn(self, stream: RawStream) -> None:
        data = await stream.recv_message()
        offsets = decode_or_refuse(codec.decode_nack_request, data or b"", "NackRequest")
        with self._errors["nack_handler"]:
            await self._invoker.call(self._handlers["nack_handler"], NackRequest(offsets))
        await stream.send_message(codec.NACK_RESPONSE)

    # --- pending and partitions -------------------------------------------------------------

    async def _pending_fn(self, stream: RawStream) -> None:
        data = await stream.recv_message()
        decode_or_refuse(check_message, data or b"", "Empty")
        with self._errors["pending_handler"]:
            result = await self._invoker.call(self._handlers["pending_handler"])
            payload = codec.encode_pending_response(result)
        await stream.send_message(payload)

    async def _partitions_fn(self, stream: RawStream) -> None:
        data = await stream.recv_message()
        decode_or_refuse(check_message, data or b"", "Empty")
        with self._errors["active_partitions_handler"]:
            result = await self._invoker.call(self._handlers["active_partitions_handler"])
        total = None
        if self._total is not None:
            with self._errors["total_partitions_handler"]:
                total = await self._invoker.call(self._total)
        with self._errors["active_partitions_handler"]:
            payload = codec.encode_partitions_response(result, total)
        await stream.send_message(payload)
