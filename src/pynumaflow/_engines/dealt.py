"""A bidi stream (map.v1, sourcetransformer.v1) whose requests are answered by worker processes.

The parent keeps the stream: it answers the handshake, then deals each request's raw
bytes, undecoded, to the worker with the fewest requests in progress
(:class:`~pynumaflow._core.workers.Workers`), and sends the responses the workers
return, fully encoded, in the order they come. A worker decodes a request, answers it
with the service's own answer (the invoker: sync handlers in its pool, async ones on its
loop; handler errors become the same statuses as in one process), and sends the
responses back. Frames travel in batches, one write per loop pass on each side.

The guarantees are the single-process engine's (:mod:`pynumaflow._engines.bidi`): every
request is answered, or the stream fails with the first failure (a worker's status,
e.g. ``INTERNAL UDF_EXECUTION_ERROR`` with its DebugInfo); once the server drains, the
stream ends ``UNAVAILABLE`` as soon as every request read is answered. A worker that
dies fails every stream ``UNAVAILABLE`` (retryable: what it held is lost).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
from collections.abc import Mapping
from typing import Any, Callable, Deque, Dict, NamedTuple, Optional, Tuple

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import decode_or_refuse
from pynumaflow._core.endpoint import Service
from pynumaflow._core.workers import Link, Workers
from pynumaflow._engines.bidi import MAX_IN_FLIGHT, Answer, Incoming
from pynumaflow._engines.drain import IdleDrain

__all__ = ["Answering", "Conversation", "Dealer"]

_LOGGER = logging.getLogger("pynumaflow")

RawStream = grpclib.server.Stream[bytes, bytes]

# Frame kinds on a stream's channel. Parent to worker:
_OPEN, _REQUEST, _CLOSE = 1, 2, 3  # OPEN's payload is the RPC path
# Worker to parent:
_RESPONSE, _LAST, _ERROR = 1, 2, 3  # LAST: a request's last response (maybe empty)


class Conversation(NamedTuple):
    """How a service's bidi RPC is served: the arguments of ``bidi.serve_requests``."""

    path: str
    """The RPC's path, e.g. ``/map.v1.Map/MapFn``."""
    decode: Callable[[bytes], Incoming]
    answer: Answer
    what: str
    handshake_response: bytes


def _not_a_handshake(what: str) -> GRPCError:
    return GRPCError(
        Status.INVALID_ARGUMENT, f"expected a handshake ({what} with handshake.sot true) first"
    )


def _no_request(what: str) -> GRPCError:
    return GRPCError(
        Status.INVALID_ARGUMENT,
        f"expected a request after the handshake, got a {what} without one",
    )


# ---------------------------------------------------------------------------------------
# The parent


class Dealer:
    """The parent's side: serves the bidi RPCs of services by dealing requests to workers.

    ``on_lost`` is called once a worker has died (after every stream was failed), e.g.
    to stop the server.
    """

    def __init__(self, workers: Workers, on_lost: Callable[[], None]) -> None:
        self._workers = workers
        self._on_lost = on_lost
        self._load = [0] * workers.count  # requests in progress, by worker
        self._served = [0] * workers.count
        self._turn = 0  # where the search for the least loaded worker starts
        self._streams: Dict[int, _Dealt] = {}
        self._ids = itertools.count(1)
        self._lost: Optional[str] = None
        workers.on_frame = self._on_frame
        workers.on_lost = self._worker_lost

    @property
    def served(self) -> list[int]:
        """Requests answered, by worker."""
        return list(self._served)

    def service(self, service: Service) -> Service:
        """``service`` with its bidi RPC (if it has a ``conversation``) served by the workers."""
        conversation: Optional[Conversation] = getattr(service, "conversation", None)
        if conversation is None:
            return service
        return _DealtService(service, functools.partial(self._serve, conversation))

    async def _serve(self, conversation: Conversation, stream: RawStream) -> None:
        if self._lost is not None:
            raise GRPCError(Status.UNAVAILABLE, self._lost)
        channel = next(self._ids)
        dealt = _Dealt(self, channel, stream, conversation)
        self._streams[channel] = dealt
        self._workers.broadcast(channel, _OPEN, conversation.path.encode())
        try:
            await dealt.run()
        finally:
            del self._streams[channel]
            for index, count in enumerate(dealt.pending):
                self._load[index] -= count
            self._workers.broadcast(channel, _CLOSE)

    def deal(self, dealt: _Dealt, data: bytes) -> None:
        """Send a request to the worker with the fewest requests in progress.

        Ties go round: with a fast handler every load is often 0, and always taking the
        first worker would leave the others idle.
        """
        load = self._load
        count = len(load)
        index = start = self._turn
        for step in range(1, count):
            other = (start + step) % count
            if load[other] < load[index]:
                index = other
        self._turn = (index + 1) % count
        load[index] += 1
        dealt.pending[index] += 1
        self._workers.send(index, dealt.channel, _REQUEST, data)

    def _on_frame(self, index: int, channel: int, kind: int, payload: bytes) -> None:
        dealt = self._streams.get(channel)
        if dealt is None:
            return  # its stream ended: nobody waits for it
        if kind == _LAST:
            self._load[index] -= 1
            self._served[index] += 1
            dealt.pending[index] -= 1
        dealt.on_frame(kind, payload)

    def _worker_lost(self, message: str) -> None:
        self._lost = f"{message}; the server is restarting"
        for dealt in self._streams.values():
            dealt.fail(GRPCError(Status.UNAVAILABLE, self._lost))
        self._on_lost()


