"""pynumaflow run / call for pulled kinds: a source read, acked and nacked; a side input."""

from __future__ import annotations

import signal
from pathlib import Path

from test_cli_run import run, script

from procs import finish, start_script, wait_for_server_info

SOURCE_SCRIPT = """
from datetime import datetime
from pynumaflow.sourcer import (
    Message, Offset, PartitionsResponse, PendingResponse, SourceAsyncServer, Sourcer,
)

class Counting(Sourcer):
    def __init__(self):
        self.next = 0
        self.nacked = []

    async def read_handler(self, datum, output):
        for _ in range(datum.num_records):
            if self.nacked:
                n = self.nacked.pop(0)
            else:
                n = self.next
                self.next += 1
            await output.put(Message(f"m{n}".encode(), Offset(str(n).encode(), 0),
                                     datetime(2024, 1, 1), keys=["k"]))

    async def ack_handler(self, ack_request):
        print("acked", [o.offset for o in ack_request.offsets], flush=True)

    async def nack_handler(self, nack_request):
        self.nacked += [int(o.offset) for o in nack_request.offsets]
        print("nacked", [o.offset for o in nack_request.offsets], flush=True)

    async def pending_handler(self):
        return PendingResponse(-1)

    async def active_partitions_handler(self):
        return PartitionsResponse([0])

SourceAsyncServer(Counting()).start()
"""

SIDE_INPUT_SCRIPT = """
from pynumaflow.sideinput import Response, SideInputServer

SideInputServer(lambda: Response.broadcast_message(b"on")).start()
"""


def test_run_reads_a_source_and_acks_each_batch(tmp_path: Path) -> None:
    udf = script(tmp_path, SOURCE_SCRIPT)
    code, outputs, err = run("run", udf, "--kind", "source", "--reads", "2", "--batch-size", "2")
    assert code == 0, err
    assert [o["payload"] for o in outputs] == ["m0", "m1", "m2", "m3"]
    assert outputs[0] == {
        "payload": "m0",
        "offset": "0",
        "partition_id": 0,
        "event_time": "2024-01-01T00:00:00.000Z",
        "keys": ["k"],
        "headers": {},
    }
    assert "acked [b'0', b'1']" in err
    assert "acked [b'2', b'3']" in err
    assert "pending -1; partitions [0]" in err


def test_run_nacks_and_the_source_reads_them_again(tmp_path: Path) -> None:
    udf = script(tmp_path, SOURCE_SCRIPT)
    code, outputs, err = run(
        "run", udf, "--kind", "source", "--reads", "2", "--batch-size", "2", "--nack"
    )
    assert code == 0, err
    assert [o["payload"] for o in outputs] == ["m0", "m1", "m0", "m1"]
    assert "nacked [b'0', b'1']" in err  # one entry per offset, one handler call


def test_run_without_kind_finds_the_source_by_its_server_info(tmp_path: Path) -> None:
    udf = script(tmp_path, SOURCE_SCRIPT)
    code, outputs, err = run("run", udf, "--batch-size", "1")
    assert code == 0, err
    assert [o["payload"] for o in outputs] == ["m0"]
    assert "pulling as source" in err


def test_run_with_another_kind_names_the_kind_to_ask_for(tmp_path: Path) -> None:
    """Run as the pod of the kind asked for (udf), the source refuses the role, naming its own."""
    udf = script(tmp_path, SOURCE_SCRIPT)
    code, _, err = run("run", udf, "--kind", "map", "-q")
    assert code == 1
    assert "they serve containers of type udsource" in err
    assert "run as a pod would, with NUMAFLOW_UD_CONTAINER_TYPE=udf" in err
    assert "choose the kind with --kind" in err


def test_call_retrieves_a_running_side_input(tmp_path: Path) -> None:
    proc = start_script(SIDE_INPUT_SCRIPT, tmp_path)
    try:
        wait_for_server_info(proc, tmp_path / "sideinput-server-info")
        sock = str(tmp_path / "sideinput.sock")
        code, outputs, err = run("call", "--sock", sock, "--kind", "side-input", "--reads", "2")
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    assert code == 0, err
    assert outputs == [{"value": "on", "no_broadcast": False}] * 2
