"""Start-up options: keyword arguments, else environment variables, else defaults.

The environment is read when a server is constructed, never at import.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RUN_DIR",
    "ServerOptions",
    "pool_stall_after",
    "process_count",
]

DEFAULT_RUN_DIR = "/var/run/numaflow"
RUN_DIR_ENV = "PYNUMAFLOW_RUN_DIR"
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_SHUTDOWN_GRACE_PERIOD = 5.0


POOL_STALL_AFTER_ENV = "PYNUMAFLOW_POOL_STALL_AFTER"
DEFAULT_POOL_STALL_AFTER = 60.0


def pool_stall_after() -> float:
    """Seconds the handler pool may make no progress, with calls waiting, and be ready.

    ``$PYNUMAFLOW_POOL_STALL_AFTER``, else 60 (docs/reliability.md).
    """
    raw = os.environ.get(POOL_STALL_AFTER_ENV, "").strip()
    if not raw:
        return DEFAULT_POOL_STALL_AFTER
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{POOL_STALL_AFTER_ENV} must be a positive number, got {raw!r}")
    return value


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


class _UntilConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr only while the root logger has no handler (logging unconfigured)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def configure_logging() -> None:
    """Show the server's own log lines by default, never overriding the application's.

    While the application has configured no logging (the root logger has no handler),
    records of the ``pynumaflow`` logger from INFO up go to stderr; once it has, they
    reach its handlers as any library's do, and the logger's level is left as the
    application set it. ``$PYTHONDEBUG`` (or ``python -d``) lowers the level to DEBUG.
    """
    logger = logging.getLogger("pynumaflow")
    if not any(isinstance(h, _UntilConfigured) for h in logger.handlers):
        handler = _UntilConfigured()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    if os.environ.get("PYTHONDEBUG") or sys.flags.debug:
        logger.setLevel(logging.DEBUG)
    elif logger.level == logging.NOTSET and not logging.getLogger().handlers:
        logger.setLevel(logging.INFO)


PROTOCOLS_ENV = "PYNUMAFLOW_PROTOCOLS"
LEGACY = "legacy"
"""function.v1 and the UserDefinedSink sink.v1 of Numaflow 0.8-0.9 (function.sock, udsink.sock)."""
V1 = "v1"
"""map.v1, sourcetransformer.v1, reduce.v1 and sink.v1 of Numaflow >= 1.4 (a socket per kind)."""
ALL_PROTOCOLS = frozenset({LEGACY, V1})


CONTAINER_TYPE_ENV = "NUMAFLOW_UD_CONTAINER_TYPE"


def ud_container_type() -> Optional[str]:
    """The container type the platform set ($NUMAFLOW_UD_CONTAINER_TYPE), or None."""
    return os.environ.get(CONTAINER_TYPE_ENV, "").strip() or None


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
    container_type: Optional[str] = None
    """``$NUMAFLOW_UD_CONTAINER_TYPE``: the container's role (None: unset)."""

    @property
    def serves_legacy(self) -> bool:
        """Whether to serve the legacy socket: asked for, and no role says otherwise.

        Only Numaflow >= 1.2 sets the container type, and it never dials the legacy
        socket: with a role, it is served only when asked for alone (``protocols``).
        """
        return LEGACY in self.protocols and (
            self.container_type is None or V1 not in self.protocols
        )

    @property
    def serves_v1(self) -> bool:
        """Whether to serve the v1 endpoints (those the container's role calls for)."""
        return V1 in self.protocols

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
        configure_logging()
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
            container_type=ud_container_type(),
        )
