"""map.v1 batch mode (batchmap.sock) as the pynumaflow 0.14.0 wheel's stubs see it."""

from __future__ import annotations

from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import pytest
from test_reference_map_v1 import HANDSHAKE, map_request

from pynumaflow.batchmapper import (
    BatchMapAsyncServer,
    BatchResponse,
    BatchResponses,
    Datum,
    Message,
)

from reference_client import ReferenceClient, b64, unb64

pytestmark = [pytest.mark.anyio, pytest.mark.reference, pytest.mark.timeout(600)]
EOT = {"status": {"eot": True}}


async def split(datums: AsyncIterable[Datum]) -> BatchResponses:
    responses = BatchResponses()
    async for datum in datums:
        parts = [p for p in datum.value.split(b",") if p]
        responses.append(
            BatchResponse.with_msgs(datum.id, [Message(p, keys=datum.keys) for p in parts])
        )
    return responses


async def converse(
    reference_client: ReferenceClient, sock_dir: Path, handler: Any, requests: list[Any]
) -> dict[str, Any]:
    server = BatchMapAsyncServer(
        handler,
        sock_path=str(sock_dir / "batchmap.sock"),
        server_info_file=str(sock_dir / "mapper-server-info"),
    )
    async with server.running():
        return await reference_client.converse("map", sock_dir / "batchmap.sock", requests)


async def test_one_response_per_id_then_eot_per_batch(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    """Two batches: each id answered once with all its results; an EOT right after each batch."""
    first = [map_request(f"in-{i}-{i}", b"a,b" if i else b"", ["k"]) for i in range(3)]
    second = [map_request("in-9-0", b"z", ["k2"])]
    talk = await converse(reference_client, sock_dir, split, [HANDSHAKE, *first, EOT, *second, EOT])
    assert talk["code"] == "OK"
    handshake, *rest = talk["responses"]
    assert handshake == HANDSHAKE
    assert [r.get("id", "EOT") if "status" not in r else "EOT" for r in rest] == [
        "in-0-0",
        "in-1-1",
        "in-2-2",
        "EOT",
        "in-9-0",
        "EOT",
    ]
    assert rest[3] == rest[5] == EOT  # no id, no results
    assert "results" not in rest[0]  # no output: an empty answer, the input is still acked
    assert [unb64(r["value"]) for r in rest[1]["results"]] == [b"a", b"b"]
    assert rest[4]["results"] == [{"keys": ["k2"], "value": b64(b"z"), "metadata": {}}]


async def test_missing_id_is_a_udf_error(reference_client: ReferenceClient, sock_dir: Path) -> None:
    """An id left unanswered fails the stream INTERNAL with DebugInfo-free details naming it."""

    async def forgetful(datums: AsyncIterable[Datum]) -> BatchResponses:
        return BatchResponses(*[BatchResponse.from_id(d.id) async for d in datums][:1])

    requests = [HANDSHAKE, map_request("a", b"", []), map_request("b", b"", []), EOT]
    talk = await converse(reference_client, sock_dir, forgetful, requests)
    assert talk["responses"] == [HANDSHAKE]
    assert talk["code"] == "INTERNAL"
    assert talk["details"] == (
        "UDF_EXECUTION_ERROR(udf): batch_mapper_instance returned a wrong type: "
        "BatchResponses has no BatchResponse for 1 of the batch's 2 ids: 'b'"
    )


async def test_handler_error_carries_debug_info(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    async def raising(datums: AsyncIterable[Datum]) -> BatchResponses:
        raise RuntimeError("no batch today")

    talk = await converse(
        reference_client, sock_dir, raising, [HANDSHAKE, map_request("a", b"", []), EOT]
    )
    assert talk["code"] == "INTERNAL"
    assert talk["details"] == "UDF_EXECUTION_ERROR(udf): RuntimeError('no batch today')"
    status = talk["status_details"]
    assert status["code"] == 13
    assert status["message"] == talk["details"]
    assert status["details"][0]["type_url"] == "type.googleapis.com/google.rpc.DebugInfo"
    assert "no batch today" in status["details"][0]["detail"]
