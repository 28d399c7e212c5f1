"""Map user-defined functions, as pynumaflow 0.9-0.14 wrote them (Numaflow >= 1.4).

A handler is ``h(keys, datum) -> Messages`` (sync or ``async def``), or an instance of
a :class:`Mapper` subclass implementing ``handler``. Served on ``map.sock`` by
:class:`MapServer` (blocking ``start()``, sync handlers in a thread pool),
:class:`MapAsyncServer` and :class:`MapMultiprocServer`.
"""

from pynumaflow._types.function import DROP, Messages
from pynumaflow._types.modern import Datum, Mapper, Message, SystemMetadata, UserMetadata
from pynumaflow._types.nack import NACK, NackOptions
from pynumaflow.mapper._servers import MapAsyncServer, MapMultiprocServer, MapServer

__all__ = [
    "DROP",
    "NACK",
    "Datum",
    "MapAsyncServer",
    "MapMultiprocServer",
    "MapServer",
    "Mapper",
    "Message",
    "Messages",
    "NackOptions",
    "SystemMetadata",
    "UserMetadata",
]
