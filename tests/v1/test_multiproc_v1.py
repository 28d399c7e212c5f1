"""MultiProcServer on Numaflow >= 1.4: one map.sock, one stream's requests over every worker.

Each test runs the server as a script, as a pod's UD container with its role, and drives
it with grpcio stubs from our protos (or the pynumaflow 0.14.0 wheel's).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import grpc
import pytest

from pynumaflow import __version__
from pynumaflow.function import Datum, Message, Messages, MultiProcServer

from conftest import CHANNEL_OPTIONS
from procs import finish, start_script, wait_for_server_info
from reference_client import ReferenceClient, b64, unb64

SCRIPT = """
import logging, os, time
from pynumaflow.function import Message, MessageT, MessageTs, Messages, MultiProcServer

def handler(keys, datum):
    if datum.value == b"boom":
        raise ValueError("boom")
    if datum.value.startswith(b"big"):
        return Messages(Message(datum.value[::-1]))
    if datum.value.startswith(b"sleep "):
        time.sleep(float(datum.value[6:]))
    return Messages(Message(str(os.getpid()).encode(), keys=keys, tags=[datum.value.decode()]))

def stream_handler(keys, datum):
    for i in range(3):
        yield Message(f"{{os.getpid()}} {{i}}".encode(), keys=keys)

def transform(keys, datum):
    return MessageTs(MessageT(str(os.getpid()).encode(), datum.event_time, keys=keys))

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    MultiProcServer({keyword}=handler if "{keyword}" == "map_handler" else
                    stream_handler if "{keyword}" == "map_stream_handler" else transform,
                    max_threads=4).start()
"""


MODERN_SCRIPT = """
import asyncio, logging, os, time
from pynumaflow.mapper import Datum, MapMultiprocServer, Mapper, Message, Messages
from pynumaflow import sourcetransformer

class PidMapper(Mapper):
    def handler(self, keys: list[str], datum: Datum) -> Messages:
        if datum.value.startswith(b"sleep "):
            time.sleep(float(datum.value[6:]))
        return Messages(Message(str(os.getpid()).encode(), keys=keys))

def transform(keys, datum):
    time.sleep(float(datum.value[6:]))
    return sourcetransformer.Messages(
        sourcetransformer.Message(str(os.getpid()).encode(), datum.event_time, keys=keys)
    )

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    if os.environ["NUMAFLOW_UD_CONTAINER_TYPE"] == "udf":
        MapMultiprocServer(PidMapper(), server_count=2).start()
    else:
        server = sourcetransformer.SourceTransformMultiProcServer(transform, server_count=2)
        asyncio.run(server.aexec())
