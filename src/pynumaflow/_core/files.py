"""The files a server owns: its Unix socket path and its server-info file."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional

from pynumaflow import __version__
from pynumaflow._types.errors import SocketPathError

__all__ = ["SERVER_INFO_END", "SOCKET_MODE", "prepare_socket_path", "write_server_info"]

_LOGGER = logging.getLogger("pynumaflow")

SERVER_INFO_END = "U+005C__END__"
SOCKET_MODE = 0o660


def prepare_socket_path(path: Path) -> None:
    """Make ``path`` bindable: its folder exists, a stale socket is removed.

    Raises:
        SocketPathError: the folder cannot be created, the path is not a socket, or
            another server listens there.

    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SocketPathError(
            err.errno, f"cannot create the socket directory {path.parent}: {err.strerror}"
        ) from None
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketPathError(
            errno.EEXIST, f"{path} exists and is not a socket; remove it or pick another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: a stale socket from an earlier run
        _LOGGER.info("removed stale socket %s", path)
    else:
        raise SocketPathError(errno.EADDRINUSE, f"another server is listening on {path}")
    finally:
        probe.close()


def write_server_info(
    path: Path,
    protocol: str,
    metadata: Mapping[str, str],
    minimum_numaflow_version: Optional[str] = None,
) -> None:
    """Write the server-info file atomically: JSON followed by the end marker.

    ``minimum_numaflow_version`` is written only for the v1 protocols' files.
    """
    info: Dict[str, Any] = {"protocol": protocol, "language": "python"}
    if minimum_numaflow_version is not None:
        info["minimum_numaflow_version"] = minimum_numaflow_version
    info["version"] = __version__
    info["metadata"] = dict(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: importing tempfile (shutil, random, bz2, lzma...) costs ~4 ms
    # of start-up. One process writes one file at a time, so its pid makes the name unique.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(info) + SERVER_INFO_END)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
