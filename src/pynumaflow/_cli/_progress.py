"""A progress line on stderr (count and rate) for long inputs, when stderr is a terminal."""

from __future__ import annotations

import time
from typing import Callable, TextIO

__all__ = ["Progress"]

# Short runs print nothing; long ones refresh a few times a second.
_FIRST_AFTER = 1.0
_EVERY = 0.25


class Progress:
    """Counts answered inputs and redraws one line with the count and the rate.

    Args:
        stream: where the line goes.
        enabled: draw at all (default: only when ``stream`` is a terminal).
        clock: the time source, in seconds.

    """

    def __init__(
        self,
        stream: TextIO,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._enabled = stream.isatty() if enabled is None else enabled
        self._clock = clock
        self._start = clock()
        self._next = self._start + _FIRST_AFTER
        self._count = 0
        self._shown = False

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more answered inputs; redraw if it is time."""
        self._count += n
        if self._enabled and self._clock() >= self._next:
            self._draw()

    def finish(self) -> None:
        """Draw the final count and end the line, if a line was drawn."""
        if self._shown:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        now = self._clock()
        rate = self._count / max(now - self._start, 1e-9)
        self._stream.write(f"\rpynumaflow: {self._count} inputs, {rate:.0f}/s ")
        self._stream.flush()
        self._shown = True
        self._next = now + _EVERY
