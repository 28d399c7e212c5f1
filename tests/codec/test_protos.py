"""The committed betterproto code is what `nox -s protos` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """Regenerating into a temporary folder gives the committed files, byte for byte."""
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_protos.py"), str(tmp_path / "out")],
        check=True,
    )
    committed = _files(ROOT / "src" / "pynumaflow" / "_proto")
    fresh = _files(tmp_path / "out")
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files (run `nox -s protos`): {stale}"