class _DealtService:
    def __init__(self, service: Service, method: Callable[[RawStream], Any]) -> None:
        self._service = service
        self._method = method

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        mapping = self._service.__mapping__()
        path = self._service.conversation.path  # type: ignore[attr-defined]
        mapping[path] = mapping[path]._replace(func=self._method)
        return mapping


class _Dealt:
    """One stream in the parent: reads and deals requests, sends what the workers answer."""

    def __init__(
        self, dealer: Dealer, channel: int, stream: RawStream, conversation: Conversation
    ) -> None:
        self._dealer = dealer
        self.channel = channel
        self._stream = stream
        self._conversation = conversation
        self.pending = [0] * len(dealer.served)  # requests dealt and not answered, by worker
        self._loop = asyncio.get_running_loop()
        self._out: Deque[Tuple[bytes, bool]] = collections.deque()
        self._wakeup: Optional[asyncio.Future[None]] = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._drain = IdleDrain()
        self._in_progress = 0
        self._read_done = False
        self._failure: Optional[BaseException] = None

    async def run(self) -> None:
        reader = self._loop.create_task(self._read())
        try:
            await self._send_answers()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if self._failure is not None:
            raise self._failure
        self._drain.check()

    def fail(self, err: BaseException) -> None:
        """End the stream with ``err`` (the first failure wins); what is queued is dropped."""
        if self._failure is None:
            self._failure = err
        self._wake()

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind == _ERROR:
            status, message, details = json.loads(payload)
            self.fail(GRPCError(Status(status), message, details))
            return
        self._out.append((payload, kind == _LAST))
        self._wake()

    def _wake(self) -> None:
        waiter, self._wakeup = self._wakeup, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _read(self) -> None:
        conversation = self._conversation
        stream = self._stream
        try:
            async with self._drain.reading():
                first = await stream.recv_message()
                if first is None:
                    return
                if not decode_or_refuse(conversation.decode, first, conversation.what).handshake:
                    raise _not_a_handshake(conversation.what)
                await stream.send_message(conversation.handshake_response)
                deal, slots, drain = self._dealer.deal, self._slots, self._drain
                async for data in stream:
                    # Waits only while MAX_IN_FLIGHT requests are in progress.
                    await slots.acquire()
                    drain.begin()
                    self._in_progress += 1
                    deal(self, data)
        except Exception as err:
            self.fail(err)
        finally:
            self._read_done = True
            self._wake()

    async def _send_answers(self) -> None:
        """Send responses as they come, until every request read is answered or a failure."""
        out, stream = self._out, self._stream
        while True:
            while out and self._failure is None:
                payload, last = out.popleft()
                if payload:
                    await stream.send_message(payload)
                if last:
                    self._in_progress -= 1
                    self._slots.release()
                    self._drain.end()
            if self._failure is not None or (self._read_done and not self._in_progress):
                return
            self._wakeup = self._loop.create_future()
            await self._wakeup


# ---------------------------------------------------------------------------------------
# A worker


class Answering:
    """A worker's side: answers the requests dealt to it with the services' conversations.

    A :class:`~pynumaflow._core.workers.WorkerApp`; ``on_close`` runs once it has
    stopped (e.g. the invoker's shutdown).
    """

    def __init__(
        self,
        link: Link,
        conversations: Mapping[str, Conversation],
        on_close: Callable[[], None],
    ) -> None:
        self._link = link
        self._conversations = conversations
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._streams: Dict[int, Tuple[Conversation, set[asyncio.Task[None]]]] = {}

    def on_frame(self, channel: int, kind: int, payload: bytes) -> None:
        if kind == _REQUEST:
            conversation, tasks = self._streams[channel]
            task = self._loop.create_task(self._answer(channel, conversation, payload))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == _OPEN:
            self._streams[channel] = (self._conversations[payload.decode()], set())
        elif kind == _CLOSE:
            _, tasks = self._streams.pop(channel)
            for task in tasks:
                task.cancel()

    async def close(self) -> None:
        tasks = [task for _, stream_tasks in self._streams.values() for task in stream_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._on_close()

    async def _answer(self, channel: int, conversation: Conversation, data: bytes) -> None:
        link = self._link
        held: list[bytes] = []  # the latest response: sent as the request's last, or not

        async def send(payload: bytes) -> None:
            if held:
                link.send(channel, _RESPONSE, held.pop())
            held.append(payload)

        try:
            datum = decode_or_refuse(conversation.decode, data, conversation.what).datum
            if datum is None:
                raise _no_request(conversation.what)
            await conversation.answer(datum, send)
        except GRPCError as err:
            error = (err.status.value, err.message, err.details)
        except Exception as err:  # not a handler's failure (those are statuses): ours
            _LOGGER.error("answering a request failed", exc_info=err)
            error = (Status.UNKNOWN.value, f"{type(err).__name__}: {err}", None)
        else:
            link.send(channel, _LAST, held.pop() if held else b"")
            return
        link.send(channel, _ERROR, json.dumps(error).encode())  # escapes lone surrogates
