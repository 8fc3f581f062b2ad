"""Timeouts stop one slow call; a deadline caps everything inside it, retries included.

Run it with ``python examples/timeouts_and_deadlines.py``. Sync timeouts in the main
thread on Unix are enforced with a SIGALRM timer, so the slow call below really is
interrupted rather than waited for.
"""

from __future__ import annotations

import logging
import sys
import time

import stalwart

logging.basicConfig(
    stream=sys.stdout,
    level=logging.INFO,
    format="    [log] %(levelname)s %(name)s: %(message)s",
)


def ms(seconds: float | None) -> str:
    return "no deadline" if seconds is None else f"{seconds * 1000:.0f} ms"


@stalwart.timeout(0.05)
def render_report() -> str:
    print("  rendering the report (this takes 2 s)...")
    time.sleep(2)
    return "report"


class Inventory:
    """A stand-in for a service that is down: every call is refused."""

    def __init__(self) -> None:
        self.calls = 0

    def reserve(self) -> None:
        self.calls += 1
        print(f"  attempt {self.calls}, {ms(stalwart.remaining())} left")
        raise ConnectionError("connection refused")


inventory = Inventory()


@stalwart.retry(attempts=10, backoff=stalwart.constant(0.03))
def reserve_item() -> None:
    inventory.reserve()


@stalwart.retry(attempts=5, backoff=stalwart.constant(0.01))
@stalwart.timeout(0.1)
def slow_lookup() -> str:
    print(f"  lookup started, {ms(stalwart.remaining())} left; it hangs for 2 s")
    time.sleep(2)
    return "found"


def main() -> None:
    print("1. A 50 ms timeout around a call that takes 2 s:")
    started = time.perf_counter()
    try:
        render_report()
    except stalwart.TimeoutExceeded as exc:
        elapsed = time.perf_counter() - started
        print(f"  -> TimeoutExceeded after {ms(elapsed)}: {exc}")
        print(f"     it is a TimeoutError too: {isinstance(exc, TimeoutError)}")
    print()

    print("2. A `with` block that finishes within its timeout is left alone:")
    with stalwart.timeout(0.5):
        time.sleep(0.01)
        print("  -> the block finished in time")
    print()

    print("3. A 100 ms deadline caps retries that would otherwise go on for 10 attempts:")
    print(f"  before the deadline: remaining() = {stalwart.remaining()}")
    with stalwart.deadline(0.1):
        try:
            reserve_item()
        except ConnectionError as exc:
            print(f"  -> gave up after {inventory.calls} attempts: {exc!r}")
            for note in getattr(exc, "__notes__", []):
                print(f"     note: {note}")
        print(f"  left when the retries ended: {ms(stalwart.remaining())}")
    print()

    print("4. A 100 ms timeout per attempt, retried, inside a 250 ms deadline:")
    started = time.perf_counter()
    with stalwart.deadline(0.25):
        try:
            slow_lookup()
        except stalwart.TimeoutExceeded as exc:
            elapsed = time.perf_counter() - started
            print(f"  -> gave up after {ms(elapsed)}: {exc}")


if __name__ == "__main__":
    main()
