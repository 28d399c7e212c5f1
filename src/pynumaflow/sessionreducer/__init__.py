"""Session reduce user-defined functions (Numaflow >= 1.4), in the style of the modern API.

pynumaflow 0.14.0 has no session reduce; the operations follow the Go and Java SDKs'
SessionReducer. Subclass :class:`SessionReducer`: ``async session_reduce(keys, datums,
output)`` reads one session's datums and puts results on ``output`` (each sent at once);
``accumulator()`` returns the session's state as bytes when the platform merges it into
another session, and ``merge_accumulator(state)`` takes such a state into the merged
session's new instance before its first datum. Served on ``sessionreduce.sock`` by
:class:`SessionReduceAsyncServer`, given the class (a new instance per session).
"""

from pynumaflow._types.asynciter import NonBlockingIterator
from pynumaflow._types.function import DROP
from pynumaflow._types.modern import Datum, Message, SystemMetadata, UserMetadata
from pynumaflow._types.windowed import SessionReducer
from pynumaflow.sessionreducer._servers import SessionReduceAsyncServer

__all__ = [
    "DROP",
    "Datum",
    "Message",
    "NonBlockingIterator",
    "SessionReduceAsyncServer",
    "SessionReducer",
    "SystemMetadata",
    "UserMetadata",
]
