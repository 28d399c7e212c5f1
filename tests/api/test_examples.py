"""examples/ holds the seed README's examples verbatim (the files users copy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SEED_README, seed_examples


@pytest.mark.parametrize(
    ("index", "path"),
    [
        (0, "function/forward_message/example.py"),
        (1, "function/mapt_event_time/example.py"),
        (2, "function/reduce_counter/example.py"),
        (3, "sink/log/example.py"),
    ],
)
def test_example_file_is_the_seed_example(index: int, path: str) -> None:
    """Each example file is byte-identical to its block in the 0.4 README."""
    assert (ROOT / "examples" / path).read_text(encoding="utf-8") == seed_examples()[index]


def test_tests_need_nothing_outside_the_repository() -> None:
    """A contributor's clone runs every test: the seed README is kept in tests/data."""
    assert ROOT in SEED_README.parents
    assert SEED_README.is_file()
    outside = ("ROOT.parent", "../shared")
    for test_file in set((ROOT / "tests").glob("*.py")) - {Path(__file__)}:
        text = test_file.read_text(encoding="utf-8")
        assert not [word for word in outside if word in text], test_file.name


def test_testing_example_runs_as_its_docstring_says(tmp_path: Path) -> None:
    """examples/testing copied into a project of one's own passes under plain `pytest`."""
    for name in ("my_udf.py", "test_my_udf.py"):
        shutil.copy(ROOT / "examples" / "testing" / name, tmp_path / name)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
