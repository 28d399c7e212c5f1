"""pynumaflow.testing for sources and side inputs: read, ack, nack; retrieve."""

from __future__ import annotations

from datetime import datetime

import pytest
from sources import Counter, Failing, MemorySource

import pynumaflow.testing as testing
from pynumaflow.sideinput import Response


@pytest.mark.anyio
async def test_a_source_is_read_acked_and_nacked() -> None:
    source = MemorySource(limit=4, total=2)
    async with testing.serve_source(source) as client:
        assert await client.is_ready()
        first = await client.read(3)
        assert [m.payload for m in first] == [b"0", b"1", b"2"]
        assert first[0].offset.offset == b"0"
        assert first[0].offset.partition_id == 3
        assert first[0].event_time == datetime(2024, 1, 2, 3, 4, 5)
        assert (first[1].keys, first[1].headers) == (["k"], {"h": "1"})
        await client.ack(first[:2])
        await client.nack([first[2]])
        assert [m.payload for m in await client.read(3)] == [b"2", b"3"]
        assert await client.read(3, timeout_ms=50) == []
        assert await client.pending() == 0
        assert await client.partitions() == ([3], 2)
    assert source.acked == [0, 1]
    assert source.in_flight == {2, 3}


def test_the_sync_kit_and_a_failing_read() -> None:
    with testing.serve_source_sync(Failing("read")) as client:
        assert client.partitions() == ([3], None)
        with pytest.raises(testing.CallError) as info:
            client.read(2)
    assert info.value.status == "INTERNAL"
    assert info.value.details == "UDF_EXECUTION_ERROR(udsource): RuntimeError('upstream down')"


@pytest.mark.anyio
async def test_a_side_input_is_retrieved() -> None:
    async with testing.serve_side_input(Counter()) as client:
        assert await client.retrieve() == Response.broadcast_message(b"v1")
        assert await client.retrieve() == Response.no_broadcast_message()


def test_the_sync_side_input_kit() -> None:
    with testing.serve_side_input_sync(lambda: Response.broadcast_message(b"x")) as client:
        assert client.is_ready()
        assert client.retrieve().value == b"x"


def test_a_failing_ack_is_a_call_error() -> None:
    with testing.serve_source_sync(Failing("ack")) as client:
        messages = client.read(1)
        with pytest.raises(testing.CallError) as info:
            client.ack(messages)
    assert info.value.status == "INTERNAL"
    assert "RuntimeError('ack failed')" in info.value.details
