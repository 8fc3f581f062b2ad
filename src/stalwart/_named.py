"""`Named`: one instance per name, for the strategies shared by name.

Bulkheads, retry budgets and hedgers are shared by name as breakers are by the breaker
registry.

`get(name, options, build)` returns the instance called `name`, building it with
`build()` on first use. Options describe the whole instance: asking again with the same
options returns it, with other options raises `ValueError` naming each difference, and
asking with no options returns whatever is there. Each kind keeps one `Named` at module
level; `stats()` gathers every instance's stats for health checks and admin views.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from . import _validate

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping

__all__ = ["Named", "Reporting"]


class Reporting(Protocol):
    """What a named instance offers: its name, its options and its stats."""

    @property
    def name(self) -> str: ...

    def options(self) -> dict[str, Any]:
        """The options that shape it, normalised (seconds as floats, ...)."""
        ...

    def stats_dict(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=Reporting)


class Named(Generic[T]):
    """Instances of one kind (``"bulkhead"``, ``"retry budget"``, ...) by name."""

    __slots__ = ("_entries", "_lock", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Named({self.kind!r}, {sorted(self._entries)!r})"

    def get(self, name: str, options: Mapping[str, Any], build: Callable[[], T]) -> T:
        """Return the instance called `name`, calling `build()` on first use.

        Raises:
            ValueError: `name` is empty, or the instance exists with other options
                (each difference named, with both values).
        """
        entry = self._entries.get(name)
        if entry is not None and not options:
            return entry[0]  # no lock: dict reads are atomic
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                instance = build()
                self._entries[name] = (instance, dict(options))
                return instance
        instance, held = entry
        differences = [
            f"{option}={held.get(option)!r} (asked {value!r})"
            for option, value in options.items()
            if held.get(option) != value
        ]
        if differences:
            raise ValueError(
                f"{self.kind} {name!r} already exists with other options: "
                + ", ".join(differences)
            )
        return instance

    def share(
        self,
        name: str,
        options: Mapping[str, Any],
        build: Callable[..., T],
        *,
        allowed: Collection[str],
        spelling: str,
    ) -> T:
        """Return the instance called `name`, built as ``build(name, **options)`` first.

        What ``stalwart.bulkhead(name, ...)`` and its siblings do. With no options, the
        instance there is returned (or one with the defaults is built). With options,
        they describe the whole instance, those left out at their defaults (its
        `options()`, and any other option, such as a clock, as given): the same
        options return it, others raise `ValueError` naming each difference.

        Raises:
            TypeError: `name` is not a string (`spelling` used without a name), or an
                option is not in `allowed`.
            ValueError: `name` is empty, an option is out of range (as `build`
                says), or the instance exists with other options.
        """
        _validate.name(name, spelling, self.kind)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(
                f"{spelling}() got unknown options: {', '.join(unknown)}; the options"
                f" are {', '.join(sorted(allowed))}"
            )
        if not options:
            found = self.find(name)
            if found is not None:
                return found
        candidate = build(name, **options)  # validates every option given
        shape = candidate.options()
        full = {**shape, **{key: options.get(key) for key in allowed if key not in shape}}
        try:
            return self.get(name, full, lambda: candidate)
        except ValueError:
            found = self.find(name)
            if options or found is None:
                raise
            return found  # made meanwhile by another thread, with options of its own

    def find(self, name: str) -> T | None:
        """The instance called `name`, or None (never creates one)."""
        entry = self._entries.get(name)
        return None if entry is None else entry[0]

    def names(self) -> list[str]:
        """The names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[T]:
        return iter([instance for instance, _ in list(self._entries.values())])

    def stats(self) -> dict[str, dict[str, Any]]:
        """Every instance's `stats_dict()`, by name, sorted by name."""
        return {name: self._entries[name][0].stats_dict() for name in self.names()}

    def remove(self, name: str) -> T:
        """Forget the instance called `name` and return it.

        Raises:
            KeyError: No instance has that name.
        """
        with self._lock:
            return self._entries.pop(name)[0]

    def clear(self) -> None:
        """Forget every instance (tests use this between cases)."""
        with self._lock:
            self._entries.clear()
