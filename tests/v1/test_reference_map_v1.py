"""map.v1 and sourcetransformer.v1 as the pynumaflow 0.14.0 wheel's stubs see them.

The same conversations also go through our own grpcio stubs (generated from protos/);
both views must agree, so our protos and the reference's are one wire format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, time, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pynumaflow.function import DROP, Datum, Message, Messages, MessageT, MessageTs

from conftest import CHANNEL_OPTIONS
from helpers import converse, serving
from reference_client import ReferenceClient, b64, rfc3339, unb64

# The first test also builds (or finds cached) the reference virtualenv.
pytestmark = [pytest.mark.anyio, pytest.mark.reference, pytest.mark.timeout(600)]
UTC = timezone.utc
EVENT_TIME = datetime(2023, 5, 6, 23, 59, 1, 250000, tzinfo=UTC)
HANDSHAKE = {"handshake": {"sot": True}}
USER_METADATA = {"g": {"key_value": {"k": b64(b"\x00v")}}}


def map_request(msg_id: str, value: bytes, keys: list[str]) -> dict[str, Any]:
    return {
        "id": msg_id,
        "request": {
            "keys": keys,
            "value": b64(value),
            "event_time": rfc3339(EVENT_TIME),
            "watermark": rfc3339(datetime(2023, 5, 6, tzinfo=UTC)),
            "headers": {"x-h": msg_id},
            "metadata": {"previous_vertex": "in", "user_metadata": USER_METADATA},
        },
    }


def transform_request(msg_id: str, value: bytes) -> dict[str, Any]:
    body = map_request(msg_id, value, ["k"])["request"]
    return {"request": {**body, "id": msg_id}}


async def our_view(
    stubs: dict[str, ModuleType], socket: Path, service: str, requests: list[dict[str, Any]]
) -> dict[str, Any]:
    """The conversation through our own grpcio stubs, in the reference script's JSON form."""
    if service == "map":
        pb2, stub_class, method, request_type = stubs["map_pb2"], "MapStub", "MapFn", "MapRequest"
        module = stubs["map_grpc"]
    else:
        pb2, module = stubs["transform_pb2"], stubs["transform_grpc"]
        stub_class, method, request_type = (
            "SourceTransformStub",
            "SourceTransformFn",
            "SourceTransformRequest",
        )
    messages = [json_format.ParseDict(r, getattr(pb2, request_type)()) for r in requests]
    async with grpc.aio.insecure_channel(f"unix://{socket}", options=CHANNEL_OPTIONS) as channel:
        talk = await converse(getattr(getattr(module, stub_class)(channel), method)(), messages)
    return {
        "responses": [
            json_format.MessageToDict(r, preserving_proto_field_name=True) for r in talk.responses
        ],
        "code": talk.code.name,
        "details": talk.details,
    }


def same_conversation(reference: dict[str, Any], ours: dict[str, Any]) -> None:
    """Both clients saw the same responses (order aside, after the handshake) and status."""

    def canonical(view: dict[str, Any]) -> Any:
        first, *rest = view["responses"] or [None]
        return first, sorted(json.dumps(r, sort_keys=True) for r in rest), view["code"]

    assert canonical(reference) == canonical(ours)
    assert reference["details"] == ours["details"]


def echo_twice(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value, keys=keys, tags=[datum.headers["x-h"]]), Message.to_drop())


async def test_unary_map(
    reference_client: ReferenceClient,
    stubs: dict[str, ModuleType],
    sock_path: str,
    info_path: str,
    sock_dir: Path,
) -> None:
    """Handshake, then one response per id with keys, value, tags and echoed user metadata."""
    requests = [HANDSHAKE] + [map_request(f"v-{i}-0", f"{i}".encode(), [f"k{i}"]) for i in range(8)]
    socket = sock_dir / "map.sock"
    async with serving(sock_path, info_path, map_handler=echo_twice):
        reference = await reference_client.converse("map", socket, requests)
        ours = await our_view(stubs, socket, "map", requests)
    assert reference["ready"] is True
    assert reference["code"] == "OK"
    assert reference["status_details"] is None
    first, *answers = reference["responses"]
    assert first == HANDSHAKE
    assert sorted(a["id"] for a in answers) == [f"v-{i}-0" for i in range(8)]
    for answer in answers:
        i = answer["id"].split("-")[1]
        assert answer["results"] == [
            {
                "keys": [f"k{i}"],
                "value": b64(i.encode()),
                "tags": [answer["id"]],
                "metadata": {"user_metadata": USER_METADATA},
            },
            {"tags": [DROP], "metadata": {"user_metadata": USER_METADATA}},
        ]
        assert set(answer) == {"id", "results"}
    same_conversation(reference, ours)


