"""sessionreduce.v1 (Numaflow >= 1.4): session windows.

One ``SessionReduceFn`` stream carries every key and session of the vertex replica. A
session is named by its window's start and end (in milliseconds) and keys, and runs
one streaming handler call on the shared reduce engine; each message it emits goes
out at once with the session's current window.

- ``OPEN`` (one window) starts a session and feeds it the datum; ``APPEND`` feeds an
  existing one (an unknown one is opened, as the reference SDKs do).
- ``EXPAND`` (``[old, new]``) renames the session: every later result and its EOF
  carry ``new``; then the datum is fed.
- ``MERGE`` (two or more sessions) ends their input and waits for their calls; from
  then on they send nothing (not even an EOF). Each one's accumulator is taken, and
  one session is started on the window from the earliest start to the latest end
  with the first window's keys, given those accumulators before its first datum. It
  is named at once, so a second ``MERGE`` or a ``CLOSE`` right after finds it.
- ``CLOSE`` ends a session's input; once its call has returned and its results are
  sent, an EOF with its current window follows.

A wrong number of windows, or an ``EXPAND`` or ``MERGE`` of an unknown session, fails
the stream ``INTERNAL`` (as both reference SDKs do). The client half-closes only when
it shuts down: every open session is then closed as by ``CLOSE`` (results, then EOF)
and the stream ends OK. On SIGTERM the stream is served until that half-close, within
the shutdown grace period.

The handler the engine calls is the face's adapter, called with ``(keys, datums,
session)``: it makes the user's reducer, sets :attr:`Session.accumulator` to a
coroutine function giving the reducer's accumulator, and merges
:attr:`Session.merged_states` into it before reading the datums.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pynumaflow._codec.rpc import READY, decode_or_refuse
from pynumaflow._codec.v1 import session as _codec
from pynumaflow._engines.reduce import RawStream, ReduceStream
from pynumaflow._invoke import Handler, Invoker
from pynumaflow._services.base import is_ready_method, service_mapping
from pynumaflow._types.function import Datum, Metadata

__all__ = ["Session", "SessionReduceV1Service"]

_LOGGER = logging.getLogger("pynumaflow")
_NO_METADATA: Any = None  # the session handler takes its session instead of metadata
Identity = Tuple[int, int, Tuple[str, ...]]


class SessionReduceV1Service:
    """Serves sessionreduce.v1 SessionReduceFn and IsReady with one session reducer."""

    def __init__(self, handler: Handler, invoker: Invoker, *, container_type: str) -> None:
        self._handler = handler
        self._invoker = invoker
        self._container_type = container_type

    def __mapping__(self) -> Dict[str, grpclib.const.Handler]:
        return service_mapping(
            "sessionreduce.v1.SessionReduce",
            {"SessionReduceFn": self._session_reduce_fn, "IsReady": is_ready_method(READY)},
        )

    async def _session_reduce_fn(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        await _SessionStream(stream, self._handler, self._invoker, self._container_type).run()


class Session:
    """One session: its current window, and what a merge hands on (compared by identity)."""

    __slots__ = ("accumulator", "closed", "done", "merged", "merged_states", "state", "window")

    def __init__(self, window: _codec.SessionWindow, merged_states: Tuple[bytes, ...] = ()) -> None:
        self.window = window
        self.merged = False
        self.merged_states = merged_states
        """Accumulators of the sessions merged into this one, for its reducer to merge."""
        self.accumulator: Optional[Callable[[], Awaitable[bytes]]] = None
        """Set by the face: gives the reducer's accumulator (after its call returned)."""
        self.state = b""
        self.closed = asyncio.Event()
        """Set by CLOSE, MERGE or the half-close: a call returning earlier waits for it."""
        self.done = asyncio.Event()
        """Set once its call has returned (and, if merged away, its state was taken)."""


def _decode(data: bytes) -> _codec.SessionRequest:
    return decode_or_refuse(_codec.decode_session_request, data, "SessionReduceRequest")


