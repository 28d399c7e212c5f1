"""sourcetransformer.v1 SourceTransformFn (Numaflow >= 1.4) over sourcetransform.sock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow.function import DROP, Datum, Message, Messages, MessageT, MessageTs

from conftest import CHANNEL_OPTIONS
from helpers import converse, serving, v1_request_fields

pytestmark = pytest.mark.anyio
UTC = timezone.utc


@pytest.fixture
def pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["transform_pb2"]


@pytest.fixture
async def stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    """A SourceTransformStub on sourcetransform.sock."""
    target = f"unix://{sock_dir / 'sourcetransform.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["transform_grpc"].SourceTransformStub(channel)


def handshake(pb2: ModuleType) -> Any:
    return pb2.SourceTransformRequest(handshake=pb2.Handshake(sot=True))


def request(pb2: ModuleType, msg_id: str, value: bytes = b"", **fields: Any) -> Any:
    body = pb2.SourceTransformRequest.Request(id=msg_id, **v1_request_fields(value, **fields))
    return pb2.SourceTransformRequest(request=body)


def seconds_nanos(result: Any) -> tuple[int, int]:
    assert result.HasField("event_time")
    return result.event_time.seconds, result.event_time.nanos


def assign_noon(keys: list[str], datum: Datum) -> MessageTs:
    return MessageTs(MessageT(datum.value, datetime(2024, 2, 3, 12, 0, 0, 5), keys=keys))


async def async_assign_noon(keys: list[str], datum: Datum) -> MessageTs:
    await asyncio.sleep((5 - int(datum.value or b"0")) / 1000)
    return assign_noon(keys, datum)


@pytest.mark.parametrize("handler", [assign_noon, async_assign_noon], ids=["sync", "async"])
async def test_one_response_per_request_with_event_times(
    handler: Any, sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """Handshake first; then one response per request.id, each result with its event time."""
    requests = [request(pb2, f"{i}-0", str(i).encode(), keys=["k"]) for i in range(5)]
    async with serving(sock_path, info_path, mapt_handler=handler):
        talk = await converse(stub.SourceTransformFn(), [handshake(pb2), *requests])
    assert talk.code == grpc.StatusCode.OK
    first, *answers = talk.responses
    assert first.HasField("handshake")
    assert first.handshake.sot
    assert (first.id, list(first.results)) == ("", [])
    assert sorted(a.id for a in answers) == [f"{i}-0" for i in range(5)]
    noon = datetime(2024, 2, 3, 12, 0, 0, 5, tzinfo=UTC).timestamp()
    for answer in answers:
        (result,) = answer.results
        assert (list(result.keys), result.value) == (["k"], answer.id[0].encode())
        assert seconds_nanos(result) == (int(noon), 5000)
        assert not answer.HasField("handshake")


async def test_event_time_forms(sock_path: str, info_path: str, stub: Any, pb2: ModuleType) -> None:
    """Bare times land on the request's UTC date; aware times convert; drop is year 1."""

    def forms(keys: list[str], datum: Datum) -> MessageTs:
        return MessageTs(
            MessageT(time(6, 30), datum.value, keys),  # the 0.4 README's argument order
            MessageT(b"aware", datetime(2024, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))),
            MessageT(b"tz-time", time(1, 0, tzinfo=timezone(timedelta(hours=2)))),
            MessageT(b"epoch", datetime(1970, 1, 1)),
            MessageT.to_drop(),
        )

    message = request(
        pb2, "o-1", b"v", keys=["k"], event_time=datetime(2023, 5, 6, 23, 59, tzinfo=UTC)
    )
    async with serving(sock_path, info_path, mapt_handler=forms):
        talk = await converse(stub.SourceTransformFn(), [handshake(pb2), message])
    bare, aware, tz_time, epoch, dropped = talk.responses[1].results
    assert seconds_nanos(bare) == (int(datetime(2023, 5, 6, 6, 30, tzinfo=UTC).timestamp()), 0)
    assert (bare.value, list(bare.keys)) == (b"v", ["k"])
    assert seconds_nanos(aware) == (int(datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp()), 0)
    # 01:00 at +02:00 on 2023-05-06 is 2023-05-05T23:00Z.
    assert seconds_nanos(tz_time) == (int(datetime(2023, 5, 5, 23, tzinfo=UTC).timestamp()), 0)
    assert seconds_nanos(epoch) == (0, 0)  # present, though all zero: the platform needs it
    assert seconds_nanos(dropped) == (-62135596800, 0)
    assert (dropped.value, list(dropped.keys), list(dropped.tags)) == (b"", [], [DROP])


