"""Map stream user-defined functions, as pynumaflow 0.9-0.14 wrote them (Numaflow >= 1.4).

A handler yields ``Message`` objects (value, keys, tags; as in 0.14.0, no user
metadata): ``async def h(keys, datum)`` with ``yield`` (or a sync generator), or an
instance of a :class:`MapStreamer` subclass implementing ``handler``. Served on
``mapstream.sock`` by :class:`MapStreamAsyncServer`, or :class:`MapStreamServer`
(which pynumaflow 0.14.0 lacks).
"""

from pynumaflow._types.function import DROP, Message, Messages
from pynumaflow._types.modern import Datum, MapStreamer, SystemMetadata, UserMetadata
from pynumaflow.mapstreamer._servers import MapStreamAsyncServer, MapStreamServer

__all__ = [
    "DROP",
    "Datum",
    "MapStreamAsyncServer",
    "MapStreamServer",
    "MapStreamer",
    "Message",
    "Messages",
    "SystemMetadata",
    "UserMetadata",
]
