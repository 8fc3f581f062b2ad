"""Correlation ids: one id for everything done on behalf of one request or job.

`correlation_id(value)` sets the id for a block (sync or async), in a context
variable, so it follows the code into the tasks it starts. Log records from stalwart
carry it as ``extra["correlation_id"]``, and the HTTP wrappers send it with every
request they make (``X-Correlation-ID`` by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._scoped import Scoped

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["CorrelationId", "correlation_id", "current_correlation_id"]

_scope: Scoped[str | None] = Scoped("stalwart_correlation_id", None)
_current = _scope.var


def current_correlation_id() -> str | None:
    """Return the correlation id in force here, or `None` without one.

    .. versionadded:: 0.1.0
    """
    return _current.get()


class CorrelationId:
    """A correlation id for a block, used with ``with`` or ``async with``.

    Returned by `stalwart.correlation_id()`; see there.
    """

    __module__ = "stalwart"
    __slots__ = ("value",)

    def __init__(self, value: str | None = None) -> None:
        if value is None:
            import uuid  # noqa: PLC0415 - only when an id must be made up

            value = uuid.uuid4().hex
        if not isinstance(value, str):
            raise TypeError(f"value must be a string or None, got {value!r}")
        if not value or not value.isprintable():
            raise ValueError(
                f"value must be a non-empty string of printable characters, got {value!r}"
            )
        self.value = value

    def __repr__(self) -> str:
        return f"stalwart.correlation_id({self.value!r})"

    def __enter__(self) -> str:
        _scope.enter(self.value)
        return self.value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _scope.leave()

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def correlation_id(value: str | None = None) -> CorrelationId:
    """Set the correlation id of everything inside a ``with`` (or ``async with``) block.

    .. code-block:: python

        with stalwart.correlation_id(request.headers.get("X-Correlation-ID")) as cid:
            client.get("https://api.example.com/orders")   # sends X-Correlation-ID: cid

    Args:
        value: The id; ``None`` makes up a new one (a random UUID, as 32 hex digits).
            An inner block's id replaces the outer one until it ends.

    Returns:
        A context manager whose ``with`` gives the id.

    Raises:
        TypeError: `value` is neither a string nor ``None``.
        ValueError: `value` is empty, or holds characters that cannot go in a header
            (newlines, say).

    .. versionadded:: 0.1.0
    """
    return CorrelationId(value)
