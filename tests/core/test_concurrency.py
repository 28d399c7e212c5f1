"""Concurrency: many calls in flight on one connection, and a sync pool of the size asked for."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow.function import Datum, Message, Messages

from helpers import Peak, blocking_echo, datum_request, serving

pytestmark = pytest.mark.anyio


async def test_500_async_calls_run_concurrently_on_one_connection(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """500 calls of a 50 ms async handler all overlap (the 100-stream h2 default is lifted)."""
    peak = Peak()

    async def slow(keys: list[str], datum: Datum) -> Messages:
        with peak:
            await asyncio.sleep(0.05)
        return Messages(Message(datum.value))

    async with serving(sock_path, info_path, map_handler=slow):
        await fn_stub.MapFn(datum_request(fn_pb2, b"warm-up"))
        started = time.monotonic()
        replies = await asyncio.gather(
            *(fn_stub.MapFn(datum_request(fn_pb2, str(i).encode())) for i in range(500))
        )
        elapsed = time.monotonic() - started
    assert [r.elements[0].value for r in replies] == [str(i).encode() for i in range(500)]
    assert elapsed < 5.0, f"500 x 50 ms took {elapsed:.2f} s"
    assert peak.peak == 500


async def test_16_blocking_sync_handlers_run_in_parallel(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """16 sync handlers blocking 100 ms each run side by side in a pool of 16 threads."""
    peak = Peak()
    async with serving(sock_path, info_path, map_handler=blocking_echo(peak, 0.1), max_threads=16):
        started = time.monotonic()
        await asyncio.gather(*(fn_stub.MapFn(datum_request(fn_pb2)) for _ in range(16)))
        elapsed = time.monotonic() - started
    assert peak.peak == 16
    assert elapsed < 0.8, f"16 x 100 ms took {elapsed:.2f} s"
    assert all(name.startswith("pynumaflow-handler") for name in peak.threads)


@pytest.mark.parametrize("source", ["keyword", "env"])
async def test_max_threads_sizes_the_pool_that_runs_handlers(
    source: str,
    sock_path: str,
    info_path: str,
    fn_stub: Any,
    fn_pb2: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """max_threads (or $MAX_THREADS) bounds how many sync handlers run at once."""
    peak = Peak()

    def blocking(keys: list[str], datum: Datum) -> Messages:
        with peak:
            time.sleep(0.05)
        return Messages(Message(b""))

    options: dict[str, Any] = {"map_handler": blocking}
    if source == "env":
        monkeypatch.setenv("MAX_THREADS", "3")
    else:
        options["max_threads"] = 3
    async with serving(sock_path, info_path, **options):
        await asyncio.gather(*(fn_stub.MapFn(datum_request(fn_pb2)) for _ in range(12)))
    assert peak.peak == 3
    assert len(peak.threads) == 3


async def test_deadline_cancels_a_hanging_async_handler(
    sock_path: str, info_path: str, fn_stub: Any, fn_pb2: ModuleType
) -> None:
    """A call past its grpc-timeout ends DEADLINE_EXCEEDED and its async handler is cancelled."""
    cancelled = asyncio.Event()

    async def hangs(keys: list[str], datum: Datum) -> Messages:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Messages()

    async with serving(sock_path, info_path, map_handler=hangs):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await fn_stub.MapFn(datum_request(fn_pb2), timeout=0.2)
        await asyncio.wait_for(cancelled.wait(), 5)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
