"""Write docs/api.md: every public name of pynumaflow with its signature and docstring.

Run by `nox -s docs`; a test fails when docs/api.md is stale. Usage:
    python tools/generate_api_docs.py [--check]
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "api.md"
MODULES = [
    "pynumaflow.function",
    "pynumaflow.sink",
    "pynumaflow.sourcer",
    "pynumaflow.sideinput",
    "pynumaflow.testing",
    "pynumaflow.errors",
    "pynumaflow",
    "pynumaflow.mapper",
    "pynumaflow.mapstreamer",
    "pynumaflow.sourcetransformer",
    "pynumaflow.reducer",
    "pynumaflow.reducestreamer",
    "pynumaflow.accumulator",
    "pynumaflow.sessionreducer",
    "pynumaflow.sinker",
    "pynumaflow.batchmapper",
    "pynumaflow.shared",
]

HEADER = """\
# API reference

Generated from the docstrings by `nox -s docs` (`tools/generate_api_docs.py`); do not
edit by hand. Every name listed in a public module's `__all__` is here. The guide,
with handler signatures, errors and deployment, is [guide.md](guide.md).
"""


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip() or "(no docstring)"


class _Text:
    """An annotation shown as written (a string, with `from __future__ import annotations`)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _plain(annotation: Any) -> Any:
    return _Text(annotation) if isinstance(annotation, str) else annotation


def _signature(name: str, obj: Any, *, returns: bool = True) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = [p.replace(annotation=_plain(p.annotation)) for p in signature.parameters.values()]
    if returns:
        signature = signature.replace(
            parameters=params, return_annotation=_plain(signature.return_annotation)
        )
    else:
        signature = signature.replace(parameters=params, return_annotation=inspect.Signature.empty)
    return f"{name}{signature}"


def _members(cls: type) -> list[tuple[str, Any]]:
    seen: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        if not base.__module__.startswith("pynumaflow"):
            continue
        for name, value in vars(base).items():
            if not name.startswith("_"):
                seen[name] = value
    return [(name, value) for name, value in seen.items() if not isinstance(value, str)]


def _member(cls_name: str, name: str, value: Any) -> list[str]:
    if isinstance(value, property):
        title = f"property `{cls_name}.{name}`"
        doc = _doc(value)
    elif isinstance(value, (classmethod, staticmethod)):
        title = f"`{cls_name}.{_signature(name, value.__get__(None, object))}`"
        doc = _doc(value.__func__)
    elif inspect.isfunction(value):
        title = f"`{cls_name}.{_signature(name, value)}`"
        doc = _doc(value)
    else:
        return []
    body = "\n".join(f"  {line}" if line else "" for line in doc.splitlines())
    return [f"- {title}", "", body, ""]


def _entry(name: str, obj: Any) -> list[str]:
    lines: list[str] = []
    if inspect.isclass(obj):
        title = "exception" if issubclass(obj, BaseException) else "class"
        lines += [f"### {title} `{_signature(name, obj, returns=False)}`", "", _doc(obj), ""]
        for member_name, value in _members(obj):
            lines += _member(name, member_name, value)
    elif callable(obj):
        lines += [f"### function `{_signature(name, obj)}`", "", _doc(obj), ""]
    else:
        lines += [f"### constant `{name}` = `{obj!r}`", ""]
    return lines


def _kinds() -> list[str]:
    """The kind table (pynumaflow._faces.kinds) as a Markdown table."""
    from pynumaflow._faces.kinds import FAMILIES, MODERN_FAMILIES

    lines = [
        "## Kinds",
        "",
        "Every kind a server serves, from the kind table (`pynumaflow._faces.kinds`). On v1",
        "a container serves the socket of its `NUMAFLOW_UD_CONTAINER_TYPE` role (unset: the",
        "first one listed). The 0.4 API's servers (`function`, `sink`) serve both generations;",
        "the modern API's (`pynumaflow.<server>`) serve v1 only.",
        "",
        "| kind | server | keyword | handler | legacy (Numaflow 0.8-0.9) | v1 (Numaflow >= 1.4) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for family in (*FAMILIES, *MODERN_FAMILIES):
        for kind in family.kinds:
            handler = f"`h({kind.params})`" + (" yielding" if kind.stream else "")
            if kind.inspect is not None:  # not one callable: an object with handler methods
                handler = kind.params
            legacy = "-"
            if family.legacy is not None and kind.legacy_method is not None:
                legacy = f"`{kind.legacy_method}` on `{family.legacy.sock_name}`"
            v1 = "-"
            if kind.v1 is not None:
                v1 = "; ".join(
                    f"{socket.role}: `{socket.sock}`, `{socket.info}`" for socket in kind.v1.sockets
                )
                if kind.v1.metadata:
                    v1 += " (" + ", ".join(f"{k}={v}" for k, v in kind.v1.metadata.items()) + ")"
            lines.append(
                f"| {kind.name} | {family.name} | `{kind.keyword}` | {handler} | {legacy} | {v1} |"
            )
    return [*lines, ""]


def render() -> str:
    """The whole of docs/api.md."""
    lines = [HEADER, *_kinds()]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", _doc(module), ""]
        for name in sorted(module.__all__, key=lambda n: (n != n.upper(), n.lower())):
            lines += _entry(name, getattr(module, name))
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    """Write docs/api.md, or with --check say whether it is up to date."""
    text = render()
    if "--check" in sys.argv[1:]:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run `nox -s docs`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
