"""StreamTasks: the plain-task set behind reduce windows and map.v1 streams."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pynumaflow._engines.tasks import StreamTasks

pytestmark = pytest.mark.anyio


async def test_wait_includes_tasks_started_while_waiting() -> None:
    tasks = StreamTasks(asyncio.Lock())
    finished: list[str] = []

    async def child(name: str) -> None:
        await asyncio.sleep(0.01)
        finished.append(name)

    async def parent() -> None:
        await asyncio.sleep(0)
        tasks.start(child("late"))
        finished.append("parent")

    tasks.start(parent())
    await tasks.wait()
    assert finished == ["parent", "late"]
    assert len(tasks) == 0


async def test_cancel_reaches_running_tasks_and_later_ones_never_run() -> None:
    tasks = StreamTasks(asyncio.Lock())
    cleaned: list[str] = []
    ran: list[str] = []

    async def long_running() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("long")

    async def never() -> None:
        ran.append("never")

    running = tasks.start(long_running())
    await asyncio.sleep(0)
    tasks.cancel()
    late = tasks.start(never())
    await tasks.close()
    assert running.cancelled()
    assert late.cancelled()
    assert cleaned == ["long"]
    assert ran == []


async def test_an_escaping_failure_is_logged_and_cancels_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = StreamTasks(asyncio.Lock())

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    sleeper = tasks.start(asyncio.sleep(60))
    tasks.start(fails())
    with caplog.at_level(logging.ERROR, logger="pynumaflow"):
        await tasks.wait()
    assert sleeper.cancelled()
    assert tasks.cancelled
    assert "a stream task failed" in caplog.text
    assert "ValueError: boom" in caplog.text


async def test_close_waits_for_cancelled_tasks_to_unwind_even_when_cancelled_again() -> None:
    tasks = StreamTasks(asyncio.Lock())
    unwound = asyncio.Event()

    async def slow_to_unwind() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # clean-up that itself awaits
            unwound.set()

    tasks.start(slow_to_unwind())
    await asyncio.sleep(0)
    closer = asyncio.ensure_future(tasks.close())
    await asyncio.sleep(0.01)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert unwound.is_set()
    assert len(tasks) == 0


async def test_the_first_reported_failure_is_kept_and_waits_for_a_send_in_progress() -> None:
    send_lock = asyncio.Lock()
    tasks = StreamTasks(send_lock)
    sent: list[str] = []
    sending = asyncio.Event()

    async def sender() -> None:
        async with send_lock:  # a message on its way: the failure must not cut it
            sending.set()
            await asyncio.sleep(0.05)
            sent.append("whole message")
        await asyncio.sleep(60)

    async def fails(name: str) -> None:
        await sending.wait()
        raise ValueError(name)

    tasks.start(sender())
    tasks.start_guarded(fails, "first")
    tasks.start_guarded(fails, "second")
    await tasks.wait()
    assert sent == ["whole message"]
    assert isinstance(tasks.failure, ValueError)
    assert str(tasks.failure) == "first"
    assert tasks.cancelled
