"""The platform's side of the v1 conversations fed while they run.

batch map (map.v1 in batch mode), reduce and reduce stream (reduce.v1), accumulator
(accumulator.v1) and session reduce (sessionreduce.v1), for ``pynumaflow call`` and
:mod:`pynumaflow.testing`. Each is one bidi stream whose answers a task reads as they
come, so that what a server sends while its input is still open is seen at once:

- batch map: the handshake, then batches, each its requests and an EOT; the answer is
  one response per id, then the server's EOT (an EOT before every id was answered is
  the platform's ``UDF_PARTIAL_RESPONSE``).
- reduce and reduce stream: a stream per window, ``OPEN`` then ``APPEND`` with the
  window; the half-close is the close; results until the window's EOF.
- accumulator: one stream for every key; ``OPEN`` a key's first datum, ``APPEND`` the
  rest with the same keyed window, ``CLOSE`` it; results at any time, an EOF per close.
- session reduce: one stream; ``OPEN``, ``APPEND``, ``EXPAND``, ``MERGE``, ``CLOSE`` of
  keyed windows; results and an EOF per closed session, each with its current window.

A stream that fails raises :class:`~pynumaflow._client.base.CallError` with the status
the server ended it with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Tuple

from grpclib.client import Stream
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError

from pynumaflow._client.base import CallError, aware, call_errors, ended_with, error_of
from pynumaflow._client.v1 import Input, Result, V1Connection, fields, result_of
from pynumaflow._proto.accumulator import v1 as acc_pb
from pynumaflow._proto.map import v1 as map_pb
from pynumaflow._proto.reduce import v1 as reduce_pb
from pynumaflow._proto.sessionreduce import v1 as session_pb
from pynumaflow._types.function import IntervalWindow
from pynumaflow._types.windowed import AccumulatorMessage, KeyedWindow

__all__ = [
    "Accumulation",
    "AccumulatorStream",
    "Answer",
    "BatchMapStream",
    "ReduceWindow",
    "SessionStream",
    "Sessions",
]

_SLOT = "slot-0"
_END = object()  # the stream ended (OK); an error ends it with a CallError instead
# The window operations' numbers, per protocol (they differ).
_REDUCE = {"open": 0, "append": 4}
_ACCUMULATE = {"open": 0, "close": 1, "append": 2}
_SESSION = {"open": 0, "close": 1, "expand": 2, "merge": 3, "append": 4}


@dataclass(frozen=True)
class Answer:
    """One response of a keyed-window stream: a result, or the EOF of ``window``.

    Attributes:
        window: the window the server sent it with (a session's current window, an
            accumulator key's window).
        result: the output (an :class:`AccumulatorMessage` for the accumulator, a
            :class:`Result` for session reduce); None for the EOF.

    """

    window: KeyedWindow
    result: Optional[Any] = None

    @property
    def eof(self) -> bool:
        """Whether this is the EOF of its window."""
        return self.result is None


class _Conversation:
    """One bidi stream: messages sent as they come, answers read by a task into a queue."""

    def __init__(
        self, connection: V1Connection, path: str, request_type: type, response_type: type
    ) -> None:
        self._connection = connection
        self._path = path
        self._types = (request_type, response_type)
        self._exit = contextlib.AsyncExitStack()
        self._stream: Optional[Stream[Any, Any]] = None
        self._reader: Optional[asyncio.Task[None]] = None
        self._answers: asyncio.Queue[Any] = asyncio.Queue()
        self._ended = False
        self._input_ended = asyncio.Event()

    async def _open(self) -> Stream[Any, Any]:
        if self._stream is not None:
            return self._stream
        request_type, response_type = self._types
        with call_errors():
            stream: Stream[Any, Any] = await self._exit.enter_async_context(
                self._connection.channel.request(
                    self._path, Cardinality.STREAM_STREAM, request_type, response_type
                )
            )
            await stream.send_request()  # the reader may only wait once the request is out
        self._stream = stream
        await self._started(stream)
        self._reader = asyncio.create_task(self._read(stream))
        return stream

    async def _started(self, stream: Stream[Any, Any]) -> None:
        """Run the handshake, for the conversations that have one."""

    async def _read(self, stream: Stream[Any, Any]) -> None:
        end: Any = _END
        try:
            while (reply := await stream.recv_message()) is not None:
                self._answers.put_nowait(reply)
            await stream.recv_trailing_metadata()
        except GRPCError as err:
            end = ended_with(stream) or error_of(err)
        except Exception as err:  # reset after its trailers, or the connection is gone
            end = ended_with(stream) or CallError(
                "UNAVAILABLE", f"connection failed: {err or type(err).__name__}"
            )
        self._answers.put_nowait(end)

    async def _send(self, message: Any) -> None:
        stream = await self._open()
        try:
            with call_errors():
                await stream.send_message(message)
        except CallError as error:  # the server failed the stream: its status says why
            raise ended_with(stream) or error from None

    async def end(self) -> None:
        """Half-close the stream, as the platform does (for a window: its close)."""
        stream = await self._open()
        self._input_ended.set()
        with contextlib.suppress(Exception):  # already ended: the reader reports how
            await stream.end()

    async def _next(self, *, timed: bool = True) -> Any:
        """The next response; None once the stream has ended OK.

        Args:
            timed: wait at most the connection's timeout; else without limit until the
                input is half-closed (a window may stay open as long as its input
                comes), then that timeout.

        Raises:
            CallError: the stream failed, or no answer came in time.

        """
        if self._ended:
            return None
        await self._open()
        getter = asyncio.ensure_future(self._answers.get())
        ending = asyncio.ensure_future(self._input_ended.wait())
        try:
            if not timed:
                await asyncio.wait((getter, ending), return_when=asyncio.FIRST_COMPLETED)
            with call_errors():
                reply = await asyncio.wait_for(getter, self._connection.timeout)
        finally:
            getter.cancel()
            ending.cancel()
        if reply is _END or isinstance(reply, CallError):
            self._ended = True
            if isinstance(reply, CallError):
                raise reply
            return None
        return reply

    async def aclose(self) -> None:
        """Reset the stream if it is still open and let go of it (idempotent)."""
        stream, self._stream = self._stream, None
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.cancel()
            reader.cancel()
        with contextlib.suppress(Exception):
            await self._exit.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _check_handshake(first: Any) -> None:
    if first is None or first.handshake is None or not first.handshake.sot:
        raise CallError("UNKNOWN", f"invalid handshake response: {first!r}")


class BatchMapStream(_Conversation):
    """map.v1 in batch mode: one handshaken stream, a batch at a time."""

    def __init__(self, connection: V1Connection) -> None:
        super().__init__(connection, "/map.v1.Map/MapFn", map_pb.MapRequest, map_pb.MapResponse)

    async def _started(self, stream: Stream[Any, Any]) -> None:
        with call_errors():
            await stream.send_message(map_pb.MapRequest(handshake=map_pb.Handshake(sot=True)))
            first = await asyncio.wait_for(stream.recv_message(), self._connection.timeout)
        _check_handshake(first)

    async def batch(self, items: Sequence[Input]) -> Dict[str, List[Result]]:
        """Send one batch (ids must be unique) and its EOT; each id's results, in input order.

        Raises:
            CallError: the stream failed; or ``INTERNAL`` ``UDF_PARTIAL_RESPONSE`` when
                the server's EOT came before every id was answered, as the platform says.

        """
        answers: Dict[str, Optional[List[Result]]] = dict.fromkeys((i.id for i in items), None)
        if len(answers) != len(items):
            raise ValueError("the ids of a batch must be unique")
        for item in items:
            request = map_pb.MapRequestRequest(**fields(item))
            await self._send(map_pb.MapRequest(request=request, id=item.id))
        await self._send(map_pb.MapRequest(status=map_pb.TransmissionStatus(eot=True)))
        while True:
            reply = await self._next()
            if reply is None:
                raise CallError("UNAVAILABLE", "the server ended the stream before its EOT")
            if reply.status is not None and reply.status.eot:
                break
            if reply.id in answers and answers[reply.id] is None:  # else ignored, as 1.8 does
                answers[reply.id] = [result_of(r) for r in reply.results]
        missing = [key for key, results in answers.items() if results is None]
        if missing:
            raise CallError(
                "INTERNAL",
                f"UDF_PARTIAL_RESPONSE(batch_map): the EOT came before the responses of "
                f"{len(missing)} id(s): {', '.join(missing[:5])}",
            )
        return {key: results or [] for key, results in answers.items()}

    async def close(self) -> None:
        """Half-close the stream and wait for the server to end it, as at shutdown."""
        try:
            await self.end()
            while await self._next() is not None:
                pass
        except CallError:
            pass  # the stream is let go of all the same
        finally:
            await self.aclose()


class ReduceWindow(_Conversation):
    """One ReduceFn stream: one window's datums, results up to its EOF."""

    def __init__(self, connection: V1Connection, window: IntervalWindow) -> None:
        super().__init__(
            connection,
            "/reduce.v1.Reduce/ReduceFn",
            reduce_pb.ReduceRequest,
            reduce_pb.ReduceResponse,
        )
        self.window = window
        self._proto = reduce_pb.Window(start=aware(window.start), end=aware(window.end), slot=_SLOT)
        self._sent = 0

    async def send(self, item: Input) -> None:
        """Send one datum of the window (the first opens it)."""
        operation = reduce_pb.ReduceRequestWindowOperation(
            event=reduce_pb.ReduceRequestWindowOperationEvent(
                _REDUCE["append" if self._sent else "open"]
            ),
            windows=[self._proto],
        )
        self._sent += 1
        payload = reduce_pb.ReduceRequestPayload(**fields(item))
        await self._send(reduce_pb.ReduceRequest(payload=payload, operation=operation))

    async def results(self) -> AsyncIterator[Result]:
        """Each result as it arrives, up to the window's EOF.

        Raises:
            CallError: the stream failed, or ended without an EOF.

        """
        while (reply := await self._next(timed=False)) is not None:
            if reply.eof:
                return
            yield result_of(reply.result)
        raise CallError("UNKNOWN", "the server ended the stream without an EOF")


def _keyed(message: Any) -> KeyedWindow:
    return KeyedWindow(message.start, message.end, message.slot, list(message.keys))


class AccumulatorStream(_Conversation):
    """The one AccumulateFn stream: keys opened, appended to and closed."""

    def __init__(self, connection: V1Connection) -> None:
        super().__init__(
            connection,
            "/accumulator.v1.Accumulator/AccumulateFn",
            acc_pb.AccumulatorRequest,
            acc_pb.AccumulatorResponse,
        )

    @staticmethod
    def _window(window: KeyedWindow) -> acc_pb.KeyedWindow:
        return acc_pb.KeyedWindow(
            start=aware(window.start), end=aware(window.end), slot=window.slot, keys=window.keys
        )

    async def send(self, item: Input, window: KeyedWindow, *, first: bool) -> None:
        """Send a datum of the key of ``window``: ``OPEN`` if ``first``, else ``APPEND``."""
        operation = acc_pb.AccumulatorRequestWindowOperation(
            event=acc_pb.AccumulatorRequestWindowOperationEvent(
                _ACCUMULATE["open" if first else "append"]
            ),
            keyed_window=self._window(window),
        )
        payload = acc_pb.Payload(**fields(item), id=item.id)
        await self._send(acc_pb.AccumulatorRequest(payload=payload, operation=operation))

    async def close(self, window: KeyedWindow) -> None:
        """``CLOSE`` the key of ``window``; its EOF echoes ``window``."""
        operation = acc_pb.AccumulatorRequestWindowOperation(
            event=acc_pb.AccumulatorRequestWindowOperationEvent(_ACCUMULATE["close"]),
            keyed_window=self._window(window),
        )
        await self._send(acc_pb.AccumulatorRequest(operation=operation))

    async def answers(self) -> AsyncIterator[Answer]:
        """Each output and EOF as it arrives, until the server ends the stream."""
        while (reply := await self._next(timed=False)) is not None:
            window = _keyed(reply.window)
            if reply.eof:
                yield Answer(window)
                continue
            payload = reply.payload
            message = AccumulatorMessage(
                payload.value,
                list(payload.keys),
                list(reply.tags),
                watermark=payload.watermark,
                event_time=payload.event_time,
                headers=dict(payload.headers),
                id=payload.id,
            )
            yield Answer(window, message)


class SessionStream(_Conversation):
    """The one SessionReduceFn stream: the session operations, sent as given."""

    def __init__(self, connection: V1Connection) -> None:
        super().__init__(
            connection,
            "/sessionreduce.v1.SessionReduce/SessionReduceFn",
            session_pb.SessionReduceRequest,
            session_pb.SessionReduceResponse,
        )

    async def operate(
        self, event: str, windows: Iterable[KeyedWindow], item: Optional[Input] = None
    ) -> None:
        """Send one operation (``open``, ``append``, ``expand``, ``merge``, ``close``)."""
        operation = session_pb.SessionReduceRequestWindowOperation(
            event=session_pb.SessionReduceRequestWindowOperationEvent(_SESSION[event]),
            keyed_windows=[
                session_pb.KeyedWindow(
                    start=aware(w.start), end=aware(w.end), slot=w.slot, keys=w.keys
                )
                for w in windows
            ],
        )
        request = session_pb.SessionReduceRequest(operation=operation)
        if item is not None:
            request.payload = session_pb.SessionReduceRequestPayload(**fields(item))
        await self._send(request)

    async def answers(self) -> AsyncIterator[Answer]:
        """Each result and EOF as it arrives, until the server ends the stream."""
        while (reply := await self._next(timed=False)) is not None:
            window = _keyed(reply.keyed_window)
            yield Answer(window, None if reply.eof else result_of(reply.result))


# --- the platform's windowing, for callers that give datums rather than operations ---------


class Sessions:
    """Session windows of ``gap`` per keys, as the platform assigns them.

    A datum at ``t`` has the candidate window ``[t, t + gap)``: inside a session of its
    keys it is appended; overlapping one it expands it (and sessions the grown one then
    overlaps are merged into it); else it opens a session.
    """

    def __init__(self, stream: SessionStream, gap: float) -> None:
        self._stream = stream
        self._gap = gap
        self.open: Dict[Tuple[str, ...], List[KeyedWindow]] = {}
        self.operations: List[Tuple[str, List[KeyedWindow]]] = []
        """Every operation sent, with its windows, in order."""

    async def _operate(
        self, event: str, windows: List[KeyedWindow], item: Optional[Input] = None
    ) -> None:
        self.operations.append((event, windows))
        await self._stream.operate(event, windows, item)

    async def add(self, item: Input) -> None:
        """Send one datum as the operation the platform would send for it."""
        keys = tuple(item.keys)
        start = aware(item.event_time)
        end = _plus(start, self._gap)
        sessions = self.open.setdefault(keys, [])
        hit = next((s for s in sessions if s.start < end and start < s.end), None)
        if hit is None:
            sessions.append(KeyedWindow(start, end, _SLOT, list(keys)))
            await self._operate("open", [sessions[-1]], item)
            return
        if hit.start <= start and end <= hit.end:
            await self._operate("append", [hit], item)
            return
        grown = KeyedWindow(min(hit.start, start), max(hit.end, end), _SLOT, list(keys))
        sessions[sessions.index(hit)] = grown
        await self._operate("expand", [hit, grown], item)
        while True:
            other = next(
                (
                    s
                    for s in sessions
                    if s is not grown and s.start < grown.end and grown.start < s.end
                ),
                None,
            )
            if other is None:
                return
            merged = KeyedWindow(
                min(grown.start, other.start), max(grown.end, other.end), _SLOT, list(keys)
            )
            sessions.remove(other)
            sessions[sessions.index(grown)] = merged
            await self._operate("merge", [grown, other])
            grown = merged

    async def close_all(self) -> None:
        """Close every open session, key by key in the order first seen."""
        for sessions in self.open.values():
            for session in sessions:
                await self._operate("close", [session])
        self.open.clear()


class Accumulation:
    """Keyed windows as the platform gives an accumulator (Numaflow 1.6-1.8.0).

    A key's window starts at its first datum's event time and ends ``timeout`` seconds
    later; every datum of the key and its ``CLOSE`` carry that window.
    """

    def __init__(self, stream: AccumulatorStream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout
        self.open: Dict[Tuple[str, ...], KeyedWindow] = {}

    async def add(self, item: Input) -> None:
        """Send one datum: ``OPEN`` for its key's first, else ``APPEND``."""
        keys = tuple(item.keys)
        window = self.open.get(keys)
        if window is None:
            start = aware(item.event_time)
            window = self.open[keys] = KeyedWindow(
                start, _plus(start, self._timeout), _SLOT, list(keys)
            )
            await self._stream.send(item, window, first=True)
        else:
            await self._stream.send(item, window, first=False)

    async def close(self, keys: Sequence[str]) -> None:
        """``CLOSE`` a key (its next datum opens it again).

        Raises:
            KeyError: the key is not open.

        """
        await self._stream.close(self.open.pop(tuple(keys)))

    async def close_all(self) -> None:
        """``CLOSE`` every key, in the order first seen."""
        for keys in list(self.open):
            await self.close(keys)


def _plus(moment: datetime, seconds: float) -> datetime:
    return moment + timedelta(seconds=seconds)
