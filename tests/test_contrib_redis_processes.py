"""`stalwart.contrib.redis` across processes, and through a Redis that dies and returns.

Several processes (``spawn``, as on macOS and Windows, so nothing is inherited but the
arguments) share one breaker through the real Redis on 127.0.0.1:6379; they meet at
barriers and events, never at sleeps. The fault-injection tests run a private
``redis-server`` on a free loopback port and kill it, or pause it, mid-run. Every test
uses its own random prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

import pytest

import stalwart
from redis_support import URL, PrivateRedis, delete_prefix
from stalwart.contrib.redis import LOCAL_GENERATIONS, RedisStorage
from stalwart.errors import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier, Event

    import redis

pytestmark = pytest.mark.redis

NAME = "payments"
WORKERS = 4
WAIT = 30.0  # seconds any barrier, event or queue waits before the test fails
SPAWN = multiprocessing.get_context("spawn")
SOCKET_TIMEOUT = 2.0  # for the shared Redis: a loaded host must not look like an outage


class Boom(Exception):
    """A failure by default (an unknown exception)."""


def ok() -> str:
    return "ok"


def boom() -> None:
    raise Boom


def keys_of(client: redis.Redis, prefix: str) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


def make_breaker(storage: RedisStorage, **config: Any) -> stalwart.CircuitBreaker:
    return stalwart.CircuitBreaker(NAME, storage=storage, log=False, **config)


# --- running workers ---------------------------------------------------------------------
#
# Worker functions live at module level so that spawned processes can import them. Each
# puts exactly one message on the queue: (its number, "ok", result) or (its number,
# "error", traceback). Their first argument after the prefix or URL is their number.


def _report(results: Queue[tuple[int, str, Any]], worker: int, work: Callable[[], Any]) -> None:
    try:
        results.put((worker, "ok", work()))
    except BaseException:
        results.put((worker, "error", traceback.format_exc()))


def run_workers(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    """Run `target(*each, results)` in one spawned process per `args`.

    Return the workers' results in the order of their numbers (not of their arrival).
    """
    results: Queue[tuple[int, str, Any]] = SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(*each, results)) for each in args]
    for process in processes:
        process.start()
    try:
        # Drain the queue before joining: a child with queued data does not exit.
        messages = [results.get(timeout=WAIT) for _ in processes]
    finally:
        for process in processes:
            process.join(WAIT)
            if process.is_alive():  # pragma: no cover - only when a worker hangs
                process.kill()
                process.join()
    errors = [detail for _, kind, detail in messages if kind == "error"]
    assert not errors, "a worker failed:\n" + "\n".join(errors)
    assert all(process.exitcode == 0 for process in processes)
    return [detail for _, _, detail in sorted(messages, key=lambda message: message[0])]


def fails(worker: int, call: int) -> bool:
    """Worker `worker`'s fixed pattern: call `call` fails every `worker + 2` calls."""
    return call % (worker + 2) == 0


def hammer(
    prefix: str,
    worker: int,
    calls: int,
    max_staleness: float | None,
    start: Barrier,
    results: Queue[tuple[int, str, Any]],
) -> None:
    """Make `calls` calls through the shared breaker; report what happened to each."""

    def work() -> dict[str, Any]:
        storage = RedisStorage(
            URL, prefix=prefix, max_staleness=max_staleness, socket_timeout=SOCKET_TIMEOUT
        )
        breaker = make_breaker(storage, failure_threshold=1_000_000, window=60.0)
        made = {"successes": 0, "failures": 0, "rejected": 0}
        start.wait(WAIT)
        for call in range(calls):
            try:
                breaker.call(boom if fails(worker, call) else ok)
            except Boom:
                made["failures"] += 1
            except CircuitOpenError:
                made["rejected"] += 1
            else:
                made["successes"] += 1
        made["degraded"] = breaker.stats().storage_degraded
        storage.close()
        return made

    _report(results, worker, work)


