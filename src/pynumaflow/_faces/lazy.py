"""Package attributes imported on first use (a module-level ``__getattr__``, PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(
    namespace: Dict[str, Any], exports: Mapping[str, str]
) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` importing ``exports`` on first use.

    ``exports`` maps each name to the module defining it; ``namespace`` is the package's
    ``globals()``, where a name stays once imported.
    """
    module_name = namespace["__name__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:  # noqa: N807 - the module hook's name
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
