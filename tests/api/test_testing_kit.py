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


PROTOCOLS = pytest.mark.parametrize("protocol", ["v1", "legacy"])


@pytest.mark.anyio
@PROTOCOLS
async def test_every_function_kind_round_trips(protocol: testing.ProtocolName) -> None:
    """map, mapt, map stream and reduce answer with the public datatypes."""
    async with testing.serve_function(
        map_handler=echo,
        mapt_handler=stamp,
        map_stream_handler=split,
        reduce_handler=total,
        protocol=protocol,
    ) as udf:
        assert await udf.is_ready()
        mapped = await udf.map(b"v", keys=["k"], event_time=T0)
        # v1 always sends a request id: the client numbers its requests.
        msg_id = "1" if protocol == "v1" else ""
        assert mapped == Messages(
            Message(
                b"v", ["k"], [f"2024-05-06T07:08:09.123456|2024-05-06T07:08:09.123456|{msg_id}"]
            )
        )
        assert await udf.mapt("v", ["k"]) == MessageTs(MessageT(b"v", T0, ["k"], ["t"]))
        assert await udf.map_stream(b"a,b") == Messages(Message(b"a"), Message(b"b"))
        start = T0.replace(second=0, microsecond=0)  # windows are milliseconds on the wire
        window = IntervalWindow(start, start.replace(minute=9))
        reduced = await udf.reduce([b"1", "2", testing.make_datum(b"5", ["x"])], window=window)
    assert sorted((m.keys, m.value) for m in reduced) == [([], b"3"), (["x"], b"5")]
    assert {m.tags[0] for m in reduced} == {f"{start.isoformat()}/{window.end.isoformat()}"}


@pytest.mark.anyio
@PROTOCOLS
async def test_reduce_defaults_to_the_minute_of_the_first_datum(
    protocol: testing.ProtocolName,
) -> None:
    """Without a window, the datums go as one 60 s window holding the first event time."""
    async with testing.serve_function(reduce_handler=total, protocol=protocol) as udf:
        (message,) = await udf.reduce([testing.make_datum(b"1", event_time=T0)])
    assert message.tags == ["2024-05-06T07:08:00+00:00/2024-05-06T07:09:00+00:00"]


@pytest.mark.anyio
@PROTOCOLS
async def test_a_whole_datum_goes_as_it_is(protocol: testing.ProtocolName) -> None:
    """A Datum keeps its times, keys and message id; mixing it with fields is refused."""
    datum = testing.make_datum(b"v", ["k"], event_time=T0, watermark=T0, msg_id="m-1")
    async with testing.serve_function(map_handler=echo, protocol=protocol) as udf:
        (message,) = await udf.map(datum)
        with pytest.raises(TypeError, match="either a Datum"):
            await udf.map(datum, keys=["other"])
    assert message.tags[0].endswith("|m-1")


@pytest.mark.anyio
async def test_v1_handler_errors_carry_the_udf_error_and_its_traceback() -> None:
    """v1: INTERNAL UDF_EXECUTION_ERROR(udf) with the traceback from DebugInfo.

    The next call goes on a new stream, as the platform reconnects.
    """
    calls = []

    def sometimes(keys: list[str], datum: Datum) -> Messages:
        calls.append(datum.value)
        if datum.value == b"x":
            raise ValueError("no luck")
        return Messages(Message(datum.value))

    async with testing.serve_function(map_handler=sometimes) as udf:
        with pytest.raises(testing.CallError) as raised:
            await udf.map(b"x")
        assert raised.value.status == "INTERNAL"
        assert raised.value.details == "UDF_EXECUTION_ERROR(udf): ValueError('no luck')"
        assert raised.value.traceback is not None
        assert raised.value.traceback.startswith("Traceback (most recent call last):")
        assert 'raise ValueError("no luck")' in raised.value.traceback
        assert raised.value.traceback.rstrip().endswith("ValueError: no luck")
        assert await udf.map(b"y") == Messages(Message(b"y"))
        with pytest.raises(testing.CallError, match="UNIMPLEMENTED"):
            await udf.mapt(b"x")
    assert calls == [b"x", b"y"]


@pytest.mark.anyio
async def test_handler_errors_and_missing_handlers_raise_call_error() -> None:
    """Legacy: a raising handler is UNKNOWN with its text; an absent one UNIMPLEMENTED."""
    async with testing.serve_function(map_handler=boom, protocol="legacy") as udf:
        with pytest.raises(testing.CallError) as raised:
            await udf.map(b"x")
        assert (raised.value.status, raised.value.details) == ("UNKNOWN", "ValueError: no luck")
        with pytest.raises(testing.CallError, match="UNIMPLEMENTED"):
            await udf.mapt(b"x")


