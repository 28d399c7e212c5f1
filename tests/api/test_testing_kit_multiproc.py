"""pynumaflow.testing with processes=N: one stream's requests answered by worker processes.

The handlers are defined at the top level of this module: the workers are spawned and
import them by name, as a MultiProcServer's do.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import pynumaflow.testing as testing
from pynumaflow import __version__, mapper, sourcetransformer
from pynumaflow.errors import WorkerExitedError
from pynumaflow.function import Datum, Message, Messages, MessageT, MessageTs, Metadata

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def pid(keys: list[str], datum: Datum) -> Messages:
    """Answers with the process that ran it; fails on b"boom"."""
    if datum.value == b"boom":
        raise ValueError("boom")
    return Messages(Message(str(os.getpid()).encode(), keys=keys, tags=[datum.value.decode()]))


async def pid_t(keys: list[str], datum: Datum) -> MessageTs:
    await asyncio.sleep(0.01)  # several requests in progress at once
    return MessageTs(MessageT(str(os.getpid()).encode(), T0, keys=keys, tags=[datum.metadata.id]))


def pid_stream(keys: list[str], datum: Datum) -> Iterator[Message]:
    for part in datum.value.split(b","):
        yield Message(f"{os.getpid()} {part.decode()}".encode(), keys=keys)


async def total(keys: list[str], datums: AsyncIterator[Datum], md: Metadata) -> Messages:
    values = [int(d.value) async for d in datums]
    return Messages(Message(f"{sum(values)} {os.getpid()}".encode(), keys=keys))


class PidMapper(mapper.Mapper):
    def handler(self, keys: list[str], datum: mapper.Datum) -> mapper.Messages:
        return mapper.Messages(mapper.Message(str(os.getpid()).encode(), keys=keys))


class PidTransformer(sourcetransformer.SourceTransformer):
    def handler(self, keys: list[str], datum: Any) -> sourcetransformer.Messages:
        return sourcetransformer.Messages(
            sourcetransformer.Message(str(os.getpid()).encode(), datum.event_time, keys=keys)
        )


def _folder(client: Any) -> Path:
    backend = getattr(client, "_client", client)._backend
    connection = next(iter(backend._connections.values()))
    return Path(connection.channel._path).parent


def _gone(pids: set[int]) -> bool:
    """Whether none of these processes is still a child of this one (all were reaped).

    A child of ours, not any process: a pid freed by a reaped worker may be reused.
    """
    for number in pids:
        try:
            stat = Path(f"/proc/{number}/stat").read_text()
        except FileNotFoundError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            return False
    return True


@pytest.mark.anyio
async def test_one_stream_is_dealt_over_the_workers() -> None:
    """Concurrent map, mapt, map stream calls (a stream each) answered once, by 2 workers."""
    async with testing.serve_function(
        map_handler=pid,
        mapt_handler=pid_t,
        map_stream_handler=pid_stream,
        reduce_handler=total,
        processes=2,
    ) as udf:
        folder = _folder(udf)
        text = (folder / "mapper-server-info").read_text()
        info = json.loads(text.removesuffix("U+005C__END__"))
        assert info["metadata"] == {"MAP_MODE": "unary-map"}
        assert (info["protocol"], info["version"]) == ("uds", __version__)
        assert (folder / "map.sock").is_socket()
        assert (folder / "sourcetransform.sock").is_socket()
        assert (folder / "sourcetransformer-server-info").exists()
        answers = await asyncio.gather(*(udf.map(str(i), keys=[f"k{i}"]) for i in range(60)))
        assert [(list(a.keys), a.tags) for (a,) in answers] == [
            ([f"k{i}"], [str(i)]) for i in range(60)
        ]
        map_pids = {int(a.value) for (a,) in answers}
        transformed = await asyncio.gather(*(udf.mapt(b"t") for _ in range(20)))
        assert sorted(int(m.tags[0]) for (m,) in transformed) == list(range(1, 21))
        assert all(m.event_time == T0 for (m,) in transformed)
        mapt_pids = {int(m.value) for (m,) in transformed}
        streamed = await asyncio.gather(*(udf.map_stream(b"a,b,c") for _ in range(10)))
        parts = [[m.value.decode().split() for m in messages] for messages in streamed]
        assert all([p[1] for p in answer] == ["a", "b", "c"] for answer in parts)
        assert all(len({p[0] for p in answer}) == 1 for answer in parts)  # one worker each
        stream_pids = {int(answer[0][0]) for answer in parts}
        # Reduce is not dealt: the test process answers it.
        (reduced,) = await udf.reduce([b"1", b"2", b"3"])
        assert reduced.value == f"6 {os.getpid()}".encode()
    assert len(map_pids) == 2, map_pids
    assert len(mapt_pids) == 2, mapt_pids
    assert len(stream_pids) == 2, stream_pids  # map stream has a server (and workers) of its own
    assert not map_pids & stream_pids
    assert os.getpid() not in map_pids | mapt_pids | stream_pids
    assert _gone(map_pids | mapt_pids | stream_pids)
    assert not folder.exists()


def test_the_sync_kit_deals_too_and_serves_the_modern_faces() -> None:
    """Calls one after another go round the workers; Mapper and SourceTransformer instances."""
    with testing.serve_function_sync(map_handler=pid, processes=3) as udf:
        assert udf.is_ready()
        answers = [udf.map(f"{i}") for i in range(6)]
        assert [m.tags for (m,) in answers] == [[str(i)] for i in range(6)]
        plain = {int(m.value) for (m,) in answers}
    assert len(plain) == 3, plain
    with testing.serve_function_sync(
        map_handler=PidMapper(), mapt_handler=PidTransformer(), processes=2
    ) as udf:
        mapped = {int(udf.map(b"x", keys=["k"])[0].value) for _ in range(4)}
        moved = {int(m.value) for _ in range(4) for m in udf.mapt(b"x", event_time=T0)}
    assert len(mapped) == len(moved) == 2, (mapped, moved)
    assert os.getpid() not in mapped | moved
    assert _gone(plain | mapped | moved)


@pytest.mark.anyio
async def test_a_handler_error_fails_the_call_as_in_one_process() -> None:
    """INTERNAL UDF_EXECUTION_ERROR(udf) with the worker's traceback; later calls answered."""
    async with testing.serve_function(map_handler=pid, processes=2) as udf:
        with pytest.raises(testing.CallError) as caught:
            await udf.map(b"boom")
        assert caught.value.status == "INTERNAL"
        assert caught.value.details == "UDF_EXECUTION_ERROR(udf): ValueError('boom')"
        assert 'raise ValueError("boom")' in (caught.value.traceback or "")
        assert len({int((await udf.map(b"ok"))[0].value) for _ in range(4)}) == 2


