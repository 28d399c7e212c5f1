"""Start-up options: keyword arguments, else environment variables, else defaults.

The environment is read when a server is constructed, never at import.
"""

from __future__ import annotations

import logging
import os
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


@dataclass(frozen=True)
class ServerOptions:
    """Validated options shared by every server facade."""

    sock_path: Path
    server_info_file: Path
    max_message_size: int
    max_threads: int
    shutdown_grace_period: float

    @classmethod
    def resolve(
        cls,
        *,
        sock_name: str,
        sock_path: Optional[str],
        server_info_file: Optional[str],
        max_message_size: Optional[int],
        max_threads: Optional[int],
        shutdown_grace_period: Optional[float],
    ) -> ServerOptions:
        """Combine keyword arguments with the environment and defaults, validating each."""
        folder = run_dir()
        grace = DEFAULT_SHUTDOWN_GRACE_PERIOD
        if shutdown_grace_period is not None:
            if isinstance(shutdown_grace_period, bool) or shutdown_grace_period < 0:
                raise ValueError(
                    f"shutdown_grace_period must be >= 0 seconds, got {shutdown_grace_period!r}"
                )
            grace = float(shutdown_grace_period)
        if os.environ.get("PYTHONDEBUG"):
            logging.getLogger("pynumaflow").setLevel(logging.DEBUG)
        return cls(
            sock_path=Path(sock_path) if sock_path else folder / sock_name,
            server_info_file=Path(server_info_file) if server_info_file else folder / "server-info",
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
        )
