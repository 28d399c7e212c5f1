"""The bidi stream map.v1 and sourcetransformer.v1 share: handshake, then many requests in flight.

Both protocols are one long-lived bidi stream per component: the client opens with a
handshake, which the server answers first, then sends requests with many in flight and
half-closes at shutdown. :func:`serve_requests` drives that conversation; each service
only says how one request is answered. When the server drains, a stream ends as soon as
every request it has read is answered (see :class:`~pynumaflow._engines.drain.IdleDrain`).

The work is done a loop pass at a time, not a message at a time: every request one read
brought is decoded and started together, a sync unary handler's calls of a read go to
the pool as a few jobs (``Invoker.call_each``), and the answers of a pass leave in one
DATA write (:mod:`pynumaflow._core.messages`). No lock or semaphore per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Callable, Optional, Protocol

import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import decode_or_refuse
from pynumaflow._core.messages import MessageWriter, read_messages
from pynumaflow._engines.drain import IdleDrain
from pynumaflow._engines.tasks import StreamTasks
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._types.function import Datum

__all__ = [
    "MAX_IN_FLIGHT",
    "Answer",
    "Incoming",
    "Send",
    "StreamAnswer",
    "UnaryAnswer",
    "serve_requests",
    "stream_answer",
    "unary_answer",
]


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


class _HandlerAnswer:
    """A handler's way to answer requests: the handler, its invoker, its encoder, its errors."""

    def __init__(
        self,
        handler: Handler,
        invoker: Invoker,
        container_type: str,
        encode: Callable[[object, Datum], bytes],
    ) -> None:
        self.handler = handler
        self.invoker = invoker
        self.container_type = container_type
        self.encode = encode
        self.errors = HandlerErrors(handler, v1_container=container_type)


class UnaryAnswer(_HandlerAnswer):
    """Answers a request with one response: the handler's result, encoded.

    Made by :func:`unary_answer`; the engine calls a sync handler for a whole read of
    requests at once (``Invoker.call_each``). It is an :data:`Answer` too.
    """

    async def __call__(self, datum: Datum, send: Send) -> None:
        with self.errors:
            result = await self.invoker.call(self.handler, datum.keys, datum)
            payload = self.encode(result, datum)
        await send(payload)


def unary_answer(
    handler: Handler,
    invoker: Invoker,
    container_type: str,
    encode: Callable[[object, Datum], bytes],
) -> UnaryAnswer:
    """Answer a request with one response: the handler's result, encoded by ``encode``.

    A handler that raises or returns a wrong type fails the stream with ``INTERNAL``
    ``UDF_EXECUTION_ERROR(<container_type>): ...``, as the v1 platform expects.
    """
    return UnaryAnswer(handler, invoker, container_type, encode)


class StreamAnswer(_HandlerAnswer):
    """Answers a request with a response per message its stream handler yields, then an EOT.

    Made by :func:`stream_answer`; the engine runs a sync handler's calls for a whole
    read of requests at once (``Invoker.stream_each``). It is an :data:`Answer` too.
    """

    def __init__(
        self,
        handler: Handler,
        invoker: Invoker,
        container_type: str,
        encode: Callable[[object, Datum], bytes],
        encode_eot: Callable[[Datum], bytes],
    ) -> None:
        super().__init__(handler, invoker, container_type, encode)
        self.encode_eot = encode_eot

    async def __call__(self, datum: Datum, send: Send) -> None:
        encode = self.encode
        await self.invoker.relay(
            self.handler,
            (datum.keys, datum),
            lambda message: encode(message, datum),
            send,
            v1_container=self.container_type,
        )
        await send(self.encode_eot(datum))


def stream_answer(
    handler: Handler,
    invoker: Invoker,
    container_type: str,
    encode: Callable[[object, Datum], bytes],
    encode_eot: Callable[[Datum], bytes],
) -> StreamAnswer:
    """Answer a request with ``encode(message, datum)`` per message, then ``encode_eot(datum)``.

    A handler that raises or yields a wrong type fails the stream with ``INTERNAL``
    ``UDF_EXECUTION_ERROR(<container_type>): ...``; the messages sent before stay sent.
    """
    return StreamAnswer(handler, invoker, container_type, encode, encode_eot)


