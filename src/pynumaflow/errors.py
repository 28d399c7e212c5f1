"""The errors a user of pynumaflow can meet, in one place, and a way to report a fatal one.

- :class:`SocketPathError` (an ``OSError``): a server cannot listen on its socket path.
- :class:`WorkerExitedError` (a ``RuntimeError``): a ``MultiProcServer`` worker died.
- :class:`FeedAborted`: raised inside a reduce or sink handler still reading its input
  when the call was abandoned; let it propagate.
- :func:`persist_critical_error`: write an error where Numaflow's UI shows it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Optional

from pynumaflow._types.errors import FeedAborted, SocketPathError, WorkerExitedError

__all__ = ["FeedAborted", "SocketPathError", "WorkerExitedError", "persist_critical_error"]

ERRORS_DIR = "/var/numaflow/runtime/application-errors"
"""Where the platform (>= 1.5) reads each container's error files."""

_persisted = threading.Lock()


def persist_critical_error(
    error_code: str, error_message: str, error_details: str
) -> Optional[RuntimeError]:
    """Record a fatal error for Numaflow's UI (Numaflow >= 1.5), once per process.

    Writes ``{"container", "timestamp", "code", "message", "details"}`` to
    ``/var/numaflow/runtime/application-errors/<$NUMAFLOW_UD_CONTAINER_TYPE>/
    <timestamp>-udf.json`` (through ``current-udf.json``); an empty code becomes
    ``"Internal error"``. For errors the platform cannot see, e.g. before the server
    starts. As in pynumaflow 0.14.0, a second call writes nothing and *returns* a
    ``RuntimeError``; an I/O failure is printed, not raised.

    Returns:
        None, or the ``RuntimeError`` of a second call.

    """
    if not _persisted.acquire(blocking=False):
        return RuntimeError("Persist critical error function has already been executed.")
    try:
        _write(error_code, error_message, error_details, ERRORS_DIR)
    except Exception as err:  # reporting an error must not raise another
        print(f"Error in persisting critical error: {err}")
    return None


def _write(code: str, message: str, details: str, folder: str) -> None:
    container = os.environ.get("NUMAFLOW_UD_CONTAINER_TYPE") or "unknown-container"
    directory = os.path.join(folder, container)
    os.makedirs(directory, mode=0o777, exist_ok=True)
    timestamp = int(time.time())
    entry = {
        "container": container,
        "timestamp": timestamp,
        "code": code or "Internal error",
        "message": message,
        "details": details,
    }
    current = os.path.join(directory, "current-udf.json")
    with open(current, "w", encoding="utf-8") as file:
        json.dump(entry, file)
    os.rename(current, os.path.join(directory, f"{timestamp}-udf.json"))
