"""One modern-API script served twice: by our pynumaflow and by pynumaflow 0.14.0 itself.

The script runs unchanged in a subprocess under each: ours with this test process's
python and ``$PYNUMAFLOW_RUN_DIR``, the reference with the reference virtualenv's python
(``reference_client.py``), whose socket paths, constants of ``pynumaflow._constants``
that 0.14.0 binds at import, a ``sitecustomize`` moves into a temporary folder. Both
are driven by the 0.14.0 wheel's stubs with the same requests; the tests compare what
they answered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference_client import ReferenceClient

_SITECUSTOMIZE = """\
import os

_run_dir = os.environ.get("REFERENCE_RUN_DIR")
if _run_dir:
    import pynumaflow._constants as _constants

    for _name in dir(_constants):
        _value = getattr(_constants, _name)
        if isinstance(_value, str) and _value.startswith("/var/run/numaflow"):
            setattr(_constants, _name, _value.replace("/var/run/numaflow", _run_dir, 1))
"""

INFO_FILES = {
    "map": "mapper-server-info",
    "mapstream": "mapper-server-info",
    "sourcetransform": "sourcetransformer-server-info",
    "reduce": "reducer-server-info",
    "reducestream": "reducestreamer-server-info",
    "accumulator": "accumulator-server-info",
    "sink": "sinker-server-info",
    "batchmap": "mapper-server-info",
}
SOCKETS = {
    "map": "map.sock",
    "mapstream": "mapstream.sock",
    "sourcetransform": "sourcetransform.sock",
    "reduce": "reduce.sock",
    "reducestream": "reducestream.sock",
    "accumulator": "accumulator.sock",
    "sink": "sink.sock",
    "batchmap": "batchmap.sock",
}
# The reference client's service where a kind shares another's protocol.
SERVICES = {"mapstream": "map", "batchmap": "map", "reducestream": "reduce"}


@dataclass
class Served:
    """What one server answered, and how its process ended after SIGTERM."""

    talk: dict[str, Any]
    exit_code: int
    output: str


def serve_and_converse(
    client: ReferenceClient,
    script: Path,
    kind: str,
    requests: Sequence[dict[str, Any]],
    run_dir: Path,
    *,
    reference: bool,
    env: dict[str, str] | None = None,
    await_first: bool = True,
    sock_name: str | None = None,
) -> Served:
    """Run ``script`` (under 0.14.0 if ``reference``), hold one conversation, SIGTERM it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    if reference:
        patch = run_dir / "patch"
        patch.mkdir(exist_ok=True)
        (patch / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
        environment.update(REFERENCE_RUN_DIR=str(run_dir), PYTHONPATH=str(patch))
        python = str(client.python)
    else:
        environment["PYNUMAFLOW_RUN_DIR"] = str(run_dir)
        environment.pop("PYTHONPATH", None)
        python = sys.executable
    proc = subprocess.Popen(
        [python, str(script)],
        env=environment,
        cwd=run_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(proc, run_dir / INFO_FILES[kind])
        sock = run_dir / (sock_name or SOCKETS[kind])
        service = SERVICES.get(kind, kind)
        talk = client.converse_blocking(service, sock, requests, await_first=await_first)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Served(talk, proc.returncode, output)


def _wait_for(proc: subprocess.Popen[str], info: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}:\n{output}")
        if info.exists() and info.read_text(encoding="utf-8").endswith("U+005C__END__"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{info} was not written in time")
