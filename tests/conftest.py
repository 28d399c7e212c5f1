"""Shared fixtures: grpcio stubs generated from our protos, temporary sockets, clients."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from anyio.pytest_plugin import get_runner
from hypothesis import settings

from reference_client import IndexUnreachableError, ReferenceClient, reference_python

# No per-example deadline: CI machines are shared and noisy, and a slow example is not
# a wrong one (speed is measured by benchmarks/, never by tests).
settings.register_profile("pynumaflow", deadline=None)
settings.load_profile("pynumaflow")

ROOT = Path(__file__).resolve().parent.parent
# The pynumaflow 0.4 README (Apache-2.0), kept here so that any clone runs the tests.
SEED_README = Path(__file__).resolve().parent / "data" / "pynumaflow-v0.4-README.md"
MiB = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * MiB),
    ("grpc.max_receive_message_length", 64 * MiB),
]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def one_event_loop() -> Iterator[None]:
    """Hold anyio's test runner for the session: every async test runs on one event loop.

    anyio's plugin otherwise starts a loop per test and closes it after (the runner
    lives while someone holds it). grpcio's aio client hands a call's completion to the
    loop the call was made on, from whichever loop reads its poller first: a completion
    arriving after its test's loop had closed (a call cancelled by a channel's close,
    finishing late on a loaded machine) raised "Event loop is closed" in whatever test
    ran next, often during its setup.
    """
    with get_runner("asyncio", {}):
        yield


@pytest.fixture(scope="session")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """Grpcio stubs for function.v1 and sink.v1, generated from protos/ for this run."""
    out = tmp_path_factory.mktemp("grpcio_stubs")
    protos = [
        "function/v1/udfunction.proto",
        "sink/v1/udsink.proto",
        "common/metadata.proto",
        "common/nack_options.proto",
        "map/v1/map.proto",
        "sourcetransformer/v1/transform.proto",
        "reduce/v1/reduce.proto",
        "sessionreduce/v1/sessionreduce.proto",
        "accumulator/v1/accumulator.proto",
        "sink/v1/sink.proto",
        "source/v1/source.proto",
        "sideinput/v1/sideinput.proto",
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "protos"),
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        check=True,
    )
    sys.path.insert(0, str(out))
    try:
        yield {
            "fn_pb2": importlib.import_module("function.v1.udfunction_pb2"),
            "fn_grpc": importlib.import_module("function.v1.udfunction_pb2_grpc"),
            "sink_pb2": importlib.import_module("sink.v1.udsink_pb2"),
            "sink_grpc": importlib.import_module("sink.v1.udsink_pb2_grpc"),
            # Numaflow >= 1.4 (v1 protocols)
            "map_pb2": importlib.import_module("map.v1.map_pb2"),
            "map_grpc": importlib.import_module("map.v1.map_pb2_grpc"),
            "transform_pb2": importlib.import_module("sourcetransformer.v1.transform_pb2"),
            "transform_grpc": importlib.import_module("sourcetransformer.v1.transform_pb2_grpc"),
            "reduce_pb2": importlib.import_module("reduce.v1.reduce_pb2"),
            "reduce_grpc": importlib.import_module("reduce.v1.reduce_pb2_grpc"),
            "session_pb2": importlib.import_module("sessionreduce.v1.sessionreduce_pb2"),
            "session_grpc": importlib.import_module("sessionreduce.v1.sessionreduce_pb2_grpc"),
            "accumulator_pb2": importlib.import_module("accumulator.v1.accumulator_pb2"),
            "accumulator_grpc": importlib.import_module("accumulator.v1.accumulator_pb2_grpc"),
            "sinkv1_pb2": importlib.import_module("sink.v1.sink_pb2"),
            "sinkv1_grpc": importlib.import_module("sink.v1.sink_pb2_grpc"),
            "common_pb2": importlib.import_module("common.metadata_pb2"),
            "source_pb2": importlib.import_module("source.v1.source_pb2"),
            "source_grpc": importlib.import_module("source.v1.source_pb2_grpc"),
            "sideinput_pb2": importlib.import_module("sideinput.v1.sideinput_pb2"),
            "sideinput_grpc": importlib.import_module("sideinput.v1.sideinput_pb2_grpc"),
        }
    finally:
        sys.path.remove(str(out))


@pytest.fixture
def fn_pb2(stubs: dict[str, ModuleType]) -> ModuleType:
    return stubs["fn_pb2"]


@pytest.fixture
def sock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path: Unix socket paths are limited to ~108 bytes.
    return tmp_path_factory.mktemp("s")


@pytest.fixture
def sock_path(sock_dir: Path) -> str:
    return str(sock_dir / "function.sock")


@pytest.fixture
def info_path(sock_dir: Path) -> str:
    return str(sock_dir / "server-info")


@pytest.fixture
async def channel(sock_path: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"unix://{sock_path}", options=CHANNEL_OPTIONS) as ch:
        yield ch


@pytest.fixture
def fn_stub(stubs: dict[str, ModuleType], channel: grpc.aio.Channel) -> Any:
    return stubs["fn_grpc"].UserDefinedFunctionStub(channel)


def seed_examples() -> list[str]:
    """The python code blocks of the pynumaflow 0.4 README (tests/data), in order."""
    text = SEED_README.read_text(encoding="utf-8")
    blocks = text.split("```python\n")[1:]
    return [block.split("```", 1)[0] for block in blocks]


@pytest.fixture(scope="session")
def reference_client() -> ReferenceClient:
    """The pynumaflow 0.14.0 wheel's stubs as a client, in a cached virtualenv of their own.

    See tests/reference_client.py. Skips, saying why, only when no package index is
    reachable to build the virtualenv.
    """
    try:
        return ReferenceClient(reference_python())
    except IndexUnreachableError as err:
        pytest.skip(str(err))
