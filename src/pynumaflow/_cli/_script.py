"""The user's script as a subprocess, run the way the platform runs a UDF container.

Its default sockets and server-info files go to a fresh temporary folder, handed to it
in ``PYNUMAFLOW_RUN_DIR``; for the Numaflow >= 1.4 protocols it gets the container
type of its role in ``NUMAFLOW_UD_CONTAINER_TYPE``, as in a pod; its output is
relayed to our stderr (and the last lines kept for error messages); it is stopped
with SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import collections
import contextlib
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
from typing import IO, Optional, TextIO

from pynumaflow._cli._errors import RunError
from pynumaflow._cli._served import LEGACY_INFO, LEGACY_SOCKETS, Served, read_info, v1_served
from pynumaflow._core.options import CONTAINER_TYPE_ENV, LEGACY, RUN_DIR_ENV, V1
from pynumaflow._faces.kinds import Kind

__all__ = ["Exit", "Script"]

_TAIL_LINES = 20
_POLL = 0.02
_EXIT_GRACE = 1.0
# The core writes every server-info file at once: the other generation's alone, for
# this long, means the script does not serve the one asked for.
_OTHER_ONLY_AFTER = 1.0
# The core starts its v1 endpoints one after the other, each writing its server-info
# once it listens: the kinds of one container are all there this soon after the first.
_V1_SETTLE = 0.5
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
        role: its ``$NUMAFLOW_UD_CONTAINER_TYPE``; None clears it (a legacy run: a
            container with a role never serves the legacy socket beside v1).
        env: more environment variables for it.

    """

    def __init__(
        self,
        path: Path,
        args: list[str],
        *,
        quiet: bool,
        err: TextIO,
        role: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
    ) -> None:
        self.path = path
        self.run_dir = Path(tempfile.mkdtemp(prefix="pnf-run-"))
        self._quiet = quiet
        self._err = err
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        extra_env = env
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env[RUN_DIR_ENV] = str(self.run_dir)
        self.role = role
        if role is None:
            env.pop(CONTAINER_TYPE_ENV, None)
        else:
            env[CONTAINER_TYPE_ENV] = role
        env.update(extra_env or {})
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
        elif when == _BEFORE_READY and self.role is not None and self._role_refused():
            message += (
                f" (run as a pod would, with {CONTAINER_TYPE_ENV}={self.role}; if that is "
                "not its kind's container type, choose the kind with --kind)"
            )
        if self._quiet:
            self._relay.join(timeout=1)  # its output ends when it does: let the relay catch up
            if self._tail:
                message += "; its last output:\n" + "".join(self._tail).rstrip("\n")
        return message

    def _role_refused(self) -> bool:
        self._relay.join(timeout=1)
        return any(CONTAINER_TYPE_ENV in line for line in self._tail)

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

    def wait_for_server(
        self, deadline: float, protocol: str, *, explicit: bool, kind: Optional[Kind] = None
    ) -> Served:
        """Wait like the platform for the server-info of ``protocol``; say what is served.

        Unless ``explicit``, a script serving only the other generation is served in it.
        On v1 it returns once ``kind`` is served, or all the container's kinds are.

        Raises:
            RunError: the script exited, wrote no server-info before the deadline, or
                (``explicit``) serves only the other generation.

        """
        other_seen: Optional[float] = None
        v1_seen: Optional[float] = None
        while True:
            self.check_alive(_BEFORE_READY, grace=0)
            legacy = read_info(self.run_dir / LEGACY_INFO) is not None
            v1 = v1_served(self.run_dir, self.role)
            now = time.monotonic()
            complete = bool(v1) and all(sock.exists() for sock in v1.values())
            if protocol == V1 and complete:
                v1_seen = v1_seen or now
                if kind in v1 or now - v1_seen >= _V1_SETTLE:
                    return Served(V1, sockets=v1)
            if protocol == LEGACY and legacy:
                return self._legacy()
            other = (
                legacy or (bool(v1) and not complete)  # v1: a socket is elsewhere
                if protocol == V1
                else any(self.run_dir.glob("*-server-info"))
            )
            if other and other_seen is None:
                other_seen = now
            if other_seen is not None and now - other_seen > _OTHER_ONLY_AFTER:
                if protocol == V1 and v1 and not complete:
                    raise RunError(self._elsewhere(v1))
                if explicit:
                    raise RunError(self._only_the_other(protocol))
                return self._legacy() if legacy else Served(V1, sockets=v1)
            if now >= deadline:
                raise RunError(self._no_server_info(protocol))
            time.sleep(_POLL)

    def _legacy(self) -> Served:
        for name in LEGACY_SOCKETS:
            if (self.run_dir / name).exists():
                return Served(LEGACY, sock=self.run_dir / name)
        raise RunError(
            f"{self.path.name} wrote server-info but created neither "
            f"{' nor '.join(LEGACY_SOCKETS)} in {self.run_dir}; if it passes sock_path=, "
            f"drop it so that {RUN_DIR_ENV} applies"
        )

    def _elsewhere(self, served: dict[Kind, Path]) -> str:
        missing = sorted(sock.name for sock in served.values() if not sock.exists())
        return (
            f"{self.path.name} wrote its server-info but created no {', '.join(missing)} in "
            f"{self.run_dir}; if it passes sock_path=, drop it so that {RUN_DIR_ENV} applies"
        )

    def _only_the_other(self, protocol: str) -> str:
        if protocol == LEGACY:
            others = sorted(p.name for p in self.run_dir.glob("*-server-info"))
            return (
                f"{self.path.name} serves only the Numaflow >= 1.4 protocols (it wrote "
                f"{', '.join(others)}); --protocol legacy speaks the 0.8-0.9 ones "
                "(function.v1, the UserDefinedSink): drop --protocol (v1 is the default), "
                "or let it serve both (check its protocols= and $PYNUMAFLOW_PROTOCOLS)"
            )
        return (
            f"{self.path.name} serves only the Numaflow 0.8-0.9 protocols (it wrote "
            f"{LEGACY_INFO} only); --protocol v1 speaks the >= 1.4 ones: drop --protocol, "
            "or let it serve v1 too (check its protocols= and $PYNUMAFLOW_PROTOCOLS)"
        )

    def _no_server_info(self, protocol: str) -> str:
        found = sorted(p.name for p in self.run_dir.glob("*server-info"))
        if protocol == V1 and found:
            return (
                f"{self.path.name} wrote {', '.join(found)} but serves no kind for "
                f"{CONTAINER_TYPE_ENV}={self.role} in time; choose the kind with --kind"
            )
        return (
            f"{self.path.name} wrote no server-info in time (in {self.run_dir}). "
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
