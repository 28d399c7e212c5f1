"""sink.v1 Sink (Numaflow >= 1.4) over a real socket, driven by grpcio stubs from our protos."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow._codec.legacy.sink import LEGACY_FALLBACK_ERR
from pynumaflow._engines.batch import OMITTED
from pynumaflow.sink import AsyncSink, Datum, Response, Responses, Sink

from conftest import MiB, seed_examples
from helpers import timestamp

pytestmark = pytest.mark.anyio
UTC = timezone.utc
EVENT_TIME = datetime(1969, 12, 31, 23, 59, 58, 999999, tzinfo=UTC)
WATERMARK = datetime(2023, 5, 6, 7, 0, 0, 654321, tzinfo=UTC)
WAIT = 10.0  # seconds a test waits for a signal before failing
SUCCESS, FAILURE, FALLBACK, SERVE, ON_SUCCESS = range(5)


@pytest.fixture
def sock_path(sock_dir: Path) -> str:
    """The v1 socket: conftest's ``channel`` dials it."""
    return str(sock_dir / "sink.sock")


@pytest.fixture
def pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["sinkv1_pb2"]


@pytest.fixture
def stub(
    stubs: dict[str, ModuleType], channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)  # sink.sock, not fb-sink.sock
    return stubs["sinkv1_grpc"].SinkStub(channel)


@contextlib.asynccontextmanager
async def serving(
    sock_dir: Path, handler: Any, facade: type[Sink] = AsyncSink, **options: Any
) -> AsyncIterator[None]:
    """Run a sink server (legacy udsink.sock and v1 sink.sock) on the test's event loop."""
    server = facade(
        handler,
        sock_path=str(sock_dir / "udsink.sock"),
        server_info_file=str(sock_dir / "server-info"),
        **options,
    )
    async with server.running():
        yield


def request(pb2: ModuleType, msg_id: str, value: bytes = b"", **fields: Any) -> Any:
    return pb2.SinkRequest(
        request=pb2.SinkRequest.Request(
            id=msg_id,
            value=value,
            event_time=timestamp(EVENT_TIME),
            watermark=timestamp(WATERMARK),
            **fields,
        )
    )


def batch(pb2: ModuleType, count: int, prefix: str = "id") -> list[Any]:
    return [request(pb2, f"{prefix}-{i}", f"v{i}".encode()) for i in range(count)]


def eot(pb2: ModuleType) -> Any:
    return pb2.SinkRequest(status=pb2.TransmissionStatus(eot=True))


class Conversation:
    """One SinkFn stream, handshake done: send batches, read their answers."""

    def __init__(self, call: Any, pb2: ModuleType) -> None:
        self.call = call
        self.pb2 = pb2
        self.messages = 0  # SinkResponses with results read so far

    async def send(self, requests: list[Any], end: bool = True) -> None:
        for item in requests:
            await self.call.write(item)
        if end:
            await self.call.write(eot(self.pb2))

    async def answer(self) -> list[Any]:
        """Read the results of one batch, up to and including its EOT."""
        results: list[Any] = []
        while True:
            message = await asyncio.wait_for(self.call.read(), WAIT)
            assert message is not grpc.aio.EOF
            assert not message.HasField("handshake")
            if message.HasField("status"):
                assert message.status.eot
                assert not message.results
                return results
            assert message.results
            self.messages += 1
            results.extend(message.results)

    async def batch(self, requests: list[Any]) -> list[Any]:
        await self.send(requests)
        return await self.answer()

    async def close(self) -> None:
        """Half-close; the server ends the stream with OK."""
        await self.call.done_writing()
        assert await self.call.read() is grpc.aio.EOF
        assert await self.call.code() == grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def conversation(stub: Any, pb2: ModuleType) -> AsyncIterator[Conversation]:
    call = stub.SinkFn()
    await call.write(pb2.SinkRequest(handshake=pb2.Handshake(sot=True)))
    first = await asyncio.wait_for(call.read(), WAIT)
    assert first == pb2.SinkResponse(handshake=pb2.Handshake(sot=True))
    yield Conversation(call, pb2)


def outcomes(results: list[Any]) -> list[tuple[str, int, str]]:
    return [(r.id, r.status, r.err_msg) for r in results]


