"""Development sessions: tests, lint, typecheck, protos, docs."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]

# Examples that are the 0.4 README's code verbatim and carry its typing slips: the reduce
# example annotates its async iterator of datums as Iterator[Datum].
SEED_TYPING_GAPS = {
    "examples/function/reduce_counter/example.py": ("--disable-error-code", "attr-defined"),
}


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package."""
    # The editable install provides the real `pynumaflow` console script; the test of
    # it fails (instead of skipping) when this variable says it must be there.
    session.install("-e", ".[test,protos]")
    session.run("pytest", *session.posargs, env={"PYNUMAFLOW_CONSOLE_SCRIPT": "required"})


@nox.session(name="tests-pythons", python=["3.10", "3.12", "3.13"])
def tests_pythons(session: nox.Session) -> None:
    """The suite on the other supported Pythons (CI runs 3.11; not a default session)."""
    tests(session)


# The betterproto range pyproject.toml declares (>=2.0.0b7,<2.1), by its two ends: the
# lowest version and the newest one the range admits. Found by installing each release:
# 2.0.0b3-b5 import pkg_resources without requiring setuptools (ModuleNotFoundError in
# a fresh virtualenv); 2.0.0b6 converts timestamps before 1970 off by a second (10 of
# the byte-for-byte codec tests fail). Servers never import betterproto; the generated
# classes, the client of the CLI and pynumaflow.testing do.
BETTERPROTO_BOUNDS = {"lowest": "betterproto==2.0.0b7", "newest": "betterproto>=2.0.0b7,<2.1"}
BETTERPROTO_TESTS = (
    "tests/codec/legacy",
    "tests/codec/v1",
    "tests/codec/test_fields.py",
    "tests/codec/test_rpc.py",
    "tests/api/test_imports.py",
    "tests/core/test_startup.py",
    "tests/api/test_testing_kit.py",
    "tests/api/test_testing_kit_source.py",
    "tests/api/test_testing_kit_windows.py",
    "tests/cli/test_cli_run.py",
    "tests/cli/test_cli_windows.py",
    "tests/cli/test_cli_pull.py",
    "tests/cli/test_probe.py",
    "examples/testing",
)


@nox.session(name="betterproto-bounds")
@nox.parametrize("end", list(BETTERPROTO_BOUNDS))
def betterproto_bounds(session: nox.Session, end: str) -> None:
    """The tests that use betterproto, at each end of its declared range (not a default)."""
    session.install("-e", ".[test]")
    session.install("--upgrade", "--pre", BETTERPROTO_BOUNDS[end])
    session.run("python", "-c", "import importlib.metadata as m; print(m.version('betterproto'))")
    session.run("pytest", "-q", *BETTERPROTO_TESTS, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style with ruff."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with mypy (strict on src/ and examples/)."""
    session.install("-e", ".[test]", "mypy==2.4.1")
    session.run("mypy")
    # Each example is a stand-alone script (several share a file name): check one by one.
    for example in sorted(Path("examples").rglob("*.py")):
        session.run("mypy", "--strict", *SEED_TYPING_GAPS.get(example.as_posix(), ()), str(example))


@nox.session
def protos(session: nox.Session) -> None:
    """Regenerate src/pynumaflow/_proto from protos/ (never edit the output by hand)."""
    session.install("-e", ".[protos]")
    session.run("python", "tools/generate_protos.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/api.md from the docstrings (a test fails when it is stale)."""
    session.install("-e", ".")
    session.run("python", "tools/generate_api_docs.py")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the wire decoders (hypothesis, 100,000 inputs per decoder by default)."""
    session.install("-e", ".[test]")
    session.run("python", "tools/fuzz_codec.py", *session.posargs)


@nox.session
def audit(session: nox.Session) -> None:
    """Audit the runtime dependencies for known vulnerabilities (pip-audit).

    Fails, saying so, when the vulnerability database cannot be reached: an audit that
    could not look anything up has not passed.
    """
    session.install("pip-audit")
    session.install(".")
    try:
        session.run("pip-audit", "--progress-spinner", "off", "--skip-editable")
    except nox.command.CommandFailed:
        session.error(
            "pip-audit failed: either a dependency has a known vulnerability (see above) "
            "or its vulnerability database could not be reached from this machine; "
            "the audit was NOT passed."
        )


def _bench(session: nox.Session, reference: str, *args: str) -> None:
    """benchmarks/run.py against pynumaflow `reference`, in a virtualenv of its own."""
    # Ours, installed as users get it, plus the grpcio load client (a benchmark-only dep).
    session.install(".", "grpcio>=1.60", "grpcio-tools>=1.60")
    # The reference is also called `pynumaflow`: it gets a virtualenv of its own beside this.
    venv = Path(session.virtualenv.location).parent / f"bench-original-{reference}"
    session.run(
        "python",
        "benchmarks/run.py",
        *args,
        "--original-venv",
        str(venv),
        "--results",
        "benchmarks/RESULTS.md",
        *session.posargs,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark against pynumaflow 0.4.2 and a bare grpclib echo (benchmarks/README.md)."""
    _bench(session, "0.4.2")


@nox.session(name="bench-v1")
def bench_v1(session: nox.Session) -> None:
    """Benchmark the v1 protocols against pynumaflow 0.14.0 (benchmarks/README.md)."""
    _bench(session, "0.14.0", "--suite", "v1")
