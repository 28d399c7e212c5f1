"""MapFn and MapTFn over a real socket, driven by grpcio stubs generated from our protos."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, time, timezone
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow.function import DROP, Datum, Message, Messages, MessageT, MessageTs

from helpers import datum_request, serving

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024
UTC = timezone.utc


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value, keys=keys, tags=["echoed"]))


async def async_echo(keys: list[str], datum: Datum) -> Messages:
    await asyncio.sleep(0)
    return Messages(Message(datum.value, keys=keys, tags=["echoed"]))


def describe(keys: list[str], datum: Datum) -> Messages:
    facts = {
        "keys_call": datum.keys(),
        "keys_attr": list(datum.keys),
        "event_time": datum.event_time.isoformat(),
        "watermark": datum.watermark.isoformat(),
        "id": datum.metadata.id,
        "num_delivered": datum.metadata.num_delivered,
        "tz": str(datum.event_time.tzinfo),
    }
    return Messages(Message(json.dumps(facts).encode()))


@pytest.mark.parametrize("handler", [echo, async_echo], ids=["sync", "async"])
async def test_map_returns_keys_value_tags(
    handler: Any, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Each response element carries the handler's keys, value and tags, in order."""
    async with serving(sock_path, info_path, map_handler=handler):
        reply = await fn_stub.MapFn(datum_request(fn_pb2, b"payload", keys=["k1", "k2"]))
    assert [(list(e.keys), e.value, list(e.tags)) for e in reply.elements] == [
        (["k1", "k2"], b"payload", ["echoed"])
    ]
    assert not reply.elements[0].HasField("event_time")


