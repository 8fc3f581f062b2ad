"""`BreakerRegistry`: one breaker per name, shared defaults and storage, health.

An application usually wants one breaker per dependency, reached from wherever that
dependency is called. A registry hands out that breaker by name, creating it on first
use with the registry's defaults and storage, and reports on all of them at once
(`BreakerRegistry.health`, `BreakerRegistry.snapshot`) for health checks.

`registry` is the default registry and `circuit_breaker` the decorator that goes
through it.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .. import _validate
from .._record import Record
from ..events import BREAKER_HOOKS, hooks, listener_tuple
from .circuit import CircuitBreaker, RecordSpec, _failure_predicate, check_name
from .machine import BreakerConfig, State
from .storage import MemoryStorage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from datetime import timedelta

    from typing_extensions import Unpack

    from .circuit import BreakerStats
    from .storage import Storage

__all__ = [
    "BreakerOptions",
    "BreakerRegistry",
    "HealthStatus",
    "RegistryHealth",
    "circuit_breaker",
    "registry",
]

HealthStatus = Literal["healthy", "degraded", "critical"]
"""What `RegistryHealth.status` holds."""

_OPEN_STATES = frozenset({State.OPEN, State.FORCED_OPEN, State.HALF_OPEN})
"""The states `health` counts as open: those in which the breaker rejects calls (a
half-open breaker lets only its few probes through)."""


class BreakerOptions(TypedDict, total=False):
    """The `CircuitBreaker` options a registry's defaults and `get` accept.

    Everything but the name, which `get` takes, and the storage and clock, which the
    registry sets for all its breakers. Listeners are a parameter of their own.

    .. versionadded:: 0.1.0
    """

    failure_threshold: int | None
    window: float | timedelta | None
    failure_rate: float | None
    minimum_calls: int | None
    window_calls: int | None
    slow_call_duration: float | timedelta | None
    slow_call_rate: float | None
    recovery_timeout: float | timedelta
    half_open_max_calls: int
    success_threshold: int
    record: RecordSpec
    log: bool


_CONFIG_FIELDS = BreakerConfig.__slots__
_OPTION_NAMES = frozenset(BreakerOptions.__optional_keys__)


def _seconds(name: str, value: Any) -> Any:
    """Seconds from a number or a `timedelta`; an error shows the value as given."""
    if name not in _DURATIONS or value is None:
        return value
    return _validate.seconds(name, value, positive=True)


_DURATIONS = frozenset({"window", "slow_call_duration", "recovery_timeout"})


def _options(given: dict[str, Any], base: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate `given` over `base`; return every option, normalised and comparable.

    Raises:
        TypeError: An option is unknown (or is one the registry sets), or `record` is
            not exception types or a predicate.
        ValueError: An option is out of range (named, with its value).
    """
    for name in given:
        if name in {"storage", "clock"}:
            raise TypeError(
                f"{where} got {name}=, which the registry sets for all its breakers;"
                f" pass it to BreakerRegistry()"
            )
        if name not in _OPTION_NAMES:
            raise TypeError(
                f"{where} got an unknown breaker option {name!r};"
                f" options are {', '.join(sorted(_OPTION_NAMES))}"
            )
    merged = {**base, **given}
    config = BreakerConfig(
        **{name: _seconds(name, merged[name]) for name in _CONFIG_FIELDS if name in merged}
    )
    record = merged.get("record")
    _failure_predicate(record)  # validates it: TypeError when it is neither
    return {**config.as_dict(), "record": record, "log": bool(merged.get("log", True))}


class _Keep:
    """The default of `BreakerRegistry.configure`'s ``storage``: keep the one set."""

    def __repr__(self) -> str:
        return "<keep>"


_KEEP = _Keep()


class _Entry(Record):
    __slots__ = ("breaker", "options", "listeners", "refs")  # noqa: RUF023 - fields in order
    breaker: CircuitBreaker | None
    """The breaker, when the registry made it and holds it; ``None`` for breakers
    built directly, which the registry holds through `refs` only."""
    options: dict[str, Any]
    """Every option the breaker was made with (normalised; see `_options`)."""
    listeners: tuple[object, ...]
    """The breaker's own listeners (without the registry's)."""
    refs: tuple[weakref.ref[CircuitBreaker], ...]
    """Breakers built directly under this name, oldest first: more than one only
    with a shared storage, where they are views of one state."""

    def __init__(
        self,
        breaker: CircuitBreaker | None,
        options: dict[str, Any],
        listeners: tuple[object, ...],
        refs: tuple[weakref.ref[CircuitBreaker], ...] = (),
    ) -> None:
        self._set(breaker, options, listeners, refs)

    def live(self) -> CircuitBreaker | None:
        """The breaker, or the oldest built one still alive, or None."""
        if self.breaker is not None:
            return self.breaker
        for ref in self.refs:
            breaker = ref()
            if breaker is not None:
                return breaker
        return None


