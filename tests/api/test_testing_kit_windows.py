"""pynumaflow.testing drives batch map, reduce stream, accumulator and session reduce.

Real servers of the modern API on temporary sockets, called through the kit's clients:
each kind's conversation (handshake and EOT for batch map, EOF per window, key or
session), results seen while a window or key is still open, and a handler error
surfacing as the platform sees it. The client's own checks of what a server owes it
(a handshake, an answer per id before the EOT) are tried against a small grpclib server
that breaks them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime, timedelta, timezone
from typing import Any, List

import grpclib.const
import grpclib.server
import pytest

from pynumaflow import testing
from pynumaflow._client.v1 import V1Connection
from pynumaflow._proto.map import v1 as map_pb
from pynumaflow.accumulator import Accumulator, KeyedWindow
from pynumaflow.accumulator import Datum as AccDatum
from pynumaflow.accumulator import Message as AccMessage
from pynumaflow.batchmapper import BatchMapper, BatchResponse, BatchResponses
from pynumaflow.batchmapper import Datum as BatchDatum
from pynumaflow.batchmapper import Message as BatchMessage
from pynumaflow.reducestreamer import Message as StreamMessage
from pynumaflow.reducestreamer import Metadata, NonBlockingIterator, ReduceStreamer
from pynumaflow.sessionreducer import Datum as SessionDatum
from pynumaflow.sessionreducer import Message as SessionMessage
from pynumaflow.sessionreducer import SessionReducer
from pynumaflow.testing import CallError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
UTC = timezone.utc
T0 = datetime(2024, 5, 6, 7, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- batch map ------------------------------------------------------------------------------


async def shout(datums: AsyncIterable[BatchDatum]) -> BatchResponses:
    responses = BatchResponses()
    async for datum in datums:
        if datum.value == b"boom":
            raise ValueError("boom in batch")
        outputs = [BatchMessage(datum.value.upper(), keys=datum.keys)] if datum.value else []
        responses.append(BatchResponse.with_msgs(datum.id, outputs))
    return responses


async def test_batch_map_answers_every_id_batch_after_batch() -> None:
    async with testing.serve_batch_map(shout) as udf:
        assert await udf.is_ready()
        first = await udf.batch_map([b"a", b"", "c"], keys=["k"])
        assert list(first) == ["1", "2", "3"]
        assert [[m.value for m in first[i]] for i in first] == [[b"A"], [], [b"C"]]
        assert first["1"][0].keys == ["k"]
        again = await udf.batch_map([testing.make_datum(b"d", msg_id="x-9")])
        assert [m.value for m in again["x-9"]] == [b"D"]


async def test_batch_map_handler_error_fails_the_batch_and_the_next_batch_goes_on() -> None:
    async with testing.serve_batch_map(shout) as udf:
        with pytest.raises(CallError) as raised:
            await udf.batch_map([b"a", b"boom"])
        assert raised.value.status == "INTERNAL"
        assert "UDF_EXECUTION_ERROR(udf): ValueError('boom in batch')" in raised.value.details
        assert raised.value.traceback
        assert 'raise ValueError("boom in batch")' in (raised.value.traceback)
        assert [m.value for m in (await udf.batch_map([b"b"]))["1"]] == [b"B"]


def test_batch_map_sync() -> None:
    with testing.serve_batch_map_sync(shout) as udf:
        assert udf.is_ready()
        assert [m.value for m in udf.batch_map([b"x"])["1"]] == [b"X"]


async def test_batch_map_refuses_repeated_ids() -> None:
    async with testing.serve_batch_map(shout) as udf:
        with pytest.raises(ValueError, match="unique"):
            await udf.batch_map([testing.make_datum(b"a", msg_id="2"), b"b"])


class BrokenBatchMap:
    """A map.v1 server that breaks the batch rules the platform checks."""

    def __init__(self, handshake: bool, answered: int) -> None:
        self.handshake = handshake
        self.answered = answered

    async def map_fn(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(
            map_pb.MapResponse(handshake=map_pb.Handshake(sot=self.handshake))
        )
        ids = []
        while (request := await stream.recv_message()) is not None:
            if request.status is not None and request.status.eot:
                for request_id in ids[: self.answered]:
                    await stream.send_message(map_pb.MapResponse(id=request_id))
                await stream.send_message(map_pb.MapResponse(id="unknown"))
                await stream.send_message(
                    map_pb.MapResponse(status=map_pb.TransmissionStatus(eot=True))
                )
                ids = []
            else:
                ids.append(request.id)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/map.v1.Map/MapFn": grpclib.const.Handler(
                self.map_fn,
                grpclib.const.Cardinality.STREAM_STREAM,
                map_pb.MapRequest,
                map_pb.MapResponse,
            )
        }


async def batch_against(tmp_path: Any, service: BrokenBatchMap, items: int) -> dict[str, List[Any]]:
    from pynumaflow._client.streams import BatchMapStream
    from pynumaflow._client.v1 import Input

    server = grpclib.server.Server([service])
    sock = str(tmp_path / "batchmap.sock")
    await server.start(path=sock)
    try:
        async with V1Connection(sock, 10) as connection, BatchMapStream(connection) as stream:
            return await stream.batch([Input(b"v", id=f"id-{n}") for n in range(items)])
    finally:
        server.close()
        await server.wait_closed()


async def test_batch_map_client_checks_the_handshake(tmp_path: Any) -> None:
    with pytest.raises(CallError, match="invalid handshake"):
        await batch_against(tmp_path, BrokenBatchMap(handshake=False, answered=2), 2)


async def test_batch_map_client_says_partial_response_on_an_early_eot(tmp_path: Any) -> None:
    """An EOT before every id was answered is UDF_PARTIAL_RESPONSE; unknown ids ignored."""
    answers = await batch_against(tmp_path, BrokenBatchMap(handshake=True, answered=3), 3)
    assert list(answers) == ["id-0", "id-1", "id-2"]
    with pytest.raises(CallError) as raised:
        await batch_against(tmp_path, BrokenBatchMap(handshake=True, answered=1), 3)
    assert raised.value.status == "INTERNAL"
    assert raised.value.details.startswith("UDF_PARTIAL_RESPONSE(batch_map)")
    assert "id-1, id-2" in raised.value.details


# --- reduce stream --------------------------------------------------------------------------


async def every_two(
    keys: List[str],
    datums: AsyncIterable[Any],
    output: NonBlockingIterator[StreamMessage],
    md: Metadata,
) -> None:
    count = 0
    async for datum in datums:
        if datum.value == b"boom":
            raise ValueError("boom in window")
        count += 1
        if count % 2 == 0:
            await output.put(StreamMessage(f"so far:{count}".encode(), keys=keys))
    await output.put(StreamMessage(f"total:{count}".encode(), keys=keys))


async def test_reduce_stream_results_come_while_the_window_is_open() -> None:
    async with testing.serve_reduce_stream(every_two) as udf:
        assert await udf.is_ready()
        async with udf.open_window() as window:
            await window.send(b"a", ["k"])
            await window.send(b"b", ["k"])
            early = await window.next()  # before the window is closed
            assert early is not None
            assert early.value == b"so far:2"
            await window.send(b"c", ["k"])
            await window.close()
            last = await window.next()
            assert last is not None
            assert (last.value, last.keys) == (b"total:3", ["k"])
            assert await window.next() is None  # the EOF


async def test_reduce_stream_collects_a_window_and_fails_on_a_handler_error() -> None:
    async with testing.serve_reduce_stream(every_two) as udf:
        messages = await udf.reduce_stream([b"a", b"b", b"c"], keys=["k"])
        assert [m.value for m in messages] == [b"so far:2", b"total:3"]
        with pytest.raises(CallError) as raised:
            await udf.reduce_stream([b"a", b"boom"], keys=["k"])
        assert raised.value.status == "INTERNAL"
        assert "ValueError('boom in window')" in raised.value.details
        assert [m.value for m in await udf.reduce_stream([b"x"], keys=["k"])] == [b"total:1"]


def test_reduce_stream_sync() -> None:
    with testing.serve_reduce_stream_sync(every_two) as udf:
        assert udf.is_ready()
        assert [m.value for m in udf.reduce_stream([b"a"], keys=["k"])] == [b"total:1"]


# --- accumulator ----------------------------------------------------------------------------


class Relay(Accumulator):
    async def handler(
        self, datums: AsyncIterable[AccDatum], output: NonBlockingIterator[Any]
    ) -> None:
        async for datum in datums:
            if datum.value == b"boom":
                raise ValueError("boom in key")
            await output.put(AccMessage.from_datum(datum))


async def test_accumulator_outputs_then_an_eof_echoing_each_closed_window() -> None:
    async with testing.serve_accumulator(Relay) as udf:
        assert await udf.is_ready()
        datums = [
            testing.make_datum(b"a", ["k1"], event_time=at(1), msg_id="m1"),
            testing.make_datum(b"b", ["k2"], event_time=at(2), msg_id="m2"),
            testing.make_datum(b"c", ["k1"], event_time=at(3), msg_id="m3"),
        ]
        answers = await udf.accumulate(datums, window=timedelta(seconds=30))
    k1 = [a for a in answers if a.window.keys == ["k1"]]
    assert [(a.message.value, a.message.id) for a in k1 if a.message] == [
        (b"a", "m1"),
        (b"c", "m3"),
    ]
    assert k1[-1].eof
    assert (k1[-1].window.start, k1[-1].window.end) == (at(1), at(31))
    assert sum(a.eof for a in answers) == 2
    message = k1[0].message
    assert isinstance(message, AccMessage)
    assert message.event_time == at(1)


async def test_accumulator_outputs_come_while_the_key_is_open_and_close_ends_it() -> None:
    async with testing.serve_accumulator(Relay) as udf, udf.open_stream() as stream:
        await stream.send(b"a", ["k"], event_time=at(1))
        first = await stream.next()  # the key is still open
        assert first is not None
        assert first.message is not None
        assert first.message.value == b"a"
        await stream.close(["k"])
        eof = await stream.next()
        assert eof is not None
        assert eof.eof
        assert eof.window.keys == ["k"]
        await stream.end()
        assert await stream.next() is None


async def test_accumulator_handler_error_fails_the_stream() -> None:
    async with testing.serve_accumulator(Relay) as udf:
        with pytest.raises(CallError) as raised:
            await udf.accumulate([b"a", b"boom"], keys=["k"])
        assert raised.value.status == "INTERNAL"
        assert "ValueError('boom in key')" in raised.value.details
        assert [a.eof for a in await udf.accumulate([b"x"], keys=["k"])] == [False, True]


def test_accumulator_sync() -> None:
    with testing.serve_accumulator_sync(Relay) as udf:
        assert udf.is_ready()
        answers = udf.accumulate([b"x"], keys=["k"])
        assert [a.message.value if a.message else None for a in answers] == [b"x", None]


# --- session reduce -------------------------------------------------------------------------


class Counter(SessionReducer):
    def __init__(self) -> None:
        self.count = 0

    async def session_reduce(
        self,
        keys: List[str],
        datums: AsyncIterable[SessionDatum],
        output: NonBlockingIterator[SessionMessage],
    ) -> None:
        async for datum in datums:
            if datum.value == b"boom":
                raise ValueError("boom in session")
            self.count += 1
        await output.put(SessionMessage(f"count:{self.count}".encode(), keys=keys))

    def accumulator(self) -> bytes:
        return str(self.count).encode()

    def merge_accumulator(self, accumulator: bytes) -> None:
        self.count += int(accumulator)


async def test_sessions_are_opened_expanded_and_merged_as_the_platform_does() -> None:
    times = [0, 5, 30, 22, 13]  # the last joins [0, 15) and [22, 40) into one session
    datums = [testing.make_datum(b"click", ["u"], event_time=at(t)) for t in times]
    async with testing.serve_session_reduce(Counter) as udf:
        assert await udf.is_ready()
        answers = await udf.sessions(datums, gap=timedelta(seconds=10))
    result, eof = answers
    assert result.message is not None
    assert result.message.value == b"count:5"
    assert (result.window.start, result.window.end) == (at(0), at(40))
    assert eof.eof
    assert (eof.window.start, eof.window.end) == (at(0), at(40))


async def test_session_operations_given_one_by_one() -> None:
    first = KeyedWindow(at(0), at(10), "0", ["u"])
    second = KeyedWindow(at(8), at(20), "0", ["u"])
    grown = KeyedWindow(at(8), at(25), "0", ["u"])
    merged = KeyedWindow(at(0), at(25), "0", ["u"])
    async with testing.serve_session_reduce(Counter) as udf, udf.open_stream() as stream:
        await stream.open(first, b"a")
        await stream.open(second, b"b")
        await stream.append(second, b"c", event_time=at(9))
        await stream.expand(second, grown, b"d", event_time=at(15))
        await stream.merge([first, grown])
        await stream.close(merged)
        result = await stream.next()
        eof = await stream.next()
        await stream.end()
        assert await stream.next() is None
    assert result is not None
    assert result.message is not None
    assert result.message.value == b"count:4"
    assert (result.window.start, result.window.end) == (at(0), at(25))
    assert eof is not None
    assert eof.eof
    assert eof.window.end == at(25)


async def test_session_handler_error_fails_the_stream() -> None:
    async with testing.serve_session_reduce(Counter) as udf:
        with pytest.raises(CallError) as raised:
            await udf.sessions([b"a", b"boom"], keys=["u"])
        assert raised.value.status == "INTERNAL"
        assert "ValueError('boom in session')" in raised.value.details
        assert raised.value.traceback
        assert len(await udf.sessions([b"x"], keys=["u"])) == 2


def test_session_reduce_sync() -> None:
    with testing.serve_session_reduce_sync(Counter) as udf:
        assert udf.is_ready()
        (result, eof) = udf.sessions([b"x", b"y"], keys=["u"])
        assert result.message is not None
        assert result.message.value == b"count:2"
        assert eof.eof


# --- the modern API's handler classes ------------------------------------------------------


class Tagger(BatchMapper):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def handler(self, datums: AsyncIterable[BatchDatum]) -> BatchResponses:
        batch = [datum async for datum in datums]
        return BatchResponses(
            *(
                BatchResponse.with_msgs(d.id, [BatchMessage(d.value, tags=[self.tag])])
                for d in batch
            )
        )


class Every(ReduceStreamer):
    def __init__(self, every: int) -> None:
        self.every = every
        self.count = 0

    async def handler(
        self,
        keys: List[str],
        datums: AsyncIterable[Any],
        output: NonBlockingIterator[StreamMessage],
        md: Metadata,
    ) -> None:
        async for _ in datums:
            self.count += 1
            if self.count % self.every == 0:
                await output.put(StreamMessage(str(self.count).encode(), keys=keys))


async def test_the_kit_serves_class_handlers() -> None:
    """A BatchMapper instance; a ReduceStreamer class with init_args, one per key."""
    async with testing.serve_batch_map(Tagger("t")) as udf:
        assert (await udf.batch_map([b"a"]))["1"][0].tags == ["t"]
    datums = [testing.make_datum(b"x", [key], event_time=T0) for key in "abab"]
    async with testing.serve_reduce_stream(Every, init_args=(2,)) as udf:
        messages = await udf.reduce_stream(datums)
    assert sorted((m.keys[0], m.value) for m in messages) == [("a", b"2"), ("b", b"2")]
