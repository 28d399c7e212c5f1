"""The test suite's own set-up: async tests share one event loop (see conftest.one_event_loop).

Two tests in a row see the same loop, still open: a grpcio aio call's completion that
arrives after its test has ended is handled on that loop instead of failing the next
test with "Event loop is closed".
"""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.anyio
SEEN: list[asyncio.AbstractEventLoop] = []


async def test_a_first_test_records_its_loop() -> None:
    SEEN.append(asyncio.get_running_loop())


async def test_the_next_test_runs_on_the_same_open_loop() -> None:
    loop = asyncio.get_running_loop()
    assert all(seen is loop for seen in SEEN)
    assert not any(seen.is_closed() for seen in SEEN)
