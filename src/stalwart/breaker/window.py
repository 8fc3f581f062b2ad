"""Sliding windows over call outcomes, in fixed memory and O(1) per recorded call.

- `CountWindow` keeps the outcomes of the last `size` calls in a ring buffer.
- `TimeWindow` keeps counts for the last `seconds`, in `buckets` fixed buckets: a call
  recorded at time ``t`` is counted at time ``now`` while
  ``floor(now / width) - floor(t / width) < buckets`` (``width = seconds / buckets``),
  that is for between ``seconds - width`` and ``seconds`` after it happened.

Both count calls, failures and slow calls, never go negative, and never grow.
Neither is thread-safe: the breaker's state holds a lock around them.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_BUCKETS", "MIN_WINDOW", "CountWindow", "TimeWindow"]

DEFAULT_BUCKETS = 20
"""Buckets per time window: the window forgets in steps of 1/20 of its length."""
MIN_WINDOW = 0.001
"""The shortest time window, in seconds. Shorter ones (``5e-324``, say) would have
buckets too narrow to divide by, or epochs too large for a float."""

_OCCUPIED = 4
_FAILED = 1
_SLOW = 2


class CountWindow:
    """The outcomes of the last `size` calls.

    Attributes:
        calls: Calls in the window (at most `size`).
        failures: Failed calls among them.
        slow: Slow calls among them.
    """

    __slots__ = ("_pos", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"window_calls must be an integer >= 1, got {size!r}")
        self.size = size
        self._ring = bytearray(size)
        self._pos = 0
        self.calls = self.failures = self.slow = 0

    def record(self, failed: bool, slow: bool) -> None:
        """Add one call's outcome, dropping the oldest when full."""
        ring, pos = self._ring, self._pos
        old = ring[pos]
        if old:
            self.calls -= 1
            self.failures -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        ring[pos] = _OCCUPIED | (_FAILED if failed else 0) | (_SLOW if slow else 0)
        self._pos = pos + 1 if pos + 1 < self.size else 0
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def reset(self) -> None:
        """Forget every outcome."""
        self._ring = bytearray(self.size)
        self._pos = 0
        self.calls = self.failures = self.slow = 0


class TimeWindow:
    """Counts of the calls recorded in the last `seconds`, kept in fixed buckets.

    Attributes:
        seconds: The window's length.
        buckets: How many buckets it is cut into.
    """

    __slots__ = (
        "_calls",
        "_epochs",
        "_failures",
        "_head",
        "_slow",
        "_total_calls",
        "_total_failures",
        "_total_slow",
        "buckets",
        "seconds",
        "width",
    )

    def __init__(self, seconds: float, buckets: int = DEFAULT_BUCKETS) -> None:
        if not (
            isinstance(seconds, (int, float))
            and not isinstance(seconds, bool)
            and math.isfinite(seconds)
            and seconds >= MIN_WINDOW
        ):
            raise ValueError(
                f"window must be a finite number of seconds >= {MIN_WINDOW:g}, got {seconds!r}"
            )
        if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
            raise ValueError(f"buckets must be an integer >= 1, got {buckets!r}")
        self.seconds = float(seconds)
        self.buckets = buckets
        self.width = self.seconds / buckets
        self.reset()

    def reset(self) -> None:
        """Forget every outcome."""
        n = self.buckets
        self._epochs = [-1] * n
        self._calls = [0] * n
        self._failures = [0] * n
        self._slow = [0] * n
        self._head = -1
        self._total_calls = self._total_failures = self._total_slow = 0

    def _advance(self, epoch: int) -> None:
        """Move the newest bucket to `epoch`, emptying the buckets that fall out."""
        head = self._head
        if epoch <= head:
            return
        n = self.buckets
        if epoch - head >= n:
            self.reset()
            epochs = self._epochs
            for e in range(epoch - n + 1, epoch + 1):  # open every bucket in the window
                epochs[e % n] = e
            self._head = epoch
            return
        calls, failures, slow, epochs = self._calls, self._failures, self._slow, self._epochs
        for e in range(head + 1, epoch + 1):
            slot = e % n
            self._total_calls -= calls[slot]
            self._total_failures -= failures[slot]
            self._total_slow -= slow[slot]
            calls[slot] = failures[slot] = slow[slot] = 0
            epochs[slot] = e
        self._head = epoch

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Add one call's outcome at time `now`."""
        epoch = int(now // self.width)
        self._advance(epoch)
        if epoch <= self._head - self.buckets:
            return  # older than the window (a late report): nothing to count
        slot = epoch % self.buckets
        if self._epochs[slot] != epoch:  # a bucket never opened (clock went backwards)
            return
        self._calls[slot] += 1
        self._total_calls += 1
        if failed:
            self._failures[slot] += 1
            self._total_failures += 1
        if slow:
            self._slow[slot] += 1
            self._total_slow += 1

    def counts(self, now: float) -> tuple[int, int, int]:
        """Return ``(calls, failures, slow)`` in the window ending at `now`."""
        self._advance(int(now // self.width))
        return self._total_calls, self._total_failures, self._total_slow
