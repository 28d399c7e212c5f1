"""What a run folder or a socket serves, read from its server-info files and names.

Nothing here runs user code or calls the server: the v1 server-info files say which
kinds are served (the map's ``MAP_MODE`` tells map from map stream), socket names say
which protocol a socket speaks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from pynumaflow._cli._errors import RunError, UsageError
from pynumaflow._core.options import LEGACY, V1
from pynumaflow._faces import kinds
from pynumaflow._faces.kinds import EVERY_KIND, FAMILIES, Kind

__all__ = [
    "LEGACY_INFO",
    "PULLED",
    "SERVER_INFO_END",
    "Served",
    "read_info",
    "role_for",
    "served_by_socket",
    "v1_served",
]

LEGACY_INFO = "server-info"
SERVER_INFO_END = "U+005C__END__"
LEGACY_SOCKETS = tuple(f.legacy.sock_name for f in FAMILIES if f.legacy is not None)
PULLED = (kinds.SOURCE, kinds.SIDE_INPUT)
"""The v1-only kinds ``pynumaflow run`` reads from instead of sending input to."""


@dataclass(frozen=True)
class Served:
    """Where to send: the protocol generation and its sockets.

    Attributes:
        protocol: ``legacy`` or ``v1``.
        sock: the legacy socket (legacy only).
        sockets: on v1, each kind served (or that may be served) and its socket.

    """

    protocol: str
    sock: Optional[Path] = None
    sockets: Dict[Kind, Path] = field(default_factory=dict)


def read_info(path: Path) -> Optional[Dict[str, Any]]:
    """A complete server-info file's JSON; None while it is absent or being written.

    Raises:
        RunError: the file is complete but not valid JSON.

    """
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return None
    if not text.endswith(SERVER_INFO_END):
        return None
    try:
        info = json.loads(text[: -len(SERVER_INFO_END)])
    except ValueError as err:
        raise RunError(f"the server-info file {path.name} is not valid JSON: {err}") from None
    return info if isinstance(info, dict) else {}


def _announces(info: Dict[str, Any], kind: Kind) -> bool:
    assert kind.v1 is not None
    metadata = info.get("metadata") or {}
    wanted = dict(kind.v1.metadata)
    if kind is kinds.MAP:  # a missing or unknown MAP_MODE means unary, as on the platform
        return metadata.get("MAP_MODE") not in (kinds.STREAM_MAP, kinds.BATCH_MAP_MODE)
    return all(metadata.get(key) == value for key, value in wanted.items())


def v1_served(folder: Path, role: Optional[str]) -> Dict[Kind, Path]:
    """The kinds a container of ``role`` serves on v1 in ``folder``, and their sockets.

    A kind counts once its server-info file is complete (a socket named in it but
    absent from ``folder`` is given as the path it should have).
    """
    served: Dict[Kind, Path] = {}
    for kind in EVERY_KIND:
        socket = kind.v1.for_role(role) if kind.v1 is not None else None
        if socket is None:
            continue
        info = read_info(folder / socket.info)
        if info is not None and _announces(info, kind):
            served[kind] = folder / socket.sock
    return served


def _v1_kinds_named(name: str) -> list[Kind]:
    return [
        kind
        for kind in EVERY_KIND
        if kind.v1 is not None and any(s.sock == name for s in kind.v1.sockets)
    ]


def served_by_socket(sock: Path, protocol: Optional[str], kind: Optional[Kind]) -> Served:
    """The protocol a socket speaks: ``protocol``, else by its name or the files beside it.

    The Numaflow >= 1.4 names (map.sock, sink.sock, ...) are v1, function.sock and
    udsink.sock legacy; another name is v1 when v1 server-info files are beside it
    and no legacy one.

    Raises:
        UsageError: ``protocol`` contradicts the socket's name.

    """
    named = _v1_kinds_named(sock.name)
    if protocol == LEGACY and named:
        raise UsageError(
            f"{sock.name} is a Numaflow >= 1.4 socket ({_service(named)}): --protocol legacy "
            f"speaks to {' or '.join(LEGACY_SOCKETS)} (drop --protocol, or use v1)"
        )
    if protocol == V1 and sock.name in LEGACY_SOCKETS:
        raise UsageError(
            f"{sock.name} is a legacy socket (Numaflow 0.8-0.9): --protocol v1 needs the "
            "server's v1 socket, e.g. map.sock or sink.sock, beside it"
        )
    if protocol is None:
        if named:
            protocol = V1
        elif sock.name in LEGACY_SOCKETS:
            protocol = LEGACY
        else:
            v1_info = any(sock.parent.glob("*-server-info"))
            protocol = V1 if v1_info and read_info(sock.parent / LEGACY_INFO) is None else LEGACY
    if protocol == LEGACY:
        return Served(LEGACY, sock=sock)
    if kind is not None and named and kind not in named:
        raise UsageError(
            f"--kind {kind.name} given, but {sock.name} is the socket of "
            f"{' or '.join(k.name for k in named)}"
        )
    if kind is not None:
        candidates = [kind]
    elif named:
        candidates = named
    else:  # another name: what the files beside it announce, else any kind
        announced = [k for k in EVERY_KIND if k.v1 is not None and _announced_beside(sock, k)]
        candidates = announced or [k for k in EVERY_KIND if k.v1 is not None]
    return Served(V1, sockets=dict.fromkeys(candidates, sock))


def _announced_beside(sock: Path, kind: Kind) -> bool:
    assert kind.v1 is not None
    for socket in kind.v1.sockets:
        info = read_info(sock.parent / socket.info)
        if info is not None and _announces(info, kind):
            return True
    return False


def _service(named: list[Kind]) -> str:
    from pynumaflow._client.v1 import SERVICES

    return SERVICES[named[0].name]


# What a script's text says of its kind (a sketch: --kind decides): the server it
# builds, else the function handlers it passes, else the modules it imports.
_SERVERS = (
    (re.compile(r"\b(?:Async)?Sink(?:Async)?(?:Server)?\s*\("), kinds.SINK),
    (re.compile(r"\bSource(?:Async)?Server\s*\("), kinds.SOURCE),
    (re.compile(r"\bSideInputServer\s*\("), kinds.SIDE_INPUT),
    (re.compile(r"\bSourceTransform\w*Server\s*\("), kinds.MAPT),
)
_UDF_HANDLERS = re.compile(r"\b(?:map_handler|map_stream_handler|reduce_handler)\b")
_MAPT_HANDLER = re.compile(r"\bmapt_handler\b")


def _module(name: str) -> re.Pattern[str]:
    return re.compile(rf"\bpynumaflow\.{name}\b|from\s+pynumaflow\s+import\s+[^\n]*\b{name}\b")


_MODULES = (
    (_module("sink(?:er)?"), kinds.SINK),
    (_module("sourcer"), kinds.SOURCE),
    (_module("sourcetransformer"), kinds.MAPT),
)


def role_for(kind: Optional[Kind], script: str) -> str:
    """The ``$NUMAFLOW_UD_CONTAINER_TYPE`` a pod would run the script with.

    From ``kind`` when given, else read from the script's text (never run): the server
    class it builds (a sink, source, side-input or transformer server), else the 0.4
    handlers it passes (only a ``mapt_handler``: ``transformer``; another: ``udf``),
    else the sink, source or transformer module it imports; anything else is ``udf``.
    """
    if kind is None:
        kind = next((k for pattern, k in _SERVERS if pattern.search(script)), None)
    if kind is None and _MAPT_HANDLER.search(script) and not _UDF_HANDLERS.search(script):
        kind = kinds.MAPT
    if kind is None and not _UDF_HANDLERS.search(script):
        kind = next((k for pattern, k in _MODULES if pattern.search(script)), None)
    kind = kind or kinds.MAP
    assert kind.v1 is not None  # every kind pynumaflow run sends has a v1 endpoint
    return kind.v1.sockets[0].role
