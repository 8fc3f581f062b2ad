"""Helpers for testing code that uses stalwart.

- `instant_retries()` makes every wait zero (retries still happen), as a context
  manager, and as the ``instant_retries`` pytest fixture that stalwart's pytest plugin
  provides.
- `ManualClock` is a clock you move by hand, for breakers (``clock=``) and, installed
  with ``with clock:``, for every deadline and wait in stalwart.
- `inject_faults()` makes a function fail at a given rate, for chaos tests of your
  own code.
- `fresh_breakers()` gives the breakers of a registry fresh state for a block, and
  puts the registry back as it was after it; also the ``fresh_breakers`` pytest
  fixture.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import random
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from . import _clock, _validate
from ._run import is_async_callable

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from datetime import timedelta
    from types import TracebackType

    from typing_extensions import Self

    from .breaker import BreakerRegistry

__all__ = ["FaultInjector", "ManualClock", "fresh_breakers", "inject_faults", "instant_retries"]

P = ParamSpec("P")
T = TypeVar("T")


@contextmanager
def instant_retries() -> Iterator[None]:
    """Make every wait between retries zero inside the block, in every thread.

    Retries still happen, as many as configured; only the sleeps are skipped
    (``Retry-After`` hints included). Also available as the ``instant_retries``
    pytest fixture.

    .. versionadded:: 0.1.0
    """
    with _clock.use(instant=True):
        yield


@contextmanager
def fresh_breakers(registry: BreakerRegistry | None = None) -> Iterator[BreakerRegistry]:
    """Give every breaker of `registry` a fresh state inside the block; restore after.

    Inside, each breaker the registry holds (those `get` made and those built
    directly that are alive) starts closed with empty counts, however earlier code
    left it, and the functions it decorates go through that fresh state. After the
    block each gets its own state back, the breakers made inside are forgotten and
    those removed inside return. Also available as the ``fresh_breakers`` pytest
    fixture, which yields the default registry.

    Only state kept in memory is replaced: a breaker on a shared storage (Redis)
    keeps its shared state, so give tests a storage of their own (a key prefix).
    Breakers built with ``registry=None`` are not reached.

    Args:
        registry: The registry whose breakers to refresh; `stalwart.registry` by
            default.

    Yields:
        The registry.

    .. versionadded:: 0.1.0
    """
    from .breaker.registry import BreakerRegistry  # noqa: PLC0415 - kept off import
    from .breaker.registry import registry as default_registry  # noqa: PLC0415

    if registry is None:
        registry = default_registry
    elif not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a BreakerRegistry or None, got {registry!r}")
    with registry._isolated() as isolated:  # noqa: SLF001 - the registry's test hook
        yield isolated


class ManualClock:
    """A monotonic clock that moves only when told to.

    Call it for the time (``clock()``), move it with `advance`. Pass it as a
    breaker's ``clock=``, or install it for all of stalwart with ``with clock:`` so
    deadlines read it and retry sleeps advance it instantly instead of waiting.

    Args:
        start: The initial reading, in seconds.

    Attributes:
        sleeps: Every sleep requested while installed, in order.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.testing"

    def __init__(self, start: float = 0.0) -> None:
        self._now = _validate.number("start", start)
        self._lock = threading.Lock()
        self._installs: list[_clock.use] = []
        self.sleeps: list[float] = []

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"

    def __call__(self) -> float:
        """Return the current reading."""
        return self._now

    def monotonic(self) -> float:
        """Return the current reading (the `time.monotonic` of this clock)."""
        return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward by `seconds` and return the new reading."""
        step = _validate.seconds("seconds", seconds)
        with self._lock:
            self._now += step
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance instead of blocking, and record the sleep."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    async def async_sleep(self, seconds: float) -> None:
        """Advance instead of waiting, record the sleep, and yield to the loop once."""
        import anyio.lowlevel  # noqa: PLC0415 - only async tests need it

        self.sleep(seconds)
        await anyio.lowlevel.checkpoint()

    def __enter__(self) -> Self:
        installed = _clock.use(self)
        installed.__enter__()
        self._installs.append(installed)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._installs.pop().__exit__(exc_type, exc, tb)


class FaultInjector:
    """A decorator that makes calls fail at a given rate; made by `inject_faults`.

    Attributes:
        calls: How many calls went through the decorated functions.
        faults: How many of them were made to fail.
    """

    __module__ = "stalwart.testing"

    def __init__(
        self, rate: float, exc: BaseException | type[BaseException], seed: int | None
    ) -> None:
        _validate.fraction("rate", rate, zero=True)
        is_type = isinstance(exc, type) and issubclass(exc, BaseException)
        if not is_type and not isinstance(exc, BaseException):
            raise TypeError(f"exc must be an exception type or instance, got {exc!r}")
        self.rate = float(rate)
        self.exc = exc
        self.calls = 0
        self.faults = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def _maybe_fail(self) -> None:
        with self._lock:
            self.calls += 1
            fail = self._random.random() < self.rate
            if fail:
                self.faults += 1
        if fail:
            raise self.exc() if isinstance(self.exc, type) else self.exc

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Wrap `fn` (sync or async) so that each call may fail before it runs."""
        if is_async_callable(fn):
            afn = cast("Callable[..., Coroutine[Any, Any, Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                self._maybe_fail()
                return await afn(*args, **kwargs)

            return cast("Callable[P, T]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            self._maybe_fail()
            return fn(*args, **kwargs)

        return wrapper


def inject_faults(
    rate: float = 0.5,
    exc: BaseException | type[BaseException] = ConnectionError,
    *,
    seed: int | None = None,
) -> FaultInjector:
    """Make a function fail with `exc` on a fraction `rate` of its calls.

    .. code-block:: python

        flaky = inject_faults(rate=0.3, exc=ConnectionError, seed=1)(fetch)

    Args:
        rate: The probability in [0, 1] that a call fails before running.
        exc: The exception type (instantiated per fault) or instance to raise.
        seed: Seed for a private random generator, for repeatable runs.

    .. versionadded:: 0.1.0
    """
    return FaultInjector(rate, exc, seed)