async def test_stream_map(
    reference_client: ReferenceClient,
    stubs: dict[str, ModuleType],
    sock_path: str,
    info_path: str,
    sock_dir: Path,
) -> None:
    """One response per yielded message, then an EOT, for every id."""

    async def split(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
        for part in datum.value.split(b","):
            await asyncio.sleep(0)
            yield Message(part, keys=keys)

    requests = [HANDSHAKE, map_request("a", b"1,2,3", ["ka"]), map_request("b", b"4", ["kb"])]
    socket = sock_dir / "mapstream.sock"
    async with serving(sock_path, info_path, map_stream_handler=split):
        reference = await reference_client.converse("map", socket, requests)
        ours = await our_view(stubs, socket, "map", requests)
    assert reference["code"] == "OK"
    per_id: dict[str, list[Any]] = {}
    for response in reference["responses"][1:]:
        per_id.setdefault(response["id"], []).append(response)
    for msg_id, keys, parts in (("a", ["ka"], [b"1", b"2", b"3"]), ("b", ["kb"], [b"4"])):
        *data, eot = per_id[msg_id]
        assert [[unb64(r["value"]) for r in d["results"]] for d in data] == [[p] for p in parts]
        assert all(d["results"][0]["keys"] == keys for d in data)
        assert eot == {"id": msg_id, "status": {"eot": True}}
    same_conversation(reference, ours)


async def test_source_transformer(
    reference_client: ReferenceClient,
    stubs: dict[str, ModuleType],
    sock_path: str,
    info_path: str,
    sock_dir: Path,
) -> None:
    """Every result carries its event time: bare times, the epoch and drop's year 1 too."""

    def assign(keys: list[str], datum: Datum) -> MessageTs:
        return MessageTs(
            MessageT(time(6, 30), datum.value, keys),
            MessageT(b"epoch", datetime(1970, 1, 1)),
            MessageT(b"exact", datetime(2024, 2, 3, 12, 0, 0, 5)),
            MessageT.to_drop(),
        )

    requests = [HANDSHAKE, transform_request("7-0", b"x"), transform_request("8-1", b"y")]
    socket = sock_dir / "sourcetransform.sock"
    async with serving(sock_path, info_path, mapt_handler=assign):
        reference = await reference_client.converse("sourcetransform", socket, requests)
        ours = await our_view(stubs, socket, "sourcetransform", requests)
    assert reference["code"] == "OK"
    assert reference["responses"][0] == HANDSHAKE
    answers = {a["id"]: a["results"] for a in reference["responses"][1:]}
    assert set(answers) == {"7-0", "8-1"}
    for value, results in ((b"x", answers["7-0"]), (b"y", answers["8-1"])):
        assert [(unb64(r.get("value", "")), r["event_time"]) for r in results] == [
            (value, "2023-05-06T06:30:00Z"),
            (b"epoch", "1970-01-01T00:00:00Z"),
            (b"exact", "2024-02-03T12:00:00.000005Z"),
            (b"", "0001-01-01T00:00:00Z"),
        ]
        assert results[3]["tags"] == [DROP]
        assert all(r["metadata"] == {"user_metadata": USER_METADATA} for r in results)
    same_conversation(reference, ours)


async def test_handler_error_details(
    reference_client: ReferenceClient,
    sock_path: str,
    info_path: str,
    sock_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handler error reaches the reference as INTERNAL with a google.rpc.Status + DebugInfo."""
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")

    def explodes(keys: list[str], datum: Datum) -> Messages:
        raise RuntimeError("kaput")

    async with serving(sock_path, info_path, map_handler=explodes):
        reference = await reference_client.converse(
            "map", sock_dir / "map.sock", [HANDSHAKE, map_request("e", b"", [])]
        )
    assert reference["code"] == "INTERNAL"
    assert reference["details"] == "UDF_EXECUTION_ERROR(udf): RuntimeError('kaput')"
    status = reference["status_details"]
    assert (status["code"], status["message"]) == (13, reference["details"])
    (debug,) = status["details"]
    assert debug["type_url"] == "type.googleapis.com/google.rpc.DebugInfo"
    assert "Traceback" in debug["detail"]
    assert "RuntimeError: kaput" in debug["detail"]


async def test_missing_handshake(
    reference_client: ReferenceClient, sock_path: str, info_path: str, sock_dir: Path
) -> None:
    """A conversation that does not open with a handshake is refused, unanswered."""
    async with serving(sock_path, info_path, mapt_handler=lambda keys, datum: MessageTs()):
        reference = await reference_client.converse(
            "sourcetransform", sock_dir / "sourcetransform.sock", [transform_request("1-0", b"")]
        )
    assert reference["code"] == "INVALID_ARGUMENT"
    assert reference["responses"] == []
