"""A virtualenv holding the SDK we are compared with and nothing of ours (all are named
`pynumaflow`): 0.4.2 for the legacy protocols, 0.14.0 for v1.

python benchmarks/original_env.py DIR [0.4.2|0.14.0]    # create or reuse DIR; print its python
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# version -> its pinned requirements
REQUIREMENTS = {
    "0.4.2": HERE / "requirements-original.txt",
    "0.14.0": HERE / "requirements-v014.txt",
}


def base_python(version: str) -> str:
    """An interpreter the version installs on (0.4.2 declares Python < 3.12)."""
    if version != "0.4.2" or sys.version_info < (3, 12):
        return sys.executable
    for name in ("python3.11", "python3.10"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("pynumaflow 0.4.2 needs Python < 3.12: no python3.11 or python3.10 found")


def ensure(venv: Path, version: str = "0.4.2") -> str:
    """Create (or reuse, if its pins are unchanged) the virtualenv; return its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    requirements = REQUIREMENTS[version]
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return str(python)
    if venv.exists():
        shutil.rmtree(venv)
    # --without-pip + ensurepip would be slower; the stdlib venv brings pip.
    subprocess.run([base_python(version), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        check=True,
    )
    check = "import pynumaflow, importlib.metadata as m; print(m.version('pynumaflow'))"
    found = subprocess.run(
        [str(python), "-c", check], check=True, capture_output=True, text=True
    ).stdout.strip()
    if found != version:
        raise SystemExit(f"{venv}: expected pynumaflow {version}, found {found!r}")
    stamp.write_text(digest)
    return str(python)


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]).resolve(), *sys.argv[2:3]))
