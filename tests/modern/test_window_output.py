"""The output a streaming window handler writes to (NonBlockingIterator) and its relay."""

from __future__ import annotations

import asyncio

import pytest

from pynumaflow._faces.modern import OUTPUT_SIZE, streamed
from pynumaflow.shared.asynciter import STREAM_EOF, NonBlockingIterator

pytestmark = pytest.mark.anyio


async def test_an_unbounded_output_lets_the_reader_run_after_each_put() -> None:
    """0.14.0's guard against a producer that never awaits (numaflow-python #350)."""
    ran: list[int] = []

    async def tick() -> None:
        ran.append(1)

    it: NonBlockingIterator[int] = NonBlockingIterator()
    ticker = asyncio.ensure_future(tick())
    await it.put(1)
    assert ran == [1]
    await ticker


async def test_a_bounded_output_lets_the_reader_run_only_when_full() -> None:
    """A bounded output skips the per-put yield; a producer that never awaits still waits.

    The per-put yield cost about 40% of the accumulator's server CPU per datum.
    """
    it: NonBlockingIterator[int] = NonBlockingIterator(3)
    reads: list[int] = []

    async def read() -> None:
        async for item in it.read_iterator():
            reads.append(item)

    reader = asyncio.ensure_future(read())
    for item in (1, 2, 3):
        await it.put(item)
    assert reads == []  # no yield yet: the reader has not run
    await it.put(4)  # full: waits, and the reader runs
    assert reads[:1] == [1]
    await it.put(STREAM_EOF)
    await reader
    assert reads == [1, 2, 3, 4]


async def test_streamed_relays_all_then_raises_the_handler_error() -> None:
    async def handler(output: NonBlockingIterator[int]) -> None:
        for i in range(OUTPUT_SIZE * 3):
            await output.put(i)
        raise ValueError("late")

    got = []
    with pytest.raises(ValueError, match="late"):
        async for item in streamed(handler):
            got.append(item)
    assert got == list(range(OUTPUT_SIZE * 3))


async def test_streamed_cancels_the_handler_when_the_reader_stops() -> None:
    cancelled = asyncio.Event()

    async def handler(output: NonBlockingIterator[int]) -> None:
        try:
            for i in range(10**6):
                await output.put(i)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    items = streamed(handler)
    assert await items.__anext__() == 0
    await items.aclose()
    assert cancelled.is_set()
