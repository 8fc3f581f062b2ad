"""Retry a function that fails twice with ConnectionError, then succeeds.

Run it with ``python examples/retry_flaky_function.py``. stalwart logs each retry to
the ``stalwart.retry`` logger; here logging prints to stdout so you can watch it.
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


class FlakyService:
    """A stand-in for a remote service: the first `failures` calls are refused."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def greet(self, name: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            print(f"  call {self.calls}: connection refused")
            raise ConnectionError("connection refused")
        print(f"  call {self.calls}: answered")
        return f"hello, {name}"


service = FlakyService(failures=2)


# Waits of 10 ms, then 20 ms, ... with full jitter: anywhere from 0 up to that.
@stalwart.retry(attempts=5, backoff=stalwart.exponential(initial=0.01, max=0.1))
def fetch_greeting(name: str) -> str:
    return service.greet(name)


@stalwart.retry(attempts=3, backoff=stalwart.constant(0.01))
def fetch_from_dead_service() -> str:
    print("  calling a service that is down")
    raise ConnectionError("no route to host")


@stalwart.retry(attempts=3, backoff=stalwart.constant(0.01))
def parse_reply(reply: str) -> int:
    print(f"  parsing {reply!r}")
    return int(reply)


def main() -> None:
    print("1. A call that fails twice with ConnectionError, then succeeds:")
    started = time.perf_counter()
    result = fetch_greeting("stalwart")
    elapsed = time.perf_counter() - started
    print(f"  -> {result!r} after {service.calls} attempts in {elapsed * 1000:.0f} ms\n")

    print("2. A call that never succeeds: stalwart gives up after 3 attempts")
    print("   and re-raises the last exception itself, with a note:")
    try:
        fetch_from_dead_service()
    except ConnectionError as exc:
        print(f"  -> caught {exc!r}")
        for note in getattr(exc, "__notes__", []):
            print(f"     note: {note}")
    print()

    print("3. A ValueError is permanent (retrying cannot fix bad data): no retry at all:")
    try:
        parse_reply("forty-two")
    except ValueError as exc:
        print(f"  -> caught {exc!r} after one attempt")


if __name__ == "__main__":
    main()