def _protocol_error(text: str) -> GRPCError:
    return GRPCError(Status.INTERNAL, f"session reduce: {text}")


class _SessionStream(ReduceStream[Session]):
    """One SessionReduceFn stream on the shared engine: a streaming call per session."""

    streaming = True

    def __init__(
        self, stream: RawStream, handler: Handler, invoker: Invoker, container_type: str
    ) -> None:
        super().__init__(stream, handler, invoker, v1_container=container_type)
        self._sessions: Dict[Identity, Session] = {}

    async def _read(self) -> None:
        async for data in self._requests:
            request = _decode(data)
            event, windows = request.event, request.windows
            if event in (_codec.OPEN, _codec.APPEND):
                self._count(event, windows, 1)
                session = self._sessions.get(windows[0].identity)
                if session is None:
                    session = self._open(Session(windows[0]))
                await self._give(session, request.datum)
            elif event == _codec.EXPAND:
                self._count(event, windows, 2)
                old, new = windows
                session = self._take(old, "EXPAND")
                session.window = new
                self._sessions[new.identity] = session
                await self._give(session, request.datum)
            elif event == _codec.MERGE:
                await self._merge(windows)
            elif event == _codec.CLOSE:
                self._close(windows)
            else:
                raise _protocol_error(f"unknown window operation {event}")
        for session in self._sessions.values():  # the half-close closes every session
            session.closed.set()

    @staticmethod
    def _count(event: int, windows: Tuple[_codec.SessionWindow, ...], expected: int) -> None:
        if len(windows) != expected:
            name = {_codec.OPEN: "OPEN", _codec.APPEND: "APPEND", _codec.EXPAND: "EXPAND"}[event]
            raise _protocol_error(f"{name} needs {expected} window(s), got {len(windows)}")

    def _open(self, session: Session) -> Session:
        self._sessions[session.window.identity] = session
        self._open_group(session, list(session.window.keys), _NO_METADATA)
        return session

    async def _give(self, session: Session, datum: Optional[Datum]) -> None:
        if datum is not None:
            await self._feed(session, list(session.window.keys), _NO_METADATA, datum)

    def _take(self, window: _codec.SessionWindow, operation: str) -> Session:
        session = self._sessions.pop(window.identity, None)
        if session is None:
            start, end, keys = window.identity
            raise _protocol_error(
                f"{operation} of an unknown session [{start}, {end}) ms, keys {list(keys)!r}"
            )
        return session

    async def _merge(self, windows: Tuple[_codec.SessionWindow, ...]) -> None:
        if len(windows) < 2:
            raise _protocol_error(f"MERGE needs at least 2 windows, got {len(windows)}")
        sessions: List[Session] = []
        for window in windows:
            session = self._take(window, "MERGE")
            session.merged = True  # from now on it sends nothing
            session.closed.set()
            self._forget_group(session)
            sessions.append(session)
        for session in sessions:
            await session.done.wait()
        merged = Session(
            _codec.merged_window(windows), tuple(session.state for session in sessions)
        )
        self._open(merged)

    def _close(self, windows: Tuple[_codec.SessionWindow, ...]) -> None:
        for window in windows:
            session = self._sessions.pop(window.identity, None)
            if session is None:
                start, end, keys = window.identity
                _LOGGER.warning(
                    "session reduce: CLOSE of an unknown session [%d, %d) ms, keys %r: ignored",
                    start,
                    end,
                    list(keys),
                )
                continue
            session.closed.set()
            self._forget_group(session)

    def _call_args(self, group: Session, keys: List[str], datums: Any, md: Metadata) -> Any:
        return (keys, datums, group)

    def _encode_item(self, session: Session, item: Any) -> bytes:
        if session.merged:
            return b""
        return _codec.encode_session_result(item, session.window)

    async def _ended(self, session: Session) -> None:
        await session.closed.wait()
        if session.merged:
            if session.accumulator is not None:
                with self._errors:
                    session.state = await session.accumulator()
        else:
            await self._send(_codec.encode_session_eof(session.window))
        session.done.set()
