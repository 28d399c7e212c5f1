"""docs/: the API reference is generated from the docstrings and up to date."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def test_api_reference_is_up_to_date() -> None:
    """docs/api.md is what `nox -s docs` writes from the current docstrings."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_api_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "module", ["pynumaflow.function", "pynumaflow.sink", "pynumaflow.testing", "pynumaflow.errors"]
)
def test_every_public_name_is_documented(module: str) -> None:
    """Each name in a public module's __all__ has an entry in docs/api.md."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = api.split(f"## `{module}`", 1)[1].split("\n## ", 1)[0]
    for name in importlib.import_module(module).__all__:
        assert f" `{name}" in section, name


def test_guide_links_resolve() -> None:
    """Relative links in the docs and README point at files that exist."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
