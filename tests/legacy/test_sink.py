"""SinkFn over a real socket, driven by grpcio stubs generated from our protos."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import grpc
import pytest

import pynumaflow.sink
from pynumaflow._services.legacy.sink import OMITTED
from pynumaflow.sink import AsyncSink, Datum, Response, Responses, Sink

from conftest import seed_examples
from helpers import timestamp

pytestmark = pytest.mark.anyio
UTC = timezone.utc
EVENT_TIME = datetime(1969, 12, 31, 23, 59, 58, 999999, tzinfo=UTC)
WATERMARK = datetime(2023, 5, 6, 7, 0, 0, 654321, tzinfo=UTC)
WAIT = 10.0  # seconds a test waits for a signal before failing


@pytest.fixture
def sock_path(sock_dir: Path) -> str:
    return str(sock_dir / "udsink.sock")


@pytest.fixture
def sink_pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["sink_pb2"]


@pytest.fixture
def stub(stubs: dict[str, ModuleType], channel: grpc.aio.Channel) -> Any:
    return stubs["sink_grpc"].UserDefinedSinkStub(channel)


def request(pb2: ModuleType, msg_id: str, value: bytes = b"", keys: list[str] | None = None) -> Any:
    return pb2.DatumRequest(
        keys=keys or [],
        value=value,
        event_time=pb2.EventTime(event_time=timestamp(EVENT_TIME)),
        watermark=pb2.Watermark(watermark=timestamp(WATERMARK)),
        id=msg_id,
    )


def batch(pb2: ModuleType, count: int) -> list[Any]:
    return [request(pb2, f"id-{i}", f"v{i}".encode()) for i in range(count)]


async def stream_of(requests: Iterable[Any]) -> AsyncIterator[Any]:
    for item in requests:
        yield item


def outcomes(reply: Any) -> list[tuple[str, bool, str]]:
    return [(r.id, r.success, r.err_msg) for r in reply.responses]


@contextlib.asynccontextmanager
async def serving(
    sock_path: str, info_path: str, handler: Any, facade: type[Sink] = AsyncSink, **options: Any
) -> AsyncIterator[None]:
    """Run a sink server with this handler on the test's event loop."""
    server = facade(handler, sock_path=sock_path, server_info_file=info_path, **options)
    async with server.running():
        yield


def ack_all(datums: Iterator[Datum]) -> Responses:
    return Responses(*(Response.as_success(d.id) for d in datums))


async def async_ack_all(datums: AsyncIterable[Datum]) -> Responses:
    return Responses(*[Response.as_success(d.id) async for d in datums])


@pytest.mark.parametrize("facade", [Sink, AsyncSink])
@pytest.mark.parametrize("handler", [ack_all, async_ack_all], ids=["sync", "async"])
async def test_sync_and_async_handlers_on_both_facades(
    facade: type[Sink], handler: Any, sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """Sink and AsyncSink each serve sync and async handlers; responses come in order."""
    async with serving(sock_path, info_path, handler, facade):
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 5)))
    assert outcomes(reply) == [(f"id-{i}", True, "") for i in range(5)]


async def test_datum_fields_arrive_exactly(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """Keys (a list property), value, id and naive-UTC microsecond times reach the handler."""
    seen: list[Datum] = []

    def record(datums: Iterator[Datum]) -> Responses:
        seen.extend(datums)
        return Responses(*(Response.as_success(d.id) for d in seen))

    async with serving(sock_path, info_path, record):
        await stub.SinkFn(stream_of([request(sink_pb2, "m-1", b"\x00payload", ["a", "ü"])]))
    (datum,) = seen
    assert (datum.id, datum.keys, datum.value) == ("m-1", ["a", "ü"], b"\x00payload")
    assert datum.event_time == EVENT_TIME.replace(tzinfo=None)
    assert datum.watermark == WATERMARK.replace(tzinfo=None)


async def test_ten_thousand_datum_batch(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """A 10,000-datum batch gets 10,000 responses, in the order sent."""
    async with serving(sock_path, info_path, ack_all):
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 10_000)))
    assert [r.id for r in reply.responses] == [f"id-{i}" for i in range(10_000)]
    assert all(r.success for r in reply.responses)


