"""Source transformers, as pynumaflow 0.9-0.14 wrote them (Numaflow >= 1.4).

A handler is ``h(keys, datum) -> Messages`` of :class:`Message` with an event time
(sync or ``async def``), or an instance of a :class:`SourceTransformer` subclass.
Served on ``sourcetransform.sock`` by :class:`SourceTransformServer`,
:class:`SourceTransformAsyncServer` and :class:`SourceTransformMultiProcServer`.
"""

from pynumaflow._types.function import DROP
from pynumaflow._types.function import MessageTs as Messages
from pynumaflow._types.modern import Datum, SourceTransformer, SystemMetadata, UserMetadata
from pynumaflow._types.modern import TransformMessage as Message
from pynumaflow.sourcetransformer._servers import (
    SourceTransformAsyncServer,
    SourceTransformMultiProcServer,
    SourceTransformServer,
)

__all__ = [
    "DROP",
    "Datum",
    "Message",
    "Messages",
    "SourceTransformAsyncServer",
    "SourceTransformMultiProcServer",
    "SourceTransformServer",
    "SourceTransformer",
    "SystemMetadata",
    "UserMetadata",
]
