"""The modern API's examples serve their sample input as expected.jsonl says.

Until ``pynumaflow run`` speaks v1 (tests/api/test_examples_run.py skips them), each
example runs as the platform runs it, in its own process, and the pynumaflow 0.14.0
wheel's stubs send it its sample input.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from reference_client import ReferenceClient, b64, rfc3339, unb64
from twins import serve_and_converse

pytestmark = [pytest.mark.reference, pytest.mark.timeout(300)]
EXAMPLES = ROOT / "examples" / "modern"
HANDSHAKE = {"handshake": {"sot": True}}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def samples(folder: Path) -> list[dict[str, Any]]:
    """The sample input as requests: value, and event time where the input gives one."""
    (sample,) = folder.glob("input.*")
    lines = sample.read_text(encoding="utf-8").splitlines()
    if sample.suffix == ".jsonl":
        return [json.loads(line) for line in lines]
    return [{"value": line} for line in lines]


def body(sample: dict[str, Any]) -> dict[str, Any]:
    moment = sample.get("event_time", rfc3339(EPOCH))
    return {"value": b64(sample["value"].encode()), "event_time": moment}


def shown(result: dict[str, Any]) -> dict[str, Any]:
    line = {
        "keys": result.get("keys", []),
        "value": unb64(result.get("value", "")).decode(),
        "tags": result.get("tags", []),
    }
    if "event_time" in result:
        line["event_time"] = result["event_time"]
    return line


def expected(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "expected.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def run(client: ReferenceClient, folder: Path, tmp_path: Path, kind: str, requests: list) -> Any:
    served = serve_and_converse(
        client,
        folder / "example.py",
        kind,
        requests,
        tmp_path,
        reference=False,
        await_first=kind != "reduce",
    )
    assert served.talk["code"] == "OK", served.output
    assert served.exit_code == 0, served.output
    return served.talk["responses"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("map_even_odd", "map"),
        ("mapstream_split", "mapstream"),
        ("transformer_event_time", "sourcetransform"),
    ],
)
def test_map_kinds(reference_client: ReferenceClient, tmp_path: Path, name: str, kind: str) -> None:
    """Results in input order (by request id) are the expected ones."""
    folder = EXAMPLES / name
    requests: list[dict[str, Any]] = [HANDSHAKE]
    for i, sample in enumerate(samples(folder)):
        if kind == "sourcetransform":
            requests.append({"request": {**body(sample), "id": str(i)}})
        else:
            requests.append({"id": str(i), "request": body(sample)})
    responses = run(reference_client, folder, tmp_path, kind, requests)
    answered = sorted(
        (r for r in responses[1:] if "results" in r), key=lambda r: int(r["id"])
    )  # stable: a stream's parts keep their order
    lines = [shown(result) for r in answered for result in r["results"]]
    assert lines == expected(folder)


def test_reduce_counter(reference_client: ReferenceClient, tmp_path: Path) -> None:
    """One count for the window, from a Counter made with its init_args."""
    folder = EXAMPLES / "reduce_counter"
    window = {"start": rfc3339(EPOCH), "end": "1970-01-01T00:01:00Z"}
    requests = [
        {"operation": {"event": "APPEND", "windows": [window]}, "payload": body(sample)}
        for sample in samples(folder)
    ]
    requests[0]["operation"]["event"] = "OPEN"
    responses = run(reference_client, folder, tmp_path, "reduce", requests)
    results = [shown(r["result"]) for r in responses if "result" in r]
    assert results == expected(folder)


def test_sink_fallback(reference_client: ReferenceClient, tmp_path: Path) -> None:
    """JSON goes on to the on-success sink as a confirmation, the rest to the fallback."""
    folder = EXAMPLES / "sink_fallback"
    requests = [
        HANDSHAKE,
        *(
            {"request": {**body(sample), "id": str(i + 1)}}
            for i, sample in enumerate(samples(folder))
        ),
        {"status": {"eot": True}},
    ]
    responses = run(reference_client, folder, tmp_path, "sink", requests)
    results = [r for response in responses for r in response.get("results", [])]
    lines = []
    for result in results:
        line: dict[str, Any] = {"id": result["id"], "status": result["status"].lower()}
        if "on_success_msg" in result:
            message = result["on_success_msg"]
            line["on_success_msg"] = {
                "keys": message["keys"],
                "value": unb64(message["value"]).decode(),
            }
        lines.append(line)
    assert lines == expected(folder)
