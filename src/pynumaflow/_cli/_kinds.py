"""Which kind of UDF a server is: asked over the wire, never by running user code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Literal, Optional, TextIO

from pynumaflow._cli._errors import RunError, UsageError
from pynumaflow._client.legacy import CallError, Connection, FunctionMethod
from pynumaflow._client.v1 import V1Connection
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import Kind

__all__ = [
    "PREFERENCE",
    "Kind",
    "choose_kind",
    "choose_v1_kind",
    "kind_named",
    "wait_until_ready",
    "wait_until_v1_ready",
]

Service = Literal["function", "sink"]


# The function kinds, in the order chosen when a server serves several and no --kind is given.
PREFERENCE = kinds.FUNCTION.kinds
_POLL = 0.05


def kind_named(name: str) -> Kind:
    """The kind whose ``--kind`` name is ``name``.

    Raises:
        KeyError: no kind is named so.

    """
    for kind in kinds.EVERY_KIND:
        if kind.name == name:
            return kind
    raise KeyError(name)


def _method(kind: Kind) -> FunctionMethod:
    method = kind.legacy_method
    if method not in ("MapFn", "MapTFn", "MapStreamFn", "ReduceFn"):
        raise RunError(f"the legacy function client cannot call {kind.name}")
    return method  # type: ignore[return-value]  # checked just above


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
        await asyncio.sleep(_POLL)


async def wait_until_v1_ready(
    connection: V1Connection, candidates: Sequence[Kind], deadline: float
) -> Kind:
    """Poll the v1 IsReady of each candidate's service until one answers ``ready``.

    Raises:
        RunError: none answered ready before the deadline.

    """
    while True:
        for kind in candidates:
            if await connection.is_ready(kind.name):
                return kind
        if time.monotonic() >= deadline:
            names = ", ".join(sorted({kind.name for kind in candidates}))
            raise RunError(
                f"the server did not answer the v1 IsReady ({names}) with ready=true in time"
            )
        await asyncio.sleep(_POLL)


def choose_v1_kind(served: Sequence[Kind], requested: Optional[Kind], err: TextIO) -> Kind:
    """The kind to call on v1: ``requested`` if served, else the first in table order.

    Raises:
        UsageError: ``requested`` is not served.

    """
    names = ", ".join(k.name for k in served)
    if requested is not None:
        if requested not in served:
            raise UsageError(f"--kind {requested.name} given, but the server serves: {names}")
        return requested
    if len(served) > 1:
        print(
            f"pynumaflow: the server serves {names}; using {served[0].name} (choose with --kind)",
            file=err,
        )
    return served[0]


async def served_kinds(connection: Connection) -> list[Kind]:
    """The function kinds the server has handlers for, in :data:`PREFERENCE` order."""
    served = []
    for kind in PREFERENCE:
        try:
            if await connection.serves(_method(kind)):
                served.append(kind)
        except CallError as err:
            raise RunError(f"could not ask whether the server serves {kind.name}: {err}") from None
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
        if requested not in (None, kinds.SINK):
            raise UsageError(f"--kind {requested.name} given, but the server is a sink")
        return kinds.SINK
    if requested is kinds.SINK:
        raise UsageError("--kind sink given, but the server is a function server")
    served = await served_kinds(connection)
    names = ", ".join(k.name for k in served) or "none"
    if requested is not None:
        if requested not in served:
            raise UsageError(f"--kind {requested.name} given, but the server serves: {names}")
        return requested
    if not served:
        raise RunError(f"the function server has no handler for {_names(PREFERENCE)}")
    if len(served) > 1:
        print(
            f"pynumaflow: the server serves {names}; using {served[0].name} (choose with --kind)",
            file=err,
        )
    return served[0]


def _names(choices: tuple[Kind, ...]) -> str:
    names = [kind.name for kind in choices]
    return f"{', '.join(names[:-1])} or {names[-1]}"
