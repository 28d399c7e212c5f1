"""The list type behind Messages, MessageTs and Responses (pynumaflow 0.4 semantics)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Generic, List, TypeVar, Union, overload

__all__ = ["ItemList"]

_T = TypeVar("_T")


class ItemList(Generic[_T]):
    """An ordered list of handler outputs, built from ``*items``.

    Supports ``append``, ``len``, iteration and ``[i]``; slicing raises ``TypeError`` and
    ``items()`` is deprecated, as in pynumaflow 0.4.
    """

    __slots__ = ("_items",)

    def __init__(self, *items: _T) -> None:
        self._items: List[_T] = list(items)

    def append(self, item: _T) -> None:
        """Add one item at the end."""
        self._items.append(item)

    def items(self) -> List[_T]:
        """Return the items as a list (deprecated: iterate instead)."""
        warnings.warn(
            f"{type(self).__name__}.items() is deprecated; iterate over the object instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_T]:
        return iter(self._items)

    @overload
    def __getitem__(self, index: int) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[_T]: ...
    def __getitem__(self, index: Union[int, slice]) -> Union[_T, Sequence[_T]]:
        if isinstance(index, slice):
            raise TypeError(f"{type(self).__name__} does not support slicing")
        return self._items[index]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ItemList)
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self._items))})"
