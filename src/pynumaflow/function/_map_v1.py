"""map.v1 (Numaflow >= 1.4): the map handler (unary mode) or map stream handler (stream mode).

Both map.v1 and sourcetransformer.v1 are one long-lived bidi stream per component: the
client opens with a handshake, which the server answers first, then sends requests
with many in flight and half-closes at shutdown. :func:`serve_requests` drives that
conversation for both protocols; each service only says how one request is answered.
When the server drains, a stream ends as soon as every request it has read is answered
(see :class:`~pynumaflow._server.IdleDrain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Callable, Dict

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

# A module import: the codecs import pynumaflow.function (see function._service).
from pynumaflow import _codec_map_v1
from pynumaflow._errors import CodecError
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._rpc import READY
from pynumaflow._server import IdleDrain, is_ready_method, service_mapping
from pynumaflow._tasks import StreamTasks
from pynumaflow.function._types import Datum

if TYPE_CHECKING:
    from pynumaflow._codec_map_v1 import Incoming

__all__ = ["MAX_IN_FLIGHT", "MapV1Service", "serve_requests", "unary_answer"]

RawStream = grpclib.server.Stream[bytes, bytes]
Send = Callable[[bytes], Awaitable[None]]
Answer = Callable[[Datum, Send], Awaitable[None]]
"""How a service answers one request: ``await answer(datum, send)``, sending its responses."""

MAX_IN_FLIGHT = 1024
"""Requests of one stream being answered at once; beyond it the stream is not read (the
platform keeps a read batch, ~500, in flight), so HTTP/2 flow control holds it back."""


async def serve_requests(
    stream: RawStream, decode: Callable[[bytes], Incoming], answer: Answer, *, what: str
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

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` when the first message is not a handshake, a
            later one carries no request, or one is malformed; whatever ``answer``
            raised (the first failure ends the stream, every other request is cancelled);
            ``UNAVAILABLE`` when the drain ended the stream.

    """
    await _Exchange(stream, decode, what).run(answer)


class _Exchange:
    def __init__(self, stream: RawStream, decode: Callable[[bytes], Incoming], what: str) -> None:
        self._stream = stream
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
        try:
            return self._decode_bytes(data)
        except CodecError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {self._what}: {err}") from None

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
            await self._stream.send_message(_codec_map_v1.HANDSHAKE_RESPONSE)
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


class MapV1Service:
    """Serves map.v1 MapFn and IsReady with one handler.

    Unary mode (``map_handler``, map.sock): exactly one ``MapResponse{id, results}``
    per request. Stream mode (``map_stream_handler``, mapstream.sock): one
    ``MapResponse{id, results: [r]}`` per message as soon as it is yielded, then
    ``MapResponse{id, status{eot}}``.
    """

    def __init__(
        self, handler: Handler, invoker: Invoker, *, stream: bool, container_type: str
    ) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type
        self._answer: Answer = (
            self._answer_stream
            if stream
            else unary_answer(handler, invoker, container_type, _codec_map_v1.encode_map_response)
        )

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "map.v1.Map",
            {"MapFn": self._map_fn, "IsReady": is_ready_method(READY)},
        )

    async def _map_fn(self, stream: RawStream) -> None:
        await serve_requests(
            stream, _codec_map_v1.decode_map_request, self._answer, what="MapRequest"
        )

    async def _answer_stream(self, datum: Datum, send: Send) -> None:
        await self._invoker.relay(
            self._handler,
            (datum.keys, datum),
            lambda message: _codec_map_v1.encode_map_stream_response(message, datum),
            send,
            v1_container=self._container_type,
        )
        await send(_codec_map_v1.encode_map_eot(datum))
