"""Four worker processes share one circuit breaker through Redis.

Run it with ``python examples/redis_shared_breaker.py``; it needs a Redis on
127.0.0.1:6379 and redis-py (``pip install "stalwart[redis]"``), and says "skipped"
(exiting with status 0) when either is missing.

Each worker is a separate process with its own `RedisStorage` and its own
`CircuitBreaker` called "recommendations", as Gunicorn or Celery workers would have.
One of them finds the service down and opens the breaker; the others are rejected at
once, without calling the service, although they never saw it fail. Later a single
probe closes the breaker for everyone. The workers take turns at barriers and report
what they see to this process, which prints it. The keys live under a fresh prefix
and are deleted at the end.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import uuid
from typing import Any

from stalwart import CircuitBreaker, CircuitOpenError

try:
    import redis

    from stalwart.contrib.redis import RedisStorage
except ImportError:  # redis-py is not installed: main() says so and skips
    redis = None

HOST, PORT = "127.0.0.1", 6379
URL = f"redis://{HOST}:{PORT}/0"
WORKERS = 4
RECOVERY_TIMEOUT = 1.0  # seconds the breaker stays open before it lets a probe through

EVERYONE = dict.fromkeys(range(WORKERS), 1)
# What the parent says about each phase, and how many calls each worker (by index)
# makes in it.
PHASES: list[tuple[str, dict[int, int]]] = [
    ("The service is up; every worker calls it once.", EVERYONE),
    ("The service goes down. Worker 1 calls it three times.", {0: 3}),
    ("Workers 2-4 call: they never saw a failure, yet are rejected at once.", {1: 1, 2: 1, 3: 1}),
    (f"The service is back and {RECOVERY_TIMEOUT:g} s have passed: worker 3 probes it.", {2: 1}),
    ("Every worker calls again.", EVERYONE),
]


def recommend(service_up: Any) -> list[str]:
    """The remote service every worker calls (its state is shared, like a real one's)."""
    if not service_up.is_set():
        raise ConnectionError("recommendations.internal: connection refused")
    return ["book", "lamp"]


def worker(index: int, prefix: str, service_up: Any, step: Any, lines: Any) -> None:
    me = f"worker {index + 1}"

    def say(text: str) -> None:
        lines.put((index, f"  {me}: {text}"))

    class SayStateChanges:
        def on_state_change(self, change: Any) -> None:
            say(f"moved the shared breaker {change.old} -> {change.new} ({change.reason})")

    storage = RedisStorage(URL, prefix=prefix)
    breaker = breaker_on(storage, [SayStateChanges()])

    def call() -> None:
        try:
            result = breaker.call(recommend, service_up)
        except CircuitOpenError as exc:
            say(f"rejected without calling: {exc}")
        except ConnectionError as exc:
            say(f"call failed: {exc}")
        else:
            say(f"call ok, got {result}")

    try:
        for _, calls in PHASES:
            step.wait(30)  # the parent has set the scene
            for _ in range(calls.get(index, 0)):
                call()
            step.wait(30)  # done: the parent prints what we said
    finally:
        storage.close()


def skip_reason() -> str | None:
    """Why the example cannot run here, or None."""
    if redis is None:
        return 'redis-py is not installed (pip install "stalwart[redis]")'
    client = redis.Redis(host=HOST, port=PORT, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return f"Redis not reachable on {HOST}:{PORT}"
    finally:
        client.close()
    return None


def breaker_on(storage: RedisStorage, listeners: list[Any]) -> CircuitBreaker:
    """The breaker every process makes alike: same name, same options, same prefix."""
    return CircuitBreaker(
        "recommendations",
        failure_threshold=3,
        window=10,
        recovery_timeout=RECOVERY_TIMEOUT,
        storage=storage,
        listeners=listeners,
        log=False,
    )


def run(prefix: str, storage: RedisStorage) -> int:
    spawn = multiprocessing.get_context("spawn")  # as on macOS and Windows
    service_up = spawn.Event()
    service_up.set()
    step = spawn.Barrier(WORKERS + 1)
    lines = spawn.SimpleQueue()  # put() has written when it returns
    processes = [
        spawn.Process(target=worker, args=(i, prefix, service_up, step, lines))
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        print(f"{WORKERS} worker processes share the breaker 'recommendations' in Redis.")
        for number, (scene, _) in enumerate(PHASES, start=1):
            if number == 2:
                service_up.clear()
            if number == 4:
                service_up.set()
                time.sleep(RECOVERY_TIMEOUT)
            print(f"\n{number}. {scene}")
            step.wait(30)  # go
            step.wait(30)  # every worker is done with this phase
            said: list[tuple[int, str]] = []
            while not lines.empty():
                said.append(lines.get())
            for _, line in sorted(said, key=lambda item: item[0]):
                print(line)
        for process in processes:
            process.join(30)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    shared = breaker_on(storage, []).stats()
    print(
        f"\nShared totals in Redis: {shared.successes} successes, {shared.failures}"
        f" failures, {shared.rejected} rejected; the breaker is {shared.state}."
    )
    return 0 if all(process.exitcode == 0 for process in processes) else 1


def main() -> int:
    reason = skip_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    prefix = f"stalwart-example-{uuid.uuid4().hex[:12]}"
    storage = RedisStorage(URL, prefix=prefix)
    try:
        return run(prefix, storage)
    finally:
        keys = list(storage.client.scan_iter(match=f"{prefix}:*"))
        if keys:
            storage.client.delete(*keys)
        storage.close()


if __name__ == "__main__":
    sys.exit(main())
