"""The pynumaflow 0.14.0 wheel as an independent reference client of our v1 servers.

The real SDK's generated stubs (spec section 10: wire-compatible with Numaflow's v1
protocols, missing only NackOptions) talk to our server over its real socket. They
live in a virtualenv of their own, built once with ``python -m venv`` and
``pip install pynumaflow==0.14.0`` and cached in
``~/.cache/pynumaflow-tests/reference-0.14.0-py<X.Y>`` (``$PYNUMAFLOW_TEST_CACHE``
moves the folder). The client is ``reference_client_script.py``, run with that
virtualenv's python in isolated mode: it is never imported into the test process,
where our own ``pynumaflow`` package and protobuf descriptor pool live.

If no package index is reachable the tests that use the client are skipped, saying
so; any other install failure is an error.

Using it from a test (any v1 bidi service: ``map``, ``sourcetransform``, ``reduce``,
``sink``): take the session fixture ``reference_client`` (from ``conftest.py``), run
our server, and await one conversation; requests and responses are proto JSON (see
the script's docstring; :func:`b64` and :func:`rfc3339` help build requests)::

    async def test_reduce_against_the_reference(reference_client, ...):
        async with serving(sock_path, info_path, reduce_handler=h):
            talk = await reference_client.converse(
                "reduce",
                sock_dir / "reduce.sock",
                [{"operation": {"event": "OPEN", "windows": [window]},
                  "payload": {"keys": ["k"], "value": b64(b"1")}}],
                await_first=False,  # reduce has no handshake
            )
        assert talk["code"] == "OK"
        assert talk["responses"][-1]["EOF"] is True

``converse`` is a coroutine (the server under test usually runs on the test's own
event loop); :meth:`ReferenceClient.converse_blocking` is for servers in another
process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REFERENCE_VERSION = "0.14.0"
# The wheel's *_pb2_grpc modules raise on older grpcio (spec section 10).
REQUIREMENTS = [f"pynumaflow=={REFERENCE_VERSION}", "grpcio>=1.75.0"]
SCRIPT = Path(__file__).with_name("reference_client_script.py")
CACHE_ENV = "PYNUMAFLOW_TEST_CACHE"

# What pip prints when it cannot reach an index at all (not when a package is missing).
_UNREACHABLE = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Name or service not known|"
    r"Network is unreachable|Connection refused|ConnectTimeout|Read timed out|"
    r"Max retries exceeded|ProxyError|Could not fetch URL"
)

__all__ = [
    "REFERENCE_VERSION",
    "IndexUnreachableError",
    "ReferenceClient",
    "b64",
    "reference_python",
    "rfc3339",
    "unb64",
]


class IndexUnreachableError(RuntimeError):
    """pip could not reach a package index to install the reference client."""


def b64(data: bytes) -> str:
    """Bytes as proto JSON writes them."""
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """Proto JSON bytes back to bytes."""
    return base64.b64decode(text)


def rfc3339(moment: datetime) -> str:
    """A datetime (naive means UTC) as a proto JSON Timestamp."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def _cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pynumaflow-tests")


