"""Batches: a handler fed a batch's datums as they arrive, then answering each of them.

:func:`serve_batches` is the conversation sink.v1 and map.v1's batch mode share: a
handshake, then batches of requests each ended by an EOT, each answered up to the
server's EOT before the next is read. :func:`feed_batch` is its step: the handler call
starts at the batch's first datum and reads the others from a feed while the service
reads them off its stream. :class:`BatchEngine` is the sinks' use of it, the batch
engine both sink protocols share: a batch in, one response per datum out.

A protocol's service reads the batch off its stream (the whole call for the legacy
UserDefinedSink, up to each EOT for the v1 Sink) and hands the datums to
:meth:`BatchEngine.run` one by one; the handler consumes them while they arrive, and
the engine answers every datum received exactly once, in the order received:

- the handler's response for the id; if it answers an id more than once, the first
  answer counts and the others are logged;
- for ids it did not answer, a failure saying so (:data:`OMITTED`);
- if it raises, or returns something other than Responses, a failure carrying the error
  text for every datum of the batch, those it consumed and those still to arrive.

Responses for ids that were never sent are dropped with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, Callable, Dict, List, NamedTuple, Optional, TypeVar, Union

import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.results import read_responses
from pynumaflow._codec.rpc import decode_or_refuse
from pynumaflow._core.messages import MessageReader
from pynumaflow._engines.drain import IdleDrain
from pynumaflow._engines.feed import Feed
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._types.sink import Datum, Response

__all__ = [
    "OMITTED",
    "Batch",
    "BatchEngine",
    "BatchReader",
    "NextDatum",
    "feed_batch",
    "serve_batches",
]

_LOGGER = logging.getLogger("pynumaflow")

# Datums received but not yet taken by the handler; when full, reading the request
# stream pauses, and HTTP/2 flow control slows the platform down.
_FEED_SIZE = 256
_LOGGED_IDS = 5

_D = TypeVar("_D")
_R = TypeVar("_R")

OMITTED = "the sink handler returned no response for this datum"
"""The error of the failure reported for a datum the handler did not answer."""

NextDatum = Callable[[], Awaitable[Optional[Datum]]]
"""Reads the batch's next datum off the stream; ``None`` when the batch has ended."""

# What the handler call ended with: its checked responses, or the error text that
# fails the whole batch.
_Outcome = Union[List[Response], str]


class Batch(NamedTuple):
    """A batch answered: one response per id received, in order, and each id's metadata."""

    responses: List[Response]
    user_metadata: Dict[str, bytes]
    """Per id, the encoded user metadata of its request (Numaflow >= 1.7, else empty)."""


class BatchEngine:
    """Runs one sink handler over batch after batch, by the rules of this module."""

    def __init__(self, handler: Handler, invoker: Invoker) -> None:
        self._handler = handler
        self._invoker = invoker

    async def run(self, next_datum: NextDatum, first: Optional[Datum] = None) -> Batch:
        """Call the handler with the batch ``next_datum`` reads, and answer each datum.

        The handler starts at once, before the batch's datums have all arrived. ``first``
        is a datum of the batch its caller already read. Whatever reading raises (a
        malformed request, a cancelled call) abandons the handler and propagates.
        """
        received: Dict[str, bytes] = {}

        def note(datum: Datum) -> None:
            received[datum.id] = datum._user_metadata

        outcome = await feed_batch(
            self._call_handler, self._handler, next_datum, first, received=note
        )
        return Batch(_reconcile(received, outcome), received)

    async def _call_handler(self, feed: Feed[Datum]) -> _Outcome:
        try:
            with HandlerErrors(self._handler):
                result = await self._invoker.call(self._handler, feed.iterator)
                return read_responses(result)
        except GRPCError as err:  # HandlerErrors logged it once
            return err.message or err.status.name
        finally:
            feed.abort()  # the handler stopped reading: drop what still arrives


async def feed_batch(
    call: Callable[[Feed[_D]], Coroutine[Any, Any, _R]],
    handler: Handler,
    next_datum: Callable[[], Awaitable[Optional[_D]]],
    first: Optional[_D],
    *,
    received: Callable[[_D], None],
) -> _R:
    """Run ``call`` (a handler's call reading a feed) over the batch ``next_datum`` reads.

    The call starts at once, and each datum goes into its feed as it is read (after
    ``received(datum)``); at the batch's end (``next_datum`` returns None) the feed is
    closed and the call's result returned. ``first`` is a datum of the batch already
    read. Whatever reading or the call raises abandons the call and propagates.
    """
    feed: Feed[_D] = Feed(_FEED_SIZE, sync_consumer=not handler.is_async)
    task: asyncio.Task[_R] = asyncio.create_task(call(feed))
    try:
        datum = first if first is not None else await next_datum()
        while datum is not None:
            received(datum)
            await feed.put(datum)
            datum = await next_datum()
        feed.close()
        return await task
    except BaseException:
        feed.abort()
        task.cancel()
        raise


