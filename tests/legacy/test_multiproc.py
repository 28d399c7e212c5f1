"""MultiProcServer: TCP handshake, even spread over processes, drain and worker crashes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from pynumaflow import __version__
from pynumaflow.function import Datum, Message, Messages, MultiProcServer

from conftest import CHANNEL_OPTIONS
from helpers import datum_request
from procs import finish, start_script, wait_for_server_info

SCRIPT = """
import logging, os, time
from pynumaflow.function import Messages, Message, MultiProcServer

def handler(keys, datum):
    time.sleep(float(datum.value or b"0"))
    return Messages(Message(str(os.getpid()).encode()))

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    MultiProcServer(map_handler=handler, host="127.0.0.1", port={port}, max_threads=16).start()
"""
# One channel = one HTTP/2 connection of its own, as each of the platform's connections.
OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A free port, kept bound (not listening) until the block ends.

    A port given back before the server binds it (a second or more later, once the
    script has imported) can be taken in between as the ephemeral port of any outgoing
    connection or by another ``bind(0)``, as other test runs on a loaded machine do; the
    server then fails to start. Bound with SO_REUSEADDR, as the server binds, it stays
    out of both and the server can still listen on it.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", 0))
        yield int(probe.getsockname()[1])


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A two-process MultiProcServer script (handler: sleep `value` s, answer its pid)."""
    monkeypatch.setenv("NUM_CPU_MULTIPROC", "2")
    with reserved_port() as port:
        proc = start_script(SCRIPT.format(port=port), tmp_path)
        try:
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_a_reserved_port_is_taken_by_no_one_else_but_the_server(tmp_path: Path) -> None:
    """What the fixture's port is safe from while the server starts, and that it starts."""
    with reserved_port() as port:
        for _ in range(2000):  # nobody's bind(0), as no outgoing connection, gets it
            with socket.socket() as other:
                other.bind(("127.0.0.1", 0))
                assert other.getsockname()[1] != port
        with socket.socket() as other, pytest.raises(OSError, match="Address already in use"):
            other.bind(("127.0.0.1", port))
        proc = start_script(SCRIPT.format(port=port), tmp_path)
        try:
            wait_for_server_info(proc, tmp_path / "server-info")
            proc.send_signal(signal.SIGTERM)
            code, output = finish(proc)
            assert code == 0, output
            assert f"serving on 127.0.0.1:{port}" in output
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def channels(port: int, count: int) -> list[grpc.Channel]:
    address = f"127.0.0.1:{port}"
    return [grpc.insecure_channel(address, options=OWN_CONNECTION) for _ in range(count)]


def call(channel: grpc.Channel, stubs: dict[str, ModuleType], seconds: float = 0) -> Any:
    stub = stubs["fn_grpc"].UserDefinedFunctionStub(channel)
    return stub.MapFn.future(datum_request(stubs["fn_pb2"], str(seconds).encode()))


def served_by(reply: Any) -> int:
    return int(reply.elements[0].value)


def test_server_info_says_tcp_with_the_process_count(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """Server-info is exactly the tcp handshake with CPU_LIMIT, written once all listen."""
    proc, port = server
    info = wait_for_server_info(proc, tmp_path / "server-info")
    assert info == {
        "protocol": "tcp",
        "language": "python",
        "version": __version__,
        "metadata": {"CPU_LIMIT": "2"},
    }
    (channel,) = channels(port, 1)
    with channel:
        assert served_by(call(channel, stubs).result(timeout=10)) > 0
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    assert "serving on 127.0.0.1:" in output
    assert output.count("serving function.v1.UserDefinedFunction") == 2


def test_connections_and_calls_spread_evenly(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """Two connections land on two different processes, round after round: 1/2 each."""
    proc, port = server
    wait_for_server_info(proc, tmp_path / "server-info")
    pids = set()
    for _ in range(3):
        pair = channels(port, 2)
        served = [{served_by(call(ch, stubs).result(timeout=10)) for _ in range(10)} for ch in pair]
        for ch in pair:
            ch.close()
        assert [len(s) for s in served] == [1, 1], served  # a connection stays on one process
        assert served[0] != served[1], served
        pids |= served[0] | served[1]
        time.sleep(0.2)  # let the servers see the connections close
    proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    assert len(pids) == 2
    counts = re.search(r"calls served per process \(pid: calls\): (.*)", output)
    assert counts is not None, output
    assert sorted(counts.group(1).split(", ")) == sorted(f"{pid}: 30" for pid in pids)


def test_sigterm_drains_every_process(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """SIGTERM to the parent: calls in flight in both processes finish OK, exit 0, info gone."""
    proc, port = server
    wait_for_server_info(proc, tmp_path / "server-info")
    pair = channels(port, 2)
    calls = [call(ch, stubs, 1.0) for ch in pair for _ in range(8)]
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    replies = [c.result(timeout=30) for c in calls]
    code, output = finish(proc)
    for ch in pair:
        ch.close()
    assert code == 0, output
    assert len({served_by(r) for r in replies}) == 2
    assert "received SIGTERM, stopping 2 worker(s)" in output
    assert not (tmp_path / "server-info").exists()


def test_a_dead_worker_stops_the_server(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path, stubs: dict[str, ModuleType]
) -> None:
    """A worker killed with SIGKILL: the parent says which and how, stops, exits non-zero."""
    proc, port = server
    wait_for_server_info(proc, tmp_path / "server-info")
    (channel,) = channels(port, 1)
    with channel:
        victim = served_by(call(channel, stubs).result(timeout=10))
    os.kill(victim, signal.SIGKILL)
    code, output = finish(proc, timeout=20)
    assert code != 0, output
    assert f"(pid {victim}) exited with code -9 (killed by SIGKILL) unexpectedly" in output
    assert "WorkerExitedError" in output
    assert not (tmp_path / "server-info").exists()


def test_process_count_and_options_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process count comes from the environment; nonsense values and options fail early."""
    monkeypatch.delenv("NUM_CPU_MULTIPROC", raising=False)
    monkeypatch.delenv("NUMAFLOW_CPU_LIMIT", raising=False)
    assert MultiProcServer(echo).process_count == 1
    monkeypatch.setenv("NUMAFLOW_CPU_LIMIT", "3")
    assert MultiProcServer(echo).process_count == 3
    monkeypatch.setenv("NUM_CPU_MULTIPROC", "2")
    server = MultiProcServer(echo)
    assert (server.process_count, server.address) == (2, "0.0.0.0:55551")
    assert MultiProcServer(echo, None, None, None, 6000).address == "0.0.0.0:6000"
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("NUM_CPU_MULTIPROC", bad)
        with pytest.raises(ValueError, match=f"NUM_CPU_MULTIPROC must be a positive int.*'{bad}'"):
            MultiProcServer(echo)
    monkeypatch.delenv("NUM_CPU_MULTIPROC")
    with pytest.raises(ValueError, match="needs at least one handler"):
        MultiProcServer()
    with pytest.raises(TypeError, match="map_handler must be importable by name"):
        MultiProcServer(map_handler=lambda keys, datum: Messages())
    with pytest.raises(TypeError, match="not on a Unix socket"):
        MultiProcServer(echo, sock_path="/var/run/numaflow/function.sock")
    with pytest.raises(ValueError, match="port must be an int from 1 to 65535"):
        MultiProcServer(echo, port=70000)


def test_a_busy_port_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port someone else listens on fails start() with the address, before any process."""
    monkeypatch.setenv("NUM_CPU_MULTIPROC", "2")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MultiProcServer(echo, host="127.0.0.1", port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: Address already"):
            server.start()
