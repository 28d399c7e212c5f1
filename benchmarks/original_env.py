"""A virtualenv holding pynumaflow 0.4.2 and nothing of ours (both are named `pynumaflow`).

python benchmarks/original_env.py DIR    # create or reuse DIR; print its python
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-original.txt"


def base_python() -> str:
    """An interpreter 0.4.2 installs on (it declares Python < 3.12)."""
    if sys.version_info < (3, 12):
        return sys.executable
    for name in ("python3.11", "python3.10"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("pynumaflow 0.4.2 needs Python < 3.12: no python3.11 or python3.10 found")


def ensure(venv: Path) -> str:
    """Create (or reuse, if its pins are unchanged) the 0.4.2 virtualenv; return its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return str(python)
    if venv.exists():
        shutil.rmtree(venv)
    # --without-pip + ensurepip would be slower; the stdlib venv brings pip.
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
    )
    check = "import pynumaflow.function, importlib.metadata as m; print(m.version('pynumaflow'))"
    version = subprocess.run(
        [str(python), "-c", check], check=True, capture_output=True, text=True
    ).stdout.strip()
    if version != "0.4.2":
        raise SystemExit(f"{venv}: expected pynumaflow 0.4.2, found {version!r}")
    stamp.write_text(digest)
    return str(python)


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]).resolve()))