def _clean_env() -> dict[str, str]:
    """The environment, less what would point another python at our code."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (so parallel test runs build the venv once)."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def reference_python() -> Path:
    """The python of the cached reference virtualenv, built on first use.

    Raises:
        IndexUnreachableError: pip could not reach a package index.
        RuntimeError: the install failed for another reason (its output attached).

    """
    root = _cache_root()
    target = root / f"reference-{REFERENCE_VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}"
    python = target / "bin" / "python"
    complete = target / ".complete"
    if complete.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{target.name}.lock"):
        if complete.exists():  # another run built it while this one waited
            return python
        shutil.rmtree(target, ignore_errors=True)  # a build that did not finish
        env = _clean_env()
        subprocess.run(
            [sys.executable, "-m", "venv", str(target)], check=True, capture_output=True, env=env
        )
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        install = subprocess.run(
            [*pip, "--retries", "2", "--timeout", "30", *REQUIREMENTS],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        output = install.stdout + install.stderr
        if install.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            unreachable = [line for line in output.splitlines() if _UNREACHABLE.search(line)]
            if unreachable:
                raise IndexUnreachableError(
                    f"no package index reachable to install {' '.join(REQUIREMENTS)} "
                    f"(pip said: {unreachable[-1].strip()[:300]})"
                )
            raise RuntimeError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{output}")
        modules = ", ".join(
            f"pynumaflow.proto.{m}_pb2_grpc"
            for m in (
                "mapper.map",
                "sourcetransformer.transform",
                "reducer.reduce",
                "sinker.sink",
                "sourcer.source",
                "sideinput.sideinput",
            )
        )
        subprocess.run(
            [str(python), "-I", "-c", f"import google.rpc.status_pb2, {modules}"],
            check=True,
            capture_output=True,
            env=env,
        )
        complete.write_text(output, encoding="utf-8")
    return python


class ReferenceClient:
    """Runs conversations with ``reference_client_script.py`` in the reference virtualenv."""

    def __init__(self, python: Path) -> None:
        self.python = python

    def _command(self) -> list[str]:
        return [str(self.python), "-I", str(SCRIPT)]

    @staticmethod
    def _spec(
        service: str,
        socket: Path | str,
        requests: Sequence[dict[str, Any]],
        await_first: bool,
        metadata: Sequence[tuple[str, str]],
        timeout: float,
        read_before_close: int = 0,
    ) -> bytes:
        spec = {
            "service": service,
            "socket": str(socket),
            "requests": list(requests),
            "await_first": await_first,
            "metadata": [list(pair) for pair in metadata],
            "timeout": timeout,
            "read_before_close": read_before_close,
        }
        return json.dumps(spec).encode()

    @staticmethod
    def _result(returncode: int | None, stdout: bytes, stderr: bytes) -> dict[str, Any]:
        if returncode != 0:
            raise AssertionError(
                f"reference client exited with {returncode}:\n{stderr.decode(errors='replace')}"
            )
        return json.loads(stdout)  # type: ignore[no-any-return]

    async def converse(
        self,
        service: str,
        socket: Path | str,
        requests: Sequence[dict[str, Any]],
        *,
        await_first: bool = True,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
        read_before_close: int = 0,
    ) -> dict[str, Any]:
        """Call IsReady, then hold one bidi conversation; return what the script printed.

        Args:
            service: ``map``, ``sourcetransform``, ``reduce``, ``accumulator``, ``sink``,
                ``source-read``, ``source-ack``, or a unary one (see the script):
                ``source-nack``, ``source-pending``, ``source-partitions``, ``sideinput``.
            socket: the server's Unix socket.
            requests: the request messages in proto JSON, the handshake included.
            await_first: wait for the first response before sending the rest (as the
                platform waits for the handshake's answer).
            metadata: request headers of the call.
            timeout: seconds the call may take.
            read_before_close: responses to read after writing the requests and before
                half-closing (what a server sends while the stream is open).

        """
        spec = self._spec(
            service, socket, requests, await_first, metadata, timeout, read_before_close
        )
        process = await asyncio.create_subprocess_exec(
            *self._command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_clean_env(),
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(spec), timeout + 30)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise
        return self._result(process.returncode, stdout, stderr)

    def converse_blocking(
        self,
        service: str,
        socket: Path | str,
        requests: Sequence[dict[str, Any]],
        *,
        await_first: bool = True,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """:meth:`converse` for a server running in another process (blocks)."""
        spec = self._spec(service, socket, requests, await_first, metadata, timeout)
        done = subprocess.run(
            self._command(), input=spec, capture_output=True, env=_clean_env(), timeout=timeout + 30
        )
        return self._result(done.returncode, done.stdout, done.stderr)
