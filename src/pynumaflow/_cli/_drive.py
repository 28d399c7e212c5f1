"""Send records to a ready server as the platform would, and print what comes back.

map, mapt and map stream: one call per record, several in flight, outputs printed in
input order. reduce: records grouped into fixed windows by event time, one ReduceFn
stream per window. sink: records in batches, one SinkFn stream per batch. batch map:
records in batches on one MapFn stream, outputs in input order.

Numaflow >= 1.4's streamed window kinds send each record as it is read and print each
output as it arrives: reduce stream, a ReduceFn stream per fixed window, all closed at
the end of the input; accumulator, one stream, a key opened by its first record and
closed at the end of the input (its window: the first event time plus ``--window``);
session reduce, one stream, sessions of ``--window`` gap per keys opened, appended to,
expanded and merged as the platform does, closed at the end of the input. The last two
print each key's or session's EOF as a line too.

A call that fails with a status (the handler raised) is reported on stderr and the
rest go on; a call that times out or loses the connection ends the run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, TextIO

from pynumaflow._cli._calls import Calls, V1Calls, input_of
from pynumaflow._cli._errors import RunError
from pynumaflow._cli._input import Record
from pynumaflow._cli._output import accumulated_line, eof_line, message_line
from pynumaflow._cli._progress import Progress
from pynumaflow._client.base import CallError, epoch_millis
from pynumaflow._client.streams import Accumulation, Answer, ReduceWindow, Sessions
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import Kind
from pynumaflow._types.function import IntervalWindow

__all__ = ["Options", "Tally", "drive"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Statuses after which going on makes no sense: the server is gone or stuck.
_FATAL = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE"})
_SESSION_EVENTS = ("open", "append", "expand", "merge", "close")


@dataclass(frozen=True)
class Options:
    """How to send: in-flight calls, reduce window length, sink batch size."""

    concurrency: int = 16
    window: timedelta = timedelta(seconds=60)
    batch_size: int = 500


@dataclass
class Tally:
    """What happened: inputs sent, lines printed, calls failed, sink datums failed."""

    inputs: int = 0
    outputs: int = 0
    failed_calls: int = 0
    failed_datums: int = 0
    notes: list[str] = field(default_factory=list)


class _Driver:
    def __init__(
        self,
        calls: Calls,
        out: TextIO,
        err: TextIO,
        check_alive: Callable[[str], None],
        progress: Progress,
    ) -> None:
        self._calls = calls
        self._out = out
        self._err = err
        self._check_alive = check_alive
        self._progress = progress
        self.tally = Tally()
        self._shown: Optional[CallError] = None

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self._out.write(line + "\n")
        self._out.flush()
        self.tally.outputs += len(lines)

    def _v1(self, kind: Kind) -> V1Calls:
        if not isinstance(self._calls, V1Calls):
            raise RunError(f"{kind.name} exists on the v1 protocol only (Numaflow >= 1.4)")
        return self._calls

    def _failed(self, what: str, error: CallError) -> None:
        if error.status in _FATAL:
            self._check_alive(f"while handling {what}")
            raise RunError(f"{what}: {error}")
        self.tally.failed_calls += 1
        self._err.write(f"pynumaflow: {what} failed: {error}\n")
        # On v1 a handler error ends the stream: the requests in flight share it.
        if error.traceback and error is not self._shown:
            self._shown = error
            body = error.traceback.rstrip("\n").replace("\n", "\n  ")
            self._err.write(f"pynumaflow: the handler's traceback, from the server:\n  {body}\n")
        self._err.flush()

    async def unary(self, kind: Kind, records: AsyncIterator[Record], concurrency: int) -> None:
        calls: asyncio.Queue[Optional[tuple[Record, asyncio.Task[list[str]]]]] = asyncio.Queue()
        in_flight = asyncio.Semaphore(concurrency)
        unreadable: list[Exception] = []

        async def produce() -> None:
            try:
                async for record in records:
                    await in_flight.acquire()
                    calls.put_nowait((record, asyncio.create_task(self._calls.one(kind, record))))
            except Exception as error:  # a malformed line: raised after the calls before it
                unreadable.append(error)
            calls.put_nowait(None)

        producer = asyncio.create_task(produce())
        try:
            while (item := await calls.get()) is not None:
                record, call = item
                self.tally.inputs += 1
                try:
                    self._emit(await call)
                except CallError as error:
                    self._failed(f"line {record.line}", error)
                finally:
                    in_flight.release()
                self._progress.advance()
            if unreadable:
                raise unreadable[0]
        finally:
            producer.cancel()
            while not calls.empty():
                item = calls.get_nowait()
                if item is not None:
                    _discard(item[1])
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def reduce(self, records: AsyncIterator[Record], length: timedelta) -> None:
        size = length // timedelta(milliseconds=1)
        windows: dict[int, list[Record]] = {}
        async for record in records:
            start = epoch_millis(record.event_time) // size * size
            windows.setdefault(start, []).append(record)
        for start in sorted(windows):
            group = windows[start]
            begin = _EPOCH + timedelta(milliseconds=start)
            window = IntervalWindow(begin, begin + length)
            self.tally.inputs += len(group)
            try:
                lines = await self._calls.window(group, window)
            except CallError as error:
                self._failed(f"window {start}..{start + size} (lines {_lines(group)})", error)
                continue
            finally:
                self._progress.advance(len(group))
            self._emit(lines)

    async def sink(self, records: AsyncIterator[Record], batch_size: int) -> None:
        async for batch in _batches(records, batch_size):
            await self._sink_batch(batch)
        if self.tally.failed_datums:
            self.tally.notes.append(
                f"the sink answered {self.tally.failed_datums} of {self.tally.inputs} "
                "datums as failed (the platform would retry them)"
            )

    async def _sink_batch(self, batch: list[Record]) -> None:
        self.tally.inputs += len(batch)
        try:
            answers = await self._calls.batch(batch)
        except CallError as error:
            self._failed(f"batch of lines {_lines(batch)}", error)
            return
        finally:
            self._progress.advance(len(batch))
        # A fallback is not a failure: the fallback sink takes the datum.
        self.tally.failed_datums += sum(not r.success and r.status is None for r, _ in answers)
        self._emit([line for _, line in answers])

    async def batch_map(self, records: AsyncIterator[Record], batch_size: int) -> None:
        calls = self._v1(kinds.BATCH_MAP)
        try:
            async for batch in _batches(records, batch_size):
                await self._map_batch(calls, batch)
        finally:
            await calls.close()

    async def _map_batch(self, calls: V1Calls, batch: list[Record]) -> None:
        self.tally.inputs += len(batch)
        try:
            lines = await calls.batch_map(batch)
        except CallError as error:
            self._failed(f"batch of lines {_lines(batch)}", error)
            return
        finally:
            self._progress.advance(len(batch))
        self._emit(lines)

    async def reduce_stream(self, records: AsyncIterator[Record], length: timedelta) -> None:
        calls = self._v1(kinds.REDUCE_STREAM)
        size = length // timedelta(milliseconds=1)
        windows: dict[int, tuple[ReduceWindow, asyncio.Task[None]]] = {}
        try:
            async for record in records:
                start = epoch_millis(record.event_time) // size * size
                if start not in windows:
                    begin = _EPOCH + timedelta(milliseconds=start)
                    stream = calls.reduce_window(IntervalWindow(begin, begin + length))
                    windows[start] = (stream, asyncio.create_task(self._print_window(stream)))
                self.tally.inputs += 1
                with contextlib.suppress(CallError):  # its reader reports why it failed
                    await windows[start][0].send(input_of(record))
                self._progress.advance()
            for start in sorted(windows):
                await windows[start][0].end()
            for start in sorted(windows):
                await windows[start][1]
        finally:
            for stream, reader in windows.values():
                reader.cancel()
                await stream.aclose()

    async def _print_window(self, stream: ReduceWindow) -> None:
        window = stream.window
        try:
            async for result in stream.results():
                self._emit([message_line(result, window=window)])
        except CallError as error:
            span = f"{epoch_millis(window.start)}..{epoch_millis(window.end)}"
            self._failed(f"window {span}", error)

    async def keyed(self, kind: Kind, records: AsyncIterator[Record], length: timedelta) -> None:
        """Accumulator or session reduce: one stream, fed as read, read as answered."""
        calls = self._v1(kind)
        seconds = length.total_seconds()
        if kind is kinds.ACCUMULATE:
            stream: Any = calls.accumulator()
            windows: Any = Accumulation(stream, seconds)
        else:
            stream = calls.sessions()
            windows = Sessions(stream, seconds)
        async with stream:
            reader = asyncio.create_task(self._print_keyed(kind, stream.answers()))
            try:
                async for record in records:
                    self.tally.inputs += 1
                    try:
                        await windows.add(input_of(record))
                    except CallError:  # the reader reports why the stream failed
                        break
                    finally:
                        self._progress.advance()
                with contextlib.suppress(CallError):
                    await windows.close_all()
                await stream.end()
                await reader
            finally:
                reader.cancel()
        if isinstance(windows, Sessions):
            counts = collections.Counter(event for event, _ in windows.operations)
            sent = ", ".join(f"{counts[e]} {e.upper()}" for e in _SESSION_EVENTS if counts[e])
            self.tally.notes.append(f"session operations sent: {sent or 'none'}")

    async def _print_keyed(self, kind: Kind, answers: AsyncIterator[Answer]) -> None:
        try:
            async for answer in answers:
                if answer.result is None:
                    self._emit([eof_line(answer.window)])
                elif kind is kinds.ACCUMULATE:
                    self._emit([accumulated_line(answer.result)])
                else:
                    window = IntervalWindow(answer.window.start, answer.window.end)
                    self._emit([message_line(answer.result, window=window)])
        except CallError as error:
            self._failed(f"the {kind.name} stream", error)


async def _batches(records: AsyncIterator[Record], size: int) -> AsyncIterator[list[Record]]:
    batch: list[Record] = []
    async for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _discard(call: asyncio.Task[list[str]]) -> None:
    if call.done():
        if not call.cancelled():
            call.exception()  # a later line failed too: the run already reports the first
    else:
        call.cancel()


def _lines(records: list[Record]) -> str:
    return f"{records[0].line}-{records[-1].line}" if len(records) > 1 else str(records[0].line)


async def drive(
    calls: Calls,
    kind: Kind,
    records: AsyncIterator[Record],
    options: Options,
    *,
    out: TextIO,
    err: TextIO,
    check_alive: Callable[[str], None] = lambda when: None,
    progress: Optional[Progress] = None,
) -> Tally:
    """Send every record as ``kind`` and print one JSON line per output on ``out``.

    Raises:
        RunError: a call timed out or the connection was lost (after ``check_alive``
            had the chance to say the script exited).
        UsageError: an input line is malformed.

    """
    progress = progress or Progress(err)
    driver = _Driver(calls, out, err, check_alive, progress)
    work: Awaitable[None]
    if kind is kinds.REDUCE:
        work = driver.reduce(records, options.window)
    elif kind is kinds.REDUCE_STREAM:
        work = driver.reduce_stream(records, options.window)
    elif kind in (kinds.ACCUMULATE, kinds.SESSION_REDUCE):
        work = driver.keyed(kind, records, options.window)
    elif kind is kinds.BATCH_MAP:
        work = driver.batch_map(records, options.batch_size)
    elif kind is kinds.SINK:
        work = driver.sink(records, options.batch_size)
    else:
        work = driver.unary(kind, records, options.concurrency)
    try:
        await work
    finally:
        progress.finish()
    driver.tally.notes.extend(calls.notes)
    return driver.tally