async def test_success_failure_mix(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """Successes and failures reach the platform as the handler gave them."""

    def odd_fails(datums: Iterator[Datum]) -> Responses:
        responses = Responses()
        for d in datums:
            if int(d.value[1:]) % 2:
                responses.append(Response.as_failure(d.id, f"cannot write {d.value!r}"))
            else:
                responses.append(Response.as_success(d.id))
        return responses

    async with serving(sock_path, info_path, odd_fails):
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 4)))
    assert outcomes(reply) == [
        ("id-0", True, ""),
        ("id-1", False, "cannot write b'v1'"),
        ("id-2", True, ""),
        ("id-3", False, "cannot write b'v3'"),
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_raising_fails_every_datum_of_the_batch(
    kind: str, sock_path: str, info_path: str, stub: Any, sink_pb2: Any, caplog: Any
) -> None:
    """A handler raising halfway fails all datums, consumed and still to arrive; status OK."""
    raising = threading.Event()

    def explode_sync(datums: Iterator[Datum]) -> Responses:
        for count, _ in enumerate(datums, 1):
            if count == 5:
                raising.set()
                raise RuntimeError("disk full")
        return Responses()

    async def explode_async(datums: AsyncIterable[Datum]) -> Responses:
        count = 0
        async for _ in datums:
            count += 1
            if count == 5:
                raising.set()
                raise RuntimeError("disk full")
        return Responses()

    requests = batch(sink_pb2, 10)
    handler = explode_sync if kind == "sync" else explode_async
    async with serving(sock_path, info_path, handler):
        call = stub.SinkFn()
        for item in requests[:5]:
            await call.write(item)
        assert await asyncio.to_thread(raising.wait, WAIT)
        for item in requests[5:]:  # sent after the handler died
            await call.write(item)
        await call.done_writing()
        reply = await call
    assert outcomes(reply) == [(f"id-{i}", False, "RuntimeError: disk full") for i in range(10)]
    logged = [r for r in caplog.records if r.name == "pynumaflow" and r.exc_info]
    assert len(logged) == 1
    assert "sink_handler" in logged[0].getMessage()


async def test_omitted_ids_are_reported_as_failures(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any, caplog: Any
) -> None:
    """Datums the handler did not answer get a failure saying so, in their place."""

    def only_even(datums: Iterator[Datum]) -> Responses:
        return Responses(*(Response.as_success(d.id) for d in datums if int(d.value[1:]) % 2 == 0))

    async with serving(sock_path, info_path, only_even):
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 4)))
    assert outcomes(reply) == [
        ("id-0", True, ""),
        ("id-1", False, OMITTED),
        ("id-2", True, ""),
        ("id-3", False, OMITTED),
    ]
    assert any(
        "no response" in r.getMessage() and "'id-1'" in r.getMessage() for r in caplog.records
    )


async def test_duplicate_ids_first_wins_and_unknown_ids_dropped(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any, caplog: Any
) -> None:
    """A repeated answer keeps the first; answers for ids never sent are dropped; both logged."""

    def muddled(datums: Iterator[Datum]) -> Responses:
        ids = [d.id for d in datums]
        return Responses(
            Response.as_success("ghost"),
            Response.as_failure(ids[1], "first answer"),
            *(Response.as_success(i) for i in ids),
            Response.as_failure(ids[0], "late answer"),
        )

    async with serving(sock_path, info_path, muddled):
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 3)))
    assert outcomes(reply) == [
        ("id-0", True, ""),
        ("id-1", False, "first answer"),
        ("id-2", True, ""),
    ]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not in the batch" in m and "'ghost'" in m for m in messages)
    assert any("more than once" in m and "'id-0'" in m and "'id-1'" in m for m in messages)