@pytest.mark.anyio
async def test_a_killed_worker_fails_the_stream_and_the_exit_reports_it() -> None:
    """UNAVAILABLE naming the worker; WorkerExitedError at the exit; no worker is left."""
    with pytest.raises(WorkerExitedError, match="exited with code -9") as caught:
        async with testing.serve_function(map_handler=pid, processes=2) as udf:
            pids = {int((await udf.map(b"x"))[0].value) for _ in range(2)}
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(testing.CallError) as failed:
                while True:  # until the server has seen the worker die
                    await udf.map(b"x")
                    await asyncio.sleep(0.05)
            assert failed.value.status == "UNAVAILABLE"
            assert f"(pid {victim}) exited with code -9" in failed.value.details
    assert f"(pid {victim})" in str(caught.value)
    assert _gone(pids)


@pytest.mark.anyio
async def test_a_failing_test_still_stops_every_worker() -> None:
    """An exception in the block propagates as it is; the workers and files are gone."""
    with pytest.raises(AssertionError, match="the test failed"):
        async with testing.serve_function(map_handler=pid, processes=2) as udf:
            pids = {int((await udf.map(b"x"))[0].value) for _ in range(2)}
            folder = _folder(udf)
            assert not _gone(pids)  # they are this process's children while it serves
            raise AssertionError("the test failed")
    assert len(pids) == 2
    assert _gone(pids)
    assert not folder.exists()


@pytest.mark.anyio
async def test_what_cannot_be_served_in_workers_is_refused_before_any_starts() -> None:
    """A handler not importable by name, the legacy protocol, a bad count: clear errors."""
    import multiprocessing

    def local(keys: list[str], datum: Datum) -> Messages:
        return Messages()

    before = set(multiprocessing.active_children())
    with pytest.raises(TypeError, match=r"map_handler must be importable by name for processes=2"):
        async with testing.serve_function(map_handler=local, processes=2):
            pass
    with pytest.raises(TypeError, match=r"mapt_handler must be importable by name"):
        async with testing.serve_function(mapt_handler=lambda k, d: None, processes=1):
            pass
    with pytest.raises(ValueError, match="processes= serves the v1 protocols"):
        async with testing.serve_function(map_handler=pid, protocol="legacy", processes=2):
            pass
    with pytest.raises(ValueError, match="processes must be a positive int, got 0"):
        async with testing.serve_function(map_handler=pid, processes=0):
            pass
    assert set(multiprocessing.active_children()) == before
