"""What a spawned worker lacks of the main script: names bound only under its main guard."""

from __future__ import annotations

import ast
import sys
import textwrap
import types
from pathlib import Path

import pytest

from pynumaflow._core.spawned import _guarded_only, names_missing_in_workers

SCRIPT = """
import os
from json import dumps as encode

def top(keys, datum): ...

class Top: ...

if os.environ.get("X"):
    def conditional(keys, datum): ...

if __name__ == "__main__":
    import pathlib
    def guarded(keys, datum): ...
    class Guarded: ...
    top = guarded  # rebinds a top-level name: still defined in a worker
    for looped in range(3):
        pass
    with open(__file__) as opened:
        pass
else:
    def otherwise(keys, datum): ...

if "__main__" == __name__:
    reversed_guard = 1
"""


def test_only_names_bound_under_the_main_guard_and_nowhere_else() -> None:
    body = ast.parse(textwrap.dedent(SCRIPT)).body
    assert _guarded_only(body) == {
        "pathlib",
        "guarded",
        "Guarded",
        "looped",
        "opened",
        "reversed_guard",
    }


def test_the_main_script_is_read_for_what_pickling_refers_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the names of ``__main__`` that the object pickles by are looked up."""
    script = tmp_path / "udf.py"
    script.write_text(SCRIPT, encoding="utf-8")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    exec("def guarded(keys, datum): ...\ndef top(keys, datum): ...", main.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", main)
    guarded, top = main.__dict__["guarded"], main.__dict__["top"]
    assert names_missing_in_workers(guarded) == (["guarded"], str(script))
    assert names_missing_in_workers({"h": top}) == ([], str(script))
    assert names_missing_in_workers(len) == ([], None)  # nothing of __main__
    del main.__file__  # python -c, a prompt: every name of __main__ is missing
    assert names_missing_in_workers([top, guarded]) == (["guarded", "top"], None)
    with pytest.raises(Exception, match="lambda"):
        names_missing_in_workers(lambda: None)