async def serve_requests(
    stream: RawStream,
    decode: Callable[[bytes], Incoming],
    answer: Answer,
    *,
    what: str,
    handshake_response: bytes,
) -> None:
    """Serve one map.v1 or sourcetransformer.v1 stream.

    Answers the client's handshake first, then answers every request with ``answer``,
    at most :data:`MAX_IN_FLIGHT` at once, responses in the order they are ready (an
    async handler's call is a task of its own, so a slow request holds back no other).
    Returns (status OK) once the client has half-closed and every request is answered.
    Once the server drains, it stops reading as soon as no request is being answered,
    and ends the stream ``UNAVAILABLE``.

    Args:
        stream: the grpclib stream, exchanging raw request and response bytes.
        decode: the codec's decoder of the request message.
        answer: answers one request (its handler errors already turned into statuses);
            a :class:`UnaryAnswer` with a sync handler is called a read at a time.
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
        self._writer = MessageWriter(stream)
        self._tasks = StreamTasks(asyncio.Lock())
        self._drain = IdleDrain()  # a request is in progress from its read to its answer
        self._in_flight = 0
        self._room: Optional[asyncio.Future[None]] = None  # the reader, waiting for room

    async def run(self, answer: Answer) -> None:
        tasks = self._tasks
        # Not one of the tasks: cancelling them on a failure never cuts a message in half,
        # and what was answered before the failure is still sent.
        writing = asyncio.ensure_future(self._write())
        try:
            try:
                tasks.start_guarded(self._read, answer)
                await tasks.wait()
            finally:
                await tasks.close()
            self._writer.close()
            await writing
        finally:
            writing.cancel()
        if tasks.failure is not None:
            raise tasks.failure
        self._drain.check()

    async def _write(self) -> None:
        try:
            await self._writer.run()
        except Exception as err:
            self._tasks.fail_nowait(err)

    def _decode(self, data: bytes) -> Incoming:
        return decode_or_refuse(self._decode_bytes, data, self._what)

    async def _read(self, answer: Answer) -> None:
        stream = self._stream
        async with self._drain.reading():
            first = await read_messages(stream, 1)
            if not first:
                return
            if not self._decode(first[0]).handshake:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"expected a handshake ({self._what} with handshake.sot true) first",
                )
            await stream.send_message(self._handshake_response)
            while True:
                room = MAX_IN_FLIGHT - self._in_flight
                if room <= 0 or self._writer.full:
                    await self._wait_for_room()
                    continue
                messages = await read_messages(stream, room)
                if not messages:
                    return
                datums = []
                for data in messages:
                    datum = self._decode(data).datum
                    if datum is None:
                        raise GRPCError(
                            Status.INVALID_ARGUMENT,
                            f"expected a request after the handshake, got a {self._what} "
                            "without one",
                        )
                    datums.append(datum)
                # No await since the read: the drain cannot cut in before begin().
                self._in_flight += len(datums)
                self._drain.begin(len(datums))
                self._start(answer, datums)

    async def _wait_for_room(self) -> None:
        if self._writer.full:
            await self._writer.drained()
            return
        self._room = asyncio.get_running_loop().create_future()
        await self._room

    def _start(self, answer: Answer, datums: list[Datum]) -> None:
        tasks = self._tasks
        if isinstance(answer, StreamAnswer) and not answer.handler.is_async:
            tasks.start(self._stream_each(answer, datums))
            return
        if isinstance(answer, UnaryAnswer):
            if not answer.handler.is_async:
                tasks.start(self._call_each(answer, datums))
                return
            for datum in datums:
                tasks.start(self._call(answer, datum))
            return
        for datum in datums:
            tasks.start(self._answer(answer, datum))

    def _finish(self, count: int = 1) -> None:
        """``count`` requests are answered (or abandoned)."""
        self._in_flight -= count
        self._drain.end(count)
        room = self._room
        if room is not None and self._in_flight <= MAX_IN_FLIGHT // 2 and not room.done():
            self._room = None
            room.set_result(None)

    async def _answer(self, answer: Answer, datum: Datum) -> None:
        # One task per request in flight: one coroutine besides the answer's own.
        try:
            await answer(datum, self._send)
        except Exception as err:
            self._tasks.fail_nowait(err)
        finally:
            self._finish()

    async def _call(self, unary: UnaryAnswer, datum: Datum) -> None:
        # An async unary handler: the same as _answer, one coroutine fewer.
        try:
            with unary.errors:
                result = await unary.invoker.call(unary.handler, datum.keys, datum)
                payload = unary.encode(result, datum)
            self._writer.send(payload)
        except Exception as err:
            self._tasks.fail_nowait(err)
        finally:
            self._finish()

    async def _call_each(self, unary: UnaryAnswer, datums: list[Datum]) -> None:
        # A sync unary handler: one task, and a few pool jobs, for a read of requests.
        left = len(datums)
        over = asyncio.get_running_loop().create_future()  # cancelled with this task

        def done(index: int, error: Optional[BaseException], result: object) -> None:
            nonlocal left
            if over.done():
                return  # abandoned: the stream failed
            try:
                with unary.errors:
                    if error is not None:
                        raise error
                    payload = unary.encode(result, datums[index])
                self._writer.send(payload)
            except Exception as err:
                self._tasks.fail_nowait(err)  # cancels this task, and `over` with it
                return
            left -= 1
            self._finish()
            if not left:
                over.set_result(None)

        unary.invoker.call_each(
            unary.handler, [(d.keys, d) for d in datums], done, lambda: not over.done()
        )
        try:
            await over
        finally:
            if left:
                self._finish(left)

    async def _stream_each(self, streamer: StreamAnswer, datums: list[Datum]) -> None:
        # A sync stream handler: one task for a read of requests, their generators run
        # in the pool (Invoker.stream_each), every message taken so far sent at once.
        writer = self._writer
        encode, errors = streamer.encode, streamer.errors
        streams = streamer.invoker.stream_each(streamer.handler, [(d.keys, d) for d in datums])
        # Each request's datum is let go once it is answered, not when the whole read is.
        answering: list[Optional[Datum]] = list(datums)
        del datums
        left = len(answering)
        try:
            while left:
                news = await streams.take()
                for index, items, outcome in news:
                    datum = answering[index]
                    assert datum is not None  # answered requests have no more news
                    with errors:
                        for item in items:
                            writer.send(encode(item, datum))
                        if isinstance(outcome, BaseException):
                            raise outcome
                    if outcome is not None:
                        writer.send(streamer.encode_eot(datum))
                        answering[index] = None
                        left -= 1
                        self._finish()
                if writer.full:
                    await writer.drained()
                for index, items, _ in news:
                    if items:
                        streams.sent(index, len(items))
        except Exception as err:
            self._tasks.fail_nowait(err)
        finally:
            streams.stop()
            if left:
                self._finish(left)

    async def _send(self, payload: bytes) -> None:
        writer = self._writer
        writer.send(payload)
        if writer.full:
            await writer.drained()
