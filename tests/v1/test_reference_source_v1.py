"""source.v1 and sideinput.v1 against the pynumaflow 0.14.0 wheel's stubs, an independent client.

The 0.14.0 NackRequest has the singular 1.7.0-1.8.1 shape: its one Request reaches our
server, compiled with the repeated 1.8.2+ shape, as one occurrence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sources import Counter, Failing, MemorySource
from test_sideinput_v1 import serve as serve_side_input
from test_source_v1 import serve as serve_source

from reference_client import ReferenceClient, b64, unb64

pytestmark = pytest.mark.anyio

HANDSHAKE = {"handshake": {"sot": True}}


def read(num: int, timeout_ms: int = 1000) -> dict[str, Any]:
    return {"request": {"num_records": str(num), "timeout_in_ms": timeout_ms}}


def offsets(*indexes: int) -> list[dict[str, Any]]:
    return [{"offset": b64(str(i).encode()), "partition_id": 3} for i in indexes]


async def test_read_handshake_batches_and_eots(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    source = MemorySource(limit=3)
    async with serve_source(source, sock_dir).running():
        talk = await reference_client.converse(
            "source-read", sock_dir / "source.sock", [HANDSHAKE, read(2), read(2), read(2)]
        )
    assert talk["ready"] is True
    assert talk["code"] == "OK"
    first, *rest = talk["responses"]
    assert first["handshake"] == {"sot": True}
    assert "result" not in first
    shape = [("eot" if r["status"].get("eot") else unb64(r["result"]["payload"])) for r in rest]
    assert shape == [b"0", b"1", "eot", b"2", "eot", "eot"]
    result = rest[0]["result"]
    assert result["offset"] == {"offset": b64(b"0"), "partition_id": 3}
    assert result["keys"] == ["k"]
    assert result["headers"] == {"h": "0"}
    assert result["event_time"] == "2024-01-02T03:04:05Z"


async def test_ack_and_nack(reference_client: ReferenceClient, sock_dir: Path) -> None:
    source = MemorySource()
    sock = sock_dir / "source.sock"
    async with serve_source(source, sock_dir).running():
        acks = await reference_client.converse(
            "source-ack",
            sock,
            [HANDSHAKE, {"request": {"offsets": offsets(1, 2)}}, {"request": {"offsets": []}}],
        )
        nack = await reference_client.converse(
            "source-nack", sock, [{"request": {"offsets": offsets(7, 8)}}]
        )
    assert acks["code"] == "OK"
    assert acks["responses"][0] == {"result": {"success": {}}, "handshake": {"sot": True}}
    assert acks["responses"][1:] == [{"result": {"success": {}}}] * 2
    assert source.acked == [1, 2]
    assert nack["code"] == "OK"
    assert nack["responses"] == [{"result": {"success": {}}}]
    assert source.nacked == [7, 8]


async def test_pending_and_partitions(reference_client: ReferenceClient, sock_dir: Path) -> None:
    sock = sock_dir / "source.sock"
    async with serve_source(MemorySource(limit=4, total=6), sock_dir).running():
        pending = await reference_client.converse("source-pending", sock, [])
        partitions = await reference_client.converse("source-partitions", sock, [])
    assert pending["responses"] == [{"result": {"count": "4"}}]
    assert partitions["responses"] == [{"result": {"partitions": [3], "total_partitions": 6}}]


async def test_a_failing_read_handler_ends_the_stream_internal(
    reference_client: ReferenceClient, sock_dir: Path
) -> None:
    async with serve_source(Failing("read"), sock_dir).running():
        talk = await reference_client.converse(
            "source-read", sock_dir / "source.sock", [HANDSHAKE, read(2)]
        )
    assert talk["code"] == "INTERNAL"
    assert talk["details"] == "UDF_EXECUTION_ERROR(udsource): RuntimeError('upstream down')"
    assert "upstream down" in talk["status_details"]["details"][0]["detail"]
    assert not any(r.get("status", {}).get("eot") for r in talk["responses"])


async def test_side_input_retrieved(reference_client: ReferenceClient, sock_dir: Path) -> None:
    async with serve_side_input(Counter(), sock_dir).running():
        talk = await reference_client.converse("sideinput", sock_dir / "sideinput.sock", [{}, {}])
    assert talk["code"] == "OK"
    assert talk["responses"] == [{"value": b64(b"v1")}, {"no_broadcast": True}]