class Transitions:
    """A listener that keeps the state changes this process's breaker announced."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_state_change(self, change: stalwart.StateChange) -> None:
        self.seen.append((change.old, change.new))


def trip(
    prefix: str,
    worker: int,
    threshold: int,
    start: Barrier,
    tripped: Event,
    done: Barrier,
    results: Queue[tuple[int, str, Any]],
) -> None:
    """Call (half of them failing) until any process finds the breaker open; then try once."""

    def work() -> dict[str, Any]:
        storage = RedisStorage(URL, prefix=prefix, socket_timeout=SOCKET_TIMEOUT)
        listener = Transitions()
        breaker = make_breaker(
            storage,
            failure_threshold=threshold,
            window=60.0,
            recovery_timeout=600.0,
            listeners=[listener],
        )
        report: dict[str, Any] = {"calls": 0, "rejected_before": 0}
        start.wait(WAIT)
        while not tripped.is_set() and report["calls"] < 10 * threshold:
            try:
                breaker.call(boom if (report["calls"] + worker) % 2 == 0 else ok)
            except Boom:
                pass
            except CircuitOpenError:
                report["rejected_before"] += 1
                tripped.set()  # someone, maybe another process, opened it
                break
            report["calls"] += 1
            if listener.seen:
                tripped.set()  # this process's failure opened it
                break
        done.wait(WAIT)  # every process has stopped calling: the breaker is open now
        try:
            breaker.call(ok)
        except CircuitOpenError as exc:
            report["after"] = ("rejected", exc.retry_after)
        else:
            report["after"] = ("admitted", None)
        report["transitions"] = listener.seen
        report["degraded"] = breaker.stats().storage_degraded
        storage.close()
        return report

    _report(results, worker, work)


# --- many processes, one breaker ---------------------------------------------------------


@pytest.mark.parametrize("max_staleness", [None, 0.5], ids=["strict", "cached"])
def test_every_outcome_from_every_process_is_counted(
    client: redis.Redis, prefix: str, max_staleness: float | None
) -> None:
    """Processes hammering one breaker: the shared totals equal the calls they made."""
    calls = 250
    start = SPAWN.Barrier(WORKERS)
    reports = run_workers(
        hammer, [(prefix, worker, calls, max_staleness, start) for worker in range(WORKERS)]
    )
    expected_failures = sum(
        fails(worker, call) for worker in range(WORKERS) for call in range(calls)
    )
    assert sum(r["rejected"] for r in reports) == 0
    assert not any(r["degraded"] for r in reports)  # else some outcomes stayed local
    assert sum(r["failures"] for r in reports) == expected_failures
    stats = make_breaker(RedisStorage(client, prefix=prefix)).stats()
    assert stats.calls == stats.successes + stats.failures == WORKERS * calls
    assert stats.failures == expected_failures
    assert (stats.state, stats.rejected, stats.storage_degraded) == ("closed", 0, False)


def test_breaker_opens_for_every_process_once_any_crosses_the_threshold(
    client: redis.Redis, prefix: str
) -> None:
    """One process's failure opens the breaker; every process is then rejected."""
    threshold = 12
    start, done = SPAWN.Barrier(WORKERS), SPAWN.Barrier(WORKERS)
    tripped = SPAWN.Event()
    reports = run_workers(
        trip, [(prefix, worker, threshold, start, tripped, done) for worker in range(WORKERS)]
    )
    # Exactly one process made the failure that crossed the threshold, and was told so.
    openers = [r for r in reports if r["transitions"]]
    assert len(openers) == 1
    assert openers[0]["transitions"] == [("closed", "open")]
    # Every process, whether or not it saw a failure itself, is now rejected.
    for report in reports:
        kind, retry_after = report["after"]
        assert kind == "rejected"
        assert 0 < retry_after <= 600
        assert report["degraded"] is False
    stats = make_breaker(RedisStorage(client, prefix=prefix)).stats()
    assert stats.state == "open"
    assert stats.failures >= threshold
    assert stats.calls == sum(r["calls"] for r in reports)
    assert stats.rejected == WORKERS + sum(r["rejected_before"] for r in reports)


