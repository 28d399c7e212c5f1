"""NACK results through real servers: sent on v1 with PYNUMAFLOW_NACK=1, a failure elsewhere.

Driven by grpcio stubs generated from our protos, and the transformer also by the
pynumaflow 0.14.0 wheel's stubs (which have no NackOptions: the options reach them as an
unknown field, read back here from the bytes they kept).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow import sourcetransformer
from pynumaflow._codec.v1.map import NACK_REFUSED
from pynumaflow.batchmapper import BatchMapAsyncServer, BatchResponse, BatchResponses
from pynumaflow.function import NACK, Datum, Message, Messages, MessageT, MessageTs, NackOptions
from pynumaflow.sink import AsyncSink, Response, Responses

from conftest import CHANNEL_OPTIONS
from helpers import converse, datum_request, serving, v1_request_fields
from procs import END
from reference_client import ReferenceClient, b64, unb64

pytestmark = pytest.mark.anyio
OPTIONS = NackOptions(
    reason="downstream busy", max_deliveries=5, delay=timedelta(seconds=3), nack_map={"k": "v"}
)
WAIT = 10.0


def nack_some(keys: list[str], datum: Datum) -> Messages:
    if datum.value == b"later":
        return Messages(Message(b"partial"), Message.to_nack(OPTIONS))
    return Messages(Message(datum.value))


def check_options(result: Any) -> None:
    assert list(result.tags) == [NACK]
    assert result.value == b""
    assert result.HasField("nack_options")
    opts = result.nack_options
    assert (opts.reason, opts.max_deliveries, opts.delay) == ("downstream busy", 5, 3000)
    assert dict(opts.nack_map) == {"k": "v"}


def server_info(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text[: -len(END)])  # type: ignore[no-any-return]


@pytest.fixture
async def map_stub(stubs: dict[str, ModuleType], sock_dir: Path) -> AsyncIterator[Any]:
    target = f"unix://{sock_dir / 'map.sock'}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        yield stubs["map_grpc"].MapStub(channel)


def map_requests(pb2: ModuleType) -> list[Any]:
    return [
        pb2.MapRequest(handshake=pb2.Handshake(sot=True)),
        pb2.MapRequest(id="a", request=pb2.MapRequest.Request(**v1_request_fields(b"later"))),
    ]


async def test_map_nack_is_sent_when_enabled_and_the_server_info_requires_1_8_2(
    sock_path: str,
    info_path: str,
    sock_dir: Path,
    map_stub: Any,
    stubs: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYNUMAFLOW_NACK", "1")
    async with serving(sock_path, info_path, map_handler=nack_some, protocols=["v1"]):
        info = server_info(sock_dir / "mapper-server-info")
        talk = await converse(map_stub.MapFn(), map_requests(stubs["map_pb2"]))
    assert info["minimum_numaflow_version"] == "1.8.2-z"
    assert talk.code == grpc.StatusCode.OK
    (answer,) = talk.responses[1:]
    assert answer.id == "a"
    assert answer.results[0].value == b"partial"
    assert not answer.results[0].HasField("nack_options")
    check_options(answer.results[1])


async def test_map_nack_fails_the_request_unless_enabled(
    sock_path: str,
    info_path: str,
    sock_dir: Path,
    map_stub: Any,
    stubs: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older platform would ack the input and forward the result: refused instead."""
    monkeypatch.delenv("PYNUMAFLOW_NACK", raising=False)
    async with serving(sock_path, info_path, map_handler=nack_some, protocols=["v1"]):
        info = server_info(sock_dir / "mapper-server-info")
        talk = await converse(map_stub.MapFn(), map_requests(stubs["map_pb2"]))
    assert info["minimum_numaflow_version"] == "1.4.0-z"
    assert talk.code == grpc.StatusCode.INTERNAL
    assert (
        talk.details
        == f"UDF_EXECUTION_ERROR(udf): map_handler returned a wrong type: {NACK_REFUSED}"
    )


async def test_map_stream_nack(
    sock_path: str,
    info_path: str,
    sock_dir: Path,
    stubs: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYNUMAFLOW_NACK", "true")

    async def stream(keys: list[str], datum: Datum) -> AsyncIterator[Message]:
        yield Message.to_nack(OPTIONS)

    target = f"unix://{sock_dir / 'mapstream.sock'}"
    async with (
        serving(sock_path, info_path, map_stream_handler=stream, protocols=["v1"]),
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel,
    ):
        stub = stubs["map_grpc"].MapStub(channel)
        talk = await converse(stub.MapFn(), map_requests(stubs["map_pb2"]))
    assert talk.code == grpc.StatusCode.OK
    nacked, eot = talk.responses[1:]
    check_options(nacked.results[0])
    assert eot.status.eot


async def test_legacy_map_nack_is_unknown_so_the_platform_retries(
    sock_path: str, info_path: str, fn_stub: Any, stubs: dict[str, ModuleType]
) -> None:
    async with serving(sock_path, info_path, map_handler=nack_some, protocols=["legacy"]):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(stubs["fn_pb2"], b"later"))
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "needs Numaflow >= 1.8.2" in failure.value.details()


