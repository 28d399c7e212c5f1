"""pynumaflow.testing: real servers on temporary sockets, called as the platform does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

import pynumaflow.testing as testing
from pynumaflow.function import (
    Datum,
    IntervalWindow,
    Message,
    Messages,
    MessageT,
    MessageTs,
    Metadata,
)
from pynumaflow.sink import Datum as SinkDatum
from pynumaflow.sink import Response, Responses

UTC = timezone.utc
T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def echo(keys: list[str], datum: Datum) -> Messages:
    meta = f"{datum.event_time.isoformat()}|{datum.watermark.isoformat()}|{datum.metadata.id}"
    return Messages(Message(datum.value, keys=keys, tags=[meta]))


async def stamp(keys: list[str], datum: Datum) -> MessageTs:
    return MessageTs(MessageT(datum.value, T0, keys=keys, tags=["t"]))


def split(keys: list[str], datum: Datum) -> Iterator[Message]:
    for part in datum.value.split(b","):
        yield Message(part, keys=keys)


async def total(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
    values = [int(d.value) async for d in datums]
    window = f"{md.interval_window.start.isoformat()}/{md.interval_window.end.isoformat()}"
    return Messages(Message(str(sum(values)).encode(), keys=keys, tags=[window]))


def boom(keys: list[str], datum: Datum) -> Messages:
    raise ValueError("no luck")


@pytest.mark.anyio
async def test_every_function_kind_round_trips() -> None:
    """map, mapt, map stream and reduce answer with the public datatypes."""
    async with testing.serve_function(
        map_handler=echo, mapt_handler=stamp, map_stream_handler=split, reduce_handler=total
    ) as udf:
        assert await udf.is_ready()
        mapped = await udf.map(b"v", keys=["k"], event_time=T0)
        assert mapped == Messages(
            Message(b"v", ["k"], ["2024-05-06T07:08:09.123456|2024-05-06T07:08:09.123456|"])
        )
        assert await udf.mapt("v", ["k"]) == MessageTs(MessageT(b"v", T0, ["k"], ["t"]))
        assert await udf.map_stream(b"a,b") == Messages(Message(b"a"), Message(b"b"))
        start = T0.replace(second=0, microsecond=0)  # windows are milliseconds on the wire
        window = IntervalWindow(start, start.replace(minute=9))
        reduced = await udf.reduce([b"1", "2", testing.make_datum(b"5", ["x"])], window=window)
    assert sorted((m.keys, m.value) for m in reduced) == [([], b"3"), (["x"], b"5")]
    assert {m.tags[0] for m in reduced} == {f"{start.isoformat()}/{window.end.isoformat()}"}


@pytest.mark.anyio
async def test_reduce_defaults_to_the_minute_of_the_first_datum() -> None:
    """Without a window, the datums go as one 60 s window holding the first event time."""
    async with testing.serve_function(reduce_handler=total) as udf:
        (message,) = await udf.reduce([testing.make_datum(b"1", event_time=T0)])
    assert message.tags == ["2024-05-06T07:08:00+00:00/2024-05-06T07:09:00+00:00"]


@pytest.mark.anyio
async def test_a_whole_datum_goes_as_it_is() -> None:
    """A Datum keeps its times, keys and message id; mixing it with fields is refused."""
    datum = testing.make_datum(b"v", ["k"], event_time=T0, watermark=T0, msg_id="m-1")
    async with testing.serve_function(map_handler=echo) as udf:
        (message,) = await udf.map(datum)
        with pytest.raises(TypeError, match="either a Datum"):
            await udf.map(datum, keys=["other"])
    assert message.tags[0].endswith("|m-1")


@pytest.mark.anyio
async def test_handler_errors_and_missing_handlers_raise_call_error() -> None:
    """A raising handler is UNKNOWN with its text; an absent one UNIMPLEMENTED."""
    async with testing.serve_function(map_handler=boom) as udf:
        with pytest.raises(testing.CallError) as raised:
            await udf.map(b"x")
        assert (raised.value.status, raised.value.details) == ("UNKNOWN", "ValueError: no luck")
        with pytest.raises(testing.CallError, match="UNIMPLEMENTED"):
            await udf.mapt(b"x")


@pytest.mark.anyio
async def test_a_hanging_handler_fails_with_deadline_exceeded() -> None:
    """call_timeout bounds each call."""

    async def hangs(keys: list[str], datum: Datum) -> Messages:
        await asyncio.sleep(30)
        return Messages()

    async with testing.serve_function(map_handler=hangs, call_timeout=0.2) as udf:
        with pytest.raises(testing.CallError, match="DEADLINE_EXCEEDED"):
            await udf.map(b"x")


@pytest.mark.anyio
async def test_sink_answers_each_datum() -> None:
    """Values get ids 1, 2...; whole sink Datums keep theirs."""

    def accept(datums: Iterator[SinkDatum]) -> Responses:
        return Responses(*(Response.as_success(d.id) for d in datums))

    async with testing.serve_sink(accept) as sink:
        assert await sink.is_ready()
        responses = await sink.sink([b"a", "b", testing.make_sink_datum(b"c", "own-id")])
    assert [r.id for r in responses] == ["1", "2", "own-id"]


def test_sync_helpers_serve_from_a_thread_and_clean_up() -> None:
    """The sync variants work without an event loop and remove their sockets."""
    with testing.serve_function_sync(map_handler=echo, map_stream_handler=split) as udf:
        assert udf.is_ready()
        assert udf.map(b"v")[0].value == b"v"
        assert len(udf.map_stream(b"a,b,c")) == 3
        folder = _socket_folder(udf)
        assert os.path.exists(folder)
    assert not os.path.exists(folder)

    def fail_all(datums: Iterator[SinkDatum]) -> Responses:
        return Responses(*(Response.as_failure(d.id, "down") for d in datums))

    with testing.serve_sink_sync(fail_all) as sink:
        assert sink.sink([b"a"]) == Responses(Response.as_failure("1", "down"))


def test_make_datum_defaults() -> None:
    """make_datum gives naive UTC times (as handlers receive them), watermark = event time."""
    datum = testing.make_datum("v", event_time=T0)
    assert (datum.value, list(datum.keys), datum.metadata.num_delivered) == (b"v", [], 1)
    assert datum.event_time == datum.watermark == T0.replace(tzinfo=None)
    assert testing.make_datum(b"v").event_time.tzinfo is None


def test_public_names() -> None:
    """__all__ holds every public class and function defined there, each documented."""
    defined = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_") and getattr(value, "__module__", "") == testing.__name__
    }
    assert defined <= set(testing.__all__)
    assert set(testing.__all__) - defined == {"CallError"}  # shared with the command
    for name in testing.__all__:
        assert getattr(testing, name).__doc__, name


def _socket_folder(client: Any) -> str:
    channel = client._client._connection._channel
    return os.path.dirname(channel._path)