def isolated(prefix: str, role: int, meet: Barrier, results: Queue[tuple[int, str, Any]]) -> None:
    """Role 0 and role 1 use one breaker name under two prefixes, in turns."""

    def work() -> dict[str, Any]:
        storage = RedisStorage(URL, prefix=prefix, socket_timeout=SOCKET_TIMEOUT)
        breaker = make_breaker(storage, failure_threshold=1, window=60.0)
        seen: dict[str, Any] = {}
        # 1: role 0 opens its breaker; role 1 makes three calls through its own.
        if role == 0:
            with contextlib.suppress(Boom):
                breaker.call(boom)
        else:
            seen["calls"] = [breaker.call(ok) for _ in range(3)]
        meet.wait(WAIT)
        # 2: each reads its own breaker, then changes it by hand.
        stats = breaker.stats()
        seen["step 2"] = (stats.state, stats.successes, stats.failures, stats.rejected)
        if role == 0:
            breaker.reset()
        else:
            breaker.force_open()
        meet.wait(WAIT)
        # 3: each sees only its own change.
        seen["step 3"] = breaker.state.value
        try:
            breaker.call(ok)
        except CircuitOpenError as exc:
            seen["call"] = ("rejected", exc.retry_after)
        else:
            seen["call"] = ("admitted", None)
        storage.close()
        return seen

    _report(results, role, work)


def test_prefixes_are_isolated_across_processes(client: redis.Redis, prefix: str) -> None:
    """Two processes, one breaker name, two prefixes: neither sees the other's breaker."""
    other = f"{prefix}-other"
    try:
        meet = SPAWN.Barrier(2)
        first, second = run_workers(isolated, [(prefix, 0, meet), (other, 1, meet)])
        assert first["step 2"] == ("open", 0, 1, 0)
        assert second["calls"] == ["ok", "ok", "ok"]
        assert second["step 2"] == ("closed", 3, 0, 0)
        assert (first["step 3"], first["call"]) == ("closed", ("admitted", None))
        assert (second["step 3"], second["call"]) == ("forced_open", ("rejected", None))
        base = f":{{{NAME}}}:"
        mine, theirs = keys_of(client, prefix), keys_of(client, other)
        assert f"{prefix}{base}state" in mine
        assert f"{other}{base}state" in theirs
        assert all(key.startswith(f"{prefix}{base}") for key in mine)
        assert all(key.startswith(f"{other}{base}") for key in theirs)
    finally:
        delete_prefix(client, other)


def take_turns(
    prefix: str, role: int, meet: Barrier, results: Queue[tuple[int, str, Any]]
) -> None:
    """Role 0 opens the breaker, role 1 resets it, role 0 forces it open: in turns."""

    def work() -> list[tuple[str, str, int | None]]:
        storage = RedisStorage(URL, prefix=prefix, socket_timeout=SOCKET_TIMEOUT)
        heard: list[tuple[str, str, int | None]] = []

        class Listener:
            def on_state_change(self, change: stalwart.StateChange) -> None:
                heard.append((change.old, change.new, change.generation))

        breaker = make_breaker(storage, failure_threshold=1, listeners=[Listener()])
        if role == 0:
            with contextlib.suppress(Boom):
                breaker.call(boom)
        meet.wait(WAIT)
        if role == 1:
            breaker.reset()
        meet.wait(WAIT)
        if role == 0:
            breaker.force_open()
        storage.close()
        return heard

    _report(results, role, work)


def test_state_changes_are_numbered_across_processes(client: redis.Redis, prefix: str) -> None:
    """Each process hears of its own changes, numbered in one sequence shared by all."""
    meet = SPAWN.Barrier(2)
    first, second = run_workers(take_turns, [(prefix, 0, meet), (prefix, 1, meet)])
    assert first == [("closed", "open", 1), ("closed", "forced_open", 3)]
    assert second == [("open", "closed", 2)]
    assert make_breaker(RedisStorage(client, prefix=prefix)).stats().state == "forced_open"


# --- probes that never report -------------------------------------------------------------

RECOVERY = 0.5  # seconds: short, as Redis server time drives the probe slots here


