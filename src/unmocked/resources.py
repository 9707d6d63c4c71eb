"""The one shape every resource-owning object in unmocked has: ``close()``, and ``with`` for it."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

_Self = TypeVar("_Self", bound="Closeable")


class Closeable:
    """Release what the object owns in :meth:`close`; ``with obj:`` closes it on the way out."""

    def close(self) -> None:
        """Release what this object owns; safe to call more than once."""

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
