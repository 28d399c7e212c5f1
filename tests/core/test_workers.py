"""The parent-worker link: frames cross whole, however the bytes are split."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pynumaflow._core.workers import Link


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


frames = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.binary(max_size=300)),
    max_size=20,
)


@given(frames=frames, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_frames_cross_whole_however_the_bytes_are_split(
    frames: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    """What one link sends, the other receives frame by frame, for any split into reads."""

    async def run() -> list[tuple[int, int, bytes]]:
        sender = Link(lambda *frame: None, lambda: None)
        transport = _Transport()
        sender.connection_made(transport)
        for channel, kind, payload in frames:
            sender.send(channel, kind, payload)
        await asyncio.sleep(0)  # the flush of this loop pass
        wire = bytes(transport.written)
        received: list[tuple[int, int, bytes]] = []
        receiver = Link(lambda *frame: received.append(frame), lambda: None)
        points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
        for start, end in itertools.pairwise(points):
            receiver.data_received(wire[start:end])
        return received

    assert asyncio.run(run()) == frames


def test_a_large_frame_in_many_reads() -> None:
    """A 5 MiB frame arriving in 64 KiB reads is delivered once, whole."""

    async def run() -> list[tuple[int, int, bytes]]:
        sender = Link(lambda *frame: None, lambda: None)
        transport = _Transport()
        sender.connection_made(transport)
        sender.send(7, 2, b"a" * (5 * 1024 * 1024))
        sender.send(8, 1, b"tail")
        await asyncio.sleep(0)
        wire = bytes(transport.written)
        received: list[tuple[int, int, bytes]] = []
        receiver = Link(lambda *frame: received.append(frame), lambda: None)
        for start in range(0, len(wire), 65536):
            receiver.data_received(wire[start : start + 65536])
        return received

    assert asyncio.run(run()) == [(7, 2, b"a" * (5 * 1024 * 1024)), (8, 1, b"tail")]
