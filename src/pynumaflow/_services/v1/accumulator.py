"""accumulator.v1 (Numaflow >= 1.6): the accumulator, a global window per key.

One ``AccumulateFn`` stream carries every key of the vertex replica. ``OPEN`` starts a
key's handler call (on the shared reduce engine, streaming) and feeds it the datum;
``APPEND`` feeds it (or starts it, if the key is unknown); ``CLOSE`` ends that call's
input and forgets the key, so a later datum of the key starts afresh (once the closed
call's EOF is sent, so that a key's output stays in order). A key is found by the
window's keys, not the payload's.

Each message the handler puts on its output goes out at once, with a window whose
``end`` is the highest watermark emitted for the key so far. Once a closed key's
handler has returned and its results are sent, one EOF echoes the ``CLOSE``'s window
byte for byte. When the client half-closes (the platform shuts down), every open key
is closed the same way, its EOF carrying a window of the epoch to its highest
watermark, and the stream ends OK. A ``CLOSE`` for an unknown key is a protocol error
(``INVALID_ARGUMENT``).

On SIGTERM the stream is not cut: the platform half-closes it when it shuts down, and
it is served to its end within the shutdown grace period.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Dict, Optional, Tuple

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._codec.v1 import accumulator as _codec
from pynumaflow._codec.wire import TimestampParts
from pynumaflow._engines.reduce import RawStream, ReduceStream
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.function import IntervalWindow, Metadata

__all__ = ["AccumulatorV1Service"]

_EPOCH = datetime(1970, 1, 1)
_NO_WINDOW = Metadata(IntervalWindow(_EPOCH, _EPOCH))  # the handler is not given one


class AccumulatorV1Service:
    """Serves accumulator.v1 AccumulateFn and IsReady with one accumulator handler."""

    def __init__(self, handler: Handler, invoker: Invoker, *, container_type: str) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "accumulator.v1.Accumulator",
            {"AccumulateFn": self._accumulate_fn, "IsReady": is_ready_method(READY)},
        )

    async def _accumulate_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        await _AccumulatorStream(stream, self._handler, self._invoker, self._container_type).run()


class _Key:
    """One handler call of a key, from its first datum to its CLOSE (compared by identity)."""

    __slots__ = ("close_window", "closed", "done", "keys", "watermark")

    def __init__(self, keys: Tuple[str, ...]) -> None:
        self.keys = keys
        self.watermark: TimestampParts = (0, 0)
        self.close_window: Optional[bytes] = None
        self.closed = asyncio.Event()
        self.done = asyncio.Event()
        """Set once its EOF is sent."""


def _decode(data: bytes) -> _codec.AccumulatorRequest:
    return decode_or_refuse(_codec.decode_accumulator_request, data, "AccumulatorRequest")


class _AccumulatorStream(ReduceStream[_Key]):
    """One AccumulateFn stream on the shared engine: a streaming call per key."""

    streaming = True

    def __init__(
        self, stream: RawStream, handler: Handler, invoker: Invoker, container_type: str
    ) -> None:
        super().__init__(stream, handler, invoker, v1_container=container_type)
        self._open: Dict[Tuple[str, ...], _Key] = {}
        self._closing: Dict[Tuple[str, ...], _Key] = {}  # closed, EOF not yet sent

    async def _read(self) -> None:
        async for data in self._requests:
            request = _decode(data)
            keys = request.window.keys
            if request.event == _codec.CLOSE:
                self._close(keys, request.window.encoded)
            elif request.event in (_codec.OPEN, _codec.APPEND):
                if request.datum is None:
                    raise GRPCError(Status.INVALID_ARGUMENT, "an OPEN or APPEND without payload")
                key = self._open.get(keys)
                if key is None:
                    closing = self._closing.get(keys)
                    if closing is not None:
                        await closing.done.wait()
                    key = self._open[keys] = _Key(keys)
                await self._feed(key, list(keys), _NO_WINDOW, request.datum)
            else:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"unsupported window operation {request.event}: the accumulator uses "
                    "OPEN, APPEND and CLOSE",
                )
        for key in self._open.values():  # the half-close closes every key
            key.closed.set()

    def _close(self, keys: Tuple[str, ...], window: bytes) -> None:
        key = self._open.pop(keys, None)
        if key is None:
            raise GRPCError(Status.INVALID_ARGUMENT, f"CLOSE for keys {list(keys)!r} with no task")
        key.close_window = window
        key.closed.set()
        self._closing[keys] = key
        self._forget_group(key)

    def _encode_item(self, key: _Key, item: Any) -> bytes:
        response, key.watermark = _codec.encode_accumulator_result(item, key.keys, key.watermark)
        return response

    async def _ended(self, key: _Key) -> None:
        # A handler may return before its key is closed: the EOF waits for the CLOSE.
        await key.closed.wait()
        window = key.close_window
        if window is None:
            window = _codec.encode_window(key.keys, key.watermark)
        await self._send(_codec.encode_accumulator_eof(window))
        key.done.set()
        if self._closing.get(key.keys) is key:
            del self._closing[key.keys]
