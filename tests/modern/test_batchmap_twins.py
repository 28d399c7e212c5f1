"""pynumaflow.batchmapper answers as pynumaflow 0.14.0's does: one script, served by both.

The script is written against 0.14.0's batch map API; both servers get the same two
batches through the 0.14.0 wheel's stubs, and must answer alike, in the same order
(one response per id in the handler's order, then the batch's EOT).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_twins import HANDSHAKE, request

from reference_client import ReferenceClient, b64
from twins import serve_and_converse

pytestmark = [pytest.mark.reference, pytest.mark.timeout(600)]
EOT = {"status": {"eot": True}}
REQUESTS = [
    HANDSHAKE,
    *({"id": f"b{i}", "request": request(i, value)} for i, value in enumerate([b"a,b", b""])),
    EOT,
    {"id": "c0", "request": request(7, b"x,y,z")},
    EOT,
]
SCRIPT = """\
import os
from collections.abc import AsyncIterable

from pynumaflow.batchmapper import (
    BatchMapAsyncServer, BatchMapper, BatchResponse, BatchResponses, Datum, Message,
)


async def answer(datums: AsyncIterable[Datum]) -> BatchResponses:
    responses = BatchResponses()
    async for datum in datums:
        response = BatchResponse.from_id(datum.id)
        for part in datum.value.split(b","):
            if part:
                tags = [datum.headers["x-h"], str(datum.event_time.year)]
                response.append(Message(part, keys=datum.keys, tags=tags))
        responses.append(response)
    return responses


class Splitter(BatchMapper):
    async def handler(self, datums: AsyncIterable[Datum]) -> BatchResponses:
        return await answer(datums)


handler = Splitter() if os.environ["INVOKE"] == "class" else answer
BatchMapAsyncServer(handler).start()
"""


def shown(talk: dict[str, Any]) -> list[str]:
    """The responses in order; an empty result metadata (ours, the modern API's) left out."""
    responses = []
    for response in talk["responses"]:
        for result in response.get("results", []):
            if result.get("metadata") == {}:
                del result["metadata"]
        responses.append(json.dumps(response, sort_keys=True))
    return responses


@pytest.mark.parametrize("invoke", ["function", "class"])
def test_batch_map_as_0_14(reference_client: ReferenceClient, tmp_path: Path, invoke: str) -> None:
    script = tmp_path / "udf.py"
    script.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    env = {"INVOKE": invoke}
    ours, theirs = (
        serve_and_converse(
            reference_client, script, "batchmap", REQUESTS, tmp_path / name, reference=ref, env=env
        )
        for name, ref in (("o", False), ("r", True))
    )
    assert ours.talk["code"] == theirs.talk["code"] == "OK", ours.output
    assert shown(ours.talk) == shown(theirs.talk)
    assert ours.exit_code == 0, ours.output
    ids = [r.get("id", "EOT") for r in ours.talk["responses"][1:]]
    assert ids == ["b0", "b1", "EOT", "c0", "EOT"]
    assert [r["value"] for r in ours.talk["responses"][1]["results"]] == [b64(b"a"), b64(b"b")]