async def test_datum_fields_and_user_metadata(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType, stubs: dict[str, Any]
) -> None:
    """The datum's metadata.id is request.id (num_delivered 0); user metadata is echoed."""
    common = stubs["common_pb2"]

    def describe(keys: list[str], datum: Datum) -> MessageTs:
        facts = {
            "keys": list(datum.keys),
            "event_time": datum.event_time.isoformat(),
            "watermark": datum.watermark.isoformat(),
            "headers": dict(datum.headers),
            "id": datum.metadata.id,
            "num_delivered": datum.metadata.num_delivered,
        }
        return MessageTs(MessageT(json.dumps(facts).encode(), datum.event_time))

    message = request(pb2, "42-3", b"v", keys=["a"], headers={"h": "1"})
    message.request.metadata.user_metadata["g"].key_value["k"] = b"v"
    message.request.metadata.sys_metadata["s"].key_value["k"] = b"v"
    async with serving(sock_path, info_path, mapt_handler=describe):
        talk = await converse(stub.SourceTransformFn(), [handshake(pb2), message])
    (result,) = talk.responses[1].results
    assert json.loads(result.value) == {
        "keys": ["a"],
        "event_time": "2023-05-06T07:08:09.123456",
        "watermark": "2023-05-06T07:00:00.654321",
        "headers": {"h": "1"},
        "id": "42-3",
        "num_delivered": 0,
    }
    assert talk.responses[1].id == "42-3"
    assert result.metadata == common.Metadata(
        user_metadata={"g": common.KeyValueGroup(key_value={"k": b"v"})}
    )
    assert seconds_nanos(result) == (1683356889, 123456000)


async def test_handler_error_is_internal_for_the_transformer(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType, monkeypatch: Any
) -> None:
    """A raising handler ends the stream UDF_EXECUTION_ERROR(transformer); serving goes on."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)

    def flaky(keys: list[str], datum: Datum) -> MessageTs:
        if datum.value == b"boom":
            raise KeyError("nope")
        return assign_noon(keys, datum)

    async with serving(sock_path, info_path, mapt_handler=flaky):
        failed = await converse(
            stub.SourceTransformFn(), [handshake(pb2), request(pb2, "1-0", b"boom")]
        )
        after = await converse(stub.SourceTransformFn(), [handshake(pb2), request(pb2, "2-0")])
    assert failed.code == grpc.StatusCode.INTERNAL
    assert failed.details == "UDF_EXECUTION_ERROR(transformer): KeyError('nope')"
    assert b"Traceback" in failed.status_details().details[0].value
    assert (after.code, [r.id for r in after.responses]) == (grpc.StatusCode.OK, ["", "2-0"])


async def test_messages_without_event_time_are_a_wrong_type(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A mapt handler returning Messages (no event times) fails the stream, saying so."""

    def plain(keys: list[str], datum: Datum) -> Messages:
        return Messages(Message(b"x"))

    async with serving(sock_path, info_path, mapt_handler=plain):
        talk = await converse(stub.SourceTransformFn(), [handshake(pb2), request(pb2, "1-0")])
    assert talk.code == grpc.StatusCode.INTERNAL
    assert "mapt_handler returned a wrong type: expected MessageT objects" in talk.details


async def test_first_message_must_be_a_handshake(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """A stream opening with a request fails INVALID_ARGUMENT before any answer."""
    async with serving(sock_path, info_path, mapt_handler=assign_noon):
        talk = await converse(stub.SourceTransformFn(), [request(pb2, "1-0")])
    assert talk.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "SourceTransformRequest with handshake.sot true" in talk.details
    assert talk.responses == []


async def test_is_ready_on_sourcetransform_sock(
    sock_path: str, info_path: str, stub: Any, pb2: ModuleType
) -> None:
    """IsReady answers ready=true on sourcetransform.sock."""
    empty = pb2.google_dot_protobuf_dot_empty__pb2.Empty()
    async with serving(sock_path, info_path, mapt_handler=assign_noon):
        reply = await stub.IsReady(empty)
    assert reply.ready is True
