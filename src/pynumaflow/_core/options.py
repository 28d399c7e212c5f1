"""Start-up options: keyword arguments, else environment variables, else defaults.

The environment is read when a server is constructed, never at import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_RUN_DIR", "ServerOptions", "process_count"]

DEFAULT_RUN_DIR = "/var/run/numaflow"
RUN_DIR_ENV = "PYNUMAFLOW_RUN_DIR"
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_SHUTDOWN_GRACE_PERIOD = 5.0


def run_dir() -> Path:
    """The folder of the default sockets and server-info file ($PYNUMAFLOW_RUN_DIR)."""
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _default_max_threads() -> int:
    raw = os.environ.get("MAX_THREADS")
    if raw:
        try:
            return _positive_int("MAX_THREADS", int(raw))
        except ValueError:
            raise ValueError(f"MAX_THREADS must be a positive integer, got {raw!r}") from None
    return 4 * (os.cpu_count() or 1)


GRACE_ENV = "NUMAFLOW_GRPC_SHUTDOWN_GRACE_PERIOD_SECONDS"
"""pynumaflow 0.13+'s grace period variable (not set by the platform; see docs/compat.md)."""


def _grace_from_env() -> Optional[float]:
    raw = os.environ.get(GRACE_ENV, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{GRACE_ENV} must be a number of seconds, got {raw!r}") from None


def _flag_from_env(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"${name} must be 1/true/yes or 0/false/no, got {value!r}")


def process_count() -> int:
    """How many server processes to run: $NUM_CPU_MULTIPROC, else $NUMAFLOW_CPU_LIMIT, else 1.

    The platform sets NUMAFLOW_CPU_LIMIT to the container's CPU limit in whole cores.

    Raises:
        ValueError: the variable that applies is not a positive integer.

    """
    for name in ("NUM_CPU_MULTIPROC", "NUMAFLOW_CPU_LIMIT"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            return _positive_int(name, int(raw))
        except ValueError:
            raise ValueError(
                f"{name} must be a positive integer (a number of processes), got {raw!r}"
            ) from None
    return 1


PROTOCOLS_ENV = "PYNUMAFLOW_PROTOCOLS"
LEGACY = "legacy"
"""function.v1 and the UserDefinedSink sink.v1 of Numaflow 0.8-0.9 (function.sock, udsink.sock)."""
V1 = "v1"
"""map.v1, sourcetransformer.v1, reduce.v1 and sink.v1 of Numaflow >= 1.4 (a socket per kind)."""
ALL_PROTOCOLS = frozenset({LEGACY, V1})


def ud_container_type(default: str) -> str:
    """The container type the platform set ($NUMAFLOW_UD_CONTAINER_TYPE), else ``default``."""
    return os.environ.get("NUMAFLOW_UD_CONTAINER_TYPE") or default


def resolve_protocols(protocols: Optional[Iterable[str]]) -> frozenset[str]:
    """The protocol generations to serve: the keyword, else $PYNUMAFLOW_PROTOCOLS, else both."""
    source = "protocols"
    if protocols is None:
        raw = os.environ.get(PROTOCOLS_ENV, "")
        if not raw.strip():
            return ALL_PROTOCOLS
        protocols = [part.strip() for part in raw.split(",") if part.strip()]
        source = PROTOCOLS_ENV
    if isinstance(protocols, str):
        protocols = [protocols]
    chosen = frozenset(protocols)
    unknown = chosen - ALL_PROTOCOLS
    if unknown or not chosen:
        raise ValueError(
            f"{source} must name one or both of {LEGACY!r} (Numaflow 0.8-0.9) and "
            f"{V1!r} (Numaflow >= 1.4), got {sorted(chosen)!r}"
        )
    return chosen


@dataclass(frozen=True)
class ServerOptions:
    """Validated options shared by every server facade.

    The v1 sockets and server-info files live beside the legacy ones: in the folder of
    ``sock_path`` / ``server_info_file`` when those were given, else in the run folder.
    A server with no legacy endpoint has no ``sock_path`` (and, unless one was given,
    no ``server_info_file``).
    """

    sock_path: Optional[Path]
    server_info_file: Optional[Path]
    max_message_size: int
    max_threads: int
    shutdown_grace_period: float
    protocols: frozenset[str] = ALL_PROTOCOLS
    v1_sock_dir: Path = Path(DEFAULT_RUN_DIR)
    """Where the v1 sockets (map.sock, sink.sock, ...) are bound."""
    v1_info_dir: Path = Path(DEFAULT_RUN_DIR)
    """Where the v1 server-info files (mapper-server-info, ...) are written."""
    nack: bool = False
    """``$PYNUMAFLOW_NACK``: the platform is Numaflow >= 1.8.2, so NACK results are sent
    as such (and the v1 server-info files require that version)."""

    @classmethod
    def resolve(
        cls,
        *,
        sock_name: Optional[str],
        sock_path: Optional[str],
        server_info_file: Optional[str],
        max_message_size: Optional[int],
        max_threads: Optional[int],
        shutdown_grace_period: Optional[float],
        protocols: Optional[Iterable[str]] = None,
    ) -> ServerOptions:
        """Combine keyword arguments with the environment and defaults, validating each.

        ``sock_name`` is the legacy socket's default file name, None when the server
        has no legacy endpoint.
        """
        folder = run_dir()
        grace = DEFAULT_SHUTDOWN_GRACE_PERIOD
        if shutdown_grace_period is None:
            shutdown_grace_period = _grace_from_env()
        if shutdown_grace_period is not None:
            if isinstance(shutdown_grace_period, bool) or shutdown_grace_period < 0:
                raise ValueError(
                    f"shutdown_grace_period must be >= 0 seconds, got {shutdown_grace_period!r}"
                )
            grace = float(shutdown_grace_period)
        if os.environ.get("PYTHONDEBUG"):
            logging.getLogger("pynumaflow").setLevel(logging.DEBUG)
        legacy_sock = Path(sock_path) if sock_path else folder / sock_name if sock_name else None
        info = (
            Path(server_info_file)
            if server_info_file
            else folder / "server-info"
            if sock_name
            else None
        )
        return cls(
            sock_path=legacy_sock,
            server_info_file=info,
            max_message_size=_positive_int(
                "max_message_size",
                DEFAULT_MAX_MESSAGE_SIZE if max_message_size is None else max_message_size,
            ),
            max_threads=(
                _default_max_threads()
                if max_threads is None
                else _positive_int("max_threads", max_threads)
            ),
            shutdown_grace_period=grace,
            protocols=resolve_protocols(protocols),
            v1_sock_dir=legacy_sock.parent if legacy_sock is not None else folder,
            v1_info_dir=info.parent if info is not None else folder,
            nack=_flag_from_env("PYNUMAFLOW_NACK"),
        )
