"""Experiment (BENCH_COALESCE=1): one socket write per event-loop pass instead of per frame.

grpclib flushes h2's output after every HEADERS / DATA / trailers frame, and each flush is
a `transport.write` -> `send()` syscall: 3-4 per unary call, ~20-25% of our server's CPU
in the py-spy profiles. This wraps the connection's transport so writes made in one loop
iteration go out as one `send()`. It patches grpclib's H2Protocol from the benchmark's
server scripts only, to measure what the same change in src/pynumaflow/_server.py would
gain; nothing in src/ uses it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, List


class CoalescingTransport:
    """Buffers write() calls and hands them to the real transport once per loop pass."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: List[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def install() -> bool:
    if os.environ.get("BENCH_COALESCE") != "1":
        return False
    from grpclib.protocol import H2Protocol

    made = H2Protocol.connection_made

    def connection_made(self: H2Protocol, transport: asyncio.BaseTransport) -> None:
        made(self, CoalescingTransport(transport))  # type: ignore[arg-type]

    H2Protocol.connection_made = connection_made  # type: ignore[method-assign]
    return True
