"""One socket write per event-loop pass for an HTTP/2 connection.

grpclib hands h2's output to the transport after every frame it sends: the response
HEADERS, each DATA frame, the trailers, every WINDOW_UPDATE. Each of those is a ``send()``
system call, three or more per unary call, and under load they were the largest single
cost of the server (benchmarks/FINDINGS.md). Buffering the writes made during one pass of
the event loop and sending them together keeps the bytes and their order the same and
delays nothing beyond the end of the current pass.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Union

__all__ = ["BatchedWrites"]

_Bytes = Union[bytes, bytearray, memoryview]


class BatchedWrites(asyncio.Transport):
    """A transport that collects ``write()`` calls and passes them on once per loop pass."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[_Bytes] = []

    def write(self, data: _Bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what was written so far (runs once per loop pass by itself)."""
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Optional[Any] = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(
        self, high: Optional[int] = None, low: Optional[int] = None
    ) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
