"""Running a server script in a subprocess the way the platform does, and waiting for it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

END = "U+005C__END__"


def start_script(
    source: str,
    run_dir: Path,
    name: str = "udf.py",
    *,
    container_type: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start `source` as a script whose default sockets live in `run_dir`.

    Like a UD container of a pod: `container_type` is its $NUMAFLOW_UD_CONTAINER_TYPE
    (None: unset, as on Numaflow 0.8-0.9); `env` adds variables.
    """
    script = run_dir / name
    script.write_text(source, encoding="utf-8")
    env = dict(os.environ, PYNUMAFLOW_RUN_DIR=str(run_dir), PYTHONUNBUFFERED="1", **(env or {}))
    env.pop("NUMAFLOW_UD_CONTAINER_TYPE", None)
    if container_type is not None:
        env["NUMAFLOW_UD_CONTAINER_TYPE"] = container_type
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_server_info(
    proc: subprocess.Popen[str], info: Path, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll like the platform: until the file ends with the marker, then parse it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}:\n{output}")
        try:
            text = info.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        if text.endswith(END):
            return json.loads(text[: -len(END)])  # type: ignore[no-any-return]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("server-info was not written in time")


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str]:
    """Wait for the process to exit; return its exit code and output."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"server did not exit in time:\n{output}") from None
    return proc.returncode, output


def write_script(folder: Path, source: str, name: str = "udf.py") -> str:
    """Write a (dedented) script into `folder`; its path."""
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return str(path)


def run_cli(*args: str, stdin: str = "") -> tuple[int, list[dict[str, Any]], str]:
    """Run the `pynumaflow` command in-process: exit code, stdout JSON lines, stderr."""
    from pynumaflow._cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()
