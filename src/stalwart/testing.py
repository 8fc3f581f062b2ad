"""Helpers for testing code that uses stalwart.

- `instant_retries()` makes every wait zero (retries still happen), as a context
  manager, and as the ``instant_retries`` pytest fixture that stalwart's pytest plugin
  provides.
- `ManualClock` is a clock you move by hand, for breakers (``clock=``) and, installed
  with ``with clock:``, for every deadline and wait in stalwart.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from . import _clock
from ._deadline import to_seconds

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import timedelta
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["ManualClock", "instant_retries"]


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
        self._now = float(start)
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
        step = to_seconds("seconds", seconds)
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