@pytest.mark.anyio
@PROTOCOLS
async def test_a_hanging_handler_fails_with_deadline_exceeded(
    protocol: testing.ProtocolName,
) -> None:
    """call_timeout bounds each call."""

    async def hangs(keys: list[str], datum: Datum) -> Messages:
        await asyncio.sleep(30)
        return Messages()

    async with testing.serve_function(
        map_handler=hangs, call_timeout=0.2, protocol=protocol
    ) as udf:
        with pytest.raises(testing.CallError, match="DEADLINE_EXCEEDED"):
            await udf.map(b"x")


@pytest.mark.anyio
@PROTOCOLS
async def test_sink_answers_each_datum(protocol: testing.ProtocolName) -> None:
    """Values get ids 1, 2...; whole sink Datums keep theirs."""

    def accept(datums: Iterator[SinkDatum]) -> Responses:
        return Responses(*(Response.as_success(d.id) for d in datums))

    async with testing.serve_sink(accept, protocol=protocol) as sink:
        assert await sink.is_ready()
        responses = await sink.sink([b"a", "b", testing.make_sink_datum(b"c", "own-id")])
    assert [r.id for r in responses] == ["1", "2", "own-id"]


@PROTOCOLS
def test_sync_helpers_serve_from_a_thread_and_clean_up(protocol: testing.ProtocolName) -> None:
    """The sync variants work without an event loop and remove their sockets."""
    with testing.serve_function_sync(
        map_handler=echo, map_stream_handler=split, protocol=protocol
    ) as udf:
        assert udf.is_ready()
        assert udf.map(b"v")[0].value == b"v"
        assert len(udf.map_stream(b"a,b,c")) == 3
        folder = _socket_folder(udf)
        assert os.path.exists(folder)
    assert not os.path.exists(folder)

    def fail_all(datums: Iterator[SinkDatum]) -> Responses:
        return Responses(*(Response.as_failure(d.id, "down") for d in datums))

    with testing.serve_sink_sync(fail_all, protocol=protocol) as sink:
        assert sink.sink([b"a"]) == Responses(Response.as_failure("1", "down"))


def test_make_datum_defaults() -> None:
    """make_datum gives naive UTC times (as handlers receive them), watermark = event time."""
    datum = testing.make_datum("v", event_time=T0)
    assert (datum.value, list(datum.keys), datum.metadata.num_delivered) == (b"v", [], 1)
    assert datum.event_time == datum.watermark == T0.replace(tzinfo=None)
    assert testing.make_datum(b"v").event_time.tzinfo is None


def test_public_names() -> None:
    """__all__ holds every public class and function of the kit's modules, each documented."""
    defined = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith(testing.__name__ + ".")
    }
    assert defined <= set(testing.__all__)
    assert set(testing.__all__) - defined == {"CallError"}  # shared with the command
    for name in testing.__all__:
        assert getattr(testing, name).__doc__, name


def _socket_folder(client: Any) -> str:
    backend = client._client._backend
    if hasattr(backend, "_connection"):  # legacy: the socket is in the kit's folder
        return os.path.dirname(backend._connection._channel._path)
    connection = next(iter(backend._connections.values()))
    return os.path.dirname(os.path.dirname(connection.channel._path))  # v1: a sub-folder


