"""Every example runs through `pynumaflow run` with its sample input and gives the output.

The expected output is recorded beside the input (event_time is left out there when it
is the time of the run; reduce output is compared in any order, since key groups answer
as they finish).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pynumaflow._cli._input import parse_time

from conftest import ROOT

EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/*/expected.jsonl"))
IDS = [str(p.relative_to(ROOT / "examples")) for p in EXAMPLES]


@pytest.fixture(scope="module")
def runs() -> dict[Path, tuple[int, str, str]]:
    """Every example's run, started all at once (each waits mostly on process start-up)."""
    procs = {}
    for folder in EXAMPLES:
        command = [sys.executable, "-m", "pynumaflow", "run", "example.py", "-q"]
        # A side-input retriever reads no input; a source reads its own file.
        command += [arg for sample in folder.glob("input.*") for arg in ("-i", sample.name)]
        procs[folder] = subprocess.Popen(
            command,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for folder, proc in procs.items():
        out, err = proc.communicate(timeout=90)
        results[folder] = (proc.returncode, out, err)
    return results


@pytest.mark.parametrize("folder", EXAMPLES, ids=IDS)
def test_example_gives_its_expected_output(
    folder: Path, runs: dict[Path, tuple[int, str, str]]
) -> None:
    """The example's outputs for its sample input are the recorded ones, and it exits 0."""
    code, out, err = runs[folder]
    assert code == 0, err
    actual = [json.loads(line) for line in out.splitlines()]
    expected = [json.loads(line) for line in (folder / "expected.jsonl").read_text().splitlines()]
    # Only the fields recorded are compared: event_time is missing where it is "now".
    recorded = set().union(*expected)
    shown = [{key: value for key, value in line.items() if key in recorded} for line in actual]
    # Times are compared as times: 2021-06-01T00:00:00Z is 2021-06-01T00:00:00.000Z.
    for line in (*shown, *expected):
        if "event_time" in line:
            line["event_time"] = parse_time(line["event_time"])
    if "reduce" in folder.name:
        shown, expected = sorted(shown, key=json.dumps), sorted(expected, key=json.dumps)
    assert shown == expected
    assert "with SIGTERM; it exited with code 0" in err
