"""The layers hold (docs/architecture.md, "Layers").

No module of src/pynumaflow imports from a layer above its own, and the folders import
one another without a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "pynumaflow"

# Top to bottom; a module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "faces",
        (
            "pynumaflow.function",
            "pynumaflow.sink",
            "pynumaflow.mapper",
            "pynumaflow.mapstreamer",
            "pynumaflow.sourcetransformer",
            "pynumaflow.reducer",
            "pynumaflow.sinker",
            "pynumaflow.batchmapper",
            "pynumaflow.shared",
            "pynumaflow.sourcer",
            "pynumaflow.sideinput",
            "pynumaflow.mapper",
            "pynumaflow.mapstreamer",
            "pynumaflow.sourcetransformer",
            "pynumaflow.reducer",
            "pynumaflow.reducestreamer",
            "pynumaflow.accumulator",
            "pynumaflow.sessionreducer",
            "pynumaflow.sinker",
            "pynumaflow.shared",
            "pynumaflow.testing",
            "pynumaflow.errors",
            "pynumaflow.__main__",
            "pynumaflow._faces",
            "pynumaflow._cli",
        ),
    ),
    ("services", ("pynumaflow._services", "pynumaflow._client")),
    ("engines", ("pynumaflow._engines",)),
    ("invoker", ("pynumaflow._invoke",)),
    ("core", ("pynumaflow._core",)),
    ("codec", ("pynumaflow._codec",)),
    # The package itself holds only the version literal and setup_logging (stdlib only).
    ("types", ("pynumaflow._types", "pynumaflow")),
    ("generated", ("pynumaflow._proto",)),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific prefix naming ``module``."""
    best, rank = "", -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative / "__init__.py").exists()


def our_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if not name.startswith("pynumaflow._proto"):
            yield name, path


def imports_of(name: str, path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, anywhere in it (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` names the module, `from module import name` the module.
            targets = [
                f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t == "pynumaflow" or t.startswith("pynumaflow."))
    return found


GRAPH = {name: imports_of(name, path) for name, path in our_modules()}


def folder_of(module: str) -> str:
    """The folder (package) a module sits in.

    The top-level modules (the package with its version, errors, _invoke) are
    of different layers, so each stands alone.
    """
    path = SRC / Path(*module.split("."))
    folder = module if (path / "__init__.py").exists() else module.rpartition(".")[0]
    return module if folder == "pynumaflow" else folder


def test_every_module_is_in_a_layer() -> None:
    """LAYERS places each module, so that a new folder cannot slip past the rule."""
    for name in GRAPH:
        layer_of(name)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_from_a_layer_above_its_own(module: str) -> None:
    """Data flows down the layers: faces, services, engines, invoker, core, codec, types."""
    rank = layer_of(module)
    upward = sorted(
        f"{target} ({LAYERS[layer_of(target)][0]})"
        for target in GRAPH[module]
        if layer_of(target) < rank
    )
    assert not upward, f"{module} ({LAYERS[rank][0]}) imports from above: {upward}"


def test_types_import_nothing_of_ours() -> None:
    """The public datatypes are the bottom layer: stdlib only."""
    for module, targets in GRAPH.items():
        if module.startswith("pynumaflow._types"):
            assert {t for t in targets if not t.startswith("pynumaflow._types")} == set(), module


def test_the_core_knows_no_kind() -> None:
    """The core uses the codec's wire and rpc pieces only, never a kind's codec."""
    for module, targets in GRAPH.items():
        if module.startswith("pynumaflow._core"):
            codecs = {t for t in targets if t.startswith("pynumaflow._codec")}
            assert codecs <= {"pynumaflow._codec.wire", "pynumaflow._codec.rpc"}, module


def test_no_cycle_between_folders() -> None:
    """The folder graph (an edge where a module imports from another folder) is acyclic."""
    edges: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        source = folder_of(module)
        for target in targets:
            if folder_of(target) != source:
                edges.setdefault(source, set()).add(folder_of(target))
    state: dict[str, str] = {}  # "active" on the current path, "done" once explored

    def visit(folder: str, path: list[str]) -> None:
        state[folder] = "active"
        for successor in sorted(edges.get(folder, ())):
            if state.get(successor) == "active":
                cycle = path[path.index(successor) :] if successor in path else path
                pytest.fail(f"folders import each other: {' -> '.join([*cycle, successor])}")
            if successor not in state:
                visit(successor, [*path, successor])
        state[folder] = "done"

    for folder in sorted(edges):
        if folder not in state:
            visit(folder, [folder])


def test_the_checks_see_an_upward_import() -> None:
    """The graph is read correctly: a known downward import is found, and would count."""
    assert "pynumaflow._codec.fields" in GRAPH["pynumaflow._codec.legacy.function"]
    assert "pynumaflow._services.v1.map" in GRAPH["pynumaflow._faces.kinds"]  # a local import
    assert layer_of("pynumaflow._services.v1.map") < layer_of("pynumaflow._codec.fields")