def _reconcile(received: Dict[str, bytes], outcome: _Outcome) -> List[Response]:
    """Answer each received id exactly once, in order (the rules of this module)."""
    if isinstance(outcome, str):
        return [Response.as_failure(msg_id, outcome) for msg_id in received]
    answers: Dict[str, Response] = {}
    unknown: List[str] = []
    repeated: List[str] = []
    for response in outcome:
        if response.id not in received:
            unknown.append(response.id)
        elif response.id in answers:
            repeated.append(response.id)
        else:
            answers[response.id] = response
    replies: List[Response] = []
    omitted: List[str] = []
    for msg_id in received:
        if msg_id in answers:
            replies.append(answers[msg_id])
        else:
            omitted.append(msg_id)
            replies.append(Response.as_failure(msg_id, OMITTED))
    _warn("answered ids that were not in the batch; dropped those responses", unknown)
    _warn("answered ids more than once; kept the first answer", repeated)
    _warn("gave no response for some datums; reported them as failed", omitted)
    return replies


def _warn(what: str, ids: List[str]) -> None:
    if ids:
        shown = ", ".join(map(repr, ids[:_LOGGED_IDS]))
        more = f" and {len(ids) - _LOGGED_IDS} more" if len(ids) > _LOGGED_IDS else ""
        _LOGGER.warning("sink_handler %s (%d): %s%s", what, len(ids), shown, more)


RawStream = grpclib.server.Stream[bytes, bytes]
AnswerBatch = Callable[[Callable[[], Awaitable[Any]], Any], Awaitable[Iterable[bytes]]]
"""How a service answers a batch: ``await answer(next_datum, first)`` -> the messages to send."""


async def serve_batches(
    stream: RawStream,
    reader: BatchReader,
    answer: AnswerBatch,
    *,
    handshake_response: bytes,
    eot_response: bytes,
    label: str,
) -> None:
    """Serve one batch-mode stream: the handshake, then batch after batch.

    The client's handshake is answered first. Each batch (from its first request to its
    EOT, or the end of the stream) is answered by ``answer``'s messages, then
    ``eot_response`` at once; a bare EOT gets a bare EOT. When the server drains, the
    stream ends UNAVAILABLE between batches: at once if it is idle, else after the batch
    in progress is answered up to its EOT.

    Raises:
        GRPCError: ``INVALID_ARGUMENT`` for a malformed or out-of-order request;
            whatever ``answer`` raised; ``UNAVAILABLE`` when the drain ended the stream.

    """
    drain = IdleDrain()  # busy from a batch's first request to its EOT response
    async with drain.reading():
        await _converse(stream, reader, answer, handshake_response, eot_response, drain, label)
    drain.check()


async def _converse(
    stream: RawStream,
    reader: BatchReader,
    answer: AnswerBatch,
    handshake_response: bytes,
    eot_response: bytes,
    drain: IdleDrain,
    label: str,
) -> None:
    if not await reader.handshake():
        return
    await stream.send_message(handshake_response)
    _LOGGER.debug("%s: stream opened", label)
    while True:
        first = await reader.next_datum()
        if first is None and reader.closed:
            break
        with drain.busy():
            if first is not None:
                for message in await answer(reader.next_datum, first):
                    await stream.send_message(message)
            await stream.send_message(eot_response)
        if reader.closed:
            break
    _LOGGER.debug("%s: stream closed by the client", label)


class BatchReader:
    """Reads a batch-mode stream: the handshake, then datums batch by batch.

    ``decode`` gives the codec's view of a request message: ``handshake`` (set, with
    sot), ``datum`` (or None) and ``eot``; ``what`` and ``rpc`` name the message and
    the method in errors.
    """

    def __init__(
        self, stream: RawStream, decode: Callable[[bytes], Any], what: str, rpc: str
    ) -> None:
        self._requests = MessageReader(stream)
        self._decode = decode
        self._what = what
        self._rpc = rpc
        self._eot_pending = False
        self.closed = False
        """Whether the client has ended the stream."""

    async def _next(self) -> Any:
        data = await self._requests.next()
        if data is None:
            self.closed = True
            return None
        return decode_or_refuse(self._decode, data, self._what)

    async def handshake(self) -> bool:
        """Read the handshake; False if the stream ended before any message."""
        request = await self._next()
        if request is None:
            return False
        if request.handshake is not True or request.datum is not None or request.eot:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"the first {self._what} must be the handshake, {{handshake: {{sot: true}}}}",
            )
        return True

    async def next_datum(self) -> Any:
        """The batch's next datum; None at its EOT or when the stream ends."""
        if self._eot_pending or self.closed:
            self._eot_pending = False
            return None
        request = await self._next()
        if request is None:
            return None
        if request.handshake:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"a second handshake on the {self._rpc} stream"
            )
        if request.datum is None:
            if request.eot:
                return None
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"a {self._what} with neither a request nor status.eot"
            )
        self._eot_pending = request.eot
        return request.datum