"""


def echo(keys: list[str], datum: Datum) -> Messages:
    return Messages(Message(datum.value))


class Server:
    """A MultiProcServer script as a UD container of ``role``, with ``processes`` workers."""

    def __init__(
        self,
        run_dir: Path,
        processes: int,
        role: str = "udf",
        keyword: str = "map_handler",
        script: Optional[str] = None,
    ) -> None:
        self.run_dir = run_dir
        self.proc = start_script(
            script or SCRIPT.format(keyword=keyword),
            run_dir,
            container_type=role,
            env={"NUM_CPU_MULTIPROC": str(processes)},
        )

    def info(self, name: str = "mapper-server-info") -> dict[str, Any]:
        return wait_for_server_info(self.proc, self.run_dir / name)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        return finish(self.proc, timeout)

    def stop(self) -> str:
        """SIGTERM, as Kubernetes sends it: the server must exit 0; return its output."""
        self.proc.send_signal(signal.SIGTERM)
        code, output = self.finish()
        assert code == 0, output
        return output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mp")  # short: socket paths are limited to ~108 bytes


Start = Callable[..., Server]


@pytest.fixture
def start(run_dir: Path) -> Iterator[Start]:
    """Start a server (Server's arguments but the folder), wait for its server-info."""
    started: list[Server] = []

    def start(
        processes: int = 2,
        role: str = "udf",
        keyword: str = "map_handler",
        script: Optional[str] = None,
    ) -> Server:
        server = Server(run_dir, processes, role, keyword, script)
        started.append(server)
        server.info("mapper-server-info" if role == "udf" else "sourcetransformer-server-info")
        return server

    yield start
    for server in started:
        server.kill()


class Stream:
    """One MapFn or SourceTransformFn bidi stream fed from a queue (add requests any time)."""

    def __init__(self, stubs: dict[str, ModuleType], sock: Path, transformer: bool = False) -> None:
        self.transformer = transformer
        self.pb2 = stubs["transform_pb2" if transformer else "map_pb2"]
        self._request = self.pb2.SourceTransformRequest if transformer else self.pb2.MapRequest
        self.channel = grpc.insecure_channel(f"unix://{sock}", options=CHANNEL_OPTIONS)
        self._requests: queue.Queue[Optional[Any]] = queue.Queue()
        self._requests.put(self._request(handshake=self.pb2.Handshake(sot=True)))
        requests = iter(self._requests.get, None)
        if transformer:
            stub = stubs["transform_grpc"].SourceTransformStub(self.channel)
            self.call = stub.SourceTransformFn(requests)
        else:
            self.call = stubs["map_grpc"].MapStub(self.channel).MapFn(requests)
        self.responses: queue.Queue[Any] = queue.Queue()
        self.error: Optional[grpc.RpcError] = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self.next().handshake.sot

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as err:
            self.error = err
        self.responses.put(None)

    def send(self, msg_id: str, value: bytes, keys: tuple[str, ...] = ("k",)) -> None:
        if self.transformer:
            request = self._request.Request(id=msg_id, value=value, keys=list(keys))
            self._requests.put(self._request(request=request))
            return
        request = self._request.Request(value=value, keys=list(keys))
        self._requests.put(self._request(id=msg_id, request=request))

    def next(self, timeout: float = 30.0) -> Any:
        return self.responses.get(timeout=timeout)

    def close(self) -> list[Any]:
        """Half-close; return every response still to come."""
        self._requests.put(None)
        return self.rest()

    def rest(self) -> list[Any]:
        rest = []
        while (response := self.next()) is not None:
            rest.append(response)
        self._requests.put(None)  # ends grpc's thread feeding the requests, if still running
        self._reader.join(10)
        self.channel.close()
        return rest


def test_one_stream_is_answered_exactly_once_by_every_worker(
    start: Start, run_dir: Path, stubs: dict[str, ModuleType]
) -> None:
    """3,000 requests on one stream: each answered once, right; all 3 workers share them."""
    server = start(3)
    assert server.info() == {
        "protocol": "uds",
        "language": "python",
        "minimum_numaflow_version": "1.4.0-z",
        "version": __version__,
        "metadata": {"MAP_MODE": "unary-map"},
    }
    assert not (run_dir / "server-info").exists()  # the legacy handshake: not on >= 1.4
    stream = Stream(stubs, run_dir / "map.sock")
    count = 3000
    for i in range(count):
        stream.send(f"id-{i}", str(i).encode(), keys=(f"k{i}",))
    answers = stream.close()
    assert stream.error is None, stream.error
    assert sorted(a.id for a in answers) == sorted(f"id-{i}" for i in range(count))
    pids: dict[int, int] = {}
    for answer in answers:
        (result,) = answer.results
        i = answer.id.removeprefix("id-")
        assert (list(result.keys), list(result.tags)) == ([f"k{i}"], [i])
        pid = int(result.value)
        pids[pid] = pids.get(pid, 0) + 1
    assert len(pids) == 3, pids
    output = server.stop()
    counts = re.search(r"requests answered per process \(pid: requests\): (.*)", output)
    assert counts is not None, output
    assert sorted(counts.group(1).split(", ")) == sorted(f"{p}: {n}" for p, n in pids.items())
    assert not (run_dir / "mapper-server-info").exists()
    assert not (run_dir / "map.sock").exists()


def test_a_handler_error_fails_the_stream_as_in_one_process(
    start: Start, run_dir: Path, stubs: dict[str, ModuleType]
) -> None:
    """INTERNAL UDF_EXECUTION_ERROR(udf) with the traceback as DebugInfo; the server serves on."""
    from pynumaflow._proto.google import rpc

    server = start(2)
    stream = Stream(stubs, run_dir / "map.sock")
    stream.send("ok", b"fine")
    stream.send("bad", b"boom")
    stream.rest()
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.INTERNAL
    assert stream.error.details() == "UDF_EXECUTION_ERROR(udf): ValueError('boom')"
    trailer = dict(stream.error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = rpc.Status().parse(trailer)
    assert status.code == 13
    (detail,) = status.details
    assert detail.type_url == "type.googleapis.com/google.rpc.DebugInfo"
    info = rpc.DebugInfo().parse(detail.value)
    assert 'raise ValueError("boom")' in info.detail
    again = Stream(stubs, run_dir / "map.sock")
    again.send("after", b"fine")
    (answer,) = again.close()
    assert again.error is None
    assert answer.id == "after"
    output = server.stop()
    assert output.count("handler raised ValueError") == 1, output


@pytest.mark.parametrize(
    "face", ["MultiProcServer", "MapMultiprocServer", "SourceTransformMultiProcServer"]
)
def test_sigterm_drains_every_worker_and_exits_0(
    start: Start, run_dir: Path, stubs: dict[str, ModuleType], face: str
) -> None:
    """Requests in progress in both workers are answered; the stream ends UNAVAILABLE; exit 0."""
    # The modern script asks for server_count=2 over NUM_CPU_MULTIPROC=1; its transformer
    # is served through aexec().
    transformer = face == "SourceTransformMultiProcServer"
    if face == "MultiProcServer":
        server = start(2)
    else:
        server = start(1, role="transformer" if transformer else "udf", script=MODERN_SCRIPT)
    sock = run_dir / ("sourcetransform.sock" if transformer else "map.sock")
    stream = Stream(stubs, sock, transformer)
    for i in range(6):
        stream.send(f"id-{i}", b"sleep 1")
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    answers = stream.rest()
    assert sorted(a.id for a in answers) == [f"id-{i}" for i in range(6)]
    assert len({a.results[0].value for a in answers}) == 2
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.UNAVAILABLE
    code, output = server.finish()
    assert code == 0, output
    assert "received SIGTERM" in output
    assert f"starting {face}" in output
    assert not list(run_dir.glob("*server-info"))


@pytest.mark.parametrize("modern", [False, True], ids=["MultiProcServer", "MapMultiprocServer"])
def test_a_killed_worker_fails_the_stream_retryably_and_the_server_exits_non_zero(
    start: Start, run_dir: Path, stubs: dict[str, ModuleType], modern: bool
) -> None:
    """SIGKILL to a worker mid-stream: the stream fails UNAVAILABLE; logged; exit non-zero."""
    server = start(1, script=MODERN_SCRIPT) if modern else start(2)
    stream = Stream(stubs, run_dir / "map.sock")
    stream.send("first", b"")
    victim = int(stream.next().results[0].value)
    for i in range(4):
        stream.send(f"slow-{i}", b"sleep 20")
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    assert stream.rest() == []
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"(pid {victim}) exited with code -9" in (stream.error.details() or "")
    code, output = server.finish()
    assert code != 0, output
    assert f"(pid {victim}) exited with code -9 (killed by SIGKILL) unexpectedly" in output
    assert "WorkerExitedError" in output


def test_map_stream_and_transformer_roles(
    start: Start, run_dir: Path, stubs: dict[str, ModuleType]
) -> None:
    """Map stream (MAP_MODE stream-map) and sourcetransformer.v1 are dealt the same way."""
    server = start(2, keyword="map_stream_handler")
    assert server.info()["metadata"] == {"MAP_MODE": "stream-map"}
    stream = Stream(stubs, run_dir / "mapstream.sock")
    for i in range(20):
        stream.send(f"id-{i}", b"x")
    answers = stream.close()
    assert stream.error is None
    for i in range(20):
        mine = [a for a in answers if a.id == f"id-{i}"]
        assert [a.status.eot for a in mine] == [False, False, False, True]
        values = [a.results[0].value.decode().split() for a in mine[:3]]
        assert [v[1] for v in values] == ["0", "1", "2"]
        assert len({v[0] for v in values}) == 1
    server.stop()

    transformer = start(2, role="transformer", keyword="mapt_handler")
    info = transformer.info("sourcetransformer-server-info")
    assert info["metadata"] == {}
    assert info["protocol"] == "uds"
    pb2 = stubs["transform_pb2"]
    channel = grpc.insecure_channel(f"unix://{run_dir / 'sourcetransform.sock'}")
    requests = [pb2.SourceTransformRequest(handshake=pb2.Handshake(sot=True))] + [
        pb2.SourceTransformRequest(request=pb2.SourceTransformRequest.Request(id=f"t{i}"))
        for i in range(10)
    ]
    with channel:
        stub = stubs["transform_grpc"].SourceTransformStub(channel)
        first, *answers = list(stub.SourceTransformFn(iter(requests)))
    assert first.handshake.sot
    assert sorted(a.id for a in answers) == sorted(f"t{i}" for i in range(10))
    transformer.stop()


def test_the_reference_client_drives_it(
    start: Start, run_dir: Path, reference_client: ReferenceClient
) -> None:
    """The pynumaflow 0.14.0 wheel's own stubs: IsReady, handshake, one answer per request id."""
    server = start(2)
    requests = [{"handshake": {"sot": True}}] + [
        {"id": f"r{i}", "request": {"keys": ["k"], "value": b64(b"v")}} for i in range(50)
    ]
    talk = reference_client.converse_blocking("map", run_dir / "map.sock", requests)
    assert talk["ready"] is True
    assert talk["code"] == "OK", talk
    first, *answers = talk["responses"]
    assert first == {"handshake": {"sot": True}}
    assert sorted(a["id"] for a in answers) == sorted(f"r{i}" for i in range(50))
    assert len({a["results"][0]["value"] for a in answers}) == 2
    server.stop()


def test_the_mode_follows_the_role_and_protocols(monkeypatch: pytest.MonkeyPatch) -> None:
    """Legacy TCP without a role (as 0.4); map.v1 on one socket with a role or protocols=v1."""
    monkeypatch.delenv("NUMAFLOW_UD_CONTAINER_TYPE", raising=False)
    monkeypatch.delenv("PYNUMAFLOW_PROTOCOLS", raising=False)
    assert MultiProcServer(echo).legacy_tcp
    assert MultiProcServer(echo, protocols=["legacy"]).legacy_tcp
    assert not MultiProcServer(echo, protocols=["v1"]).legacy_tcp
    monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "udf")
    assert not MultiProcServer(echo).legacy_tcp
    with pytest.raises(TypeError, match="map_handler must be importable by name"):
        MultiProcServer(map_handler=lambda keys, datum: Messages())
    # A v1 worker's pool: 1 thread unless asked for (max_threads, $MAX_THREADS).
    monkeypatch.delenv("MAX_THREADS", raising=False)
    assert MultiProcServer(echo)._worker_threads == 1
    assert MultiProcServer(echo, max_threads=3)._worker_threads == 3
    monkeypatch.setenv("MAX_THREADS", "5")
    assert MultiProcServer(echo)._worker_threads == 5
    assert MultiProcServer(echo, protocols=["legacy"]).legacy_tcp
    with pytest.raises(ValueError, match="NUMAFLOW_UD_CONTAINER_TYPE=transformer"):
        monkeypatch.setenv("NUMAFLOW_UD_CONTAINER_TYPE", "transformer")
        MultiProcServer(echo)


def test_large_requests_and_answers_cross_the_workers_whole(
    start: Start, run_dir: Path, stubs: dict[str, ModuleType]
) -> None:
    """Requests of 3 MiB (many reads on the worker's pipe) are answered byte for byte."""
    server = start(2)
    stream = Stream(stubs, run_dir / "map.sock")
    values = {f"big-{i}": b"big" + os.urandom(3 * 1024 * 1024) for i in range(4)}
    for msg_id, value in values.items():
        stream.send(msg_id, value)
    answers = stream.close()
    assert stream.error is None
    assert {a.id: a.results[0].value for a in answers} == {k: v[::-1] for k, v in values.items()}
    server.stop()


@pytest.mark.parametrize(
    ("role", "service", "info", "metadata", "face"),
    [
        ("udf", "map", "mapper-server-info", {"MAP_MODE": "unary-map"}, "MapMultiprocServer"),
        (
            "transformer",
            "sourcetransform",
            "sourcetransformer-server-info",
            {},
            "SourceTransformMultiProcServer",  # served through aexec()
        ),
    ],
)
def test_the_modern_faces_deal_one_stream_to_server_count_workers(
    start: Start,
    run_dir: Path,
    reference_client: ReferenceClient,
    role: str,
    service: str,
    info: str,
    metadata: dict[str, str],
    face: str,
) -> None:
    """0.14.0-style scripts with server_count=2: both worker pids answer one stream."""
    server = start(1, role=role, script=MODERN_SCRIPT)  # server_count=2 wins over the env's 1
    assert server.info(info)["metadata"] == metadata
    request = {"keys": ["k"], "value": b64(b"sleep 0.02")}
    requests = [{"handshake": {"sot": True}}] + [
        {"id": f"r{i}", "request": request}
        if service == "map"
        else {"request": {"id": f"r{i}", **request}}
        for i in range(40)
    ]
    talk = reference_client.converse_blocking(service, run_dir / f"{service}.sock", requests)
    assert talk["code"] == "OK", talk
    first, *answers = talk["responses"]
    assert first == {"handshake": {"sot": True}}
    assert sorted(a["id"] for a in answers) == sorted(f"r{i}" for i in range(40))
    pids = {int(unb64(a["results"][0]["value"])) for a in answers}
    assert len(pids) == 2, pids
    assert server.proc.pid not in pids
    output = server.stop()
    assert f"starting {face}" in output
    assert "requests dealt to 2 worker process(es)" in output
    assert not (run_dir / f"{service}.sock").exists()


def test_the_modern_faces_take_the_process_count_and_refuse_unimportable_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """server_count, else $NUM_CPU_MULTIPROC / $NUMAFLOW_CPU_LIMIT, else 1; TypeError early."""
    from pynumaflow.mapper import MapMultiprocServer, Mapper
    from pynumaflow.mapper import Messages as ModernMessages
    from pynumaflow.sourcetransformer import SourceTransformMultiProcServer

    for name in ("NUM_CPU_MULTIPROC", "NUMAFLOW_CPU_LIMIT", "MAX_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert MapMultiprocServer(echo).process_count == 1
    monkeypatch.setenv("NUMAFLOW_CPU_LIMIT", "3")
    assert MapMultiprocServer(echo).process_count == 3
    assert SourceTransformMultiProcServer(echo, server_count=2).process_count == 2
    assert MapMultiprocServer(echo)._worker_threads == 1
    assert MapMultiprocServer(echo, max_threads=3)._worker_threads == 3
    with pytest.raises(ValueError, match="server_count must be a positive int, got 0"):
        MapMultiprocServer(echo, server_count=0)

    class Local(Mapper):
        def handler(self, keys: list[str], datum: Any) -> ModernMessages:
            return ModernMessages()

    with pytest.raises(TypeError, match="mapper_instance must be importable by name"):
        MapMultiprocServer(Local(), server_count=2)
    with pytest.raises(TypeError, match="source_transform_instance must be importable by name"):
        SourceTransformMultiProcServer(lambda keys, datum: None)


GUARDED_SCRIPT = """
from pynumaflow.function import Messages, MultiProcServer
from pynumaflow.mapper import MapMultiprocServer, Mapper

if __name__ == "__main__":
    def handler(keys, datum):
        return Messages()

    class Guarded(Mapper):
        def handler(self, keys, datum):
            return Messages()

    for build in (lambda: MultiProcServer(map_handler=handler),
                  lambda: MapMultiprocServer(Guarded(), server_count=2)):
        try:
            build()
        except TypeError as err:
            print("refused:", err)
"""


def test_a_handler_defined_under_the_main_guard_is_refused_at_construction(
    run_dir: Path,
) -> None:
    """It pickles in the parent, but a worker runs the script without that block."""
    code, output = finish(start_script(GUARDED_SCRIPT, run_dir, container_type="udf"))
    assert code == 0, output
    script = run_dir / "udf.py"
    refusals = [line for line in output.splitlines() if line.startswith("refused:")]
    assert refusals == [
        f"refused: {keyword} must be importable by name for {owner}: {name} is defined "
        f'inside the `if __name__ == "__main__":` block of {script}, which its worker '
        "processes do not run. Define it at the top level of a module or of the script"
        for keyword, owner, name in [
            ("map_handler", "MultiProcServer", "handler"),
            ("mapper_instance", "MapMultiprocServer", "Guarded"),
        ]
    ], output
    # python -c: a worker does not run the main script again at all.
    command = (
        "from pynumaflow.function import MultiProcServer\n"
        "def handler(keys, datum): pass\n"
        "MultiProcServer(map_handler=handler)\n"
    )
    env = dict(os.environ, NUMAFLOW_UD_CONTAINER_TYPE="udf")
    ran = subprocess.run(
        [sys.executable, "-c", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 1
    assert (
        "TypeError: map_handler must be importable by name for MultiProcServer: handler is "
        "defined in a main script that has no file (python -c, a prompt)"
    ) in ran.stderr, ran.stderr
