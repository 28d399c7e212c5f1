"""map.v1 MapFn (Numaflow >= 1.4) over map.sock and mapstream.sock, driven by grpcio stubs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from rawh2 import RawConnection, frame

from pynumaflow._engines import bidi
from pynumaflow.function import DROP, Datum, Message, Messages

from conftest import CHANNEL_OPTIONS
from helpers import converse, datum_request, serving, v1_request_fields

pytestmark = pytest.mark.anyio
UTC = timezone.utc


@pytest.fixture
def map_pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["map_pb2"]


@pytest.fixture
async def map_stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    """A MapStub on map.sock (unary mode)."""
    target = f"unix://{sock_dir / 'map.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["map_grpc"].MapStub(channel)


@pytest.fixture
async def stream_stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    """A MapStub on mapstream.sock (stream mode)."""
    target = f"unix://{sock_dir / 'mapstream.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["map_grpc"].MapStub(channel)


def handshake(pb2: ModuleType) -> Any:
    return pb2.MapRequest(handshake=pb2.Handshake(sot=True))


def request(pb2: ModuleType, msg_id: str, value: bytes = b"", **fields: Any) -> Any:
    return pb2.MapRequest(
        id=msg_id, request=pb2.MapRequest.Request(**v1_request_fields(value, **fields))
    )


def results(response: Any) -> list[tuple[list[str], bytes, list[str]]]:
    return [(list(r.keys), r.value, list(r.tags)) for r in response.results]


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value, keys=keys, tags=["echoed"]))


def reversed_echo(count: int = 10) -> Any:
    """An echo that answers later requests first.

    Each call waits until all ``count`` requests are in, then request i waits
    (count - i) ms: their timers start in one loop pass, so however slowly the requests
    arrived, they fire in reverse order.
    """
    arrived = 0
    all_in = asyncio.Event()

    async def handler(keys: list[str], datum: Datum) -> Messages:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            all_in.set()
        await all_in.wait()
        await asyncio.sleep((count - int(datum.value)) / 1000)
        return echo(keys, datum)

    return handler


def is_handshake(response: Any) -> bool:
    return response.HasField("handshake") and response.handshake.sot and not response.results


# --- unary mode --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: echo, reversed_echo], ids=["sync", "async-out-of-order"])
async def test_unary_handshake_then_one_response_per_request(
    make: Any, sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """The handshake is answered first; then exactly one MapResponse{id, results} per id."""
    handler = make()
    requests = [request(map_pb2, f"id-{i}", str(i).encode(), keys=[f"k{i}"]) for i in range(10)]
    async with serving(sock_path, info_path, map_handler=handler):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), *requests])
    assert talk.code == grpc.StatusCode.OK
    first, *answers = talk.responses
    assert is_handshake(first)
    assert sorted(a.id for a in answers) == [f"id-{i}" for i in range(10)]
    for answer in answers:
        i = int(answer.id.removeprefix("id-"))
        assert results(answer) == [([f"k{i}"], str(i).encode(), ["echoed"])]
        assert not answer.HasField("handshake")
        assert not answer.HasField("status")
    if make is reversed_echo:
        assert [a.id for a in answers] == [f"id-{i}" for i in reversed(range(10))]


async def test_unary_datum_fields(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """Keys, value, naive UTC times, headers; metadata.id is the request id, num_delivered 0."""

    def describe(keys: list[str], datum: Datum) -> Messages:
        facts = {
            "keys": [keys, datum.keys(), list(datum.keys)],
            "value": datum.value.decode(),
            "event_time": datum.event_time.isoformat(),
            "watermark": datum.watermark.isoformat(),
            "headers": dict(datum.headers),
            "id": datum.metadata.id,
            "num_delivered": datum.metadata.num_delivered,
        }
        return Messages(Message(json.dumps(facts).encode()))

    full = request(
        map_pb2,
        "vertex-17-0",
        b"v",
        keys=["a", "ü"],
        event_time=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        headers={"x-trace": "abc", "h2": ""},
    )
    bare = request(map_pb2, "no-watermark", watermark=None)
    async with serving(sock_path, info_path, map_handler=describe):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), full, bare])
    answers = {a.id: json.loads(a.results[0].value) for a in talk.responses[1:]}
    assert answers["vertex-17-0"] == {
        "keys": [["a", "ü"]] * 3,
        "value": "v",
        "event_time": "1969-12-31T23:59:59.999000",
        "watermark": "2023-05-06T07:00:00.654321",
        "headers": {"x-trace": "abc", "h2": ""},
        "id": "vertex-17-0",
        "num_delivered": 0,
    }
    assert answers["no-watermark"]["watermark"] == "1970-01-01T00:00:00"
    assert answers["no-watermark"]["headers"] == {}


async def test_unary_drop_empty_and_many_results(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """to_drop() is a result tagged DROP; an empty Messages is a response with no results."""

    def fan_out(keys: list[str], datum: Datum) -> Messages:
        if datum.value == b"none":
            return Messages()
        return Messages(Message.to_drop(), Message(b"0", keys=["k0"]), Message(b"1", tags=["t"]))

    async with serving(sock_path, info_path, map_handler=fan_out):
        talk = await converse(
            map_stub.MapFn(),
            [handshake(map_pb2), request(map_pb2, "a", b"x"), request(map_pb2, "b", b"none")],
        )
    answers = {a.id: a for a in talk.responses[1:]}
    assert results(answers["a"]) == [([], b"", [DROP]), (["k0"], b"0", []), ([], b"1", ["t"])]
    assert results(answers["b"]) == []
    assert len(talk.responses) == 3


async def test_user_metadata_is_echoed_into_results(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType, stubs: dict[str, Any]
) -> None:
    """Each result carries the request's user metadata; system metadata is not echoed."""
    common = stubs["common_pb2"]
    metadata = common.Metadata(
        previous_vertex="in",
        sys_metadata={"sys": common.KeyValueGroup(key_value={"s": b"1"})},
        user_metadata={
            "g1": common.KeyValueGroup(key_value={"a": b"\x00\xff", "b": b""}),
            "g2": common.KeyValueGroup(),
        },
    )
    message = request(map_pb2, "m", b"v")
    message.request.metadata.CopyFrom(metadata)

    def twice(keys: list[str], datum: Datum) -> Messages:
        return Messages(Message(b"1"), Message(b"2"))

    async with serving(sock_path, info_path, map_handler=twice):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), message])
    (answer,) = talk.responses[1:]
    for result in answer.results:
        assert result.metadata.previous_vertex == ""
        assert dict(result.metadata.sys_metadata) == {}
        assert {g: dict(kv.key_value) for g, kv in result.metadata.user_metadata.items()} == {
            "g1": {"a": b"\x00\xff", "b": b""},
            "g2": {},
        }
    plain = request(map_pb2, "plain")
    async with serving(sock_path, info_path, map_handler=twice):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), plain])
    assert not talk.responses[1].results[0].HasField("metadata")


