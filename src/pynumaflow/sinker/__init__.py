"""User-defined sinks, as pynumaflow 0.9-0.14 wrote them (Numaflow >= 1.4).

A handler takes the batch's datums (``Iterator[Datum]``, or ``AsyncIterable[Datum]``
for ``async def``) and returns :class:`Responses`, one :class:`Response` per datum by
its ``id``; or it is an instance of a :class:`Sinker` subclass. Served on ``sink.sock``
(``fb-sink.sock``, ``ons-sink.sock`` for the fallback and on-success roles) by
:class:`SinkServer` and :class:`SinkAsyncServer`.
"""

from pynumaflow._types.modern import SinkDatum as Datum
from pynumaflow._types.modern import Sinker, SystemMetadata, UserMetadata
from pynumaflow._types.modern import SinkMessage as Message
from pynumaflow._types.modern import SinkResponse as Response
from pynumaflow._types.modern import SinkResponses as Responses
from pynumaflow._types.nack import NackOptions
from pynumaflow.sinker._servers import SinkAsyncServer, SinkServer

__all__ = [
    "Datum",
    "Message",
    "NackOptions",
    "Response",
    "Responses",
    "SinkAsyncServer",
    "SinkServer",
    "Sinker",
    "SystemMetadata",
    "UserMetadata",
]
