"""Things a test opens and must close whatever its outcome: the ``closing`` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest

__all__ = ["closing"]


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@pytest.fixture
def closing() -> Iterator[Callable[[C], C]]:
    """``closing(thing)`` returns ``thing`` and closes it when the test ends (last opened, first closed)."""
    opened: list[Closable] = []

    def register(thing: C) -> C:
        opened.append(thing)
        return thing

    yield register
    for thing in reversed(opened):
        thing.close()
