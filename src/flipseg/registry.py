"""Name -> factory tables (one per kind: baselines, networks, methods, ...)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from flipseg.errors import FlipsegError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A small name -> object table filled by a ``register`` decorator.

    Unknown names fail with the list of valid ones.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise FlipsegError(f"unknown {self.kind} {name!r}; choose one of: {valid}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
