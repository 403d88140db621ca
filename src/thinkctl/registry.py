"""Name -> object registries for every string option in thinkctl (tasks, strategies, policies, calibrators).

An unknown name raises :class:`UnknownNameError`, whose message lists the known names.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError", "split_name"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry. Subclasses both KeyError and ValueError."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection of objects of one kind.

    Examples
    --------
    >>> STRATEGIES: Registry[Callable[..., int]] = Registry("strategy")
    >>> @STRATEGIES.register("one")
    ... def one() -> int:
    ...     return 1
    >>> STRATEGIES.get("one")()
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def split_name(name: object, what: str) -> tuple[str, int | None]:
    """``"base@N"`` -> ``("base", N)`` and ``"base"`` -> ``("base", None)`` for names of ``what`` (``"strategy"``,
    ``"rule"``); a clear ValueError for a name that is not a non-empty string or whose ``N`` is not a positive
    integer. The base is not looked up here."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    base, sep, raw = name.strip().partition("@")
    if not sep:
        return base, None
    try:
        param = int(raw)
    except ValueError:
        raise ValueError(f"{what} {name!r}: the part after '@' must be a positive integer, got {raw!r}") from None
    if param < 1:
        raise ValueError(f"{what} {name!r}: the part after '@' must be a positive integer, got {param}")
    return base, param