async def test_map_datum_fields_arrive_exactly(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Event time and watermark are microsecond-exact naive UTC; metadata and keys arrive."""
    request = datum_request(
        fn_pb2,
        keys=["a", "ü"],
        event_time=datetime(1969, 12, 31, 23, 59, 58, 999999, tzinfo=UTC),
        watermark=datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
        msg_id="msg-42",
        num_delivered=7,
    )
    async with serving(sock_path, info_path, map_handler=describe):
        reply = await fn_stub.MapFn(request)
    facts = json.loads(reply.elements[0].value)
    assert facts == {
        "keys_call": ["a", "ü"],
        "keys_attr": ["a", "ü"],
        "event_time": "1969-12-31T23:59:58.999999",
        "watermark": "2262-04-11T23:47:16.854775",
        "id": "msg-42",
        "num_delivered": 7,
        "tz": "None",
    }


async def test_map_drop_and_many_messages(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Message.to_drop() reaches the platform as an empty message tagged DROP."""

    def fan_out(keys: list[str], datum: Datum) -> Messages:
        out = Messages(Message.to_drop())
        for i in range(3):
            out.append(Message(f"{i}".encode(), keys=[f"k{i}"]))
        return out

    async with serving(sock_path, info_path, map_handler=fan_out):
        reply = await fn_stub.MapFn(datum_request(fn_pb2, b"x"))
    assert [(list(e.keys), e.value, list(e.tags)) for e in reply.elements] == [
        ([], b"", [DROP]),
        (["k0"], b"0", []),
        (["k1"], b"1", []),
        (["k2"], b"2", []),
    ]


@pytest.mark.parametrize("size", [1 * MiB, 30 * MiB], ids=["1MiB", "30MiB"])
async def test_map_large_payloads(
    size: int, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Payloads of 1 MiB and 30 MiB go through both ways intact."""
    payload = bytes(range(256)) * (size // 256)
    async with serving(sock_path, info_path, map_handler=echo):
        reply = await fn_stub.MapFn(datum_request(fn_pb2, payload))
    assert reply.elements[0].value == payload


async def test_map_handler_error_is_unknown_and_server_keeps_serving(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType, caplog: Any
) -> None:
    """A raising handler fails its call with UNKNOWN and the error text, logged once."""

    def flaky(keys: list[str], datum: Datum) -> Messages:
        if datum.value == b"boom":
            raise RuntimeError("handler exploded")
        return echo(keys, datum)

    async with serving(sock_path, info_path, map_handler=flaky):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(fn_pb2, b"boom"))
        reply = await fn_stub.MapFn(datum_request(fn_pb2, b"fine"))
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "RuntimeError: handler exploded" in failure.value.details()
    assert reply.elements[0].value == b"fine"
    logged = [r for r in caplog.records if r.name == "pynumaflow" and r.exc_info]
    assert len(logged) == 1
    assert "map_handler" in logged[0].getMessage()


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, "returned NoneType; expected Messages"),
        (b"bytes", "returned bytes; expected Messages"),
        (["a", "b"], "expected Message objects, found str"),
        (Messages(Message(b"ok"), "oops"), "expected Message objects, found str"),  # type: ignore[arg-type]
        (42, "returned int; expected Messages"),
    ],
    ids=["none", "bytes", "list-of-str", "messages-with-str", "int"],
)
async def test_map_wrong_return_type(
    returned: Any,
    expected: str,
    sock_path: str,
    info_path: str,
    fn_stub: Any,
    fn_pb2: ModuleType,
) -> None:
    """A wrong return value fails the call with a status saying what was expected."""

    def bad(keys: list[str], datum: Datum) -> Any:
        return returned

    async with serving(sock_path, info_path, map_handler=bad):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(fn_pb2))
        ready = await fn_stub.IsReady(fn_pb2.google_dot_protobuf_dot_empty__pb2.Empty())
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert expected in failure.value.details()
    assert ready.ready


async def test_missing_handler_is_unimplemented(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Calling an RPC the server has no handler for answers UNIMPLEMENTED, naming the keyword."""
    async with serving(sock_path, info_path, map_handler=echo):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapTFn(datum_request(fn_pb2))
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "mapt_handler" in failure.value.details()


async def test_malformed_request_is_invalid_argument(
    sock_path: str, info_path: str, channel: grpc.aio.Channel, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """Bytes that are not a DatumRequest get INVALID_ARGUMENT; the next call is served."""
    raw_map = channel.unary_unary(
        "/function.v1.UserDefinedFunction/MapFn",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    async with serving(sock_path, info_path, map_handler=echo):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await raw_map(b"\x0a\xff\x01abc")  # keys field claiming 255 bytes
        reply = await fn_stub.MapFn(datum_request(fn_pb2, b"next"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in failure.value.details()
    assert reply.elements[0].value == b"next"


async def test_oversize_request_is_resource_exhausted(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A request above max_message_size gets RESOURCE_EXHAUSTED; the server keeps serving."""
    async with serving(sock_path, info_path, map_handler=echo, max_message_size=1024):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(fn_pb2, b"x" * 2048))
        reply = await fn_stub.MapFn(datum_request(fn_pb2, b"small"))
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_message_size" in failure.value.details()
    assert reply.elements[0].value == b"small"


def assign_noon(keys: list[str], datum: Datum) -> MessageTs:
    return MessageTs(MessageT(datum.value, datetime(2024, 2, 3, 12, 0, 0, 5), keys=keys))


async def async_assign_noon(keys: list[str], datum: Datum) -> MessageTs:
    return assign_noon(keys, datum)


@pytest.mark.parametrize("handler", [assign_noon, async_assign_noon], ids=["sync", "async"])
async def test_mapt_assigns_event_time_and_carries_watermark(
    handler: Any, sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """MapTFn responses carry the new event time and the request's watermark."""
    request = datum_request(fn_pb2, b"v", keys=["k"])
    async with serving(sock_path, info_path, mapt_handler=handler):
        reply = await fn_stub.MapTFn(request)
    (element,) = reply.elements
    assert (list(element.keys), element.value) == (["k"], b"v")
    assert element.event_time.event_time.ToDatetime() == datetime(2024, 2, 3, 12, 0, 0, 5)
    assert element.watermark.watermark == request.watermark.watermark


async def test_mapt_time_of_day_and_drop(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A bare datetime.time is taken on the request's UTC date; to_drop() is tagged DROP."""

    def seed_style(keys: list[str], datum: Datum) -> MessageTs:
        return MessageTs(MessageT(time(6, 30), datum.value, keys), MessageT.to_drop())

    request = datum_request(
        fn_pb2, b"v", keys=["k"], event_time=datetime(2023, 5, 6, 23, 59, tzinfo=UTC)
    )
    async with serving(sock_path, info_path, mapt_handler=seed_style):
        reply = await fn_stub.MapTFn(request)
    first, dropped = reply.elements
    assert first.event_time.event_time.ToDatetime() == datetime(2023, 5, 6, 6, 30)
    assert (first.value, list(first.keys)) == (b"v", ["k"])
    assert list(dropped.tags) == [DROP]
    assert dropped.event_time.event_time.ToDatetime() == datetime(1, 1, 1)


async def test_is_ready(sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType) -> None:
    """IsReady answers ready=true."""
    async with serving(sock_path, info_path, map_handler=echo):
        reply = await fn_stub.IsReady(fn_pb2.google_dot_protobuf_dot_empty__pb2.Empty())
    assert reply.ready is True


async def test_grpclib_client_with_betterproto_stub(sock_path: str, info_path: str) -> None:
    """A second, independent client (grpclib + our betterproto stub) gets the same answers."""
    from grpclib.client import Channel

    from pynumaflow._proto.function import v1

    async with serving(sock_path, info_path, map_handler=echo):
        channel = Channel(path=sock_path)
        try:
            stub = v1.UserDefinedFunctionStub(channel)
            reply = await stub.map_fn(v1.DatumRequest(keys=["a"], value=b"via grpclib"))
        finally:
            channel.close()
    assert [(e.keys, e.value, e.tags) for e in reply.elements] == [
        (["a"], b"via grpclib", ["echoed"])
    ]


def test_logging_has_no_handlers_at_import() -> None:
    """Importing the library attaches no logging handler (a server does, see test_pods)."""
    probe = (
        "import logging, pynumaflow.function, pynumaflow.sink, pynumaflow.testing\n"
        "print(logging.getLogger('pynumaflow').handlers, logging.getLogger().handlers)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[] []"
