"""The bidi engine works a read at a time: what that must and must not change on the wire.

Driven by a raw HTTP/2 client (tests/rawh2.py), which controls how the requests are cut
into DATA frames: many in one frame, as Numaflow's Rust client packs them, or a few
bytes a frame.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rawh2 import Outcome, RawConnection, frame

from pynumaflow.function import Datum, Message, Messages

from helpers import Peak, blocking_echo, serving, v1_request_fields

pytestmark = pytest.mark.anyio

MAP_FN = "/map.v1.Map/MapFn"


@pytest.fixture
def map_pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["map_pb2"]


def request_stream(pb2: ModuleType, count: int) -> bytes:
    """The handshake, then ``count`` requests whose ids and values are 0..count-1."""
    messages = [pb2.MapRequest(handshake=pb2.Handshake(sot=True))]
    messages += [
        pb2.MapRequest(
            id=str(i), request=pb2.MapRequest.Request(**v1_request_fields(str(i).encode()))
        )
        for i in range(count)
    ]
    return b"".join(frame(m.SerializeToString()) for m in messages)


def talk(sock: Path, body: bytes, *, chunk: int = 0) -> Outcome:
    """Send ``body`` on a MapFn stream (in ``chunk``-byte frames if given), half-close, read."""
    connection = RawConnection(str(sock))
    try:
        stream_id = connection.open(MAP_FN)
        if chunk:
            for start in range(0, len(body), chunk):
                connection.send(stream_id, body[start : start + chunk])
            connection.send(stream_id, b"", end_stream=True)
        else:
            connection.send(stream_id, body, end_stream=True)
        return connection.wait(stream_id, timeout=30)
    finally:
        connection.close()


def answers(pb2: ModuleType, outcome: Outcome) -> list[Any]:
    """The MapResponses after the handshake's answer."""
    responses = [pb2.MapResponse.FromString(m) for m in outcome.messages()]
    assert responses[0].handshake.sot
    return responses[1:]


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


async def async_echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


@pytest.mark.parametrize("handler", [echo, async_echo], ids=["sync", "async"])
async def test_requests_of_one_data_frame_are_answered_in_a_few_data_frames(
    handler: Any, sock_path: str, info_path: str, sock_dir: Path, map_pb2: ModuleType
) -> None:
    """200 requests in one DATA frame: 200 answers, not 200 DATA frames (one per loop pass)."""
    body = request_stream(map_pb2, 200)
    assert len(body) < 16384  # one frame of the default maximum size
    async with serving(sock_path, info_path, map_handler=handler):
        outcome = await asyncio.to_thread(talk, sock_dir / "map.sock", body)
    assert outcome.status == 0
    got = answers(map_pb2, outcome)
    assert sorted(int(r.id) for r in got) == list(range(200))
    assert all(r.results[0].value == r.id.encode() for r in got)
    # The handshake's answer, then the answers of a few loop passes: an async handler's
    # all complete in one; a sync handler's come back as the pool threads finish them.
    assert outcome.data_frames <= (10 if handler is async_echo else 100), outcome.data_frames


async def test_requests_cut_into_tiny_frames_are_all_answered(
    sock_path: str, info_path: str, sock_dir: Path, map_pb2: ModuleType
) -> None:
    """Prefixes and messages straddling DATA frames of 3 bytes are read whole."""
    body = request_stream(map_pb2, 30)
    async with serving(sock_path, info_path, map_handler=echo):
        outcome = await asyncio.to_thread(talk, sock_dir / "map.sock", body, chunk=3)
    assert outcome.status == 0
    got = answers(map_pb2, outcome)
    assert sorted((int(r.id), r.results[0].value) for r in got) == [
        (i, str(i).encode()) for i in range(30)
    ]


async def test_blocking_sync_handlers_of_one_read_run_in_parallel(
    sock_path: str, info_path: str, sock_dir: Path, map_pb2: ModuleType
) -> None:
    """16 requests read at once, a sync handler blocking 100 ms: 16 threads run them together."""
    peak = Peak()
    body = request_stream(map_pb2, 16)
    async with serving(sock_path, info_path, map_handler=blocking_echo(peak, 0.1), max_threads=16):
        outcome = await asyncio.to_thread(talk, sock_dir / "map.sock", body)
    assert outcome.status == 0
    assert len(answers(map_pb2, outcome)) == 16
    assert peak.peak == 16


def slow_first_sync(keys: list[str], datum: Datum) -> Messages:
    if datum.value == b"0":
        time.sleep(0.5)
    return Messages(Message(datum.value))


async def slow_first_async(keys: list[str], datum: Datum) -> Messages:
    if datum.value == b"0":
        await asyncio.sleep(0.5)
    return Messages(Message(datum.value))


@pytest.mark.parametrize("handler", [slow_first_sync, slow_first_async], ids=["sync", "async"])
async def test_a_slow_request_does_not_hold_back_the_others(
    handler: Any, sock_path: str, info_path: str, sock_dir: Path, map_pb2: ModuleType
) -> None:
    """Request 0 takes 0.5 s, read with 49 quick ones: theirs are answered first."""
    body = request_stream(map_pb2, 50)
    async with serving(sock_path, info_path, map_handler=handler, max_threads=4):
        outcome = await asyncio.to_thread(talk, sock_dir / "map.sock", body)
    assert outcome.status == 0
    assert [r.id for r in answers(map_pb2, outcome)][-1] == "0"


async def test_async_handlers_awaiting_io_run_concurrently(
    sock_path: str, info_path: str, sock_dir: Path, map_pb2: ModuleType
) -> None:
    """500 requests of a handler sleeping 50 ms all overlap."""
    peak = Peak()

    async def sleepy(keys: list[str], datum: Datum) -> Messages:
        with peak:
            await asyncio.sleep(0.05)
        return Messages(Message(datum.value))

    body = request_stream(map_pb2, 500)
    async with serving(sock_path, info_path, map_handler=sleepy):
        outcome = await asyncio.to_thread(talk, sock_dir / "map.sock", body)
    assert outcome.status == 0
    assert len(answers(map_pb2, outcome)) == 500
    assert peak.peak == 500
