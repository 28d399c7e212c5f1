"""Start-up stays lean: the version is a literal and the server path imports no extras.

benchmarks/startup.py measures the time itself; these checks are on sys.modules only.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

import pynumaflow

from conftest import ROOT

# What a server's start-up once imported for nothing (~100 ms of ~280 together).
NOT_AT_STARTUP = [
    "importlib.metadata",  # for __version__
    "email",  # by importlib.metadata
    "zipfile",  # by importlib.metadata
    "multiprocessing",  # MultiProcServer only
    "betterproto",  # the generated messages: our codecs encode and decode the wire
    "pynumaflow._proto",
    "dateutil",  # by betterproto
    "tempfile",  # the server-info file is written without it
]


def imported_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    ("statement", "other_servers"),
    [
        ("from pynumaflow.function import Server, AsyncServer", "pynumaflow.sink._servers"),
        ("from pynumaflow.sink import Sink, AsyncSink", "pynumaflow.function._servers"),
        ("from pynumaflow.sourcer import SourceAsyncServer", "pynumaflow.function._servers"),
        ("from pynumaflow.sideinput import SideInputServer", "pynumaflow.sink._servers"),
    ],
)
def test_server_imports_no_extras(statement: str, other_servers: str) -> None:
    """Nor the other package's servers (the codecs share the datatypes only)."""
    modules = imported_by(statement)
    found = [m for m in [*NOT_AT_STARTUP, other_servers] if m in modules]
    assert not found, f"{statement!r} imports {found}"


@pytest.mark.parametrize(
    "statement",
    [
        "from pynumaflow.function import Server, AsyncServer",
        "from pynumaflow.sink import Sink, AsyncSink",
        "from pynumaflow.sourcer import SourceAsyncServer",
        "from pynumaflow.sideinput import SideInputServer, SideInputWatcher",
        "import pynumaflow._cli",
    ],
)
def test_the_kind_table_imports_no_service(statement: str) -> None:
    """Its service factories import a service on first use: a server loads only its own."""
    modules = imported_by(statement)
    assert "pynumaflow._faces.kinds" in modules or statement.endswith("_cli")
    found = sorted(m for m in modules if m.startswith("pynumaflow._services."))
    assert not found, f"{statement!r} imports {found}"


def test_multiprocserver_imports_on_first_use() -> None:
    modules = imported_by("from pynumaflow.function import MultiProcServer")
    assert "multiprocessing" in modules
    assert "pynumaflow.function._multiproc" in modules


def test_pyproject_takes_the_version_from_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/pynumaflow/__init__.py"


def test_installed_version_is_the_package_version() -> None:
    try:
        installed = importlib.metadata.version("pynumaflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pynumaflow is not installed (run from a source tree)")
    assert installed == pynumaflow.__version__
