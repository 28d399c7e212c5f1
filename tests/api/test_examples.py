"""examples/ holds the seed README's examples verbatim (the files users copy)."""

from __future__ import annotations

import pytest

from conftest import ROOT, seed_examples


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
