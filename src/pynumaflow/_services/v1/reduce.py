"""reduce.v1 (Numaflow >= 1.4): the reduce and reduce stream handlers, fixed and sliding windows.

The platform opens one ``ReduceFn`` stream per window. Every request names its window
in its operation (``OPEN`` first, then ``APPEND``; exactly one window per request) and
carries one datum; the legacy ``x-numaflow-win-*`` headers are ignored. Datums are
grouped by window and key list on the shared engine
(:class:`~pynumaflow._engines.reduce.ReduceStream`), a handler call per group. Once
the client half-closes, each call's messages go out as one ``ReduceResponse`` each,
carrying the request's window exactly as it was sent; once every call has answered,
one ``EOF`` response per window follows, then the stream ends OK. The EOFs come last
because the Rust platform stops reading a stream at its first EOF.

Reduce stream (``reducestream.sock``) is the same conversation with a streaming
handler: each message it emits goes out at once as a ``ReduceResponse`` carrying the
window, while the window is still open; the EOFs follow once every call has returned
after the half-close.

A ``CLOSE`` (never sent for fixed or sliding windows today) ends that window's groups'
input; a later request for that window is an error. When the server starts draining
(SIGTERM) while the client is still sending, the window cannot complete in time: the
stream ends ``UNAVAILABLE`` at once, and the platform replays the window after its
restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._codec.v1 import reduce as _codec
from pynumaflow._codec.wire import TimestampParts
from pynumaflow._core.current import draining
from pynumaflow._engines.reduce import Inbox, RawStream, ReduceStream
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.function import Metadata

__all__ = ["ReduceV1Service"]

Bounds = Tuple[TimestampParts, TimestampParts]
Group = Tuple[Bounds, Tuple[str, ...]]


class ReduceV1Service:
    """Serves reduce.v1 ReduceFn and IsReady with one reduce (or reduce stream) handler."""

    def __init__(
        self, handler: Handler, invoker: Invoker, *, container_type: str, stream: bool = False
    ) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type
        self._stream_class = _ReduceStreamV1Stream if stream else _ReduceV1Stream

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "reduce.v1.Reduce",
            {
                "ReduceFn": self._reduce_fn,
                "IsReady": is_ready_method(READY),
            },
        )

    async def _reduce_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        await self._stream_class(stream, self._handler, self._invoker, self._container_type).run()


@dataclass
class _Window:
    """A window seen on the stream: as first named, and its groups so far."""

    window: _codec.ReduceWindow
    groups: Set[Group] = field(default_factory=set)
    closed: bool = False


class _ReduceV1Stream(ReduceStream[Group]):
    """One reduce.v1 ReduceFn stream on the shared engine."""

    def __init__(
        self, stream: RawStream, handler: Handler, invoker: Invoker, container_type: str
    ) -> None:
        super().__init__(stream, handler, invoker, v1_container=container_type)
        self._windows: Dict[Bounds, _Window] = {}  # in the order first seen
        self._closed: Set[Bounds] = set()

    async def _read(self) -> None:
        drain_watch = self._spawn(self._abandon_on_drain)
        try:
            # The loop every datum takes, kept flat: a request of the window last seen
            # (the same object: windows are cached by their bytes) whose call has room
            # costs no coroutine.
            last: Optional[_Window] = None
            decode, requests = _codec.decode_reduce_request, self._requests
            while batch := await requests.batch():
                for data in batch:
                    request = decode_or_refuse(decode, data, "ReduceRequest")
                    windows = request.windows
                    if len(windows) != 1:
                        raise GRPCError(
                            Status.INVALID_ARGUMENT,
                            f"a ReduceRequest must name exactly one window, got {len(windows)}",
                        )
                    window = windows[0]
                    event = request.event
                    if event == _codec.APPEND or event == _codec.OPEN:
                        if last is None or last.window is not window or last.closed:
                            last = self._window_of(window)
                        datum = request.datum
                        keys = datum.keys
                        group = (window.bounds, tuple(keys))
                        waiting = self._offer(group, keys, last.window.metadata, datum)
                        if waiting is not None:
                            await waiting.put(datum)
                    elif event == _codec.CLOSE:
                        self._close(window)
                    else:
                        raise GRPCError(
                            Status.INVALID_ARGUMENT,
                            f"unsupported window operation {request.event}: "
                            "fixed and sliding windows use OPEN, APPEND and CLOSE",
                        )
        finally:
            drain_watch.cancel()

    def _window_of(self, window: _codec.ReduceWindow) -> _Window:
        """The window a datum is for, as first named (refused after its CLOSE)."""
        if window.bounds in self._closed:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"request for window {_describe(window)} after its CLOSE"
            )
        known = self._windows.get(window.bounds)
        if known is None:
            known = self._windows[window.bounds] = _Window(window)
        return known

    def _open_group(self, group: Group, keys: List[str], md: Metadata) -> Inbox:
        self._windows[group[0]].groups.add(group)
        return super()._open_group(group, keys, md)

    def _close(self, window: _codec.ReduceWindow) -> None:
        self._closed.add(window.bounds)
        known = self._windows.get(window.bounds)
        if known is not None:
            known.closed = True
            self._end_groups(known.groups)

    async def _abandon_on_drain(self) -> None:
        await draining().wait()
        raise GRPCError(
            Status.UNAVAILABLE,
            "the server is shutting down and the window is still open; it is replayed "
            "after the restart",
        )

    def _encode(self, group: Group, result: Any) -> List[bytes]:
        return _codec.encode_reduce_results(result, self._windows[group[0]].window)

    async def _answer(self, group: Group, answer: List[bytes]) -> None:
        await self.input_ended.wait()
        await self._send(*answer)

    async def _finish(self) -> None:
        await self._send(*(_codec.encode_reduce_eof(w.window) for w in self._windows.values()))


class _ReduceStreamV1Stream(_ReduceV1Stream):
    """A reduce.v1 ReduceFn stream whose handler streams: results go out as emitted."""

    streaming = True

    def _encode_item(self, group: Group, item: Any) -> bytes:
        return _codec.encode_reduce_result(item, self._windows[group[0]].window)


def _describe(window: _codec.ReduceWindow) -> str:
    md = window.metadata.interval_window
    return f"[{md.start.isoformat()}, {md.end.isoformat()})"
