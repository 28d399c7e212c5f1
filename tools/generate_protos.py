"""Generate the betterproto code for protos/ into a folder (default: src/pynumaflow/_proto).

Used by `nox -s protos` and by the test that fails when the committed code is stale.
Needs the `protos` extra (exact pins keep the output byte-stable).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = [
    "function/v1/udfunction.proto",
    "sink/v1/udsink.proto",
    "common/metadata.proto",
    "common/nack_options.proto",
    "map/v1/map.proto",
    "sourcetransformer/v1/transform.proto",
    "reduce/v1/reduce.proto",
    "sessionreduce/v1/sessionreduce.proto",
    "accumulator/v1/accumulator.proto",
    "sink/v1/sink.proto",
    "source/v1/source.proto",
    "sideinput/v1/sideinput.proto",
    "google/rpc/status.proto",
]
DEFAULT_OUT = ROOT / "src" / "pynumaflow" / "_proto"


def generate(out: Path) -> None:
    """Replace `out` with freshly generated code."""
    plugin = Path(sys.executable).parent / "protoc-gen-python_betterproto"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                "-I",
                str(ROOT / "protos"),
                f"--plugin=protoc-gen-python_betterproto={plugin}",
                f"--python_betterproto_out={tmp}",
                *PROTOS,
            ],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp, out)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
