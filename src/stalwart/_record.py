"""Small immutable records, made without `dataclasses`.

`dataclasses` imports `inspect` (with `ast`, `dis` and `tokenize`), and each frozen
dataclass compiles its methods when the class is made: together several milliseconds
of ``import stalwart``, for records that exist only once something failed. A `Record`
behaves as a frozen, slotted dataclass does for its users (equality and hashing over
the fields, a dataclass repr, pickling and copying, `dataclasses.FrozenInstanceError`
on assignment), and type checkers see it as one. What `dataclasses.replace` and
`dataclasses.asdict` do for a dataclass, `Record._replace` and `Record._asdict` do for
a record (as for a named tuple); `copy.replace` (Python 3.13) works too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, cast

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[type], type]:
        """Stand in for `typing_extensions.dataclass_transform`, a marker for type checkers."""
        return lambda cls: cls


__all__ = ["Record"]


@dataclass_transform(frozen_default=True)
class Record:
    """Base of immutable records whose fields are their ``__slots__``, in order.

    A subclass names its fields in ``__slots__``, annotates them and sets them in its
    ``__init__`` with `_set`; its ``__init__`` takes each field by its name (`_replace`
    relies on it). Equality compares records of the same class field by field (`_key`
    may narrow that), and a record hashes as the tuple it compares.
    """

    __slots__: ClassVar[tuple[str, ...]] = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        # Positional patterns, as a dataclass has (type checkers make their own).
        cls.__match_args__ = cls.__slots__  # type: ignore[misc]

    def _set(self, *values: object) -> None:
        """Set the fields, in ``__slots__`` order (for ``__init__`` only)."""
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def _asdict(self) -> dict[str, Any]:
        """The fields by name, in order (shallow: a field's value is not copied)."""
        return dict(zip(self.__slots__, self._values(), strict=True))

    def _replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, made (and so validated) by ``__init__``.

        Raises:
            TypeError: A name in `changes` is not a field.
        """
        fields = self.__slots__
        unknown = changes.keys() - set(fields)
        if unknown:
            raise TypeError(
                f"{self.__class__.__qualname__}._replace() got unknown fields {sorted(unknown)}"
            )
        values = {name: changes.get(name, getattr(self, name)) for name in fields}
        return cast("Self", cast("Any", self.__class__)(**values))

    def __replace__(self, **changes: Any) -> Self:
        """What ``copy.replace(record, **changes)`` (Python 3.13) calls: `_replace`."""
        return self._replace(**changes)

    def _key(self) -> tuple[Any, ...]:
        """What equality and hashing compare: every field, unless a subclass says less."""
        return self._values()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self) -> tuple[type[Record], tuple[Any, ...]]:
        return (self.__class__, self._values())

    def __setattr__(self, name: str, value: object) -> NoReturn:
        from dataclasses import FrozenInstanceError  # noqa: PLC0415 - only on misuse

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        from dataclasses import FrozenInstanceError  # noqa: PLC0415 - only on misuse

        raise FrozenInstanceError(f"cannot delete field {name!r}")
