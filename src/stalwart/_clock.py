"""The one place stalwart reads the time and sleeps.

Everything in stalwart that measures elapsed time or waits between attempts goes
through `now()`, `sleep()` and `async_sleep()`. `stalwart.testing.ManualClock` swaps
them for a controllable clock, and `stalwart.testing.instant_retries()` turns the
sleeps into no-ops, so tests never wait on wall time.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["TimeSource", "async_sleep", "now", "sleep", "use"]


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


_source: TimeSource = _Real()
_instant = False


def now() -> float:
    """Return the current monotonic time in seconds."""
    return _source.monotonic()


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
    """Install a time source (and optionally instant sleeps) for a `with` block."""

    def __init__(self, source: TimeSource | None = None, *, instant: bool | None = None) -> None:
        self._source = source
        self._instant = instant
        self._saved: list[tuple[TimeSource, bool]] = []

    def __enter__(self) -> None:
        global _source, _instant  # noqa: PLW0603 - the module holds the process-wide clock
        self._saved.append((_source, _instant))
        if self._source is not None:
            _source = self._source
        if self._instant is not None:
            _instant = self._instant

    def __exit__(self, *exc_info: object) -> None:
        global _source, _instant
        _source, _instant = self._saved.pop()