def _conflict(name: str, differences: list[tuple[str, object, object]]) -> str:
    return f"breaker {name!r} already exists with other options: " + "; ".join(
        f"{option}={old!r} there, {new!r} asked for" for option, old, new in differences
    )


class RegistryHealth(Record):
    """The health of every breaker in a registry, JSON-ready through `as_dict`.

    A breaker counts as **open** when it rejects calls: open, forced open, or half-open
    (which lets only its few probe calls through, and is not trusted yet). A disabled
    breaker lets every call through and counts as closed.

    Attributes:
        status: ``"healthy"`` when no breaker is open, ``"critical"`` when more than
            half of them are, ``"degraded"`` otherwise. A registry without breakers
            is healthy.
        total: How many breakers the registry holds.
        totals: How many breakers are in each state, by state value (``"closed"``,
            ``"open"``, ``"half_open"``, ``"forced_open"``, ``"disabled"``); every
            state is present, with zero when no breaker is in it.
        open: The names of the open breakers, sorted.

    .. versionadded:: 0.1.0
    .. versionchanged:: Unreleased
       No longer a `dataclasses` dataclass (frozen as one still): use `as_dict`
       rather than `dataclasses.asdict`.
    """

    __module__ = "stalwart"
    __slots__ = ("status", "total", "totals", "open")  # noqa: RUF023 - fields in order

    status: HealthStatus
    total: int
    totals: dict[str, int]
    open: tuple[str, ...]

    def __init__(
        self,
        status: HealthStatus,
        total: int,
        totals: dict[str, int],
        open: tuple[str, ...],  # noqa: A002 - the field's name
    ) -> None:
        self._set(status, total, totals, open)

    def as_dict(self) -> dict[str, Any]:
        """Return the health as plain JSON-serialisable data."""
        return {
            "status": self.status,
            "total": self.total,
            "totals": dict(self.totals),
            "open": list(self.open),
        }


