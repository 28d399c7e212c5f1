"""The accumulator kit: serve_accumulator(_sync), its clients and open streams (accumulator.v1)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from anyio.from_thread import start_blocking_portal

from pynumaflow._client.streams import Accumulation, AccumulatorStream, Answer
from pynumaflow._client.v1 import V1Connection
from pynumaflow._faces.kinds import ACCUMULATE
from pynumaflow.accumulator._servers import AccumulatorAsyncServer
from pynumaflow.testing._backends import _input
from pynumaflow.testing._data import DatumLike, _as_datum
from pynumaflow.testing._results import KeyedAnswer
from pynumaflow.testing._serving import _CALL_TIMEOUT, _datums, _serve_v1, _SyncClient

_WINDOW = timedelta(seconds=60)


class AccumulatorStreamClient:
    """The one AccumulateFn stream, fed and read step by step.

    Get one from :meth:`AccumulatorClient.open_stream`. A key's first datum opens it
    (``OPEN``), the next ones are appended (``APPEND``) with the same window: from its
    first event time to ``window`` later.
    """

    def __init__(self, stream: AccumulatorStream, window: timedelta) -> None:
        self._stream = stream
        self._keys = Accumulation(stream, window.total_seconds())
        self._answers: AsyncIterator[Answer] = stream.answers()

    async def send(
        self,
        value: DatumLike,
        keys: Optional[Sequence[str]] = None,
        *,
        event_time: Optional[datetime] = None,
        watermark: Optional[datetime] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Send one datum (a value or a whole Datum, whose ``metadata.id`` is its id)."""
        datum = _as_datum(value, keys, event_time=event_time, watermark=watermark, headers=headers)
        await self._keys.add(_input(datum, None))

    async def close(self, keys: Sequence[str]) -> None:
        """``CLOSE`` a key, as once the watermark passed it; its EOF follows its outputs."""
        await self._keys.close(keys)

    async def end(self) -> None:
        """Close every open key, then half-close the stream, as the platform at shutdown."""
        await self._keys.close_all()
        await self._stream.end()

    async def next(self) -> Optional[KeyedAnswer]:
        """The next output or EOF as it arrives; None once the server ended the stream.

        Raises:
            CallError: the handler raised (``INTERNAL``), or nothing came in the call
                timeout after :meth:`end`.

        """
        try:
            answer = await self._answers.__anext__()
        except StopAsyncIteration:
            return None
        return KeyedAnswer(answer.window, answer.result)


class AccumulatorClient:
    """Calls an accumulator as the platform does; see :func:`serve_accumulator`."""

    def __init__(self, connection: V1Connection) -> None:
        self._connection = connection

    async def is_ready(self) -> bool:
        """Whether the server answers IsReady with ``ready: true``."""
        return await self._connection.is_ready(ACCUMULATE.name)

    @contextlib.asynccontextmanager
    async def open_stream(
        self, window: timedelta = _WINDOW
    ) -> AsyncIterator[AccumulatorStreamClient]:
        """A new AccumulateFn stream; ``window`` is how long a key's window lasts."""
        async with AccumulatorStream(self._connection) as stream:
            yield AccumulatorStreamClient(stream, window)

    async def accumulate(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: timedelta = _WINDOW,
    ) -> List[KeyedAnswer]:
        """Send datums on one stream, close every key, and read until the stream ends.

        Args:
            datums: values (their ids ``"1"``, ``"2"``... in order, with ``keys``) or
                whole Datums with their own keys, times and ids.
            keys: the keys of the datums given as values.
            window: how long each key's window lasts from its first event time.

        Returns:
            Every output and every key's EOF, in the order they arrived.

        """
        answers = []
        async with self.open_stream(window) as stream:
            for datum in _datums(datums, keys, None):
                await stream.send(datum)
            await stream.end()
            while (answer := await stream.next()) is not None:
                answers.append(answer)
        return answers


@contextlib.asynccontextmanager
async def serve_accumulator(
    handler: Callable[..., Any],
    *,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Dict[str, Any]] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> AsyncIterator[AccumulatorClient]:
    """Serve an accumulator (``pynumaflow.accumulator``) on a temporary socket.

    Args:
        handler: as for ``AccumulatorAsyncServer``: an ``async def h(datums, output)``,
            an ``Accumulator`` class (with ``init_args`` and ``init_kwargs``) or instance.
        init_args: positional arguments of the ``Accumulator`` class.
        init_kwargs: keyword arguments of the ``Accumulator`` class.
        call_timeout: seconds each answer may take once the stream is half-closed.

    Yields:
        A client that feeds keys as the platform does.

    """

    def build(sock: str, info: str) -> AccumulatorAsyncServer:
        return AccumulatorAsyncServer(
            handler, init_args, init_kwargs, sock_path=sock, server_info_file=info
        )

    async with _serve_v1(ACCUMULATE, build, call_timeout) as connection:
        yield AccumulatorClient(connection)


class SyncAccumulatorClient(_SyncClient):
    """:class:`AccumulatorClient` for plain tests (no open streams: use the async kit)."""

    _client: AccumulatorClient

    def accumulate(
        self,
        datums: Iterable[DatumLike],
        keys: Optional[Sequence[str]] = None,
        *,
        window: timedelta = _WINDOW,
    ) -> List[KeyedAnswer]:
        """Like :meth:`AccumulatorClient.accumulate`."""
        call = self._client.accumulate
        return self._portal.call(lambda: call(datums, keys, window=window))


@contextlib.contextmanager
def serve_accumulator_sync(
    handler: Callable[..., Any],
    *,
    init_args: Tuple[Any, ...] = (),
    init_kwargs: Optional[Dict[str, Any]] = None,
    call_timeout: Optional[float] = _CALL_TIMEOUT,
) -> Iterator[SyncAccumulatorClient]:
    """Like :func:`serve_accumulator`, for tests that are not async."""
    with start_blocking_portal() as portal:
        serving = serve_accumulator(
            handler, init_args=init_args, init_kwargs=init_kwargs, call_timeout=call_timeout
        )
        with portal.wrap_async_context_manager(serving) as client:
            yield SyncAccumulatorClient(client, portal)