async def test_first_message_must_be_a_handshake(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """A stream that does not open with handshake{sot: true} fails INVALID_ARGUMENT, unanswered."""
    not_sot = map_pb2.MapRequest(handshake=map_pb2.Handshake(sot=False))
    async with serving(sock_path, info_path, map_handler=echo):
        plain = await converse(map_stub.MapFn(), [request(map_pb2, "a", b"x")])
        false = await converse(map_stub.MapFn(), [not_sot, request(map_pb2, "a", b"x")])
        fine = await converse(map_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "b")])
    for talk in (plain, false):
        assert talk.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected a handshake" in talk.details
        assert talk.responses == []
    assert [r.id for r in fine.responses] == ["", "b"]


async def test_message_without_request_after_handshake(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """A second handshake or an EOT (batch mode only) on a unary stream is INVALID_ARGUMENT."""
    eot = map_pb2.MapRequest(status=map_pb2.TransmissionStatus(eot=True))
    async with serving(sock_path, info_path, map_handler=echo):
        again = await converse(map_stub.MapFn(), [handshake(map_pb2), handshake(map_pb2)])
        batch = await converse(map_stub.MapFn(), [handshake(map_pb2), eot])
    for talk in (again, batch):
        assert talk.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected a request after the handshake" in talk.details


async def test_half_close_waits_for_requests_in_flight(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """After the client half-closes, every request still running is answered, then OK."""

    async def slow(keys: list[str], datum: Datum) -> Messages:
        await asyncio.sleep(0.2)
        return echo(keys, datum)

    requests = [request(map_pb2, str(i)) for i in range(50)]
    async with serving(sock_path, info_path, map_handler=slow):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), *requests])
    assert talk.code == grpc.StatusCode.OK
    assert sorted(int(r.id) for r in talk.responses[1:]) == list(range(50))