class BreakerRegistry:
    """Circuit breakers by name: one per dependency, with shared defaults and storage.

    .. code-block:: python

        breakers = stalwart.BreakerRegistry(failure_threshold=3, recovery_timeout=30)
        jira = breakers.get("jira")  # created now, with the registry's defaults
        assert breakers.get("jira") is jira
        breakers.health().status  # "healthy", "degraded" or "critical"

    `get` creates a breaker on first use and returns the same one afterwards;
    asking for an existing name with options that differ from the breaker's raises
    `ValueError`. Creation is thread-safe: threads asking for the same new name at
    once all receive one breaker.

    A `CircuitBreaker` built directly joins a registry too (`stalwart.registry`
    unless its ``registry=`` says otherwise), held weakly: it counts in `health` and
    `snapshot` and `get` returns it while code references it, and its name is free
    again once it is gone. Building a breaker under a name that a live breaker of
    the registry holds raises `ValueError`.

    Args:
        storage: Where every breaker of the registry keeps its state: the one
            storage all of them bind to (a fresh `MemoryStorage` by default; a Redis
            storage shares the state across processes).
        clock: A monotonic clock (seconds) for every breaker; the real one by default,
            `stalwart.testing.ManualClock` in tests.
        listeners: Listeners given to every breaker the registry creates, before the
            breaker's own (objects with any of ``on_state_change``, ``on_success``,
            ``on_failure``, ``on_rejected``).
        **defaults: Default `CircuitBreaker` options for the breakers the registry
            creates (see `BreakerOptions`); `get` overrides them per breaker. They
            must make a valid breaker by themselves.

    Raises:
        ValueError: A default is out of range (named in the message, with the value).
        TypeError: A default is not a breaker option, or `record`, `storage`, `clock`
            or `listeners` hold the wrong kind of object.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart"
    __slots__ = (
        "_dead",
        "_defaults",
        "_entries",
        "_given",
        "_lock",
        "clock",
        "listeners",
        "storage",
    )

    def __init__(
        self,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] | None = None,
        listeners: Iterable[object] = (),
        **defaults: Unpack[BreakerOptions],
    ) -> None:
        self._given = dict(defaults)
        """The defaults as given: `get` adds its options to these, not to the derived
        ones (a default `minimum_calls` is capped at `window_calls`, not fixed)."""
        self._defaults = _options(self._given, {}, "BreakerRegistry()")
        if storage is not None and not callable(getattr(storage, "bind", None)):
            raise TypeError(f"storage must be a stalwart Storage, got {storage!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.storage: Storage = MemoryStorage() if storage is None else storage
        self.clock = clock
        self.listeners = listener_tuple(listeners)
        hooks(self.listeners, BREAKER_HOOKS)  # validates them: TypeError naming one
        self._entries: dict[str, _Entry] = {}
        self._dead: list[str] = []
        """Names whose weakly held breaker is gone, for the next `_purge`."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        count = len(self)
        return f"<BreakerRegistry {count} breaker{'' if count == 1 else 's'}>"

    @property
    def defaults(self) -> dict[str, Any]:
        """Every option a breaker gets when `get` does not say otherwise."""
        return dict(self._defaults)

    def configure(
        self,
        *,
        storage: Storage | _Keep | None = _KEEP,
        **defaults: Unpack[BreakerOptions],
    ) -> Callable[[], None]:
        """Set the defaults (and the storage) of the breakers the registry creates next.

        For start-up code that configures a registry it did not build, such as the
        default registry (the Django app applies its ``STALWART`` setting with it):

        .. code-block:: python

            undo = stalwart.registry.configure(storage=RedisStorage(url), failure_threshold=3)

        `defaults` replace the registry's defaults wholly, as if given to
        `BreakerRegistry` (none given: back to the built-in defaults). The breakers the
        registry already holds keep their options and their storage: configure before
        the first breaker is made, or `clear` the registry first. Calling it while
        other threads create breakers is safe, but a breaker being created then may
        get either configuration.

        Args:
            storage: The storage of breakers created from now on; ``None`` for a fresh
                `MemoryStorage`; not given, the registry keeps its storage.
            **defaults: Default `CircuitBreaker` options (see `BreakerOptions`).

        Returns:
            A function that puts back the storage and the defaults as they were
            before this call.

        Raises:
            ValueError: A default is out of range (named in the message, with the
                value). Nothing is changed.
            TypeError: A default is not a breaker option, or `storage` is not a
                storage. Nothing is changed.

        .. versionadded:: 0.1.0
        """
        given = dict(defaults)
        derived = _options(given, {}, "configure()")
        if isinstance(storage, _Keep):
            new_storage = self.storage
        elif storage is None:
            new_storage = MemoryStorage()
        elif callable(getattr(storage, "bind", None)):
            new_storage = storage
        else:
            raise TypeError(f"storage must be a stalwart Storage, got {storage!r}")
        with self._lock:
            saved = (self.storage, self._given, self._defaults)
            self.storage, self._given, self._defaults = new_storage, given, derived

        def undo() -> None:
            with self._lock:
                self.storage, self._given, self._defaults = saved

        return undo

    def get(
        self,
        name: str,
        *,
        listeners: Iterable[object] | None = None,
        **config: Unpack[BreakerOptions],
    ) -> CircuitBreaker:
        """Return the breaker called `name`, creating it on first use.

        A new breaker gets the registry's defaults overlaid with `config`, the
        registry's storage and clock, and the registry's listeners followed by
        `listeners`.

        For an existing breaker, a call without options returns it. Options describe
        the whole breaker, the ones not given taking the registry's defaults: when
        they come to the breaker's own options, it is returned, and otherwise
        `ValueError` says which differ. `listeners`, which observe rather than shape
        the breaker, are compared only when given (as tuples, by equality).

        Args:
            name: The breaker's name.
            listeners: Listeners of this breaker, after the registry's.
            **config: `CircuitBreaker` options (see `BreakerOptions`).

        Raises:
            ValueError: An option is out of range, or the breaker exists with other
                options (named, with both values).
            TypeError: An option is unknown, is ``storage`` or ``clock`` (set on the
                registry), or has the wrong kind of value.
        """
        entry = self._entries.get(name)
        if entry is not None and not config and listeners is None:
            breaker = entry.breaker
            if breaker is not None:
                return breaker  # the hot path: no lock, no validation
        check_name(name, "registry.get")
        options = self._defaults
        if config:
            options = _options(dict(config), self._given, "get()")
        own = () if listeners is None else listener_tuple(listeners)
        with self._lock:
            self._purge()
            entry = self._entries.get(name)
            breaker = None if entry is None else entry.live()
            if entry is None or breaker is None:
                breaker = CircuitBreaker(
                    name,
                    **options,
                    storage=self.storage,
                    clock=self.clock,
                    listeners=(*self.listeners, *own),
                    registry=None,  # held here, strongly
                )
                self._entries[name] = _Entry(breaker, options, own)
                return breaker
        differences = (
            [
                (option, entry.options[option], value)
                for option, value in options.items()
                if entry.options[option] != value
            ]
            if config
            else []
        )
        if listeners is not None and own != entry.listeners:
            differences.append(("listeners", entry.listeners, own))
        if differences:
            raise ValueError(_conflict(name, differences))
        return breaker

    def _adopt(
        self, breaker: CircuitBreaker, options: dict[str, Any], listeners: tuple[object, ...]
    ) -> None:
        """Hold `breaker`, built directly, weakly under its name (see the class doc).

        Raises:
            ValueError: A live breaker of the registry has that name, and other
                options, or one of the two keeps its state in memory.
        """
        name = breaker.name
        dead = self._dead
        with self._lock:
            self._purge()
            entry = self._entries.get(name)
            existing = None if entry is None else entry.live()
            if entry is not None and existing is not None:
                differences = [
                    (option, entry.options[option], value)
                    for option, value in options.items()
                    if entry.options[option] != value
                ]
                if differences:
                    message = _conflict(name, differences)
                elif isinstance(existing.storage, MemoryStorage) or isinstance(
                    breaker.storage, MemoryStorage
                ):
                    message = (
                        f"breaker {name!r} already exists in this registry (breakers kept"
                        f" in memory share no state)"
                    )
                elif entry.breaker is not None:
                    return  # a view of the state of a breaker the registry holds
                else:  # another view of one shared state: held too, in case it outlives
                    message = ""
                if message:
                    raise ValueError(
                        f"{message}; share it with .get({name!r}) (or"
                        f" stalwart.circuit_breaker({name!r})), or build a breaker of its"
                        f" own with registry=None"
                    )
            # The callback runs whenever the breaker is collected, maybe inside this
            # lock: it only queues the name (list.append is atomic), `_purge` removes.
            ref = weakref.ref(breaker, lambda _: dead.append(name))
            if entry is not None and existing is not None:
                self._entries[name] = entry._replace(refs=(*entry.refs, ref))
            else:
                self._entries[name] = _Entry(None, options, listeners, (ref,))

    def _purge(self) -> None:
        """Forget the weakly held breakers that are gone (under the lock)."""
        dead = self._dead
        while dead:
            name = dead.pop()
            entry = self._entries.get(name)
            if entry is None or entry.breaker is not None:
                continue
            refs = tuple(ref for ref in entry.refs if ref() is not None)
            if not refs:
                del self._entries[name]
            elif len(refs) < len(entry.refs):
                self._entries[name] = entry._replace(refs=refs)

    # -- what the registry holds ----------------------------------------------------

    def _breakers(self) -> list[CircuitBreaker]:
        with self._lock:
            self._purge()
            entries = sorted(self._entries.items())
        return [b for _, entry in entries if (b := entry.live()) is not None]

    def names(self) -> list[str]:
        """Return the names of the registry's breakers, sorted."""
        return [breaker.name for breaker in self._breakers()]

    def __contains__(self, name: object) -> bool:
        entry = self._entries.get(name)  # type: ignore[call-overload]
        return entry is not None and (entry.breaker is not None or entry.live() is not None)

    def __len__(self) -> int:
        return len(self._breakers())

    def __iter__(self) -> Iterator[CircuitBreaker]:
        """Iterate over the breakers, in name order (a copy: safe while others get)."""
        return iter(self._breakers())

    def _entry(self, name: str) -> tuple[_Entry, CircuitBreaker]:
        entry = self._entries.get(name)
        breaker = None if entry is None else entry.live()
        if entry is None or breaker is None:
            raise KeyError(f"no breaker named {name!r} in this registry")
        return entry, breaker

    def snapshot(self) -> dict[str, BreakerStats]:
        """Return every breaker's `CircuitBreaker.stats`, by name, in name order.

        Each value is a frozen `BreakerStats`; for JSON, take
        ``{name: stats.as_dict() for name, stats in registry.snapshot().items()}``.
        Like the stats, it never holds exception messages, only their type names.
        """
        return {breaker.name: breaker.stats() for breaker in self._breakers()}

    def health(self) -> RegistryHealth:
        """Return how many breakers are open, and what that means for the whole.

        See `RegistryHealth` for what counts as open and how the status follows. A
        breaker reads as open until a call finds its recovery timeout elapsed and
        moves it to half-open. With a shared storage each state is read from it, so
        an outage another process detected shows here too.
        """
        breakers = self._breakers()
        return _health(breakers, [breaker.state for breaker in breakers])

    async def snapshot_async(self) -> dict[str, BreakerStats]:
        """`snapshot` for async code: reads an async storage without blocking."""
        return {breaker.name: await breaker.stats_async() for breaker in self._breakers()}

    async def health_async(self) -> RegistryHealth:
        """`health` for async code: reads an async storage without blocking."""
        breakers = self._breakers()
        states = [State((await b.stats_async()).state) for b in breakers]
        return _health(breakers, states)

    # -- operators --------------------------------------------------------------------

    def reset(self, name: str) -> None:
        """Close the breaker called `name` and forget its windows.

        Raises:
            KeyError: The registry has no breaker called `name`.
        """
        self._entry(name)[1].reset()

    def reset_all(self) -> None:
        """Close every breaker and forget their windows."""
        for breaker in self._breakers():
            breaker.reset()

    def remove(self, name: str) -> CircuitBreaker:
        """Forget the breaker called `name` and return it.

        The breaker goes on working for code that holds it; the next `get` of the
        name creates a new one, which binds to the registry's storage afresh (a
        memory storage starts it closed; a shared storage finds the state it left).

        Raises:
            KeyError: The registry has no breaker called `name`.
        """
        with self._lock:
            _, breaker = self._entry(name)
            del self._entries[name]
        return breaker

    def clear(self) -> None:
        """Forget every breaker (see `remove`)."""
        with self._lock:
            self._entries.clear()
            self._dead.clear()

    @contextmanager
    def _isolated(self) -> Iterator[BreakerRegistry]:
        """Fresh breakers inside the block; the registry as it was after it (tests).

        See `stalwart.testing.fresh_breakers`.
        """
        with self._lock:
            self._purge()
            saved = dict(self._entries)
        breakers = [
            breaker
            for entry in saved.values()
            for breaker in (entry.breaker, *(ref() for ref in entry.refs))
            if breaker is not None
        ]
        restores = [breaker._isolate() for breaker in breakers]  # noqa: SLF001
        try:
            yield self
        finally:
            for restore in reversed(restores):
                restore()
            with self._lock:
                self._entries.clear()
                self._entries.update(saved)
                self._dead.extend(saved)  # some may have gone meanwhile
                self._purge()