async def test_non_utf8_values_print_without_raising(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """str() and repr() of a datum whose value is not UTF-8 never raise."""
    texts: list[str] = []

    def describe(datums: Iterator[Datum]) -> Responses:
        responses = Responses()
        for d in datums:
            texts.extend((str(d), repr(d)))
            responses.append(Response.as_success(d.id))
        return responses

    async with serving(sock_path, info_path, describe):
        reply = await stub.SinkFn(stream_of([request(sink_pb2, "x", b"\xff\xfe\x00ok")]))
    assert outcomes(reply) == [("x", True, "")]
    assert texts[0].startswith("id: x, value: \\xff\\xfe\x00ok, event_time: 1969-12-31")
    assert "value=b'\\xff\\xfe\\x00ok'" in texts[1]


async def test_handler_consumes_while_the_batch_is_still_arriving(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """The async handler gets the first datum before the client has sent the second."""
    first_seen = asyncio.Event()

    async def signal_first(datums: AsyncIterable[Datum]) -> Responses:
        responses = Responses()
        async for d in datums:
            first_seen.set()
            responses.append(Response.as_success(d.id))
        return responses

    requests = batch(sink_pb2, 3)
    async with serving(sock_path, info_path, signal_first):
        call = stub.SinkFn()
        await call.write(requests[0])
        await asyncio.wait_for(first_seen.wait(), WAIT)
        for item in requests[1:]:
            await call.write(item)
        await call.done_writing()
        reply = await call
    assert outcomes(reply) == [(f"id-{i}", True, "") for i in range(3)]


async def test_sync_handler_consumes_while_the_batch_is_still_arriving(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """The sync handler, in its pool thread, gets the first datum before the second is sent."""
    first_seen = threading.Event()

    def signal_first(datums: Iterator[Datum]) -> Responses:
        responses = Responses()
        for d in datums:
            first_seen.set()
            responses.append(Response.as_success(d.id))
        return responses

    requests = batch(sink_pb2, 3)
    async with serving(sock_path, info_path, signal_first, Sink):
        call = stub.SinkFn()
        await call.write(requests[0])
        assert await asyncio.to_thread(first_seen.wait, WAIT)
        for item in requests[1:]:
            await call.write(item)
        await call.done_writing()
        reply = await call
    assert outcomes(reply) == [(f"id-{i}", True, "") for i in range(3)]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_returning_early_does_not_stall_the_batch(
    kind: str, sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """A handler that stops reading after one datum leaves no reader blocked; the rest fail."""

    def first_only(datums: Iterator[Datum]) -> Responses:
        return Responses(Response.as_success(next(iter(datums)).id))

    async def async_first_only(datums: AsyncIterable[Datum]) -> Responses:
        async for d in datums:
            return Responses(Response.as_success(d.id))
        return Responses()

    handler = first_only if kind == "sync" else async_first_only
    async with serving(sock_path, info_path, handler):
        reply = await asyncio.wait_for(stub.SinkFn(stream_of(batch(sink_pb2, 2000))), WAIT)
    assert outcomes(reply)[:2] == [("id-0", True, ""), ("id-1", False, OMITTED)]
    assert len(reply.responses) == 2000


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, "handler returned NoneType; expected Responses (an iterable of Response)"),
        (b"ok", "handler returned bytes; expected Responses (an iterable of Response)"),
        (42, "handler returned int; expected Responses (an iterable of Response)"),
        (["id-0"], "expected Response objects, found str"),
        (Responses(Response(0, True)), "Response id must be str, found int"),  # type: ignore[arg-type]
        (Responses(Response("id-0", "yes")), "Response success must be bool, found str"),  # type: ignore[arg-type]
    ],
    ids=["none", "bytes", "int", "list-of-str", "int-id", "str-success"],
)
async def test_wrong_return_type_fails_every_datum(
    returned: Any, expected: str, sock_path: str, info_path: str, stub: Any, sink_pb2: Any
) -> None:
    """A wrong return value fails each datum with a message saying what was expected."""

    def wrong(datums: Iterator[Datum]) -> Any:
        list(datums)
        return returned

    async with serving(sock_path, info_path, wrong):
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 2)))
    assert [(r.id, r.success) for r in reply.responses] == [("id-0", False), ("id-1", False)]
    for response in reply.responses:
        assert response.err_msg == f"sink_handler returned a wrong type: {expected}"


async def test_empty_batch_gets_empty_response_list(
    sock_path: str, info_path: str, stub: Any
) -> None:
    """A batch without datums calls the handler with an empty iterator and answers nothing."""
    async with serving(sock_path, info_path, async_ack_all):
        reply = await stub.SinkFn(stream_of([]))
    assert list(reply.responses) == []