async def nack_odd(datums: AsyncIterable[Any]) -> Responses:
    responses = Responses()
    async for datum in datums:
        odd = int(datum.id) % 2
        responses.append(
            Response.as_nack(datum.id, OPTIONS) if odd else Response.as_success(datum.id)
        )
    return responses


@pytest.mark.parametrize("enabled", [True, False])
async def test_sink_nack(
    sock_dir: Path, stubs: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    """Status NACK with its options when enabled; else FAILURE with the reason (retried)."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    monkeypatch.setenv("PYNUMAFLOW_NACK", "1" if enabled else "0")
    pb2 = stubs["sinkv1_pb2"]
    server = AsyncSink(
        nack_odd,
        sock_path=str(sock_dir / "udsink.sock"),
        server_info_file=str(sock_dir / "server-info"),
        protocols=["v1"],
    )
    requests = [pb2.SinkRequest(handshake=pb2.Handshake(sot=True))]
    requests += [pb2.SinkRequest(request=pb2.SinkRequest.Request(id=str(i))) for i in range(2)]
    requests.append(pb2.SinkRequest(status=pb2.TransmissionStatus(eot=True)))
    target = f"unix://{sock_dir / 'sink.sock'}"
    async with server.running():
        info = server_info(sock_dir / "sinker-server-info")
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            talk = await converse(stubs["sinkv1_grpc"].SinkStub(channel).SinkFn(), requests)
    assert talk.code == grpc.StatusCode.OK
    ok, nacked = talk.responses[1].results
    assert (ok.id, ok.status) == ("0", pb2.Status.SUCCESS)
    assert nacked.id == "1"
    if enabled:
        assert info["minimum_numaflow_version"] == "1.8.2-z"
        assert nacked.status == pb2.Status.NACK
        assert nacked.nack_options.delay == 3000
        assert dict(nacked.nack_options.nack_map) == {"k": "v"}
    else:
        assert info["minimum_numaflow_version"] == "1.4.0-z"
        assert (nacked.status, nacked.err_msg) == (pb2.Status.FAILURE, "downstream busy")
        assert not nacked.HasField("nack_options")


async def test_batch_map_nack(
    sock_dir: Path, stubs: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYNUMAFLOW_NACK", "yes")
    pb2 = stubs["map_pb2"]

    async def handler(datums: AsyncIterable[Any]) -> BatchResponses:
        return BatchResponses(
            *[BatchResponse.with_msgs(d.id, [Message.to_nack(OPTIONS)]) async for d in datums]
        )

    server = BatchMapAsyncServer(
        handler,
        sock_path=str(sock_dir / "batchmap.sock"),
        server_info_file=str(sock_dir / "mapper-server-info"),
    )
    target = f"unix://{sock_dir / 'batchmap.sock'}"
    async with server.running():
        info = server_info(sock_dir / "mapper-server-info")
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = stubs["map_grpc"].MapStub(channel).MapFn()
            for request in [
                *map_requests(pb2),
                pb2.MapRequest(status=pb2.TransmissionStatus(eot=True)),
            ]:
                await call.write(request)
            responses = [await asyncio.wait_for(call.read(), WAIT) for _ in range(3)]
            await call.done_writing()
    assert info["minimum_numaflow_version"] == "1.8.2-z"
    assert responses[1].id == "a"
    check_options(responses[1].results[0])
    assert responses[2].status.eot


async def test_modern_sinker_nack(
    sock_dir: Path, stubs: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynumaflow.sinker's Response.as_nack, translated into the same NACK result."""
    from pynumaflow import sinker

    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    monkeypatch.setenv("PYNUMAFLOW_NACK", "1")
    pb2 = stubs["sinkv1_pb2"]

    async def handler(datums: AsyncIterable[sinker.Datum]) -> sinker.Responses:
        return sinker.Responses(*[sinker.Response.as_nack(d.id, OPTIONS) async for d in datums])

    server = sinker.SinkAsyncServer(
        handler,
        sock_path=str(sock_dir / "sink.sock"),
        server_info_file=str(sock_dir / "sinker-server-info"),
    )
    requests = [
        pb2.SinkRequest(handshake=pb2.Handshake(sot=True)),
        pb2.SinkRequest(request=pb2.SinkRequest.Request(id="x")),
        pb2.SinkRequest(status=pb2.TransmissionStatus(eot=True)),
    ]
    target = f"unix://{sock_dir / 'sink.sock'}"
    async with (
        server.running(),
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel,
    ):
        talk = await converse(stubs["sinkv1_grpc"].SinkStub(channel).SinkFn(), requests)
    (nacked,) = talk.responses[1].results
    assert (nacked.id, nacked.status) == ("x", pb2.Status.NACK)
    assert nacked.nack_options.reason == "downstream busy"


def nack_later_t(keys: list[str], datum: Datum) -> MessageTs:
    """A 0.4 API mapt handler: nacks the datum "later", passes the others on."""
    if datum.value == b"later":
        return MessageTs(MessageT(b"partial", datum.event_time), MessageT.to_nack(OPTIONS))
    return MessageTs(MessageT(datum.value, datum.event_time))


def nack_later_modern(keys: list[str], datum: sourcetransformer.Datum) -> Any:
    """The same with pynumaflow.sourcetransformer (its results carry their own metadata)."""
    if datum.value == b"later":
        return sourcetransformer.Messages(
            sourcetransformer.Message(b"partial", datum.event_time),
            sourcetransformer.Message.to_nack(OPTIONS),
        )
    return sourcetransformer.Messages(sourcetransformer.Message(datum.value, datum.event_time))


TRANSFORM_REQUESTS: list[dict[str, Any]] = [
    {"handshake": {"sot": True}},
    {"request": {"id": "n", "value": b64(b"later"), "event_time": "2024-01-02T03:04:05Z"}},
    {"request": {"id": "p", "value": b64(b"now"), "event_time": "2024-01-02T03:04:05Z"}},
]


@pytest.mark.reference
@pytest.mark.timeout(600)
@pytest.mark.parametrize("api", ["0.4", "modern"])
@pytest.mark.parametrize("enabled", [True, False])
async def test_transformer_nack_through_the_reference_stubs(
    reference_client: ReferenceClient,
    sock_dir: Path,
    stubs: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    api: str,
    enabled: bool,
) -> None:
    """MessageT.to_nack(): the NACK tag and nack_options 6 when enabled; else INTERNAL."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    monkeypatch.setenv("PYNUMAFLOW_NACK", "1" if enabled else "0")
    socket = sock_dir / "sourcetransform.sock"
    info_file = sock_dir / "sourcetransformer-server-info"
    server: Any
    if api == "0.4":
        from pynumaflow.function import AsyncServer

        server = AsyncServer(
            mapt_handler=nack_later_t,
            sock_path=str(sock_dir / "function.sock"),
            server_info_file=str(sock_dir / "server-info"),
            protocols=["v1"],
        )
    else:
        server = sourcetransformer.SourceTransformAsyncServer(
            nack_later_modern, sock_path=str(socket), server_info_file=str(info_file)
        )
    async with server.running():
        info = server_info(info_file)
        talk = await reference_client.converse("sourcetransform", socket, TRANSFORM_REQUESTS)
    if not enabled:
        assert info["minimum_numaflow_version"] == "1.4.0-z"
        assert talk["code"] == "INTERNAL"
        assert talk["details"].startswith("UDF_EXECUTION_ERROR(transformer): ")
        assert talk["details"].endswith(f" returned a wrong type: {NACK_REFUSED}")
        return
    assert info["minimum_numaflow_version"] == "1.8.2-z"
    assert talk["code"] == "OK"
    answers = {r["id"]: r["results"] for r in talk["responses"][1:]}
    assert [unb64(r.get("value", "")) for r in answers["p"]] == [b"now"]
    partial, nacked = answers["n"]
    assert unb64(partial["value"]) == b"partial"
    # What the 0.14.0 stubs know of the nack: an empty value, the NACK tag, year 1.
    assert nacked["tags"] == [NACK]
    assert "value" not in nacked
    assert nacked["event_time"] == "0001-01-01T00:00:00Z"
    # The options rode along as field 6, which these stubs kept as an unknown field.
    pb2 = stubs["transform_pb2"]
    raw = {
        answer.id: answer
        for answer in map(pb2.SourceTransformResponse.FromString, map(unb64, talk["raw_responses"]))
    }
    assert not raw["n"].results[0].HasField("nack_options")
    check_options(raw["n"].results[1])
    assert not raw["p"].results[0].HasField("nack_options")


def test_a_wrong_flag_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNUMAFLOW_NACK", "maybe")
    with pytest.raises(ValueError, match="PYNUMAFLOW_NACK"):
        AsyncSink(nack_odd, protocols=["v1"])
