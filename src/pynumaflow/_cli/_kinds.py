"""Which kind of UDF a server is: asked over the wire, never by running user code."""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from typing import Literal, Optional, TextIO

from pynumaflow._cli._errors import RunError, UsageError
from pynumaflow._client.legacy import CallError, Connection, FunctionMethod

__all__ = ["Kind", "choose_kind", "wait_until_ready"]

Service = Literal["function", "sink"]


class Kind(Enum):
    """A kind of user-defined function or sink, by its ``--kind`` name."""

    MAP = "map"
    MAPT = "mapt"
    MAP_STREAM = "map-stream"
    REDUCE = "reduce"
    SINK = "sink"

    @property
    def method(self) -> Optional[FunctionMethod]:
        """The function.v1 RPC of this kind (``None`` for sink)."""
        return _METHODS.get(self)


_METHODS: dict[Kind, FunctionMethod] = {
    Kind.MAP: "MapFn",
    Kind.MAPT: "MapTFn",
    Kind.MAP_STREAM: "MapStreamFn",
    Kind.REDUCE: "ReduceFn",
}
# When a function server has several handlers and no --kind is given.
PREFERENCE = (Kind.MAP, Kind.MAPT, Kind.MAP_STREAM, Kind.REDUCE)


async def wait_until_ready(
    connection: Connection, deadline: float, expect: Optional[Service] = None
) -> Service:
    """Poll IsReady like the platform until a service answers ``ready``; return which.

    Args:
        connection: a connection to the server's socket.
        deadline: ``time.monotonic()`` value to give up at.
        expect: the service to ask; ``None`` asks the function service, then sink.

    Raises:
        RunError: nothing answered ready before the deadline.

    """
    services: tuple[Service, ...] = (expect,) if expect else ("function", "sink")
    while True:
        for service in services:
            if await connection.is_ready(service):
                return service
        if time.monotonic() >= deadline:
            raise RunError("the server did not answer IsReady with ready=true in time")
        await asyncio.sleep(0.05)


async def served_kinds(connection: Connection) -> list[Kind]:
    """The function kinds the server has handlers for, in :data:`PREFERENCE` order."""
    served = []
    for kind in PREFERENCE:
        assert kind.method is not None
        try:
            if await connection.serves(kind.method):
                served.append(kind)
        except CallError as err:
            raise RunError(f"could not ask whether the server serves {kind.value}: {err}") from None
    return served


async def choose_kind(
    connection: Connection, service: Service, requested: Optional[Kind], err: TextIO
) -> Kind:
    """The kind to call: ``requested`` if the server serves it, else the preferred one.

    Raises:
        UsageError: ``requested`` is not served.
        RunError: the server serves no kind at all.

    """
    if service == "sink":
        if requested not in (None, Kind.SINK):
            raise UsageError(f"--kind {requested.value} given, but the server is a sink")
        return Kind.SINK
    if requested is Kind.SINK:
        raise UsageError("--kind sink given, but the server is a function server")
    served = await served_kinds(connection)
    names = ", ".join(k.value for k in served) or "none"
    if requested is not None:
        if requested not in served:
            raise UsageError(f"--kind {requested.value} given, but the server serves: {names}")
        return requested
    if not served:
        raise RunError("the function server has no handler for map, mapt, map-stream or reduce")
    if len(served) > 1:
        print(
            f"pynumaflow: the server serves {names}; using {served[0].value} (choose with --kind)",
            file=err,
        )
    return served[0]
