"""The input file (or stdin) as an async stream of records."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TextIO, TypeVar, Union

from pynumaflow._cli._errors import UsageError
from pynumaflow._cli._input import Record, read_records

__all__ = ["open_input", "records_of"]

_T = TypeVar("_T")
_AHEAD = 64


def open_input(name: str, stdin: TextIO) -> TextIO:
    """``-`` for ``stdin``, else the file (UTF-8).

    Raises:
        UsageError: the file cannot be opened.

    """
    if name == "-":
        return stdin
    try:
        return open(name, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read the input {name}: {err.strerror}") from None


def _is_regular_file(stream: TextIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, io.UnsupportedOperation):
        return True  # in memory: reading never blocks


async def _in_thread(items: Iterator[_T]) -> AsyncIterator[_T]:
    # A pipe or a terminal may block for ever on a read. The read runs in a daemon
    # thread so that the loop stays free and the command can end while it waits.
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Union[_T, BaseException, None]]] = asyncio.Queue(_AHEAD)

    def put(entry: tuple[bool, Union[_T, BaseException, None]]) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(entry), loop).result()

    def pump() -> None:
        try:
            for item in items:
                put((True, item))
            put((False, None))
        except RuntimeError:  # the loop has closed: nobody is reading any more
            return
        except BaseException as err:  # handed to the reader, who raises it
            put((False, err))

    threading.Thread(target=pump, name="pynumaflow-input", daemon=True).start()
    while True:
        more, item = await queue.get()
        if not more:
            if isinstance(item, BaseException):
                raise item
            return
        yield item  # type: ignore[misc] # "more" means it is an item


async def records_of(stream: TextIO, *, raw: bool) -> AsyncIterator[Record]:
    """Parse the stream's lines into records as they can be read."""
    records = read_records(stream, raw=raw)
    if _is_regular_file(stream):
        for record in records:
            yield record
    else:
        async for record in _in_thread(records):
            yield record
