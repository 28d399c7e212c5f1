"""A smaller record of an h2 connection's closed streams: only those closed by a reset.

h2 remembers how each of the last 65,536 closed streams of a connection was closed, in
an ``OrderedDict`` whose table its first-in-first-out churn keeps rebuilding: about
11 MiB live once full, and up to 20 MiB of resident memory. In the legacy function
protocol every MapFn or MapTFn datum is a unary call, that is a stream, so a server got
there after 65,536 calls on one connection (``benchmarks/soak.py``, docs/reliability.md).

h2 looks a stream up in the record only when a frame arrives for a stream it has already
dropped from its open streams, and the answer differs only for a stream closed by
RST_STREAM: late HEADERS on it get a RST_STREAM instead of failing the whole connection.
Late HEADERS on a stream that ended normally (or implicitly) fail the connection either
way, only the GOAWAY's error code differs (STREAM_CLOSED rather than PROTOCOL_ERROR); late
DATA, RST_STREAM and WINDOW_UPDATE frames are handled alike with or without the record.
So :func:`remember_resets_only` keeps the reset streams, as many as h2 would, and drops
the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from h2.connection import H2Connection
from h2.stream import StreamClosedBy

__all__ = ["ResetStreams", "frame_pending", "remember_resets_only"]

_RESETS = (StreamClosedBy.SEND_RST_STREAM, StreamClosedBy.RECV_RST_STREAM)


class ResetStreams(OrderedDict[int, Optional[StreamClosedBy]]):
    """How closed streams were closed, kept for the last ``limit`` streams closed by a reset."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def __setitem__(self, stream_id: int, closed_by: Optional[StreamClosedBy]) -> None:
        if closed_by not in _RESETS:
            return
        super().__setitem__(stream_id, closed_by)
        while len(self) > self._limit:
            self.popitem(last=False)


def remember_resets_only(connection: H2Connection) -> None:
    """Give a new h2 connection a :class:`ResetStreams` record.

    An h2 version without the record it replaces is left as it is.
    """
    record = getattr(connection, "_closed_streams", None)
    if isinstance(record, dict) and not record:
        connection._closed_streams = ResetStreams(connection.MAX_CLOSED_STREAMS)


def frame_pending(connection: H2Connection) -> int:
    """How many bytes of an unfinished preface or frame h2 holds for ``connection``.

    A HEADERS frame waiting for its CONTINUATION counts as unfinished too. An h2 version
    without these internals reports 0 (nothing pending).
    """
    buffer = getattr(connection, "incoming_buffer", None)
    if buffer is None:
        return 0
    return (
        getattr(buffer, "_preamble_len", 0)
        + len(getattr(buffer, "_data", b""))
        + len(getattr(buffer, "_headers_buffer", ()))
    )