@pytest.mark.anyio
async def test_v1_headers_and_user_metadata_go_through_and_come_back() -> None:
    """The handler sees the headers; the results carry the user metadata (echoed)."""

    def show(keys: list[str], datum: Datum) -> Messages:
        return Messages(Message(repr(sorted(datum.headers.items())).encode(), keys=keys))

    async def show_t(keys: list[str], datum: Datum) -> MessageTs:
        return MessageTs(MessageT(datum.headers["h"].encode(), T0, keys))

    async def gen(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
        yield Message(datum.headers["h"].encode())

    metadata = {"grp": {"k": b"v"}}
    async with testing.serve_function(
        map_handler=show, mapt_handler=show_t, map_stream_handler=gen
    ) as udf:
        (out,) = await udf.map(b"x", headers={"h": "1", "a": "2"}, user_metadata=metadata)
        assert out.value == b"[('a', '2'), ('h', '1')]"
        assert isinstance(out, testing.ResultMessage)
        assert out.user_metadata == metadata
        assert out == Message(b"[('a', '2'), ('h', '1')]")  # equal to the plain message
        (out_t,) = await udf.mapt(b"x", headers={"h": "t"}, user_metadata=metadata)
        assert isinstance(out_t, testing.ResultMessageT)
        assert (out_t.value, out_t.user_metadata) == (b"t", metadata)
        (streamed,) = await udf.map_stream(
            testing.make_datum(b"x", headers={"h": "s"}), user_metadata=metadata
        )
        assert isinstance(streamed, testing.ResultMessage)
        assert (streamed.value, streamed.user_metadata) == (b"s", metadata)
        (plain,) = await udf.map(b"x")
        assert plain.user_metadata == {}


@pytest.mark.anyio
async def test_legacy_refuses_headers_rather_than_dropping_them() -> None:
    async with testing.serve_function(map_handler=echo, protocol="legacy") as udf:
        with pytest.raises(ValueError, match="protocol='v1'"):
            await udf.map(b"x", headers={"h": "1"})
        with pytest.raises(ValueError, match="protocol='v1'"):
            await udf.map(b"x", user_metadata={"g": {"k": b"v"}})


@pytest.mark.anyio
async def test_v1_sink_returns_fallback_serve_and_on_success() -> None:
    """The sink's v1 answers come back as they left; the headers reach the handler."""

    def answer(datums: Iterator[SinkDatum]) -> Responses:
        out = []
        for d in datums:
            if d.value == b"fb":
                out.append(Response.as_fallback(d.id))
            elif d.value == b"sv":
                out.append(Response.as_serve(d.id, b"stored"))
            elif d.value == b"on":
                out.append(Response.as_on_success(d.id, d.headers["h"].encode(), ["k"]))
            else:
                out.append(Response.as_failure(d.id, "no"))
        return Responses(*out)

    async with testing.serve_sink(answer) as sink:
        responses = await sink.sink(["fb", "sv", "on", "bad"], headers={"h": "new"})
    assert responses == Responses(
        Response.as_fallback("1"),
        Response.as_serve("2", b"stored"),
        Response.as_on_success("3", b"new", ["k"]),
        Response.as_failure("4", "no"),
    )


@pytest.mark.anyio
async def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="protocol must be 'v1' or 'legacy'"):
        async with testing.serve_function(map_handler=echo, protocol="v2"):  # type: ignore[arg-type]
            pass


@pytest.mark.anyio
async def test_modern_class_handlers_get_the_modern_datum() -> None:
    """Modern class handlers are served by their modern servers.

    A Mapper instance, a MapStreamer, a SourceTransformer and a Reducer class: the
    handler sees the modern datum, user metadata included.
    """
    from pynumaflow import mapper, mapstreamer, reducer, sourcetransformer

    class Show(mapper.Mapper):
        def handler(self, keys: list[str], datum: mapper.Datum) -> mapper.Messages:
            seen = f"{datum.headers['h']}|{datum.user_metadata['grp']['k'].decode()}"
            return mapper.Messages(mapper.Message(seen.encode(), keys=keys))

    class Split(mapstreamer.MapStreamer):
        async def handler(self, keys: list[str], datum: Any) -> AsyncIterator[Any]:
            for part in datum.value.split(b","):
                yield mapstreamer.Message(part)

    class Stamp(sourcetransformer.SourceTransformer):
        def handler(self, keys: list[str], datum: Any) -> Any:
            return sourcetransformer.Messages(sourcetransformer.Message(datum.value, T0))

    class Count(reducer.Reducer):
        async def handler(self, keys: list[str], datums: Any, md: Any) -> reducer.Messages:
            return reducer.Messages(reducer.Message(str(len([d async for d in datums])).encode()))

    async with testing.serve_function(
        map_handler=Show(), map_stream_handler=Split(), mapt_handler=Stamp(), reduce_handler=Count
    ) as udf:
        (out,) = await udf.map(
            b"x", keys=["k"], headers={"h": "1"}, user_metadata={"grp": {"k": b"v"}}
        )
        assert out.value == b"1|v"
        assert [m.value for m in await udf.map_stream(b"a,b")] == [b"a", b"b"]
        assert [m.event_time for m in await udf.mapt(b"t")] == [T0]
        assert [m.value for m in await udf.reduce([b"1", b"2", b"3"])] == [b"3"]
    with pytest.raises(ValueError, match="served on v1 only"):
        async with testing.serve_function(map_handler=Show(), protocol="legacy"):
            pass


@pytest.mark.anyio
async def test_a_modern_sinker_is_served_by_its_modern_server() -> None:
    from pynumaflow import sinker

    class Keep(sinker.Sinker):
        def handler(self, datums: Any) -> sinker.Responses:
            out = sinker.Responses()
            for d in datums:
                out.append(
                    sinker.Response.as_success(d.id)
                    if d.value
                    else sinker.Response.as_fallback(d.id)
                )
            return out

    async with testing.serve_sink(Keep()) as sink:
        responses = await sink.sink([b"a", b""])
    assert [(r.id, r.success, r.status) for r in responses] == [
        ("1", True, None),
        ("2", False, "fallback"),
    ]
