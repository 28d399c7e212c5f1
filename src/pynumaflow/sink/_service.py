"""sink.v1.UserDefinedSink: a batch of datums in, one response per datum out."""

from __future__ import annotations

import asyncio
import logging
from typing import Dict, List, Union

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

# A module import, not names: _codec imports this package's types (see function._service).
from pynumaflow import _codec
from pynumaflow._invoke import Feed, Handler, Invoker, handler_errors
from pynumaflow._proto.sink.v1 import ReadyResponse, UserDefinedSinkBase
from pynumaflow._server import is_ready_method, service_mapping
from pynumaflow.sink._types import Datum, Response

__all__ = ["OMITTED", "SinkService"]

_LOGGER = logging.getLogger("pynumaflow")

RawStream = grpclib.server.Stream[bytes, bytes]

# Datums received but not yet taken by the handler; when full, reading the request
# stream pauses, and HTTP/2 flow control slows the platform down.
_FEED_SIZE = 256
_LOGGED_IDS = 5

OMITTED = "the sink handler returned no response for this datum"
"""The error of the failure reported for a datum the handler did not answer."""

# What the handler call ended with: its checked responses, or the error text that
# fails the whole batch.
Outcome = Union[List[Response], str]


class SinkService:
    """Serves SinkFn and IsReady with one sink handler.

    The handler runs while the batch is still arriving: it iterates over datums as they
    are received. SinkFn always ends with status OK and exactly one response per datum
    id received, in the order received, so nothing is lost:

    - the handler's response for the id; if it answers an id more than once, the first
      answer counts and the others are logged;
    - for ids it did not answer, a failure saying so (:data:`OMITTED`);
    - if it raises, or returns something other than Responses, a failure carrying the
      error text for every datum of the batch, those it consumed and those still to
      arrive.

    Responses for ids that were never sent are dropped with a warning. Only a malformed
    request fails the call (INVALID_ARGUMENT), and then the platform retries the batch.
    """

    def __init__(self, handler: Handler, invoker: Invoker) -> None:
        self._handler = handler
        self._invoker = invoker

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            UserDefinedSinkBase,
            {
                "SinkFn": self._sink_fn,
                "IsReady": is_ready_method(bytes(ReadyResponse(ready=True))),
            },
            raw=("SinkFn", "IsReady"),
        )

    async def _sink_fn(self, stream: RawStream) -> None:
        feed: Feed[Datum] = Feed(_FEED_SIZE, sync_consumer=not self._handler.is_async)
        call = asyncio.create_task(self._run_handler(feed))
        try:
            received = await _feed_batch(stream, feed)
            outcome = await call
        except BaseException:
            feed.abort()
            call.cancel()
            raise
        await stream.send_message(_codec.encode_response_list(_reconcile(received, outcome)))

    async def _run_handler(self, feed: Feed[Datum]) -> Outcome:
        try:
            with handler_errors(self._handler):
                result = await self._invoker.call(self._handler, feed.iterator)
                return _codec.read_responses(result)
        except GRPCError as err:  # handler_errors logged it once
            return err.message or err.status.name
        finally:
            feed.abort()  # the handler stopped reading: drop what still arrives


async def _feed_batch(stream: RawStream, feed: Feed[Datum]) -> Dict[str, None]:
    """Pass each datum of the request stream on to the handler; return the ids in order."""
    received: Dict[str, None] = {}
    async for data in stream:
        try:
            datum = _codec.decode_sink_datum_request(data)
        except _codec.CodecError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed DatumRequest: {err}") from None
        received[datum.id] = None
        await feed.put(datum)
    feed.close()
    return received


def _reconcile(received: Dict[str, None], outcome: Outcome) -> List[Response]:
    """Answer each received id exactly once, in order (the rules of SinkService)."""
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
