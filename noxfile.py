"""Development sessions: tests, lint, typecheck, protos."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package."""
    session.install("-e", ".[test,protos]")
    session.run("pytest", *session.posargs)


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
        session.run("mypy", "--strict", str(example))


@nox.session
def protos(session: nox.Session) -> None:
    """Regenerate src/pynumaflow/_proto from protos/ (never edit the output by hand)."""
    session.install("-e", ".[protos]")
    session.run("python", "tools/generate_protos.py")


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


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark against pynumaflow 0.4.2 and a bare grpclib echo (benchmarks/README.md)."""
    # Ours, installed as users get it, plus the grpcio load client (a benchmark-only dep).
    session.install(".", "grpcio>=1.60", "grpcio-tools>=1.60")
    # 0.4.2 is also called `pynumaflow`: it gets a virtualenv of its own beside this one.
    original = Path(session.virtualenv.location).parent / "bench-original-0.4.2"
    session.run(
        "python",
        "benchmarks/run.py",
        "--original-venv",
        str(original),
        "--results",
        "benchmarks/RESULTS.md",
        *session.posargs,
    )
