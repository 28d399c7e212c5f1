"""The bidi stream map.v1 and sourcetransformer.v1 share: handshake, then many requests in flight.

Both protocols are one long-lived bidi stream per component: the client opens with a
handshake, which the server answers first, then sends requests with many in flight and
half-closes at shutdown. :func:`serve_requests` drives that conversation; each service
only says how one request is answered. When the server drains, a stream ends as soon as
every request it has read is answered (see :class:`~pynumaflow._engines.drain.IdleDrain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Callable, Optional, Protocol

import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import decode_or_refuse
from pynumaflow._engines.drain import IdleDrain
from pynumaflow._engines.tasks import StreamTasks
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._types.function import Datum

__all__ = ["MAX_IN_FLIGHT", "Answer", "Incoming", "Send", "serve_requests", "unary_answer"]


class Incoming(Protocol):
    """What the codec decodes a request message into (see ``_codec.v1.map.Incoming``)."""

    @property
    def handshake(self) -> bool:
        """The message carries a handshake with ``sot`` set."""

    @property
    def datum(self) -> Optional[Datum]:
        """Its request, if any."""


RawStream = grpclib.server.Stream[bytes, bytes]
Send = Callable[[bytes], Awaitable[None]]
Answer = Callable[[Datum, Send], Awaitable[None]]
"""How a service answers one request: ``await answer(datum, send)``, sending its responses."""

MAX_IN_FLIGHT = 1024
"""Requests of one stream being answered at once; beyond it the stream is not read (the
platform keeps a read batch, ~500, in flight), so HTTP/2 flow control holds it back."""


async def serve_requests(
    stream: RawStream,
    decode: Callable[[bytes], Incoming],
    answer: Answer,
    *,
    what: str,
    handshake_response: bytes,
) -> None:
    """Serve one map.v1 or sourcetransformer.v1 stream.

    Answers the client's handshake first, then answers every request with ``answer``
    in a task of its own, at most :data:`MAX_IN_FLIGHT` at once, responses in the order
    they are ready. Returns (status OK) once the client has half-closed and every
    request is answered. Once the server drains, it stops reading as soon as no request
    is being answered, and ends the stream ``UNAVAILABLE``.

    Args:
        stream: the grpclib stream, exchanging raw request and response bytes.
        decode: the codec's decoder of the request message.
        answer: answers one request (its handler errors already turned into statuses).
        what: the request message's name, for error texts.
        handshake_response: the encoded answer to the handshake.

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` when the first message is not a handshake, a
            later one carries no request, or one is malformed; whatever ``answer``
            raised (the first failure ends the stream, every other request is cancelled);
            ``UNAVAILABLE`` when the drain ended the stream.

    """
    await _Exchange(stream, decode, what, handshake_response).run(answer)


class _Exchange:
    def __init__(
        self,
        stream: RawStream,
        decode: Callable[[bytes], Incoming],
        what: str,
        handshake_response: bytes,
    ) -> None:
        self._stream = stream
        self._handshake_response = handshake_response
        self._decode_bytes = decode
        self._what = what
        # One response at a time on the stream; a failure takes it too, so that cancelling
        # the other requests never cuts a response in half on the wire.
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._drain = IdleDrain()  # a request is in progress from its read to its answer

    async def run(self, answer: Answer) -> None:
        tasks = StreamTasks(self._send_lock)
        try:
            tasks.start_guarded(self._read, tasks, answer)
            await tasks.wait()
        finally:
            await tasks.close()
        if tasks.failure is not None:
            raise tasks.failure
        self._drain.check()

    def _decode(self, data: bytes) -> Incoming:
        return decode_or_refuse(self._decode_bytes, data, self._what)

    async def _read(self, tasks: StreamTasks, answer: Answer) -> None:
        async with self._drain.reading():
            first = await self._stream.recv_message()
            if first is None:
                return
            if not self._decode(first).handshake:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"expected a handshake ({self._what} with handshake.sot true) first",
                )
            await self._stream.send_message(self._handshake_response)
            async for data in self._stream:
                datum = self._decode(data).datum
                if datum is None:
                    raise GRPCError(
                        Status.INVALID_ARGUMENT,
                        f"expected a request after the handshake, got a {self._what} without one",
                    )
                # Waits only while MAX_IN_FLIGHT requests are in progress: the drain cannot
                # cut in between the read and begin().
                await self._slots.acquire()
                self._drain.begin()
                tasks.start(self._answer(tasks, answer, datum))

    async def _answer(self, tasks: StreamTasks, answer: Answer, datum: Datum) -> None:
        # One task per request in flight: one coroutine besides the answer's own.
        try:
            await answer(datum, self._send)
        except Exception as err:
            await tasks.fail(err)
        finally:
            self._slots.release()
            self._drain.end()

    async def _send(self, payload: bytes) -> None:
        async with self._send_lock:
            await self._stream.send_message(payload)


def unary_answer(
    handler: Handler,
    invoker: Invoker,
    container_type: str,
    encode: Callable[[object, Datum], bytes],
) -> Answer:
    """Answer a request with one response: the handler's result, encoded by ``encode``.

    A handler that raises or returns a wrong type fails the stream with ``INTERNAL``
    ``UDF_EXECUTION_ERROR(<container_type>): ...``, as the v1 platform expects.
    """
    errors = HandlerErrors(handler, v1_container=container_type)

    async def answer(datum: Datum, send: Send) -> None:
        with errors:
            result = await invoker.call(handler, datum.keys, datum)
            payload = encode(result, datum)
        await send(payload)

    return answer