async def test_requests_in_flight_are_bounded(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType, monkeypatch: Any
) -> None:
    """At most MAX_IN_FLIGHT requests of a stream run at once; the rest wait unread."""
    monkeypatch.setattr(bidi, "MAX_IN_FLIGHT", 3)
    running = 0
    peak = 0

    async def counted(keys: list[str], datum: Datum) -> Messages:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return Messages()

    requests = [request(map_pb2, str(i)) for i in range(12)]
    async with serving(sock_path, info_path, map_handler=counted):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), *requests])
    assert len(talk.responses) == 13
    assert peak == 3


@pytest.mark.parametrize("container", [None, "udf"])
async def test_handler_error_fails_the_stream_as_v1_expects(
    container: str | None,
    sock_path: str,
    info_path: str,
    map_stub: Any,
    map_pb2: ModuleType,
    monkeypatch: Any,
) -> None:
    """A raising handler ends the stream INTERNAL with UDF_EXECUTION_ERROR and a traceback."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    if container is not None:
        monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", container)

    def flaky(keys: list[str], datum: Datum) -> Messages:
        if datum.value == b"boom":
            raise ValueError("handler exploded")
        return echo(keys, datum)

    async with serving(sock_path, info_path, map_handler=flaky):
        failed = await converse(
            map_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "bad", b"boom")]
        )
        after = await converse(map_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "ok")])
    assert failed.code == grpc.StatusCode.INTERNAL
    assert failed.details == "UDF_EXECUTION_ERROR(udf): ValueError('handler exploded')"
    status = failed.status_details()
    assert (status.code, status.message) == (13, failed.details)
    assert status.details[0].type_url == "type.googleapis.com/google.rpc.DebugInfo"
    assert b"handler exploded" in status.details[0].value
    assert b"Traceback" in status.details[0].value
    assert after.code == grpc.StatusCode.OK


async def test_wrong_return_type_fails_the_stream(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType, monkeypatch: Any
) -> None:
    """A handler returning something that is not Messages fails the stream, saying so."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")

    def bad(keys: list[str], datum: Datum) -> Any:
        return b"bytes"

    async with serving(sock_path, info_path, map_handler=bad):
        talk = await converse(map_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "a")])
    assert talk.code == grpc.StatusCode.INTERNAL
    assert talk.details.startswith("UDF_EXECUTION_ERROR(udf): map_handler returned a wrong type")
    assert "returned bytes; expected Messages" in talk.details


async def test_malformed_request_is_invalid_argument(
    sock_path: str, info_path: str, sock_dir: Path
) -> None:
    """Bytes that are not a MapRequest end the stream INVALID_ARGUMENT."""
    async with (
        serving(sock_path, info_path, map_handler=echo),
        grpc.aio.insecure_channel(f"unix://{sock_dir / 'map.sock'}") as channel,
    ):
        raw = channel.stream_stream(
            "/map.v1.Map/MapFn", request_serializer=bytes, response_deserializer=bytes
        )
        talk = await converse(raw(), [b"\x1a\x02\x08\x01", b"\x0a\x05\x0a\xff\x01ab"])
    assert talk.responses == [b"\x1a\x02\x08\x01"]
    assert talk.code == grpc.StatusCode.INVALID_ARGUMENT
    assert talk.details.startswith("malformed MapRequest:")


async def test_client_closing_before_handshake_is_ok(
    sock_path: str, info_path: str, map_stub: Any
) -> None:
    """A stream closed before any message ends OK with no response."""
    async with serving(sock_path, info_path, map_handler=echo):
        talk = await converse(map_stub.MapFn(), [])
    assert (talk.code, talk.responses) == (grpc.StatusCode.OK, [])


async def test_is_ready_on_map_sock(
    sock_path: str, info_path: str, map_stub: Any, map_pb2: ModuleType
) -> None:
    """IsReady answers ready=true on map.sock."""
    empty = map_pb2.google_dot_protobuf_dot_empty__pb2.Empty()
    async with serving(sock_path, info_path, map_handler=echo):
        reply = await map_stub.IsReady(empty)
    assert reply.ready is True


# --- stream mode -------------------------------------------------------------------------


