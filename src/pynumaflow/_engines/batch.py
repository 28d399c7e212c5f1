"""Batches: a handler fed a batch's datums as they arrive, then answering each of them.

:func:`feed_batch` is the conversation step the sinks and batch map share: the handler
call starts at the batch's first datum and reads the others from a feed while the
service reads them off its stream. :class:`BatchEngine` is the sink's use of it, the
sink batch engine both sink protocols share: a batch in, one response per datum out.

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
from collections.abc import Awaitable, Coroutine
from typing import Any, Callable, Dict, List, NamedTuple, Optional, TypeVar, Union

from grpclib.exceptions import GRPCError

from pynumaflow._codec.results import read_responses
from pynumaflow._engines.feed import Feed
from pynumaflow._invoke import Handler, HandlerErrors, Invoker
from pynumaflow._types.sink import Datum, Response

__all__ = ["OMITTED", "Batch", "BatchEngine", "NextDatum", "feed_batch"]

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
