"""The files a server owns: its Unix socket path and its server-info file."""

from __future__ import annotations

import errno
import fcntl
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

__all__ = [
    "SERVER_INFO_END",
    "SOCKET_MODE",
    "InfoClaim",
    "path_error",
    "prepare_socket_path",
    "write_server_info",
]

_LOGGER = logging.getLogger("pynumaflow")

SERVER_INFO_END = "U+005C__END__"
SOCKET_MODE = 0o660


_FIX_PERMISSION = (
    " (outside a Numaflow pod, set $PYNUMAFLOW_RUN_DIR to a folder you can write, or pass "
    "sock_path= and server_info_file=)"
)


def path_error(err: OSError, what: str) -> SocketPathError:
    """``what`` failed with ``err``: the error to raise, naming the fix for a permission."""
    hint = _FIX_PERMISSION if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
    return SocketPathError(err.errno, f"{what}: {err.strerror}{hint}")


def prepare_socket_path(path: Path) -> None:
    """Make ``path`` bindable: its folder exists, a stale socket is removed.

    Raises:
        SocketPathError: the folder cannot be created, the path is not a socket, or
            another server listens there.

    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise path_error(err, f"cannot create the socket directory {path.parent}") from None
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


class InfoClaim:
    """A server's hold on a server-info file, so that two servers never share one.

    Servers started in one folder would otherwise overwrite, and on stop delete, each
    other's file. The hold is an exclusive lock on a hidden file beside it, which the
    system releases when the process dies: a file left by a crashed run blocks nobody.
    """

    def __init__(self, info: Path) -> None:
        self._path = info.with_name(f".{info.name}.lock")
        try:
            info.parent.mkdir(parents=True, exist_ok=True)
            self._fd: Optional[int] = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise path_error(err, f"cannot write the server-info file {info}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release(unlink=False)
            raise SocketPathError(
                errno.EADDRINUSE,
                f"another server running in {info.parent} announces itself in {info}: "
                "give each server its own server_info_file (and sock_path), or its own "
                "folder ($PYNUMAFLOW_RUN_DIR); in a pod, each container gets its role "
                "from $NUMAFLOW_UD_CONTAINER_TYPE",
            ) from None

    def release(self, *, unlink: bool = True) -> None:
        """Let the file go (removing the lock file while still holding it)."""
        if self._fd is None:
            return
        if unlink:
            self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


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
