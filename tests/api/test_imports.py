"""Every module imports on its own, first, in a fresh interpreter (no import cycles)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import pynumaflow

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(pynumaflow.__path__, "pynumaflow.")
    if "._proto" not in info.name
)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first(module: str) -> None:
    """Importing this module before any other of the package works."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
