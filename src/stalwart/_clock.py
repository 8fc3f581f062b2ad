"""The one place stalwart reads the time and sleeps.

Everything in stalwart that measures elapsed time or waits between attempts goes
through `now()`, `sleep()` and `async_sleep()`. `stalwart.testing.ManualClock` swaps
them for a controllable clock, and `stalwart.testing.instant_retries()` turns the
sleeps into no-ops, so tests never wait on wall time.

`now` is rebound (not wrapped) when a clock is installed, so reading the real time
costs one C call on the hot path.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_WAIT",
    "TimeSource",
    "async_sleep",
    "current",
    "instant",
    "now",
    "sleep",
    "use",
]

# The platform's limits: `time.sleep` fails once the monotonic clock plus the wait
# passes 2**63 ns (about 292 years, minus the uptime), `threading.Event.wait` past
# `threading.TIMEOUT_MAX` (49.7 days on Windows), `signal.setitimer` past `time_t`.
MAX_WAIT: float = min(threading.TIMEOUT_MAX, 1e9)
"""The longest wait or limit, in seconds, that stalwart arms: about 31.7 years (49.7 days
on Windows). A retry never starts a longer wait: it gives up and re-raises the last
error instead. A longer timeout or deadline is never reached, so it arms nothing."""


class TimeSource(Protocol):
    """What a replacement clock provides."""

    def monotonic(self) -> float:
        """Return the current time in seconds, on a monotonic scale."""

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (a manual clock advances instead)."""

    async def async_sleep(self, seconds: float) -> None:
        """Wait for `seconds` without blocking the event loop."""


class _Real:
    """Wall time: `time.monotonic`, `time.sleep` and `anyio.sleep`."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    @staticmethod
    async def async_sleep(seconds: float) -> None:
        import anyio  # noqa: PLC0415 - anyio is imported only once async code waits

        await anyio.sleep(seconds)


_REAL = _Real()
_source: TimeSource = _REAL
_instant = False
_lock = threading.Lock()

now: Callable[[], float] = time.monotonic
"""Return the current monotonic time in seconds (rebound by `use`)."""


def current() -> float:
    """Return `now()` as it is bound when called: the clock to keep, which follows `use`.

    A holder of `now` itself would keep the clock of the moment it read it.
    """
    return now()


def instant() -> bool:
    """Return whether waits are currently skipped (`instant_retries`)."""
    return _instant


def sleep(seconds: float) -> None:
    """Block the calling thread for `seconds` (nothing under `instant_retries`)."""
    if not _instant and seconds > 0:
        _source.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """Wait for `seconds`; a zero wait still yields to the event loop once.

    The yield is a checkpoint: a task cancelled between attempts ends here.
    """
    await _source.async_sleep(0.0 if _instant else max(seconds, 0.0))


class use:  # noqa: N801 - used like a function: `with _clock.use(source):`
    """Install a time source, or instant sleeps, for the duration of a `with` block.

    Process-wide, like the real clock it replaces; blocks nest and restore in order.
    """

    def __init__(self, source: TimeSource | None = None, *, instant: bool | None = None) -> None:
        self._source = source
        self._instant = instant
        self._saved: list[tuple[TimeSource, bool]] = []

    def __enter__(self) -> None:
        global _source, _instant, now  # noqa: PLW0603 - the module holds the process clock
        with _lock:
            self._saved.append((_source, _instant))
            if self._source is not None:
                _source = self._source
                now = self._source.monotonic
            if self._instant is not None:
                _instant = self._instant

    def __exit__(self, *exc_info: object) -> None:
        global _source, _instant, now  # noqa: PLW0603
        with _lock:
            _source, _instant = self._saved.pop()
            now = _source.monotonic
