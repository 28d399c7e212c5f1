"""The user's script as a subprocess, run the way the platform runs a UDF container.

Its default sockets and server-info file go to a fresh temporary folder, handed to it
in ``PYNUMAFLOW_RUN_DIR``; its output is relayed to our stderr (and the last lines
kept for error messages); it is stopped with SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional, TextIO

from pynumaflow._cli._errors import RunError
from pynumaflow._core.options import CONTAINER_TYPE_ENV, RUN_DIR_ENV
from pynumaflow._faces.kinds import SIDE_INPUT, SOURCE, Kind

__all__ = ["Exit", "Script"]

SERVER_INFO = "server-info"
SERVER_INFO_END = "U+005C__END__"
SOCKETS = ("function.sock", "udsink.sock")
PULLED = (SOURCE, SIDE_INPUT)
"""The v1-only kinds ``pynumaflow run`` reads from instead of sending input to."""
_TAIL_LINES = 20
_POLL = 0.02
_EXIT_GRACE = 1.0
_V1_ONLY_AFTER = 1.0
_BEFORE_READY = "before it was ready"


@dataclass(frozen=True)
class Exit:
    """How the script ended after it was told to stop."""

    ok: bool
    message: str


class Script:
    """A running user script; use as a context manager so it never outlives the command.

    Args:
        path: the script.
        args: its command-line arguments.
        quiet: do not relay its output (it is still shown if it fails).
        err: where its output and our notes go.

    """

    def __init__(self, path: Path, args: list[str], *, quiet: bool, err: TextIO) -> None:
        self.path = path
        self.run_dir = Path(tempfile.mkdtemp(prefix="pnf-run-"))
        self._quiet = quiet
        self._err = err
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env[RUN_DIR_ENV] = str(self.run_dir)
        # It speaks the 0.8-0.9 protocols, which a server with a role never serves.
        env.pop(CONTAINER_TYPE_ENV, None)
        self._proc = subprocess.Popen(
            [sys.executable, str(path), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C on the terminal reaches us, and we stop it.
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._relay = threading.Thread(
            target=self._relay_output, args=(self._proc.stdout,), name="pynumaflow-relay"
        )
        self._relay.start()

    @property
    def pid(self) -> int:
        """The script's process id."""
        return self._proc.pid

    def __enter__(self) -> Script:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._proc.poll() is None:  # we were interrupted: still give it a clean stop
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(_EXIT_GRACE * 2)
            except subprocess.TimeoutExpired:
                self._kill()
        self._relay.join(timeout=2)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _relay_output(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            self._tail.append(line)
            if not self._quiet:
                self._err.write(line)
                self._err.flush()
        stream.close()

    def _exited_message(self, when: str) -> str:
        code = self._proc.returncode
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        message = f"{self.path.name} {how} {when}"
        if code == 0 and when == _BEFORE_READY:
            message += (
                " without starting a server: does it call start()? (Server(...).start(); "
                "an AsyncServer's must be awaited, e.g. aiorun.run(server.start()))"
            )
        if self._quiet:
            self._relay.join(timeout=1)  # its output ends when it does: let the relay catch up
            if self._tail:
                message += "; its last output:\n" + "".join(self._tail).rstrip("\n")
        return message

    def check_alive(self, when: str, grace: float = _EXIT_GRACE) -> None:
        """Raise :class:`RunError` if the script has exited or exits within ``grace`` s.

        Called when the connection is lost: the process may still be on its way out.

        Args:
            when: what it was doing, for the message (e.g. ``"while handling line 3"``).
            grace: how long to wait for it to exit.

        """
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(grace)
        if self._proc.poll() is not None:
            raise RunError(self._exited_message(when))

    def wait_for_socket(self, deadline: float) -> tuple[Path, dict[str, Any]]:
        """Wait like the platform for the server-info file; return the socket and the info.

        Raises:
            RunError: the script exited, or wrote no server-info before the deadline, or
                its socket is not in the run folder.

        """
        info_file = self.run_dir / SERVER_INFO
        v1_seen: Optional[float] = None
        while True:
            self.check_alive(_BEFORE_READY, grace=0)
            try:
                text = info_file.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            if text.endswith(SERVER_INFO_END):
                break
            now = time.monotonic()
            if v1_seen is None and any(self.run_dir.glob("*-server-info")):
                v1_seen = now
            # The core writes every server-info file at once: v1 alone means v1 only.
            if now >= deadline or (v1_seen is not None and now - v1_seen > _V1_ONLY_AFTER):
                raise RunError(self._no_server_info(info_file))
            time.sleep(_POLL)
        try:
            info = json.loads(text[: -len(SERVER_INFO_END)])
        except ValueError as err:
            raise RunError(f"the server-info file is not valid JSON: {err}") from None
        for name in SOCKETS:
            if (self.run_dir / name).exists():
                return self.run_dir / name, info
        raise RunError(
            f"{self.path.name} wrote server-info but created neither {' nor '.join(SOCKETS)} "
            f"in {self.run_dir}; if it passes sock_path=, drop it so that {RUN_DIR_ENV} applies"
        )

    def wait_for_v1(self, kind: Kind, deadline: float) -> Path:
        """Wait like the platform for ``kind``'s v1 server-info file; return its socket.

        Raises:
            RunError: the script exited, or wrote no such file before the deadline.

        """
        assert kind.v1 is not None
        socket = kind.v1.sockets[0]
        sock_name, info_name = socket.sock, socket.info
        info_file = self.run_dir / info_name
        while True:
            self.check_alive("before it was ready", grace=0)
            with contextlib.suppress(FileNotFoundError):
                if info_file.read_text(encoding="utf-8").endswith(SERVER_INFO_END):
                    return self.run_dir / sock_name
            if time.monotonic() >= deadline:
                raise RunError(f"{self.path.name} wrote no {info_name} in time")
            time.sleep(_POLL)

    def pulled_kind(self) -> Optional[Kind]:
        """The source or side-input kind whose server-info file the script wrote, if any."""
        for kind in PULLED:
            assert kind.v1 is not None
            if (self.run_dir / kind.v1.sockets[0].info).exists():
                return kind
        return None

    def _no_server_info(self, info_file: Path) -> str:
        others = sorted(p.name for p in self.run_dir.glob("*-server-info"))
        pulled = self.pulled_kind()
        if pulled is not None:
            return (
                f"{self.path.name} serves a {pulled.name} (it wrote {', '.join(others)}): "
                f"use --kind {pulled.name}"
            )
        if others:
            return (
                f"{self.path.name} serves only the Numaflow >= 1.4 protocols (it wrote "
                f"{', '.join(others)}); pynumaflow run speaks the 0.8-0.9 ones "
                "(function.v1, sink.v1): let it serve both, the default (check its "
                "protocols= and $PYNUMAFLOW_PROTOCOLS)"
            )
        return (
            f"{self.path.name} wrote no server-info in time (expected {info_file}). "
            "Does it start a server? If it passes sock_path= or server_info_file=, "
            f"drop them so that {RUN_DIR_ENV} applies."
        )

    def stop(self, timeout: float) -> Exit:
        """Send SIGTERM as Kubernetes does; SIGKILL if it has not exited after ``timeout``."""
        if self._proc.poll() is not None:
            return Exit(False, f"{self.path.name} had already exited")
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            return Exit(
                False,
                f"{self.path.name} did not exit within {timeout:g} s of SIGTERM; killed it",
            )
        self._relay.join(timeout=2)
        code = self._proc.returncode
        if code == 0:
            return Exit(True, f"stopped {self.path.name} with SIGTERM; it exited with code 0")
        if code == -signal.SIGTERM:
            return Exit(True, f"stopped {self.path.name} with SIGTERM; the signal ended it")
        return Exit(False, self._exited_message("after SIGTERM"))

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