async def async_split(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    for part in datum.value.split(b","):
        await asyncio.sleep(0)
        yield Message(part, keys=keys, tags=["part"])


def sync_split(keys: list[str], datum: Datum) -> Iterator[Message]:
    for part in datum.value.split(b","):
        yield Message(part, keys=keys, tags=["part"])


@pytest.mark.parametrize("handler", [async_split, sync_split], ids=["async", "sync"])
async def test_stream_one_response_per_message_then_eot(
    handler: Any, sock_path: str, info_path: str, stream_stub: Any, map_pb2: ModuleType
) -> None:
    """Per id: one MapResponse{id, results: [r]} per yielded message, in order, then EOT."""
    requests = [
        request(map_pb2, "x", b"a,b,c", keys=["kx"]),
        request(map_pb2, "y", b"d", keys=["ky"]),
        request(map_pb2, "z", b"e,f"),
    ]
    async with serving(sock_path, info_path, map_stream_handler=handler):
        talk = await converse(stream_stub.MapFn(), [handshake(map_pb2), *requests])
    assert talk.code == grpc.StatusCode.OK
    assert is_handshake(talk.responses[0])
    per_id: dict[str, list[Any]] = {}
    for response in talk.responses[1:]:
        per_id.setdefault(response.id, []).append(response)
    expected = {"x": (["kx"], [b"a", b"b", b"c"]), "y": (["ky"], [b"d"]), "z": ([], [b"e", b"f"])}
    for msg_id, (keys, values) in expected.items():
        *data, eot = per_id[msg_id]
        assert [results(r) for r in data] == [[(keys, v, ["part"])] for v in values]
        assert eot.HasField("status")
        assert eot.status.eot
        assert list(eot.results) == []
        assert not any(r.HasField("status") for r in data)


async def test_stream_sends_each_message_as_soon_as_it_is_yielded(
    sock_path: str, info_path: str, stream_stub: Any, map_pb2: ModuleType
) -> None:
    """The first result reaches the client while the generator waits for it to arrive."""
    first_seen = threading.Event()

    def waits_for_client(keys: list[str], datum: Datum) -> Iterator[Message]:
        yield Message(b"first")
        assert first_seen.wait(10)
        yield Message(b"second")

    async with serving(sock_path, info_path, map_stream_handler=waits_for_client):
        call = stream_stub.MapFn()
        await call.write(handshake(map_pb2))
        assert is_handshake(await call.read())
        await call.write(request(map_pb2, "s"))
        first = await asyncio.wait_for(call.read(), 10)
        first_seen.set()
        second = await call.read()
        eot = await call.read()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
    assert (first.id, results(first)) == ("s", [([], b"first", [])])
    assert (second.id, results(second)) == ("s", [([], b"second", [])])
    assert eot.status.eot


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_stream_interleaves_ids(
    sync: bool, sock_path: str, info_path: str, stream_stub: Any, map_pb2: ModuleType
) -> None:
    """Requests are handled concurrently: a slow id does not hold back a fast one.

    Sync: both requests are read together, so their generators run as one group in the
    pool (``Invoker.stream_each``); the fast one's messages go out while the slow one
    still blocks its thread.
    """
    release = asyncio.Event()
    released = threading.Event()

    async def gated(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
        if datum.value == b"slow":
            await release.wait()
        yield Message(datum.value)

    def gated_sync(keys: list[str], datum: Datum) -> Iterator[Message]:
        if datum.value == b"slow":
            assert released.wait(10)
        yield Message(datum.value)

    async with serving(sock_path, info_path, map_stream_handler=gated_sync if sync else gated):
        call = stream_stub.MapFn()
        await call.write(handshake(map_pb2))
        await call.read()
        await call.write(request(map_pb2, "slow", b"slow"))
        await call.write(request(map_pb2, "fast", b"fast"))
        fast = [await asyncio.wait_for(call.read(), 10) for _ in range(2)]
        release.set()
        released.set()
        await call.done_writing()
        slow = [await call.read() for _ in range(2)]
        assert await call.code() == grpc.StatusCode.OK
    assert [r.id for r in fast] == ["fast", "fast"]
    assert [r.id for r in slow] == ["slow", "slow"]
    assert fast[1].status.eot
    assert slow[1].status.eot


async def breaks(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
    yield Message(b"one")
    raise RuntimeError("broke midway")


def breaks_sync(keys: list[str], datum: Datum) -> Iterator[Message]:
    yield Message(b"one")
    raise RuntimeError("broke midway")


@pytest.mark.parametrize("handler", [breaks, breaks_sync], ids=["async", "sync"])
async def test_stream_error_after_some_messages(
    handler: Any,
    sock_path: str,
    info_path: str,
    stream_stub: Any,
    map_pb2: ModuleType,
    monkeypatch: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Messages yielded before a failure stay sent; then the stream fails INTERNAL, no EOT.

    The traceback travels as DebugInfo, and the error is logged once.
    """
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")
    async with serving(sock_path, info_path, map_stream_handler=handler):
        talk = await converse(stream_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "e")])
    assert [results(r) for r in talk.responses[1:]] == [[([], b"one", [])]]
    assert talk.code == grpc.StatusCode.INTERNAL
    assert talk.details == "UDF_EXECUTION_ERROR(udf): RuntimeError('broke midway')"
    assert "broke midway" in str(talk.status_details())
    logged = [r for r in caplog.records if r.levelname == "ERROR" and "raised" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


async def yields_bytes(keys: list[str], datum: Datum) -> AsyncIterator[Any]:
    yield b"raw"


def yields_bytes_sync(keys: list[str], datum: Datum) -> Iterator[Any]:
    yield b"raw"


@pytest.mark.parametrize("handler", [yields_bytes, yields_bytes_sync], ids=["async", "sync"])
async def test_stream_yielding_a_wrong_type(
    handler: Any, sock_path: str, info_path: str, stream_stub: Any, map_pb2: ModuleType
) -> None:
    """A stream handler yielding bytes fails the stream, saying what was expected."""
    async with serving(sock_path, info_path, map_stream_handler=handler):
        talk = await converse(stream_stub.MapFn(), [handshake(map_pb2), request(map_pb2, "e")])
    assert talk.code == grpc.StatusCode.INTERNAL
    assert "yielded bytes; expected Message" in talk.details


async def test_sync_stream_requests_beyond_the_threads_are_all_answered(
    sock_path: str, info_path: str, stream_stub: Any, map_pb2: ModuleType
) -> None:
    """200 requests read together, 2 threads: every request gets its messages and EOT.

    Each generator that ends hands its slot and its thread to the next one waiting.
    """
    threads: set[int] = set()

    def three(keys: list[str], datum: Datum) -> Iterator[Message]:
        threads.add(threading.get_ident())
        for i in range(3):
            yield Message(datum.value + b"-%d" % i)

    requests = [request(map_pb2, str(i), b"%d" % i) for i in range(200)]
    async with serving(sock_path, info_path, map_stream_handler=three, max_threads=2):
        talk = await converse(stream_stub.MapFn(), [handshake(map_pb2), *requests])
    assert talk.code == grpc.StatusCode.OK
    per_id: dict[str, list[Any]] = {}
    for response in talk.responses[1:]:
        per_id.setdefault(response.id, []).append(response)
    assert sorted(per_id, key=int) == [str(i) for i in range(200)]
    for msg_id, answers in per_id.items():
        *data, eot = answers
        assert [r.results[0].value for r in data] == [
            b"%s-%d" % (msg_id.encode(), i) for i in range(3)
        ]
        assert eot.status.eot
    assert 1 <= len(threads) <= 2


async def test_a_failing_sync_stream_request_closes_the_other_generators(
    sock_path: str, info_path: str, stream_stub: Any, map_pb2: ModuleType
) -> None:
    """One request's generator fails: the stream fails, every other generator is closed.

    Twenty requests read together, their generators under way at once: the others would
    yield forever, and each runs its ``finally``; the failing one's messages before its
    error were sent, and it gets no EOT.
    """
    lock = threading.Lock()
    started: list[bytes] = []
    closed: list[bytes] = []
    fail = threading.Event()
    deadline = time.monotonic() + 10

    def endless(keys: list[str], datum: Datum) -> Iterator[Message]:
        with lock:
            started.append(datum.value)
        try:
            yield Message(b"one")
            if datum.value == b"bad":
                assert fail.wait(10)  # the client has sent everything
                while len(started) < 20 and time.monotonic() < deadline:
                    time.sleep(0.01)  # and every generator is under way
                raise RuntimeError("bad request")
            while True:
                time.sleep(0.001)
                yield Message(b"more")
        finally:
            with lock:
                closed.append(datum.value)

    requests = [request(map_pb2, "bad", b"bad")]
    requests += [request(map_pb2, str(i), b"ok%d" % i) for i in range(19)]
    async with serving(sock_path, info_path, map_stream_handler=endless, max_threads=32):
        call = stream_stub.MapFn()
        await call.write(handshake(map_pb2))
        assert is_handshake(await call.read())
        for message in requests:
            await call.write(message)
        await call.done_writing()
        fail.set()
        responses = []
        with pytest.raises(grpc.aio.AioRpcError):
            while (response := await call.read()) is not grpc.aio.EOF:
                responses.append(response)
        while time.monotonic() < deadline:
            with lock:
                if sorted(closed) == sorted(started):
                    break
            await asyncio.sleep(0.02)
    assert await call.code() == grpc.StatusCode.INTERNAL
    assert "bad request" in await call.details()
    assert len(started) == 20
    assert sorted(closed) == sorted(started)
    bad = [r for r in responses if r.id == "bad"]
    assert [results(r) for r in bad] == [[([], b"one", [])]]


async def test_sync_stream_whose_client_never_reads_holds_no_thread(
    sock_path: str,
    info_path: str,
    sock_dir: Path,
    stubs: dict[str, ModuleType],
    map_pb2: ModuleType,
) -> None:
    """Ten endless sync generators on a stream nobody reads, 4 threads: sync calls are served.

    Each generator gives its thread back once 64 of its messages wait to be sent, so
    the sync map handler (here on the legacy function.sock the same server serves)
    still gets pool threads.
    """

    def forever(keys: list[str], datum: Datum) -> Iterator[Message]:
        while True:
            yield Message(b"x" * 100)

    messages = [handshake(map_pb2), *[request(map_pb2, f"r{i}") for i in range(10)]]
    body = b"".join(frame(m.SerializeToString()) for m in messages)
    fn_pb2 = stubs["fn_pb2"]
    async with serving(
        sock_path,
        info_path,
        map_handler=echo,
        map_stream_handler=forever,
        max_threads=4,
        map_mode="stream-map",
    ):
        # A window that lets the handshake's answer out, and little more.
        readers = await asyncio.to_thread(
            RawConnection, str(sock_dir / "mapstream.sock"), window=200
        )
        try:
            stream_id = readers.open("/map.v1.Map/MapFn")
            await asyncio.to_thread(readers.send, stream_id, body)
            await asyncio.to_thread(readers.pump, 0.5)
            target = f"unix://{sock_path}"
            async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
                stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
                replies = [
                    await stub.MapFn(datum_request(fn_pb2, b"ok%d" % i), timeout=10)
                    for i in range(5)
                ]
        finally:
            readers.close()
    assert [r.elements[0].value for r in replies] == [b"ok%d" % i for i in range(5)]


async def test_a_sync_generator_paused_by_a_slow_reader_resumes_and_loses_nothing(
    sock_path: str, info_path: str, sock_dir: Path, map_pb2: ModuleType
) -> None:
    """3,000 messages of 1 KiB through a 16 KiB window: every one arrives, in order.

    The generator, 64 messages ahead once the stream's writer is full, gives its thread
    back and resumes as the client reads; then the EOT.
    """
    threads: set[int] = set()

    def many(keys: list[str], datum: Datum) -> Iterator[Message]:
        for i in range(3000):
            threads.add(threading.get_ident())
            yield Message(b"%04d" % i + b"x" * 1020)

    body = frame(handshake(map_pb2).SerializeToString())
    body += frame(request(map_pb2, "big").SerializeToString())
    async with serving(sock_path, info_path, map_stream_handler=many, max_threads=4):
        client = await asyncio.to_thread(
            RawConnection, str(sock_dir / "mapstream.sock"), window=16384
        )
        try:
            stream_id = client.open("/map.v1.Map/MapFn")
            await asyncio.to_thread(client.send, stream_id, body)
            outcome = client.outcomes[stream_id]

            def read_until_the_eot() -> None:
                # The handshake's answer, 3,000 messages and the EOT.
                deadline = time.monotonic() + 60
                while len(outcome.messages()) < 3002 and time.monotonic() < deadline:
                    client.pump(0.5)

            await asyncio.to_thread(read_until_the_eot)
            client.send(stream_id, b"", end_stream=True)
            await asyncio.to_thread(client.wait, stream_id, 10)
        finally:
            client.close()
    responses = [map_pb2.MapResponse.FromString(m) for m in outcome.messages()]
    assert outcome.status == 0
    assert is_handshake(responses[0])
    data, eot = responses[1:-1], responses[-1]
    assert [r.results[0].value[:4] for r in data] == [b"%04d" % i for i in range(3000)]
    assert eot.id == "big"
    assert eot.status.eot
    assert threads
