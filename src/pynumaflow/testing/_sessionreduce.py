"""The session reduce kit: serve_session_reduce(_sync), clients, open streams (sessionreduce.v1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Tuple

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.streams import Answer, Sessions, SessionStream
from pynumaflow._client.v1 import Input, V1Connection
from pynumaflow._faces.kinds import SESSION_REDUCE
from pynumaflow._types.windowed import KeyedWindow
from pynumaflow.sessionreducer._servers import SessionReduceAsyncServer
from pynumaflow.testing._backends import _input
from pynumaflow.testing._data import DatumLike, _as_datum
from pynumaflow.testing._results import KeyedAnswer, _message
from pynumaflow.testing._serving import _CALL_TIMEOUT, _datums, _serve_v1, _SyncClient

_GAP = timedelta(seconds=10)


class SessionStreamClient:
    """The one SessionReduceFn stream, fed and read step by step.

    Get one from :meth:`SessionReduceClient.open_stream`. Either send datums with
    :meth:`send` (the operations derived as the platform derives them) or give the
    operations yourself (:meth:`open`, :meth:`append`, :meth:`expand`, :meth:`merge`,
    :meth:`close`); a datum's keys default to its window's.
    """

    def __init__(self, stream: SessionStream, gap: timedelta) -> None:
        self._stream = stream
        self._sessions = Sessions(stream, gap.total_seconds())
        self._answers: AsyncIterator[Answer] = stream.answers()

    @staticmethod
    def _item(value: DatumLike, window: KeyedWindow, event_time: Optional[datetime]) -> Input:
        keys = None if not isinstance(value, (bytes, str)) else window.keys
        return _input(_as_datum(value, keys, event_time=event_time or window.start), None)

    @property
    def operations(self) -> List[Tuple[str, List[KeyedWindow]]]:
        """Every operation :meth:`send` and :meth:`close_all` sent, with its windows."""
        return self._sessions.operations

    async def send(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
    ) -> None:
        """Send one datum as ``OPEN``, ``APPEND`` or ``EXPAND`` (then ``MERGE``), as due."""
        await self._sessions.add(_input(_as_datum(value, keys, event_time=event_time), None))

    async def close_all(self) -> None:
        """``CLOSE`` every session :meth:`send` opened."""
        await self._sessions.close_all()

    async def open(
        self, window: KeyedWindow, value: DatumLike, *, event_time: Optional[datetime] = None
    ) -> None:
        """``OPEN`` a session with its first datum (event time: the window's start)."""
        await self._stream.operate("open", [window], self._item(value, window, event_time))

    async def append(
        self, window: KeyedWindow, value: DatumLike, *, event_time: Optional[datetime] = None
    ) -> None:
        """``APPEND`` a datum to a session."""
        await self._stream.operate("append", [window], self._item(value, window, event_time))

    async def expand(
        self,
        old: KeyedWindow,
        new: KeyedWindow,
        value: DatumLike,
        *,
        event_time: Optional[datetime] = None,
    ) -> None:
        """``EXPAND`` session ``old`` to ``new`` with the datum that made it grow."""
        await self._stream.operate("expand", [old, new], self._item(value, new, event_time))

    async def merge(self, windows: Sequence[KeyedWindow]) -> None:
        """``MERGE`` sessions of the same keys into one (min start, max end)."""
        await self._stream.operate("merge", windows)

    async def close(self, *windows: KeyedWindow) -> None:
        """``CLOSE`` sessions: their results, then an EOF each."""
        await self._stream.operate("close", windows)

    async def end(self) -> None:
        """Half-close the stream, as the platform does at shutdown."""
        await self._stream.end()

    async def next(self) -> Optional[KeyedAnswer]:
        """The next result or EOF as it arrives; None once the server ended the stream.

        Raises:
            CallError: the handler raised or an operation was refused (``INTERNAL``),
                or nothing came in the call timeout after :meth:`end`.

        """
        try:
            answer = await self._answers.__anext__()
        except StopAsyncIteration:
            return None
        message = None if answer.result is None else _message(answer.result)
        return KeyedAnswer(answer.window, message)


class SessionReduceClient:
    """Calls a session reduce server as the platform does; see :func:`serve_session_reduce`."""

    def __init__(self, connection: V1Connection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready(SESSION_REDUCE.name)

    @contextlib.asynccontextmanager
    async def open_stream(self, gap: timedelta = _GAP) -> AsyncIterator[SessionStreamClient]:
        """A new SessionReduceFn stream; ``gap`` is the session gap :meth:`send` uses."""
        async with SessionStream(self._connection) as stream:
            yield SessionStreamClient(stream, gap)

    async def sessions(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        gap: timedelta = _GAP,
    ) -> List[KeyedAnswer]:
        """Send datums as the platform would (sessions of ``gap``), then close them all.

        Args:
            datums: values (with ``keys``; event time now) or whole Datums with their
                own keys and event times.
            keys: the keys of the datums given as values.
            gap: the session gap: a datum at ``t`` belongs in ``[t, t + gap)``.

        Returns:
            Every result and every session's EOF, in the order they arrived; each
            with its session's window as the server sent it.

        """
        answers = []
        async with self.open_stream(gap) as stream:
            for datum in _datums(datums, keys, None):
                await stream.send(datum)
            await stream.close_all()
            await stream.end()
            while (answer := await stream.next()) is not None:
                answers.append(answer)
        return answers


@contextlib.asynccontextmanager
async def serve_session_reduce(
    session_reducer: type,
    *,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Dict[str, Any]] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[SessionReduceClient]:
    """Serve a ``SessionReducer`` class (``pynumaflow.sessionreducer``) on a temporary socket.

    Args:
        session_reducer: the ``SessionReducer`` subclass (a new instance per session).
        init_args: positional arguments of the class.
        init_kwargs: keyword arguments of the class.
        call_timeout: seconds each answer may take once the stream is half-closed.

    Yields:
        A client that sends sessions as the platform does.

    """

    def build(sock: str, info: str) -> SessionReduceAsyncServer:
        return SessionReduceAsyncServer(
            session_reducer, init_args, init_kwargs, sock_path=sock, server_info_file=info
        )

    async with _serve_v1(SESSION_REDUCE, build, call_timeout) as connection:
        yield SessionReduceClient(connection)


class SyncSessionReduceClient(_SyncClient):
    """:class:`SessionReduceClient` for plain tests (no open streams: use the async kit)."""

    _client: SessionReduceClient

    def sessions(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        gap: timedelta = _GAP,
    ) -> List[KeyedAnswer]:
        """Like :meth:`SessionReduceClient.sessions`."""
        call = self._client.sessions
        return self._portal.call(lambda: call(datums, keys, gap=gap))


@contextlib.contextmanager
def serve_session_reduce_sync(
    session_reducer: type,
    *,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Dict[str, Any]] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> Iterator[SyncSessionReduceClient]:
    """Like :func:`serve_session_reduce`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_session_reduce(
            session_reducer, init_args=init_args, init_kwargs=init_kwargs, call_timeout=call_timeout
        )
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncSessionReduceClient(client, portal)