registry = BreakerRegistry()
"""The default registry, which `circuit_breaker` goes through.

.. versionadded:: 0.1.0
"""


def circuit_breaker(
    name: str,
    *,
    listeners: Iterable[object] | None = None,
    **config: Unpack[BreakerOptions],
) -> CircuitBreaker:
    """Protect a function with the default registry's breaker called `name`.

    .. code-block:: python

        @stalwart.circuit_breaker("jira", failure_threshold=3)
        def search(query: str) -> list[Issue]: ...

    Sync and async functions alike keep their signatures. Every function decorated
    with the same name shares one breaker, so they must agree on its options (see
    `BreakerRegistry.get`, which this calls on `registry`).

    Returns:
        The breaker, which decorates the function (and offers everything a
        `CircuitBreaker` does).

    Raises:
        ValueError: An option is out of range, or the breaker exists with other
            options.
        TypeError: An option is unknown or has the wrong kind of value.

    .. versionadded:: 0.1.0
    """
    check_name(name, "@circuit_breaker")
    return registry.get(name, listeners=listeners, **config)


def _health(breakers: list[CircuitBreaker], states: list[State]) -> RegistryHealth:
    totals = {state.value: 0 for state in State}
    open_names = []
    for breaker, state in zip(breakers, states, strict=True):
        totals[state.value] += 1
        if state in _OPEN_STATES:
            open_names.append(breaker.name)
    status: HealthStatus = "healthy"
    if open_names:
        status = "critical" if 2 * len(open_names) > len(breakers) else "degraded"
    return RegistryHealth(status, len(breakers), totals, tuple(open_names))