def ack_all(datums: Iterator[Datum]) -> Responses:
    return Responses(*(Response.as_success(d.id) for d in datums))


async def async_ack_all(datums: AsyncIterable[Datum]) -> Responses:
    return Responses(*[Response.as_success(d.id) async for d in datums])


@pytest.mark.parametrize("facade", [Sink, AsyncSink])
@pytest.mark.parametrize("handler", [ack_all, async_ack_all], ids=["sync", "async"])
async def test_handshake_then_a_batch_on_both_facades(
    facade: type[Sink], handler: Any, sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """The handshake is answered first; sync and async handlers answer in order, then EOT."""
    async with serving(sock_dir, handler, facade), conversation(stub, pb2) as talk:
        results = await talk.batch(batch(pb2, 5))
        await talk.close()
    assert outcomes(results) == [(f"id-{i}", SUCCESS, "") for i in range(5)]


async def test_ten_thousand_datum_batch(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    """A 10,000-datum batch gets 10,000 results in the order sent, then one EOT."""
    async with serving(sock_dir, ack_all), conversation(stub, pb2) as talk:
        results = await talk.batch(batch(pb2, 10_000))
        await talk.close()
    assert [r.id for r in results] == [f"id-{i}" for i in range(10_000)]
    assert {r.status for r in results} == {SUCCESS}


async def test_several_batches_and_bare_eots_on_one_stream(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Batches repeat on the stream, one handler call each; a bare EOT gets a bare EOT."""
    calls: list[list[str]] = []

    async def record(datums: AsyncIterable[Datum]) -> Responses:
        ids = [d.id async for d in datums]
        calls.append(ids)
        return Responses(*(Response.as_success(i) for i in ids))

    async with serving(sock_dir, record), conversation(stub, pb2) as talk:
        assert await talk.batch([]) == []
        first = await talk.batch(batch(pb2, 3, "a"))
        assert await talk.batch([]) == []
        second = await talk.batch(batch(pb2, 2, "b"))
        await talk.close()
    assert [r.id for r in first] == ["a-0", "a-1", "a-2"]
    assert [r.id for r in second] == ["b-0", "b-1"]
    assert calls == [["a-0", "a-1", "a-2"], ["b-0", "b-1"]]  # no call for a bare EOT


async def test_datum_fields_arrive_exactly(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    """Keys, value, id, headers and naive-UTC times reach the handler; no watermark is the epoch."""
    seen: list[Datum] = []

    def record(datums: Iterator[Datum]) -> Responses:
        seen.extend(datums)
        return Responses(*(Response.as_success(d.id) for d in seen))

    bare = pb2.SinkRequest(request=pb2.SinkRequest.Request(id="m-2"))
    full = request(pb2, "m-1", b"\x00payload", keys=["a", "ü"], headers={"h": "1"})
    async with serving(sock_dir, record), conversation(stub, pb2) as talk:
        await talk.batch([full, bare])
        await talk.close()
    datum, empty = seen
    assert (datum.id, datum.keys, datum.value, dict(datum.headers)) == (
        "m-1",
        ["a", "ü"],
        b"\x00payload",
        {"h": "1"},
    )
    assert datum.event_time == EVENT_TIME.replace(tzinfo=None)
    assert datum.watermark == WATERMARK.replace(tzinfo=None)
    assert (empty.id, empty.value, empty.watermark) == ("m-2", b"", datetime(1970, 1, 1))


async def test_success_failure_mix(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    """as_success is SUCCESS; as_failure is FAILURE with its err_msg."""

    def odd_fails(datums: Iterator[Datum]) -> Responses:
        responses = Responses()
        for d in datums:
            if int(d.value[1:]) % 2:
                responses.append(Response.as_failure(d.id, f"cannot write {d.value!r}"))
            else:
                responses.append(Response.as_success(d.id))
        return responses

    async with serving(sock_dir, odd_fails), conversation(stub, pb2) as talk:
        results = await talk.batch(batch(pb2, 4))
        await talk.close()
    assert outcomes(results) == [
        ("id-0", SUCCESS, ""),
        ("id-1", FAILURE, "cannot write b'v1'"),
        ("id-2", SUCCESS, ""),
        ("id-3", FAILURE, "cannot write b'v3'"),
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_raising_after_half_fails_the_batch_not_the_stream(
    kind: str, sock_dir: Path, stub: Any, pb2: ModuleType, caplog: Any
) -> None:
    """A handler raising halfway fails every id of the batch, status OK; the next batch runs."""
    raising = threading.Event()
    ids: list[str] = []

    def take(d: Datum) -> None:
        """Note the datum; raise at the fifth of the first batch."""
        ids.append(d.id)
        if len(ids) == 5 and not raising.is_set():
            raising.set()
            raise RuntimeError("disk full")

    def explode_sync(datums: Iterator[Datum]) -> Responses:
        ids.clear()
        for d in datums:
            take(d)
        return Responses(*(Response.as_success(i) for i in ids))

    async def explode_async(datums: AsyncIterable[Datum]) -> Responses:
        ids.clear()
        async for d in datums:
            take(d)
        return Responses(*(Response.as_success(i) for i in ids))

    requests = batch(pb2, 10)
    handler = explode_sync if kind == "sync" else explode_async
    async with serving(sock_dir, handler), conversation(stub, pb2) as talk:
        await talk.send(requests[:5], end=False)
        assert await asyncio.to_thread(raising.wait, WAIT)
        await talk.send(requests[5:])  # sent after the handler died
        failed = await talk.answer()
        after = await talk.batch(batch(pb2, 2, "next"))
        await talk.close()
    assert outcomes(failed) == [(f"id-{i}", FAILURE, "RuntimeError: disk full") for i in range(10)]
    assert outcomes(after) == [("next-0", SUCCESS, ""), ("next-1", SUCCESS, "")]
    logged = [r for r in caplog.records if r.name == "pynumaflow" and r.exc_info]
    assert len(logged) == 1
    assert "sink_handler" in logged[0].getMessage()


async def test_omitted_duplicate_and_unknown_ids(
    sock_dir: Path, stub: Any, pb2: ModuleType, caplog: Any
) -> None:
    """Omitted ids fail with OMITTED; a repeated answer keeps the first; unknown ids dropped."""

    def muddled(datums: Iterator[Datum]) -> Responses:
        ids = [d.id for d in datums]
        return Responses(
            Response.as_success("ghost"),
            Response.as_failure(ids[1], "first answer"),
            Response.as_success(ids[0]),
            Response.as_success(ids[1]),
            Response.as_fallback(ids[0]),
        )

    async with serving(sock_dir, muddled), conversation(stub, pb2) as talk:
        results = await talk.batch(batch(pb2, 3))
        await talk.close()
    assert outcomes(results) == [
        ("id-0", SUCCESS, ""),
        ("id-1", FAILURE, "first answer"),
        ("id-2", FAILURE, OMITTED),
    ]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not in the batch" in m and "'ghost'" in m for m in messages)
    assert any("more than once" in m and "'id-0'" in m and "'id-1'" in m for m in messages)
    assert any("no response" in m and "'id-2'" in m for m in messages)


async def test_v1_statuses_on_the_wire(sock_dir: Path, stub: Any, pb2: ModuleType) -> None:
    """Fallback, serve (with and without payload), on-success (with and without a message)."""
    common = pb2.common_dot_metadata__pb2
    group = common.KeyValueGroup(key_value={"k": b"\xff"})
    md = common.Metadata(
        previous_vertex="in",
        user_metadata={"user": group},
        sys_metadata={"sink": common.KeyValueGroup(key_value={"retry_count": b"0"})},
    )

    def route(datums: Iterator[Datum]) -> Responses:
        ids = [d.id for d in datums]
        return Responses(
            Response.as_fallback(ids[0]),
            Response.as_serve(ids[1], b"served"),
            Response.as_serve(ids[2]),
            Response.as_on_success(ids[3]),
            Response.as_on_success(ids[4], b"new", ["k1", "k2"]),
            Response.as_on_success(ids[5], b"plain"),
        )

    requests = [request(pb2, f"id-{i}", b"v", metadata=md) for i in range(5)]
    requests.append(request(pb2, "id-5", b"v"))
    async with serving(sock_dir, route), conversation(stub, pb2) as talk:
        results = await talk.batch(requests)
        await talk.close()
    assert [(r.id, r.status) for r in results] == [
        ("id-0", FALLBACK),
        ("id-1", SERVE),
        ("id-2", SERVE),
        ("id-3", ON_SUCCESS),
        ("id-4", ON_SUCCESS),
        ("id-5", ON_SUCCESS),
    ]
    fallback, served, served_own, forwarded, replaced, plain = results
    assert not fallback.err_msg
    assert (served.HasField("serve_response"), served.serve_response) == (True, b"served")
    assert not served_own.HasField("serve_response")  # the platform stores the datum's value
    assert not forwarded.HasField("on_success_msg")  # the datum itself goes on
    message = replaced.on_success_msg
    assert (message.value, list(message.keys)) == (b"new", ["k1", "k2"])
    # The user metadata is echoed (the platform would otherwise clear it); not the rest.
    assert message.metadata == common.Metadata(user_metadata={"user": group})
    assert plain.on_success_msg == pb2.SinkResponse.Result.Message(value=b"plain")


async def test_legacy_protocol_reports_the_v1_statuses_as_success_or_failure(
    sock_dir: Path, stubs: dict[str, ModuleType]
) -> None:
    """On udsink.sock (Numaflow 0.8-0.9) fallback fails, to be retried; serve, on-success pass."""

    def route(datums: Iterator[Datum]) -> Responses:
        ids = [d.id for d in datums]
        return Responses(
            Response.as_fallback(ids[0]),
            Response.as_serve(ids[1], b"x"),
            Response.as_on_success(ids[2], b"y", ["k"]),
        )

    legacy = stubs["sink_pb2"]
    requests = [legacy.DatumRequest(id=f"id-{i}") for i in range(3)]

    async def stream() -> AsyncIterator[Any]:
        for item in requests:
            yield item

    address = f"unix://{sock_dir / 'udsink.sock'}"
    async with serving(sock_dir, route), grpc.aio.insecure_channel(address) as channel:
        reply = await stubs["sink_grpc"].UserDefinedSinkStub(channel).SinkFn(stream())
    assert [(r.id, r.success, r.err_msg) for r in reply.responses] == [
        ("id-0", False, LEGACY_FALLBACK_ERR),
        ("id-1", True, ""),
        ("id-2", True, ""),
    ]


async def test_large_results_are_split_and_a_too_large_one_fails(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Results go in several SinkResponses under the limit; one over max_message_size fails."""

    def serve_big(datums: Iterator[Datum]) -> Responses:
        return Responses(*(Response.as_serve(d.id, bytes(int(d.value) * MiB // 4)) for d in datums))

    sizes = [3] * 8 + [9]  # 3/4 MiB each, then 2.25 MiB: over a 2 MiB max_message_size
    requests = [request(pb2, f"id-{i}", str(n).encode()) for i, n in enumerate(sizes)]
    async with (
        serving(sock_dir, serve_big, max_message_size=2 * MiB),
        conversation(stub, pb2) as talk,
    ):
        results = await talk.batch(requests)
        await talk.close()
    assert [r.id for r in results] == [f"id-{i}" for i in range(9)]
    assert [len(r.serve_response) for r in results[:8]] == [3 * MiB // 4] * 8
    assert talk.messages == 4  # two 3/4 MiB results fit in each 2 MiB message
    assert (results[8].status, results[8].HasField("serve_response")) == (FAILURE, False)
    assert "more than max_message_size (2097152)" in results[8].err_msg


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_consumes_before_the_batch_ends(
    kind: str, sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """The handler gets the first datum before the second datum and the EOT are sent."""
    first_seen = threading.Event()

    def signal_first(datums: Iterator[Datum]) -> Responses:
        responses = Responses()
        for d in datums:
            first_seen.set()
            responses.append(Response.as_success(d.id))
        return responses

    async def async_signal_first(datums: AsyncIterable[Datum]) -> Responses:
        responses = Responses()
        async for d in datums:
            first_seen.set()
            responses.append(Response.as_success(d.id))
        return responses

    handler = signal_first if kind == "sync" else async_signal_first
    requests = batch(pb2, 3)
    async with serving(sock_dir, handler), conversation(stub, pb2) as talk:
        await talk.send(requests[:1], end=False)
        assert await asyncio.to_thread(first_seen.wait, WAIT)
        results = await talk.batch(requests[1:])
        await talk.close()
    assert outcomes(results) == [(f"id-{i}", SUCCESS, "") for i in range(3)]


async def test_non_utf8_values_reach_the_handler_and_print(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """A value that is not UTF-8 arrives as sent; str() and repr() of the datum never raise."""
    texts: list[str] = []

    def describe(datums: Iterator[Datum]) -> Responses:
        responses = Responses()
        for d in datums:
            texts.extend((str(d), repr(d)))
            responses.append(Response.as_on_success(d.id, d.value))
        return responses

    async with serving(sock_dir, describe), conversation(stub, pb2) as talk:
        results = await talk.batch([request(pb2, "x", b"\xff\xfe\x00ok")])
        await talk.close()
    assert results[0].on_success_msg.value == b"\xff\xfe\x00ok"
    assert texts[0].startswith("id: x, value: \\xff\\xfe\x00ok, event_time: 1969-12-31")
    assert "value=b'\\xff\\xfe\\x00ok'" in texts[1]


async def test_wrong_return_type_fails_every_datum(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """A wrong return value fails each datum of the batch, saying what was expected."""

    def wrong(datums: Iterator[Datum]) -> Any:
        list(datums)
        return Responses(Response("id-0", True, None, "fallback"))

    async with serving(sock_dir, wrong), conversation(stub, pb2) as talk:
        results = await talk.batch(batch(pb2, 2))
        await talk.close()
    expected = "sink_handler returned a wrong type: Response status 'fallback' needs success=False"
    assert outcomes(results) == [("id-0", FAILURE, expected), ("id-1", FAILURE, expected)]


async def test_stream_ending_mid_batch_is_answered(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """Datums followed by a half-close instead of an EOT are answered, then EOT, then OK."""
    async with serving(sock_dir, ack_all), conversation(stub, pb2) as talk:
        await talk.send(batch(pb2, 2), end=False)
        await talk.call.done_writing()
        results = await talk.answer()
        assert await talk.call.read() is grpc.aio.EOF
        assert await talk.call.code() == grpc.StatusCode.OK
    assert outcomes(results) == [("id-0", SUCCESS, ""), ("id-1", SUCCESS, "")]


async def test_client_cancel_mid_batch_leaves_the_server_serving(
    sock_dir: Path, stub: Any, pb2: ModuleType
) -> None:
    """A stream cancelled while a sync handler reads its batch abandons it; a new one is served."""
    reading = threading.Event()

    def slow(datums: Iterator[Datum]) -> Responses:
        ids = []
        for d in datums:
            reading.set()
            ids.append(d.id)
        return Responses(*(Response.as_success(i) for i in ids))

    async with serving(sock_dir, slow, Sink):
        async with conversation(stub, pb2) as talk:
            await talk.send(batch(pb2, 3), end=False)
            assert await asyncio.to_thread(reading.wait, WAIT)
            talk.call.cancel()
        async with conversation(stub, pb2) as talk:
            results = await talk.batch(batch(pb2, 1))
            await talk.close()
    assert outcomes(results) == [("id-0", SUCCESS, "")]


@pytest.mark.parametrize(
    ("first", "later", "message"),
    [
        ("request", None, "the first SinkRequest must be the handshake"),
        ("eot", None, "the first SinkRequest must be the handshake"),
        ("no-sot", None, "the first SinkRequest must be the handshake"),
        ("handshake", "handshake", "a second handshake"),
        ("handshake", "empty", "neither a request nor status.eot"),
        ("handshake", "malformed", "malformed SinkRequest: SinkRequest field 1 is truncated"),
    ],
)
async def test_bad_streams_are_invalid_argument(
    first: str,
    later: str | None,
    message: str,
    sock_dir: Path,
    channel: grpc.aio.Channel,
    pb2: ModuleType,
) -> None:
    """A missing handshake or a malformed or out-of-place message: INVALID_ARGUMENT."""
    messages = {
        "request": request(pb2, "a").SerializeToString(),
        "eot": eot(pb2).SerializeToString(),
        "no-sot": pb2.SinkRequest(handshake=pb2.Handshake(sot=False)).SerializeToString(),
        "handshake": pb2.SinkRequest(handshake=pb2.Handshake(sot=True)).SerializeToString(),
        "empty": b"",
        "malformed": b"\x0a\x05ab",
    }
    raw = channel.stream_stream(
        "/sink.v1.Sink/SinkFn", request_serializer=None, response_deserializer=None
    )
    async with serving(sock_dir, ack_all):
        call = raw()
        await call.write(messages[first])
        if later is not None:
            await call.write(messages[later])
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            while await asyncio.wait_for(call.read(), WAIT) is not grpc.aio.EOF:
                pass
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in failure.value.details()


async def test_an_empty_stream_ends_ok(sock_dir: Path, stub: Any) -> None:
    """A stream closed before any message ends with OK and nothing sent."""
    async with serving(sock_dir, ack_all):
        call = stub.SinkFn()
        await call.done_writing()
        assert await asyncio.wait_for(call.read(), WAIT) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_seed_readme_sink_example_over_v1(
    sock_dir: Path, stub: Any, pb2: ModuleType, capsys: Any
) -> None:
    """The sink example of the pynumaflow 0.4 README serves Numaflow >= 1.4 as written."""
    source = seed_examples()[3]
    assert "from pynumaflow.sink import" in source
    namespace: dict[str, Any] = {"__name__": "seed_sink_example"}
    exec(compile(source, "seed-readme-sink", "exec"), namespace)
    async with serving(sock_dir, namespace["my_handler"], Sink), conversation(stub, pb2) as talk:
        results = await talk.batch([request(pb2, "a", b"hello"), request(pb2, "b", b"world")])
        await talk.close()
    assert outcomes(results) == [("a", SUCCESS, ""), ("b", SUCCESS, "")]
    out = capsys.readouterr().out
    assert "User Defined Sink hello" in out
    assert "User Defined Sink world" in out


async def test_is_ready(sock_dir: Path, stub: Any, stubs: dict[str, ModuleType]) -> None:
    """IsReady on sink.sock answers ready=true."""
    empty = stubs["sinkv1_pb2"].google_dot_protobuf_dot_empty__pb2.Empty()
    async with serving(sock_dir, ack_all):
        reply = await stub.IsReady(empty)
    assert reply.ready is True


def test_response_api_and_repr() -> None:
    """The v1 constructors set status, success, value and keys; 0.4 responses keep their repr."""
    assert Response.as_success("a") == Response("a", True)
    assert repr(Response.as_failure("a", "no")) == "Response(id='a', success=False, err='no')"
    fallback = Response.as_fallback("a")
    assert (fallback.success, fallback.err, fallback.status) == (False, None, "fallback")
    assert Response.as_serve("a") == Response("a", True, None, "serve")
    assert Response.as_serve("a", b"p").value == b"p"
    assert Response.as_on_success("a") == Response("a", True, None, "on_success")
    replaced = Response.as_on_success("a", b"v", ["k"])
    assert repr(replaced) == (
        "Response(id='a', success=True, err=None, status='on_success', value=b'v', keys=['k'])"
    )
    with pytest.raises(TypeError, match="keys need a value too"):
        Response.as_on_success("a", keys=["k"])
    with pytest.raises(TypeError, match="value must be bytes, found str"):
        Response.as_serve("a", "text")  # type: ignore[arg-type]


async def test_fallback_sink_role_serves_on_fb_sink_sock(
    sock_dir: Path, stubs: dict[str, ModuleType], pb2: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NUMAFLOW_UD_CONTAINER_TYPE=fb-udsink the same handler answers on fb-sink.sock."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "fb-udsink")
    address = f"unix://{sock_dir / 'fb-sink.sock'}"
    async with serving(sock_dir, ack_all), grpc.aio.insecure_channel(address) as channel:
        stub = stubs["sinkv1_grpc"].SinkStub(channel)
        async with conversation(stub, pb2) as talk:
            results = await talk.batch(batch(pb2, 2))
            await talk.close()
    assert outcomes(results) == [("id-0", SUCCESS, ""), ("id-1", SUCCESS, "")]