async def test_malformed_request_is_invalid_argument(
    sock_path: str, info_path: str, channel: grpc.aio.Channel, stub: Any, sink_pb2: Any
) -> None:
    """Bytes that are not a DatumRequest fail the call with INVALID_ARGUMENT; the next is served."""
    raw = channel.stream_unary(
        "/sink.v1.UserDefinedSink/SinkFn",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    async with serving(sock_path, info_path, ack_all):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await raw(stream_of([request(sink_pb2, "ok").SerializeToString(), b"\x2a\x05ab"]))
        reply = await stub.SinkFn(stream_of(batch(sink_pb2, 1)))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in failure.value.details()
    assert outcomes(reply) == [("id-0", True, "")]


async def test_seed_readme_sink_example_runs_unchanged(
    sock_path: str, info_path: str, stub: Any, sink_pb2: Any, capsys: Any
) -> None:
    """The sink example of the pynumaflow 0.4 README serves as written."""
    source = next(block for block in seed_examples() if "pynumaflow.sink" in block)
    namespace: dict[str, Any] = {"__name__": "seed_sink_example"}
    exec(compile(source, "seed-readme-sink", "exec"), namespace)
    async with serving(sock_path, info_path, namespace["my_handler"], Sink):
        reply = await stub.SinkFn(stream_of([request(sink_pb2, "a", b"hello")]))
    assert outcomes(reply) == [("a", True, "")]
    assert "User Defined Sink hello" in capsys.readouterr().out


async def test_is_ready_and_server_info(
    sock_path: str, info_path: str, stub: Any, stubs: dict[str, ModuleType]
) -> None:
    """IsReady answers ready=true and the server-info file announces a uds server."""
    empty = stubs["sink_pb2"].google_dot_protobuf_dot_empty__pb2.Empty()
    async with serving(sock_path, info_path, ack_all):
        reply = await stub.IsReady(empty)
        info = await asyncio.to_thread(Path(info_path).read_text)
    assert reply.ready is True
    assert info.endswith("U+005C__END__")
    assert json.loads(info.removesuffix("U+005C__END__"))["protocol"] == "uds"


def test_default_socket_honours_run_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default socket is udsink.sock in $PYNUMAFLOW_RUN_DIR (else /var/run/numaflow)."""
    monkeypatch.delenv("PYNUMAFLOW_RUN_DIR", raising=False)
    assert Sink(ack_all).sock_path == "/var/run/numaflow/udsink.sock"
    monkeypatch.setenv("PYNUMAFLOW_RUN_DIR", str(tmp_path))
    assert AsyncSink(ack_all).sock_path == str(tmp_path / "udsink.sock")
    assert Sink(ack_all).server_info_file == str(tmp_path / "server-info")


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (None, "sink_handler must be callable"),
        (lambda: None, "sink_handler must accept 1 positional arguments"),
        (lambda keys, datum: None, "sink_handler must accept 1 positional arguments"),
    ],
    ids=["none", "no-args", "two-args"],
)
@pytest.mark.parametrize("facade", [Sink, AsyncSink])
def test_bad_handler_is_type_error_at_construction(
    facade: type[Sink], handler: Callable[..., Any], message: str
) -> None:
    """A handler that is not callable or takes the wrong arguments fails at construction."""
    with pytest.raises(TypeError, match=message):
        facade(handler)


def test_responses_behave_like_messages() -> None:
    """Responses is built from *items, appends, has len, iterates, indexes, refuses slicing."""
    responses = Responses(Response.as_success("a"))
    responses.append(Response.as_failure("b", "no"))
    assert len(responses) == 2
    assert [r.id for r in responses] == ["a", "b"]
    assert responses[1] == Response("b", False, "no")
    assert (responses[0].success, responses[0].err) == (True, None)
    with pytest.raises(TypeError, match="slicing"):
        responses[0:1]


def test_datum_str_and_repr_never_raise() -> None:
    """str() and repr() work for any value bytes; keys is a list property; times are checked."""
    datum = Datum(["k"], "id-9", b"\x80abc", datetime(2020, 1, 1), datetime(2020, 1, 1))
    assert str(datum) == (
        "id: id-9, value: \\x80abc, event_time: 2020-01-01 00:00:00, watermark: 2020-01-01 00:00:00"
    )
    assert repr(datum).startswith("Datum(keys=['k'], sink_msg_id='id-9', value=b'\\x80abc'")
    assert datum.keys == ["k"]
    with pytest.raises(TypeError, match=r"Datum\.event_time"):
        Datum([], "x", b"", "2020", datetime(2020, 1, 1))  # type: ignore[arg-type]


def test_public_names() -> None:
    """pynumaflow.sink exports exactly the 0.4 names, and NackOptions (for as_nack)."""
    assert sorted(pynumaflow.sink.__all__) == [
        "AsyncSink",
        "Datum",
        "NackOptions",
        "Response",
        "Responses",
        "Sink",
    ]
    assert all(hasattr(pynumaflow.sink, name) for name in pynumaflow.sink.__all__)
    public = {n for n in dir(pynumaflow.sink) if not n.startswith("_")}
    assert public == set(pynumaflow.sink.__all__)
