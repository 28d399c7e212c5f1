"""What a spawned worker process can import of what the parent pickles to it.

A worker started with the "spawn" method imports every function and class it is sent by
module and name. Pickling in the parent catches lambdas and nested functions, but not a
name of the main script that the worker lacks: the worker runs the script under another
name, so what the ``if __name__ == "__main__":`` block defines does not exist there (and
a script given with ``python -c`` or typed at a prompt is not run again at all).
"""

from __future__ import annotations

import ast
import io
import pickle
import sys
from typing import Any, Optional

__all__ = ["names_missing_in_workers"]


class _MainNames(pickle.Pickler):
    """Pickles to a buffer, noting the top-level names of ``__main__`` it refers to."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO())
        self.names: set[str] = set()

    def persistent_id(self, obj: Any) -> None:
        # Called for every object pickled, classes and functions saved by name included.
        if getattr(obj, "__module__", None) == "__main__" and hasattr(obj, "__qualname__"):
            self.names.add(str(obj.__qualname__).split(".")[0])


def names_missing_in_workers(obj: object) -> tuple[list[str], Optional[str]]:
    """Pickle ``obj``; the names of the main script it needs that a worker would not have.

    Returns:
        The names (sorted), and the main script's path (None: it has none, e.g.
        ``python -c``, so every name of ``__main__`` is missing).

    Raises:
        Exception: what pickling raises (e.g. for a lambda or a nested function).

    """
    pickler = _MainNames()
    pickler.dump(obj)
    if not pickler.names:
        return [], None
    path: Optional[str] = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None:
        return sorted(pickler.names), None
    try:
        with open(path, "rb") as script:
            tree = ast.parse(script.read(), path)
    except (OSError, SyntaxError, ValueError):
        return [], path  # cannot tell: let the worker say it
    return sorted(pickler.names & _guarded_only(tree.body)), path


def _guarded_only(body: list[ast.stmt]) -> set[str]:
    """Names bound inside ``if __name__ == "__main__":`` blocks and nowhere else at top level."""
    guarded: set[str] = set()
    elsewhere: set[str] = set()
    for statement in body:
        if isinstance(statement, ast.If) and _is_main_guard(statement.test):
            guarded |= _bound(statement.body)
            elsewhere |= _bound(statement.orelse)
        else:
            elsewhere |= _bound([statement])
    return guarded - elsewhere


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    sides = [test.left, test.comparators[0]]
    return (
        isinstance(test.ops[0], ast.Eq)
        and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
        and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    )


def _bound(statements: list[ast.stmt]) -> set[str]:
    """Names these statements (and the blocks inside them, not functions') bind."""
    names: set[str] = set()
    for statement in statements:
        for node in _walk_block(statement):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _walk_block(node: ast.AST) -> list[ast.AST]:
    """``node`` and what it holds, without entering function or class bodies."""
    found = [node]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        return found
    for child in ast.iter_child_nodes(node):
        found += _walk_block(child)
    return found
