"""Retry, circuit breaker, timeout and fallback around a flaky function, as one Policy.

Run it with ``python examples/policy.py``. The policy nests its layers in a fixed
order, outermost first: fallback, deadline, retry, breaker, timeout per attempt, the
call. stalwart logs retries and breaker state changes; here logging prints to stdout
so you can watch them.
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

CACHED_PRICES = {"ACME-1": 9.99, "ACME-2": 19.99}


class PriceService:
    """A stand-in for a remote service that follows a script, one step per call.

    A step is "ok" (answers), "refuse" (ConnectionError), "hang" (takes 5 s) or
    "bad" (a permanent error: the service answered, but says no).
    """

    def __init__(self) -> None:
        self.script: list[str] = []
        self.calls = 0

    def price(self, sku: str) -> float:
        self.calls += 1
        step = self.script.pop(0) if self.script else "refuse"
        print(f"    attempt {self.calls}: {sku} -> {step}")
        if step == "refuse":
            raise ConnectionError("prices.internal: connection refused")
        if step == "hang":
            time.sleep(5)  # the per-attempt timeout stops this long before
        if step == "bad":
            raise stalwart.PermanentError(f"unknown sku {sku}", status_code=404)
        return 10.49


service = PriceService()
breaker = stalwart.CircuitBreaker("prices", failure_threshold=4, window=None, recovery_timeout=30)


def cached_price(exc: Exception, sku: str) -> float:
    """The fallback: it receives the exception and the call's arguments."""
    print(f"    fallback after {type(exc).__name__}: the cached price of {sku}")
    return CACHED_PRICES.get(sku, 0.0)


policy = stalwart.Policy(
    fallback=cached_price,
    deadline=3,  # the whole call, every attempt and wait included
    retry=stalwart.retry(attempts=3, backoff=stalwart.constant(0.02)),
    breaker=breaker,
    timeout=0.1,  # each attempt
)


@policy
def price(sku: str) -> float:
    return service.price(sku)


def run(title: str, sku: str, script: list[str]) -> None:
    print(title)
    service.script = script
    service.calls = 0
    started = time.perf_counter()
    result = price(sku)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(
        f"  -> {result} after {service.calls} attempt(s) in {elapsed_ms:.0f} ms;"
        f" breaker {breaker.state}\n"
    )


def main() -> None:
    run(
        "1. Refused, then hangs (cut short by the 0.1 s timeout), then answers:",
        "ACME-1",
        ["refuse", "hang", "ok"],
    )
    run(
        "2. A permanent error: not retried, not a breaker failure; the fallback answers:",
        "ACME-404",
        ["bad"],
    )
    run(
        "3. The service is down: three refused attempts, then the fallback answers:",
        "ACME-1",
        ["refuse", "refuse", "refuse"],
    )
    run(
        "4. Still down: the 4th failure in a row opens the breaker, which ends the"
        "\n   retries (CircuitOpenError is never retried); the fallback answers:",
        "ACME-2",
        ["refuse", "refuse", "refuse"],
    )
    run(
        "5. While the breaker is open, the service is not called at all:",
        "ACME-2",
        ["ok"],
    )
    stats = breaker.stats()
    print(
        f"Breaker stats: {stats.failures} failures, {stats.successes} successes,"
        f" {stats.rejected} rejected, state {stats.state},"
        f" probing again in {stats.retry_after:.0f} s"
    )


if __name__ == "__main__":
    main()
