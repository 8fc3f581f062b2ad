"""A context variable that nested ``with`` blocks set and undo, innermost last.

`Scoped` is what `stalwart.deadline` and `stalwart.correlation_id` keep their values
in. The tokens that undo each block are kept in the context too, not on the object
that opened the block: one `Deadline` shared by concurrent tasks must undo each use
in the context that made it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Generic, TypeVar

__all__ = ["Scoped"]

T = TypeVar("T")


class Scoped(Generic[T]):
    """A context variable with a stack of blocks that set it (`enter` and `leave`)."""

    __slots__ = ("_tokens", "var")

    def __init__(self, name: str, default: T) -> None:
        self.var: ContextVar[T] = ContextVar(name, default=default)
        self._tokens: ContextVar[tuple[Token[T], ...]] = ContextVar(f"{name}_tokens", default=())

    def enter(self, value: T) -> None:
        """Set the variable to `value` until the matching `leave`."""
        self._tokens.set((*self._tokens.get(), self.var.set(value)))

    def leave(self) -> None:
        """Undo the innermost `enter` made in this context."""
        *outer, token = self._tokens.get()
        self._tokens.set(tuple(outer))
        self.var.reset(token)