def until_admitted(breaker: stalwart.CircuitBreaker) -> int:
    """Ask until the breaker admits a call (bounded by WAIT); return its token."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return breaker.admit()
        except CircuitOpenError as exc:
            assert time.monotonic() < deadline, "never admitted"
            time.sleep(min(exc.retry_after or 0.0, RECOVERY) + 0.01)


def hold_probe(prefix: str, worker: int, results: Queue[tuple[int, str, Any]]) -> None:
    """Take the half-open probe slot, say when, and block until killed."""

    def work() -> float:
        storage = RedisStorage(URL, prefix=prefix, socket_timeout=SOCKET_TIMEOUT)
        until_admitted(make_breaker(storage, failure_threshold=1, recovery_timeout=RECOVERY))
        return time.monotonic()

    _report(results, worker, work)
    threading.Event().wait()  # a probe that never ends: only SIGKILL stops it


def test_probe_of_a_killed_process_expires(client: redis.Redis, prefix: str) -> None:
    """A process SIGKILLed while it holds the half-open probe slot: other processes are
    rejected only until the slot expires (recovery_timeout after the probe's
    admission), then probe and close the breaker."""
    storage = RedisStorage(client, prefix=prefix)
    breaker = make_breaker(storage, failure_threshold=1, recovery_timeout=RECOVERY)
    with contextlib.suppress(Boom):
        breaker.call(boom)
    assert breaker.state.value == "open"
    results: Queue[tuple[int, str, Any]] = SPAWN.Queue()
    holder = SPAWN.Process(target=hold_probe, args=(prefix, 0, results))
    holder.start()
    try:
        _, kind, admitted_at = results.get(timeout=WAIT)
        assert kind == "ok", admitted_at
        holder.kill()  # no outcome, no release: only the slot's expiry frees it
        holder.join(WAIT)
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)  # the dead process's probe holds the only slot
        assert breaker.state.value == "half_open"
        token = until_admitted(breaker)
        assert time.monotonic() - admitted_at >= 0.9 * RECOVERY  # not before it expired
        breaker.record_success(token)
        stats = breaker.stats()
        assert (stats.state, stats.storage_degraded) == ("closed", False)
        assert breaker.call(ok) == "ok"
    finally:
        if holder.is_alive():  # pragma: no cover - only when the test failed early
            holder.kill()
        holder.join(WAIT)


def cancelled_probe(
    prefix: str, worker: int, backend: str, results: Queue[tuple[int, str, Any]]
) -> None:
    """From async code, on the sync storage: probe, with the caller's scope cancelled as
    the probe returns, so that cancellation lands on the hop that records its outcome."""
    import anyio

    async def main() -> list[tuple[str, str]]:
        storage = RedisStorage(URL, prefix=prefix, socket_timeout=SOCKET_TIMEOUT)
        listener = Transitions()
        breaker = make_breaker(
            storage, failure_threshold=1, recovery_timeout=RECOVERY, listeners=[listener]
        )
        with anyio.fail_after(WAIT):
            # Open: wait for the probe, due by Redis server time, which no event signals.
            while (await breaker.stats_async()).retry_after:  # noqa: ASYNC110
                await anyio.sleep(RECOVERY / 10)
        with anyio.CancelScope() as scope:

            async def probe() -> str:
                scope.cancel()
                return "ok"

            await breaker.call_async(probe)
        storage.close()
        return listener.seen

    _report(results, worker, lambda: anyio.run(main, backend=backend))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_probe_recorded_under_cancellation_in_another_process(
    client: redis.Redis, prefix: str, backend: str
) -> None:
    """Another process's probe, its async caller cancelled while the outcome is recorded,
    still closes the shared breaker: this process is admitted at once afterwards."""
    breaker = make_breaker(RedisStorage(client, prefix=prefix), failure_threshold=1)
    with contextlib.suppress(Boom):
        breaker.call(boom)
    (seen,) = run_workers(cancelled_probe, [(prefix, 0, backend)])
    assert seen == [("open", "half_open"), ("half_open", "closed")]
    assert breaker.call(ok) == "ok"
    assert breaker.stats().state == "closed"


# --- a Redis that dies and comes back ----------------------------------------------------


class Caller(threading.Thread):
    """Calls through a breaker in a loop until told to stop, as a busy worker would.

    Every seventh call fails with `Boom`. Any other exception is kept in `unexpected`.
    """

    def __init__(self, breaker: stalwart.CircuitBreaker) -> None:
        super().__init__(daemon=True)
        self.breaker = breaker
        self.calls = self.successes = self.failures = 0
        self.unexpected: list[BaseException] = []
        self.marks: list[tuple[int, threading.Event]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def after(self, more: int) -> threading.Event:
        """An event set once `more` further calls have been made."""
        event = threading.Event()
        with self.lock:
            self.marks.append((self.calls + more, event))
        return event

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.breaker.call(boom if self.calls % 7 == 6 else ok)
            except Boom:
                self.failures += 1
            except BaseException as exc:
                self.unexpected.append(exc)
                return
            else:
                self.successes += 1
            with self.lock:
                self.calls += 1
                for count, event in self.marks:
                    if self.calls >= count:
                        event.set()


def test_calls_flow_through_a_redis_outage_and_resynchronise(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed mid-run: local state, one warning, no error; back: shared state again."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    retry_interval = 0.05
    # Killed, Redis refuses connections at once: the timeouts only guard against a busy host.
    storage = RedisStorage(private_redis.url, socket_timeout=1.0, retry_interval=retry_interval)
    observer = RedisStorage(private_redis.url, socket_timeout=2.0)  # another process's view
    config = {"failure_threshold": 3, "window": None}
    breaker = make_breaker(storage, **config)
    caller = Caller(breaker)
    try:
        caller.start()
        assert caller.after(50).wait(WAIT)
        in_flight = breaker.admit()  # admitted by Redis, recorded after it is gone
        assert in_flight < LOCAL_GENERATIONS
        shared = make_breaker(observer, **config).stats()
        assert not shared.storage_degraded
        assert shared.calls >= 50

        private_redis.kill()
        flowed = caller.after(200)
        breaker.record_success(in_flight)
        assert flowed.wait(WAIT)  # 200 more calls, Redis tried again every 50 ms
        time.sleep(3 * retry_interval)  # a few more attempts to reach Redis, all failing
        caller.stop.set()
        caller.join(WAIT)
        assert caller.unexpected == []
        assert caller.failures > 0  # the function's own exceptions still propagated
        stats = breaker.stats()
        assert stats.storage_degraded is True
        assert stats.state == "closed"
        assert 0 < stats.calls < caller.calls  # a fresh local state since the outage
        late = breaker.admit()  # admitted locally, recorded after Redis is back
        assert late >= LOCAL_GENERATIONS
        ours = [r for r in caplog.records if r.name == "stalwart.redis"]
        assert [r.levelno for r in ours] == [logging.WARNING]  # once for the whole outage
        assert "unavailable" in ours[0].getMessage()

        private_redis.start()  # the same port, empty: the shared state starts afresh
        deadline = time.monotonic() + WAIT
        while breaker.stats().storage_degraded:  # keep calling until Redis is asked again
            assert time.monotonic() < deadline, "the breaker never went back to Redis"
            time.sleep(retry_interval)  # let the storage's retry_interval pass
            assert breaker.call(ok) == "ok"
        before = make_breaker(observer, **config).stats()
        assert (before.state, before.failures, before.storage_degraded) == ("closed", 0, False)
        for _ in range(4):
            assert breaker.call(ok) == "ok"
        for _ in range(2):
            with pytest.raises(Boom):
                breaker.call(boom)
        seen = make_breaker(observer, **config).stats()  # the calls after the recovery
        assert (seen.state, seen.successes - before.successes, seen.failures) == ("closed", 4, 2)
        assert seen.consecutive_failures == 2

        breaker.record_failure(late)  # counted in the shared totals, never acted on
        seen = make_breaker(observer, **config).stats()
        assert (seen.state, seen.failures, seen.consecutive_failures) == ("closed", 3, 2)

        with pytest.raises(Boom):
            breaker.call(boom)  # the third failure in a row, in the shared state
        with pytest.raises(CircuitOpenError):
            make_breaker(observer, **config).call(ok)
        assert breaker.state.value == "open"
        messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == ours[0].name]
        assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
        assert "answers again" in messages[1][1]
    finally:
        caller.stop.set()
        caller.join(WAIT)
        storage.close()
        observer.close()


def test_calls_flow_through_a_redis_that_hangs(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis paused (SIGSTOP): one wait of socket_timeout, then local calls; resumed: shared."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    timeout = 0.4
    config = {"failure_threshold": 3, "window": None}
    # `patient` tries Redis again only after a minute; `eager` on every request.
    patient = RedisStorage(private_redis.url, socket_timeout=timeout, retry_interval=60.0)
    eager = RedisStorage(private_redis.url, socket_timeout=timeout, retry_interval=0.0)
    observer = RedisStorage(private_redis.url, socket_timeout=WAIT)  # another process's view
    try:
        steady, retrying = make_breaker(patient, **config), make_breaker(eager, **config)
        assert steady.call(ok) == retrying.call(ok) == "ok"

        private_redis.pause()
        start = time.monotonic()
        assert steady.call(ok) == "ok"  # the admission waits, then goes local
        waited = time.monotonic() - start
        assert 0.9 * timeout <= waited < 2 * timeout  # one socket timeout: no retry
        start = time.monotonic()
        for _ in range(100):
            assert steady.call(ok) == "ok"
        for _ in range(3):
            with pytest.raises(Boom):
                steady.call(boom)
        with pytest.raises(CircuitOpenError):
            steady.call(ok)  # the local state opened
        assert time.monotonic() - start < timeout  # none of them waited for Redis
        assert steady.stats().storage_degraded is True

        start = time.monotonic()
        assert retrying.call(ok) == "ok"  # asks Redis twice (admission, outcome): waits twice
        assert 1.8 * timeout <= time.monotonic() - start < 3 * timeout
        assert retrying.stats().storage_degraded is True

        private_redis.resume()
        make_breaker(observer, **config).force_open()
        with pytest.raises(CircuitOpenError):
            retrying.call(ok)  # the next request is answered: the shared, forced-open state
        stats = retrying.stats()
        assert (stats.state, stats.storage_degraded) == ("forced_open", False)
        ours = [r for r in caplog.records if r.name == "stalwart.redis"]
        assert [(r.levelno, r.breaker) for r in ours] == [  # type: ignore[attr-defined]
            (logging.WARNING, NAME),
            (logging.WARNING, NAME),
            (logging.INFO, NAME),
        ]
        for warning in ours[:2]:
            assert warning.getMessage().startswith(
                f"Redis is unavailable for breaker {NAME!r} (TimeoutError: "
            )
        assert "answers again" in ours[2].getMessage()
    finally:
        private_redis.resume()
        patient.close()
        eager.close()
        observer.close()


def test_outage_during_many_processes_keeps_each_process_running(
    private_redis: PrivateRedis,
) -> None:
    """Redis gone before spawned workers start: each carries on locally without errors."""
    url = private_redis.url
    private_redis.kill()
    start = SPAWN.Barrier(WORKERS)
    reports = run_workers(local_only, [(url, worker, start) for worker in range(WORKERS)])
    for worker, report in enumerate(reports):
        expected = sum(fails(worker, call) for call in range(60))
        assert report == {"failures": expected, "successes": 60 - expected, "degraded": True}


def local_only(
    url: str, worker: int, start: Barrier, results: Queue[tuple[int, str, Any]]
) -> None:
    """60 calls through a breaker whose Redis is down; report the local totals."""

    def work() -> dict[str, Any]:
        storage = RedisStorage(url, prefix="unreachable", socket_timeout=0.1)
        breaker = make_breaker(storage, failure_threshold=1_000_000)
        start.wait(WAIT)
        for call in range(60):
            with contextlib.suppress(Boom):
                breaker.call(boom if fails(worker, call) else ok)
        stats = breaker.stats()
        storage.close()
        return {
            "failures": stats.failures,
            "successes": stats.successes,
            "degraded": stats.storage_degraded,
        }

    _report(results, worker, work)
