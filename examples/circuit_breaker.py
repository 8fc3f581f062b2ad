"""A circuit breaker around a flaky dependency: it opens, rejects fast, probes, closes.

Run it with ``python examples/circuit_breaker.py``. The breaker comes from stalwart's
default registry and logs its state changes to the ``stalwart.breaker`` logger; here
logging prints to stdout so you can watch it. The recovery timeout is 0.2 s so that
the whole story takes well under a second.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import stalwart

logging.basicConfig(
    stream=sys.stdout,
    level=logging.INFO,
    format="    [log] %(levelname)s %(name)s: %(message)s",
)

RECOVERY_TIMEOUT = 0.2  # seconds the breaker stays open before it lets a probe through


class RecommendationService:
    """A stand-in for a remote service that an operator can take down and bring back."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def recommend(self, user_id: int) -> list[str]:
        self.calls += 1
        if not self.up:
            raise ConnectionError("recommendations.internal: connection refused")
        return [f"book-{user_id}", "lamp"]


service = RecommendationService()


# Every function decorated with the name "recommendations" shares this one breaker:
# it opens after 3 failures within 10 s, and probes again after RECOVERY_TIMEOUT.
@stalwart.circuit_breaker(
    "recommendations", failure_threshold=3, window=10, recovery_timeout=RECOVERY_TIMEOUT
)
def recommendations(user_id: int) -> list[str]:
    return service.recommend(user_id)


breaker = stalwart.registry.get("recommendations")
stalwart.registry.get("search")  # a second dependency, healthy all along


def call(user_id: int) -> None:
    """Make one call through the breaker and print how it ended."""
    started = time.perf_counter()
    try:
        result = recommendations(user_id)
    except stalwart.CircuitOpenError as exc:
        outcome = f"rejected with CircuitOpenError, retry_after={exc.retry_after:.3f}s"
    except ConnectionError as exc:
        outcome = f"failed: {exc}"
    else:
        outcome = f"answered {result}"
    elapsed_us = (time.perf_counter() - started) * 1e6
    print(f"  user {user_id}: {outcome} ({elapsed_us:.0f} us; breaker {breaker.state})")


def show_health() -> None:
    health = stalwart.registry.health()
    print(f"  registry health: {health.status}, open breakers: {list(health.open)}")


def main() -> None:
    print("1. The service answers; the breaker is closed:")
    for user_id in (1, 2):
        call(user_id)
    show_health()

    print("\n2. The service goes down; the third failure opens the breaker:")
    service.up = False
    for user_id in (3, 4, 5):
        call(user_id)
    show_health()

    print("\n3. While open, calls are rejected at once, without reaching the service:")
    calls_before = service.calls
    for user_id in (6, 7, 8):
        call(user_id)
    print(f"  the service saw {service.calls - calls_before} of those 3 calls")

    print(f"\n4. After {RECOVERY_TIMEOUT}s, one probe goes through; it fails, so the")
    print("   breaker opens again for another recovery timeout:")
    time.sleep(RECOVERY_TIMEOUT + 0.02)  # a little over, to be sure
    call(9)

    print("\n5. The service is back; after the recovery timeout a probe succeeds and")
    print("   closes the breaker:")
    service.up = True
    time.sleep(RECOVERY_TIMEOUT + 0.02)  # a little over, to be sure
    call(10)
    call(11)
    show_health()

    print("\n6. The breaker's stats (JSON-ready, never exception messages):")
    stats = breaker.stats().as_dict()
    del stats["config"]  # the options it was made with; left out here for brevity
    for line in json.dumps(stats, indent=2).splitlines():
        print(f"  {line}")


if __name__ == "__main__":
    main()
