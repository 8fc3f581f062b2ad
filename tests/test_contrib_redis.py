"""`stalwart.contrib.redis`: breaker state in Redis, equal to the memory storage's.

Against the real Redis on 127.0.0.1:6379 (never a mock); every test uses its own random
prefix and deletes its keys afterwards. The resynchronisation test runs a private
``redis-server`` on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)
from redis.exceptions import ResponseError

import stalwart
from redis_support import URL, PrivateRedis, delete_prefix, free_port, new_prefix
from stalwart.breaker import BreakerRegistry, MemoryStorage, State
from stalwart.breaker.machine import REJECTED, BreakerConfig, Transition
from stalwart.contrib.redis import (
    LOCAL_GENERATIONS,
    AsyncRedisState,
    AsyncRedisStorage,
    RedisState,
    RedisStorage,
)
from stalwart.errors import CircuitOpenError
from stalwart.testing import ManualClock
from strategies import TICK, breaker_configs, breaker_start_times

if TYPE_CHECKING:
    from stalwart.breaker.storage import MemoryState

pytestmark = pytest.mark.redis

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
WAIT = 30.0  # seconds a test waits for what must happen at once, before it fails
FORCED_OPEN, DISABLED = State.FORCED_OPEN, State.DISABLED


class Boom(Exception):
    """A failure by default."""


def boom() -> None:
    raise Boom


class CountingRedis(redis.Redis):
    """A client that counts the commands it sends (each one is a round trip here)."""

    commands: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


def counting_client(url: str = URL, **kwargs: Any) -> CountingRedis:
    c = CountingRedis.from_url(url, **kwargs)
    c.commands = []
    return c


def breaker(name: str, storage: Any, **config: Any) -> stalwart.CircuitBreaker:
    return stalwart.CircuitBreaker(name, storage=storage, log=False, **config)


# --- the differential test: the Lua script against the memory storage ---------------------

durations = st.sampled_from([None, 0.0, 0.25 - TICK, 0.25, 1.0 - TICK, 1.0, 5.0])
failure_types = st.sampled_from(["Boom", "builtins.OSError", "", None])


class Differential(RuleBasedStateMachine):
    """Drives a memory state and a Redis state with the same events and compares them."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(URL)
        self.prefix = new_prefix()
        self.clock = ManualClock()
        self.memory: MemoryState
        self.redis: RedisState
        self.peer: RedisState

    @initialize(config=breaker_configs(), start=breaker_start_times)
    def start(self, config: dict[str, Any], start: float) -> None:
        self.config = BreakerConfig(**config)
        self.clock.advance(start)
        self.memory = MemoryStorage().bind("db", self.config, self.clock)
        storage = RedisStorage(self.client, prefix=self.prefix, clock=self.clock)
        self.redis = storage.bind("db", self.config, self.clock)
        self.peer = storage.bind("db", self.config, self.clock)  # another process's

    def teardown(self) -> None:
        delete_prefix(self.client, self.prefix)
        self.client.close()

    def _admit(self) -> int:
        expected = self.memory.admit()
        got = self.redis.admit()
        assert got == expected
        return got[0]

    @rule(target=calls)
    def admit(self) -> Any:
        generation = self._admit()
        return multiple() if generation == REJECTED else generation

    def _outcome(
        self,
        generation: int,
        failed: bool,
        duration: float | None,
        failure_type: str | None,
        simple: bool,
    ) -> None:
        """Report an outcome to both; `simple`: a success, as `record_success` (for a
        breaker that needs no duration: a plain HINCRBY when Redis saw it closed)."""
        if simple:
            expected = self.memory.record_success(generation)
            got = self.redis.record_success(generation)
        else:
            expected = self.memory.record(generation, failed, duration, failure_type)
            got = self.redis.record(generation, failed, duration, failure_type)
        assert got == expected

    @rule(call=consumes(calls), duration=durations, simple=st.booleans())
    def succeed(self, call: int, duration: float | None, simple: bool) -> None:
        self._outcome(call, False, duration, None, simple)  # simple: no duration

    @rule(call=consumes(calls), duration=durations, failure_type=failure_types)
    def fail(self, call: int, duration: float | None, failure_type: str | None) -> None:
        self._outcome(call, True, duration, failure_type, False)

    @rule(call=consumes(calls))
    def release(self, call: int) -> None:
        self.memory.release(call)
        self.redis.release(call)

    @rule(call=calls, kind=st.sampled_from(["fail", "succeed", "count", "release"]))
    def late(self, call: int, kind: str) -> None:
        """An outcome reported twice, or long after: stale generations count only."""
        if kind == "release":
            self.memory.release(call)
            self.redis.release(call)
        else:
            self._outcome(call, kind == "fail", None, "Late", kind == "count")

    @rule()
    def refresh(self) -> None:
        """The next plain success goes through the script (as PLAIN_SUCCESS_REFRESH does)."""
        self.redis._plain_until = 0.0

    @rule(
        which=st.sampled_from(["reset", "force_open", "disable"]),
        failures=st.integers(0, 2),
        outcome=st.booleans(),
    )
    def race(self, which: str, failures: int, outcome: bool) -> None:
        """Admitted here; then another process's operator acts, and its calls fail; then
        the call ends. Its success (a plain HINCRBY if this process saw it closed) is of
        a generation since left: it must not end the new generation's run of failures."""
        generation = self._admit()
        if generation == REJECTED:
            return
        expected = self.memory.change(which)
        assert self.peer.change(which) == expected
        for _ in range(failures):
            admitted = self.memory.admit()
            assert self.peer.admit() == admitted
            if admitted[0] == REJECTED:
                break
            expected_move = self.memory.record(admitted[0], True, None, "Boom")
            assert self.peer.record(admitted[0], True, None, "Boom") == expected_move
        self._outcome(generation, not outcome, None, "Boom", outcome)

    @rule(
        kind=st.sampled_from(["zero", "tick", "width", "window", "recovery", "almost", "random"]),
        ticks=st.integers(0, 64 * 40),
    )
    def advance(self, kind: str, ticks: int) -> None:
        c = self.config
        width = c.window / 20 if c.window else 4 * TICK
        self.clock.advance(
            {
                "zero": 0.0,
                "tick": TICK,
                "width": width,
                "window": c.window or width,
                "recovery": c.recovery_timeout,
                "almost": c.recovery_timeout - TICK,
                "random": ticks * TICK,
            }[kind]
        )

    @rule(
        call=st.sampled_from(["fail", "succeed", "slow"]),
        duration=durations,
        simple=st.booleans(),
    )
    def call(self, call: str, duration: float | None, simple: bool) -> None:
        generation = self._admit()
        if generation == REJECTED:
            return
        if call == "slow":
            self._outcome(generation, False, 5.0, None, False)
        else:
            failed = call == "fail"
            self._outcome(generation, failed, duration, "Boom", simple and not failed)

    @rule(
        outcomes=st.lists(
            st.sampled_from(["fail", "succeed", "count", "slow"]), min_size=2, max_size=8
        ),
        recover=st.booleans(),
    )
    def burst(self, outcomes: list[str], recover: bool) -> None:
        """Several calls in a row (after the recovery timeout, maybe): trips and probes."""
        if recover:
            self.clock.advance(self.config.recovery_timeout)
        for outcome in outcomes:
            generation = self._admit()
            if generation == REJECTED:
                return
            slow = outcome == "slow"
            self._outcome(
                generation, outcome == "fail", 5.0 if slow else None, "Boom", outcome == "count"
            )

    @rule(target=calls, n=st.integers(1, 4))
    def probes(self, n: int) -> Any:
        """Several admissions at once: half-open lets only half_open_max_calls through."""
        tokens = [self._admit() for _ in range(n)]
        return multiple(*(t for t in tokens if t != REJECTED))

    @rule(which=st.sampled_from(["reset", "force_open", "disable"]), roll=st.integers(0, 9))
    def operator(self, which: str, roll: int) -> None:
        held = self.memory.counts().state in (FORCED_OPEN, DISABLED)
        if roll > (4 if held and which == "reset" else 0):
            return
        expected = self.memory.change(which)
        assert self.redis.change(which) == expected

    @invariant()
    def same_counts(self) -> None:
        assert self.redis.counts() == self.memory.counts()

    @invariant()
    def closed_generation_follows_the_state(self) -> None:
        """What a plain HGET admits in: the generation while closed, else nothing."""
        state, generation, closed = self.client.hmget(
            self.redis.keys[0], "state", "generation", "closed_generation"
        )
        if state is not None:  # the hash exists once the script has run
            assert closed == (generation if state == b"closed" else None)


Differential.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDifferential = Differential.TestCase
TestDifferential.__doc__ = "Redis and memory storages agree on every sequence of events."


def test_plain_successes_end_only_their_own_generations_run_of_failures(prefix: str) -> None:
    """A success counted with HINCRBY ends the run of failures of its generation (every
    failure after it counts from zero) and never a later generation's."""
    counting = counting_client()
    try:
        clock = ManualClock()
        storage = RedisStorage(counting, prefix=prefix, clock=clock)
        config = BreakerConfig(failure_threshold=3, window=None)  # consecutive failures
        here, there = (storage.bind("db", config, clock) for _ in range(2))

        def fail(state: RedisState) -> Transition | None:
            token, _, _ = state.admit()
            return state.record(token, True, None, "Boom")

        token, _, _ = here.admit()
        here.record_success(token)  # through the script: plain ones from now on
        fail(here)
        fail(there)
        counting.commands.clear()
        here.record_success(here.admit()[0])  # ends the run of two
        assert counting.commands == ["HGET", "HINCRBY"]
        assert (fail(there), fail(there)) == (None, None)  # two in a row, not four
        late, _, _ = here.admit()  # generation 0, seen closed
        there.change("reset")  # generation 1
        assert (fail(there), fail(there)) == (None, None)
        counting.commands.clear()
        assert here.record_success(late) is None  # plain, of a generation left
        assert counting.commands == ["HINCRBY"]
        counts = there.counts()
        assert (counts.generation, counts.consecutive_failures) == (1, 2)
        assert (counts.successes, counts.failures) == (3, 6)
        transition = fail(there)  # the third in a row: the late success did not end the run
        assert transition is not None
        assert (transition.old, transition.new) == (CLOSED, OPEN)
        assert [f for f in counting.hkeys(here.keys[0]) if f.startswith(b"ok:")] == []
        clock.advance(config.recovery_timeout)
        probe, _, _ = here.admit()  # half-open: its success goes through the script
        counting.commands.clear()
        closing = here.record_success(probe)
        assert counting.commands == ["EVALSHA"]
        assert closing is not None
        assert (closing.old, closing.new) == (HALF_OPEN, CLOSED)
    finally:
        counting.close()


def test_stale_release_keeps_the_probe_permit(client: redis.Redis, prefix: str) -> None:
    """Releasing a token of an older generation never frees a half-open probe permit."""
    clock = ManualClock(5.0)
    config = BreakerConfig(failure_threshold=1, window=None, recovery_timeout=1.0)
    memory = MemoryStorage().bind("db", config, clock)
    shared = RedisStorage(client, prefix=prefix, clock=clock).bind("db", config, clock)
    for state in (memory, shared):
        old, _, _ = state.admit()
        failing, _, _ = state.admit()
        state.record(failing, True, None, "Boom")
    clock.advance(1.0)
    for state in (memory, shared):
        probe, _, transition = state.admit()
        assert (probe, transition) == (
            2,
            Transition(OPEN, HALF_OPEN, "recovery timeout elapsed", 6.0, 2),
        )
        state.release(old)
        assert state.admit() == (REJECTED, 0.0, None)
        state.release(probe)
        assert state.admit() == (2, None, None)
    assert shared.counts() == memory.counts()


def test_lost_probe_frees_its_slot_recovery_timeout_after_admission(
    client: redis.Redis, prefix: str
) -> None:
    """A probe that never reports (its process died) holds its slot in Redis only until
    recovery_timeout after its admission, exactly as in memory."""
    clock = ManualClock(10.0)
    config = BreakerConfig(failure_threshold=1, window=None, recovery_timeout=5.0)
    memory = MemoryStorage().bind("db", config, clock)
    shared = RedisStorage(client, prefix=prefix, clock=clock).bind("db", config, clock)
    for state in (memory, shared):
        failing, _, _ = state.admit()
        state.record(failing, True, None, "Boom")
    clock.advance(5.0)
    lost = [state.admit()[0] for state in (memory, shared)]
    assert lost == [2, 2]
    clock.advance(5.0 - TICK)
    for state in (memory, shared):
        assert state.admit() == (REJECTED, 0.0, None)
    clock.advance(TICK)
    for state in (memory, shared):
        assert state.admit() == (2, None, None)  # the slot expired: a new probe
        assert state.admit() == (REJECTED, 0.0, None)
    assert client.hget(shared.keys[0], "probes") == b"25"
    for state in (memory, shared):
        assert state.record(2, False, None, None) == Transition(
            HALF_OPEN, CLOSED, "probes succeeded", 20.0, 3
        )
    assert client.hget(shared.keys[0], "probes") is None
    assert shared.counts() == memory.counts()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    window=st.one_of(
        st.sampled_from([0.3, 1.7, 2.0, 6.0, 60.0]),
        st.floats(0.01, 100.0, allow_nan=False, allow_infinity=False),
    ),
    start=st.one_of(st.just(0.0), st.floats(-100.0, 100.0), st.floats(0.0, 2e9)),
    before=st.floats(0.0, 1.0),
    steps=st.lists(
        st.tuples(st.floats(0.0, 10.0, allow_nan=False), st.booleans()), min_size=1, max_size=25
    ),
)
def test_time_window_buckets_agree_with_python_floats(
    client: redis.Redis,
    window: float,
    start: float,
    before: float,
    steps: list[tuple[float, bool]],
) -> None:
    """Any float times and widths fall in the same buckets in Lua as in Python."""
    config = BreakerConfig(
        failure_threshold=None, window=window, failure_rate=1.0, minimum_calls=10**9
    )
    clock = ManualClock(start - before * window)  # from up to a window before start
    p = new_prefix()
    try:
        memory = MemoryStorage().bind("db", config, clock)
        shared = RedisStorage(client, prefix=p, clock=clock).bind("db", config, clock)
        for step, failed in steps:
            clock.advance(step)
            for state in (memory, shared):
                generation, _, _ = state.admit()
                state.record(generation, failed, None, "Boom")
            assert shared.counts() == memory.counts()
    finally:
        delete_prefix(client, p)


@pytest.mark.parametrize(
    ("window", "now", "epoch"),
    [
        (2.0, 1.0, 9),  # 1.0 // 0.1 == 9.0, though floor(1.0 / 0.1) == 10
        (14.0, 17.300740157905093, 24),  # snapped up from 23.999999999999996
        (14.0, -0.35, -1),
        (2.0, 0.0, 0),
    ],
)
def test_bucket_is_python_floor_division(
    client: redis.Redis, prefix: str, window: float, now: float, epoch: int
) -> None:
    """A call's bucket is int(now // width), with Python's float floor division."""
    assert int(now // (window / 20)) == epoch
    clock = ManualClock(now)
    config = BreakerConfig(failure_threshold=5, window=window)
    state = RedisStorage(client, prefix=prefix, clock=clock).bind("db", config, clock)
    generation, _, _ = state.admit()
    state.record(generation, True, None, "Boom")
    assert client.hgetall(state.keys[1]) == {
        f"{epoch}:calls".encode(): b"1",
        f"{epoch}:failures".encode(): b"1",
    }


@pytest.mark.parametrize(
    ("config", "outcomes", "reason"),
    [
        ({"failure_threshold": 2, "window": 2.5}, [True, True], "2 failures within 2.5s"),
        ({"failure_threshold": 1, "window": 60}, [True], "1 failures within 60s"),
        ({"failure_threshold": 1, "window": 1e6}, [True], "1 failures within 1e+06s"),
        ({"failure_threshold": 3, "window": None}, [True] * 3, "3 consecutive failures"),
        (
            {"failure_threshold": None, "failure_rate": 0.3, "minimum_calls": 3},
            [False, False, True],
            "failure rate 33% over 3 calls",
        ),
        (
            {"failure_threshold": None, "failure_rate": 0.6, "minimum_calls": 3},
            [False, True, True],
            "failure rate 67% over 3 calls",
        ),
        (
            {"failure_threshold": None, "failure_rate": 0.1, "minimum_calls": 8},
            [False] * 7 + [True],
            "failure rate 12% over 8 calls",  # 12.5 rounds to even, as Python does
        ),
        (
            {
                "failure_threshold": None,
                "slow_call_duration": 1.0,
                "slow_call_rate": 0.5,
                "minimum_calls": 2,
                "window": None,
            },
            ["slow", "slow"],
            "slow call rate 100% over 2 calls",
        ),
    ],
)
def test_reasons_read_as_the_machine_writes_them(
    client: redis.Redis, prefix: str, config: dict[str, Any], outcomes: list[Any], reason: str
) -> None:
    """Floats (`:g`) and percentages (`:.0%`) in reasons read exactly as in memory."""
    clock = ManualClock(100.0)
    cfg = BreakerConfig(**config)
    states = [
        MemoryStorage().bind("db", cfg, clock),
        RedisStorage(client, prefix=prefix, clock=clock).bind("db", cfg, clock),
    ]
    for state in states:
        transition = None
        for outcome in outcomes:
            generation, _, _ = state.admit()
            slow = outcome == "slow"
            transition = state.record(generation, outcome is True, 5.0 if slow else None, "B")
        assert transition == Transition(CLOSED, OPEN, reason, 100.0, 1)


# --- through the facade --------------------------------------------------------------------


def test_breaker_opens_and_every_process_sees_it(prefix: str) -> None:
    """Failures open the shared state; another storage on the prefix rejects; reset spreads."""
    one = RedisStorage(URL, prefix=prefix)
    two = RedisStorage(URL, prefix=prefix)  # as another process would have
    try:
        a = breaker("svc", one, failure_threshold=3, window=None)
        b = breaker("svc", two, failure_threshold=3, window=None)
        assert a.call(lambda: 1) == 1
        for _ in range(3):
            with pytest.raises(Boom):
                a.call(boom)
        assert a.state is OPEN
        assert b.state is OPEN
        with pytest.raises(CircuitOpenError) as info:
            b.call(lambda: 1)
        assert info.value.retry_after is not None
        assert 59 < info.value.retry_after <= 60
        stats = b.stats()
        assert (stats.state, stats.failures, stats.rejected, stats.calls) == ("open", 3, 1, 4)
        assert stats.last_failure_type == "test_contrib_redis.Boom"
        assert stats.storage_degraded is False
        assert stats.opened_at is not None
        assert abs(stats.opened_at - time.time()) < 5  # Redis server time, as Unix time
        b.reset()
        assert a.state is CLOSED
        assert a.call(lambda: 2) == 2
        a.force_open()
        with pytest.raises(CircuitOpenError) as info:
            b.call(lambda: 1)
        assert info.value.retry_after is None
        b.disable()
        assert a.state is DISABLED
    finally:
        one.close()
        two.close()


def test_server_time_is_used_without_a_clock(client: redis.Redis, prefix: str) -> None:
    """Without `clock=`, the script reads Redis TIME: counts' `now` is server time."""
    state = RedisStorage(client, prefix=prefix).bind("db", BreakerConfig(), time.monotonic)
    server_seconds, micros = client.time()
    now = state.counts().now
    assert abs(now - (server_seconds + micros / 1e6)) < 5


def test_registry_on_redis_shares_health(prefix: str) -> None:
    """A registry takes a Redis storage; its health shows an outage another one found."""
    one = RedisStorage(URL, prefix=prefix)
    two = RedisStorage(URL, prefix=prefix)
    try:
        first = BreakerRegistry(storage=one, failure_threshold=1, log=False)
        second = BreakerRegistry(storage=two, failure_threshold=1, log=False)
        watcher = second.get("payments")
        assert second.health().status == "healthy"
        with pytest.raises(Boom):
            first.get("payments").call(boom)
        assert watcher.state is OPEN
        health = second.health()
        assert (health.status, health.open) == ("critical", ("payments",))
    finally:
        one.close()
        two.close()


def test_registry_snapshot_reads_the_shared_state(prefix: str) -> None:
    """snapshot() shows what another storage (another process) did to the registry's breakers."""
    one = RedisStorage(URL, prefix=prefix)
    two = RedisStorage(URL, prefix=prefix)
    try:
        watching = BreakerRegistry(storage=one, failure_threshold=1, log=False)
        for name in ("payments", "search"):
            watching.get(name)
        tripping = BreakerRegistry(storage=two, failure_threshold=1, log=False)
        with pytest.raises(Boom):
            tripping.get("payments").call(boom)
        tripping.get("inventory").force_open()  # a breaker `watching` never made
        snapshot = watching.snapshot()
        assert list(snapshot) == ["payments", "search"]
        payments = snapshot["payments"]
        assert (payments.state, payments.failures, payments.calls) == ("open", 1, 1)
        assert payments.last_failure_type == "test_contrib_redis.Boom"
        assert payments.storage_degraded is False
        assert snapshot["search"].state == "closed"
        assert watching.health().open == ("payments",)  # not "inventory": never made here
    finally:
        one.close()
        two.close()


@pytest.mark.asyncio
async def test_async_registry_snapshot_reads_the_shared_state(prefix: str) -> None:
    """snapshot_async() reads Redis afresh; the sync snapshot keeps the last answer."""
    ours, theirs = AsyncRedisStorage(URL, prefix=prefix), AsyncRedisStorage(URL, prefix=prefix)
    try:
        watching = BreakerRegistry(storage=ours, log=False)
        db = watching.get("db")
        assert await db.call_async(asyncio.sleep, 0) is None  # seen closed
        tripping = BreakerRegistry(storage=theirs, log=False)
        await tripping.get("db").force_open_async()
        assert watching.snapshot()["db"].state == "closed"  # the last answer: stale
        snapshot = await watching.snapshot_async()
        assert list(snapshot) == ["db"]
        assert (snapshot["db"].state, snapshot["db"].successes) == ("forced_open", 1)
        assert watching.snapshot()["db"].state == "forced_open"  # now the last answer
    finally:
        await ours.aclose()
        await theirs.aclose()


def test_prefixes_are_isolated(client: redis.Redis, prefix: str) -> None:
    """Two prefixes never see each other's breakers, even with the same name."""
    other = f"{prefix}-other"
    try:
        a = breaker("svc", RedisStorage(client, prefix=prefix), failure_threshold=1)
        b = breaker("svc", RedisStorage(client, prefix=other), failure_threshold=1)
        with pytest.raises(Boom):
            a.call(boom)
        assert a.state is OPEN
        assert b.state is CLOSED
        assert b.call(lambda: 1) == 1
        assert b.stats().failures == 0
        b.force_open()
        a.reset()
        assert (a.state, b.state) == (CLOSED, FORCED_OPEN)
    finally:
        delete_prefix(client, other)


def test_keys_share_a_hash_tag_have_ttls_and_plain_values(
    client: redis.Redis, prefix: str
) -> None:
    """All of a breaker's keys share its hash tag and slot, expire, and hold plain text."""
    clock = ManualClock(50.0)
    storage = RedisStorage(client, prefix=prefix, clock=clock)
    b = breaker(
        "a{b}c", storage, failure_threshold=3, window=10.0, failure_rate=0.5, window_calls=4
    )
    b.call(lambda: 1)
    with pytest.raises(Boom):
        b.call(boom)
    keys = sorted(client.scan_iter(match=f"{prefix}:*"))
    base = f"{prefix}:{{a{{b}}c}}:"
    state_key, buckets_key, calls_key = (
        f"{base}{k}".encode() for k in ("state", "buckets", "calls")
    )
    assert keys == sorted([state_key, buckets_key, calls_key])
    assert {_slot(k) for k in keys} == {b"a{b"}
    for key in keys:
        ttl = client.pttl(key)
        assert 0 < ttl <= (2 * 60 + 3600) * 1000
    state = {k.decode(): v.decode() for k, v in client.hgetall(state_key).items()}
    assert state["state"] == "closed"
    assert state["failures"] == "1"
    assert state["last_failure_type"] == "test_contrib_redis.Boom"
    assert float(state["last_failure_at"]) == 50.0
    assert client.lrange(calls_key, 0, -1) == [b"1", b"0"]  # newest first
    assert client.hgetall(buckets_key) == {b"100:calls": b"2", b"100:failures": b"1"}
    b.force_open()
    assert client.pttl(state_key) > 29 * 86400 * 1000  # an operator's decision lasts


def test_which_writes_refresh_which_ttls(client: redis.Redis, prefix: str) -> None:
    """Scripted successes and rejections refresh the state hash's TTL only; admissions
    and plain successes (HINCRBY, between scripted ones) none."""
    storage = RedisStorage(client, prefix=prefix)
    b = breaker("db", storage, failure_threshold=2, window=60.0, recovery_timeout=30.0)
    state = b.fast_state
    assert isinstance(state, RedisState)
    keys = state.keys[:2]  # the state hash and the time window's buckets
    full = (2 * 60 + 3600) * 1000

    def shorten() -> None:
        for key in keys:
            client.pexpire(key, 10_000)

    def refreshed() -> list[bool]:
        return [client.pttl(key) > 10_000 for key in keys]

    with pytest.raises(Boom):
        b.call(boom)
    assert all(full - 60_000 < client.pttl(key) <= full for key in keys)
    shorten()
    token = b.admit()  # admitted with a read: writes nothing
    assert refreshed() == [False, False]
    b.record_success(token)  # the first success: through the script
    assert refreshed() == [True, False]  # the buckets: not written, not refreshed
    shorten()
    b.record_success(b.admit())  # within PLAIN_SUCCESS_REFRESH of it: HINCRBY
    assert refreshed() == [False, False]
    state._plain_until = 0.0  # as when PLAIN_SUCCESS_REFRESH has passed
    b.record_success(b.admit())
    assert refreshed() == [True, False]
    shorten()
    with pytest.raises(Boom):
        b.call(boom)  # the second failure opens it
    assert refreshed() == [True, True]
    shorten()
    with pytest.raises(CircuitOpenError):
        b.call(lambda: 1)
    assert refreshed() == [True, False]


def _slot(key: bytes) -> bytes:
    """The hash tag Redis Cluster hashes: between the first { and the next }."""
    start = key.index(b"{")
    end = key.index(b"}", start + 1)
    return key[start + 1 : end]


def test_expired_keys_leave_a_fresh_closed_breaker(client: redis.Redis, prefix: str) -> None:
    """When the state hash is gone (expired), the breaker starts fresh, closed, at zero."""
    clock = ManualClock(10.0)
    state = RedisStorage(client, prefix=prefix, clock=clock).bind(
        "db", BreakerConfig(failure_threshold=1, failure_rate=0.5, window_calls=3), clock
    )
    generation, _, _ = state.admit()
    assert state.record(generation, True, None, "Boom") is not None
    assert state.counts().state is OPEN
    assert client.llen(state.keys[2]) == 1
    client.delete(state.keys[0])  # as if it expired; the windows' keys linger
    counts = state.counts()
    assert (counts.state, counts.generation, counts.failures) == (CLOSED, 0, 0)
    assert client.exists(state.keys[1], state.keys[2]) == 0
    assert state.admit() == (0, None, None)


def test_calls_survive_script_flush(private_redis: PrivateRedis) -> None:
    """After SCRIPT FLUSH the script is loaded again (EVALSHA, NOSCRIPT, SCRIPT LOAD).

    On a private server, so that no other client loads the script in between.
    """
    counting = counting_client(private_redis.url)
    try:
        b = breaker("db", RedisStorage(counting), failure_threshold=2)
        assert b.call(lambda: 1) == 1
        assert counting.commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA", "EVALSHA"]
        counting.script_flush()
        counting.commands.clear()
        assert b.call(lambda: 2) == 2  # admitted by HGET, counted by HINCRBY: no script
        assert counting.commands == ["HGET", "HINCRBY"]
        counting.commands.clear()
        with pytest.raises(Boom):
            b.call(boom)
        assert counting.commands == ["HGET", "EVALSHA", "SCRIPT LOAD", "EVALSHA"]
        stats = b.stats()
        assert (stats.successes, stats.failures, stats.storage_degraded) == (2, 1, False)
    finally:
        counting.close()


def test_round_trips_strict_and_cached(prefix: str) -> None:
    """Strict: 2 round trips per successful call; cached: at most 1 on average."""
    counting = counting_client()
    try:
        strict = breaker("strict", RedisStorage(counting, prefix=prefix))
        cached = breaker("cached", RedisStorage(counting, prefix=prefix, max_staleness=5.0))
        strict.call(lambda: 0)  # loads the script; the state is seen closed
        counting.commands.clear()
        for _ in range(100):
            strict.call(lambda: 1)
        assert counting.commands == ["HGET", "HINCRBY"] * 100  # admission, success
        counting.commands.clear()
        for _ in range(100):
            cached.call(lambda: 1)
        assert len(counting.commands) <= 101  # one admit, then outcomes only
        assert cached.stats().successes == 100
    finally:
        counting.close()


def test_cache_admits_for_max_staleness_then_asks(client: redis.Redis, prefix: str) -> None:
    """A cached closed state admits without asking until it is max_staleness old."""
    watcher = RedisStorage(client, prefix=prefix, max_staleness=0.2).bind(
        "db", BreakerConfig(failure_threshold=1), time.monotonic
    )
    opener = RedisStorage(client, prefix=prefix).bind(
        "db", BreakerConfig(failure_threshold=1), time.monotonic
    )
    assert watcher.admit() == (0, None, None)
    generation, _, _ = opener.admit()
    assert opener.record(generation, True, None, "Boom") is not None
    assert watcher.admit() == (0, None, None)  # from the cache: not yet seen
    time.sleep(0.25)
    token, retry_after, _ = watcher.admit()
    assert token == REJECTED
    assert retry_after is not None
    assert retry_after > 0
    assert watcher.admit()[0] == REJECTED  # an open state is never cached


def test_decoded_responses_client(prefix: str) -> None:
    """A client with decode_responses=True works as well."""
    c = redis.Redis.from_url(URL, decode_responses=True)
    try:
        b = breaker("db", RedisStorage(c, prefix=prefix), failure_threshold=1)
        with pytest.raises(Boom):
            b.call(boom)
        stats = b.stats()
        assert (stats.state, stats.last_failure_type) == ("open", "test_contrib_redis.Boom")
    finally:
        c.close()


def test_change_rejects_unknown_operations(client: redis.Redis, prefix: str) -> None:
    """An unknown operator's operation raises ValueError before any I/O."""
    state = RedisStorage(client, prefix=prefix).bind("db", BreakerConfig(), time.monotonic)
    with pytest.raises(ValueError, match="operation must be reset, force_open or disable"):
        state.change("explode")


# --- async -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_breaker_on_async_storage(prefix: str) -> None:
    """An async breaker on AsyncRedisStorage opens, rejects, is seen by others, resets."""
    one = AsyncRedisStorage(URL, prefix=prefix)
    two = AsyncRedisStorage(redis.asyncio.Redis.from_url(URL), prefix=prefix)
    try:
        a = breaker("svc", one, failure_threshold=2, window=None)
        b = breaker("svc", two, failure_threshold=2, window=None)

        @a
        async def fetch(fail: bool) -> int:
            await asyncio.sleep(0)
            if fail:
                raise Boom
            return 1

        assert await fetch(False) == 1
        for _ in range(2):
            with pytest.raises(Boom):
                await fetch(True)
        with pytest.raises(CircuitOpenError):
            await fetch(False)
        with pytest.raises(CircuitOpenError):
            await b.call_async(asyncio.sleep, 0)
        stats = await b.stats_async()
        assert (stats.state, stats.failures, stats.rejected) == ("open", 2, 2)
        assert b.state is OPEN  # last known, without I/O
        await b.reset_async()
        assert a.state is OPEN  # last known to a: stale until it asks again
        assert await fetch(False) == 1
        assert a.state is CLOSED
        assert (await a.stats_async()).state == "closed"
        await a.force_open_async()
        await b.disable_async()
        async with a:
            pass
        assert (await a.stats_async()).successes == 3
    finally:
        await one.aclose()
        await two.aclose()
        await two.client.aclose()


@pytest.mark.asyncio
async def test_async_state_sync_methods_refuse(prefix: str) -> None:
    """The sync methods of an async state do no I/O: they raise, counts is last known."""
    storage = AsyncRedisStorage(URL, prefix=prefix)
    try:
        state = storage.bind("db", BreakerConfig(), time.monotonic)
        assert isinstance(state, AsyncRedisState)
        assert state.io is True
        assert state.fast_generation == REJECTED
        for call in (
            state.admit,
            lambda: state.record(0, True, None, None),
            lambda: state.record_success(0),
            lambda: state.release(0),
            lambda: state.change("reset"),
        ):
            with pytest.raises(RuntimeError, match="AsyncRedisStorage.*_async"):
                call()
        assert state.counts().state is CLOSED
        with pytest.raises(ValueError, match="operation must be"):
            await state.change_async("nope")
        generation, _, _ = await state.admit_async()
        await state.release_async(generation)
        assert await state.record_success_async(generation) is None
        assert (await state.counts_async()).successes == 1
        assert state.counts().successes == 1
        cached = AsyncRedisStorage(storage.client, prefix=prefix, max_staleness=60.0)
        fast = cached.bind("db", BreakerConfig(), time.monotonic)
        assert await fast.admit_async() == (0, None, None)
        assert await fast.admit_async() == (0, None, None)  # no I/O this time
    finally:
        await storage.aclose()


@pytest.mark.anyio
async def test_sync_storage_serves_async_code_through_threads(prefix: str) -> None:
    """RedisStorage's async twins run in worker threads, on asyncio and trio alike."""
    storage = RedisStorage(URL, prefix=prefix, max_staleness=30.0)
    try:
        b = breaker("svc", storage, failure_threshold=1)
        state = b.fast_state
        assert isinstance(state, RedisState)
        assert state.io is True  # so decorated async functions use the threaded twins

        async def work() -> int:
            return 1

        assert await b.call_async(work) == 1
        assert await b(work)() == 1
        assert await state.admit_async() == (0, None, None)  # from the cache
        with pytest.raises(Boom):
            async with b:
                raise Boom
        with pytest.raises(CircuitOpenError):
            await b.call_async(work)
        token = 0
        await state.release_async(token)
        await b.reset_async()
        assert (await b.stats_async()).state == "closed"
        assert await state.record_success_async(1) is None
    finally:
        storage.close()


@pytest.mark.anyio
async def test_cancelled_probe_gives_back_its_permit(prefix: str) -> None:
    """A half-open probe cancelled in async code releases its permit in Redis."""
    import anyio

    clock = ManualClock(100.0)
    storage = RedisStorage(URL, prefix=prefix, clock=clock)
    try:
        b = stalwart.CircuitBreaker(
            "svc",
            storage=storage,
            clock=clock,
            failure_threshold=1,
            recovery_timeout=1.0,
            log=False,
        )
        with pytest.raises(Boom):
            await b.call_async(_raise_boom)
        clock.advance(1.0)
        inside = anyio.Event()

        async def probe() -> None:
            inside.set()
            await anyio.sleep_forever()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.call_async, probe)
                await inside.wait()
                tg.cancel_scope.cancel()
        assert await b.call_async(_ok) == 1  # the permit came back: the probe closes it
        assert b.state is CLOSED
    finally:
        storage.close()


class Changes:
    """A listener keeping the state changes it hears of."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_state_change(self, change: stalwart.StateChange) -> None:
        self.seen.append((change.old, change.new))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["RedisStorage", "AsyncRedisStorage"])
@pytest.mark.parametrize(
    "how",
    [
        "cancel scope",
        pytest.param(
            "asyncio.timeout",
            marks=pytest.mark.skipif(
                sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11"
            ),
        ),
        "task.cancel()",
    ],
)
async def test_cancellation_while_recording_a_probe_never_loses_its_outcome(
    prefix: str, anyio_backend: str, kind: str, how: str
) -> None:
    """A probe whose caller is cancelled (an anyio scope; asyncio.timeout, wait_for, and
    any task.cancel()) just as its outcome is being recorded still records it, announced:
    the breaker closes, rather than rejecting every call while half-open for ever."""
    import anyio

    if anyio_backend == "trio" and (kind == "AsyncRedisStorage" or how != "cancel scope"):
        pytest.skip("asyncio only")
    clock = ManualClock(100.0)
    storage: Any = (RedisStorage if kind == "RedisStorage" else AsyncRedisStorage)(
        URL, prefix=prefix, clock=clock
    )
    changes = Changes()
    try:
        b = stalwart.CircuitBreaker(
            "svc",
            storage=storage,
            clock=clock,
            failure_threshold=1,
            recovery_timeout=60.0,  # the clock stands still: no probe slot expires here
            listeners=[changes],
            log=False,
        )
        with pytest.raises(Boom):
            await b.call_async(_raise_boom)
        clock.advance(60.0)

        if how == "cancel scope":
            with anyio.CancelScope() as scope:

                async def probe() -> int:
                    scope.cancel()  # delivered at the next checkpoint: the recording hop
                    return 1

                await b.call_async(probe)
        elif how == "asyncio.timeout":
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(None) as timeout:

                    async def probe() -> int:
                        timeout.reschedule(asyncio.get_running_loop().time())  # expires now
                        return 1

                    await b.call_async(probe)
                    await asyncio.sleep(0)  # where the timeout would land otherwise
        else:

            async def probe() -> int:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # as asyncio.timeout and wait_for do when time is up
                return 1

            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(b.call_async(probe), WAIT)
        assert changes.seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
        assert await b.call_async(_ok) == 1
        stats = await b.stats_async()
        assert (stats.state, stats.successes, stats.storage_degraded) == ("closed", 2, False)
    finally:
        if isinstance(storage, AsyncRedisStorage):
            await storage.aclose()
        else:
            storage.close()


async def _raise_boom() -> None:
    raise Boom


async def _ok() -> int:
    return 1


# --- Redis unavailable, or its answers unreadable -----------------------------------------


def test_unreachable_redis_degrades_to_local_state(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: calls flow, failures trip locally, one warning, stats say so."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    dead = counting_client(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.05)
    try:
        storage = RedisStorage(dead, prefix="unreachable", retry_interval=60.0)
        b = breaker("svc", storage, failure_threshold=3, window=None)
        for _ in range(50):
            assert b.call(lambda: 1) == 1
        tries = len(dead.commands)
        assert tries >= 1
        for _ in range(3):
            with pytest.raises(Boom):
                b.call(boom)
        with pytest.raises(CircuitOpenError):
            b.call(lambda: 1)  # the local breaker opened
        stats = b.stats()
        assert stats.storage_degraded is True
        assert (stats.state, stats.successes, stats.failures) == ("open", 50, 3)
        assert len(dead.commands) == tries  # no retry before retry_interval
        warnings = [r for r in caplog.records if r.name == "stalwart.redis"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert warnings[0].breaker == "svc"  # type: ignore[attr-defined]
        assert warnings[0].prefix == "unreachable"  # type: ignore[attr-defined]
        b.reset()
        assert b.state is CLOSED
    finally:
        dead.close()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda c, key: c.hset(key, "state", "bogus"),
            (
                "Redis answered breaker 'corrupt' with an error (ResponseError: stalwart:"
                " field state of {key} is not a breaker state: bogus)"
            ),
        ),
        (
            lambda c, key: c.hset(key, "generation", "seven"),
            (
                "Redis answered breaker 'corrupt' with an error (ResponseError: stalwart:"
                " field generation of {key} is not a number: seven)"
            ),
        ),
        (
            lambda c, key: c.hset(key, "successes", "many"),
            "Redis answered breaker 'corrupt' with an error (ResponseError:",
        ),
        (
            lambda c, key: (c.delete(key), c.set(key, "a string")),
            "Redis answered breaker 'corrupt' with an error (ResponseError: WRONGTYPE",
        ),
    ],
    ids=["state", "generation", "successes", "wrong-type"],
)
def test_corrupt_values_in_redis_never_raise_into_the_call(
    client: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    corrupt: Any,
    message: str,
) -> None:
    """A key the script did not write: calls go on locally, one warning says what it was."""
    monkeypatch.setattr("stalwart.contrib.redis._state.PLAIN_SUCCESS_REFRESH", 0.0)  # all scripted
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    storage = RedisStorage(client, prefix=prefix, retry_interval=0.0)  # ask on every call
    b = breaker("corrupt", storage, failure_threshold=2, window=None)
    assert b.call(lambda: 0) == 0
    key = f"{prefix}:{{corrupt}}:state"
    corrupt(client, key)
    for n in range(1, 4):
        assert b.call(lambda n=n: n) == n
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(boom)
    with pytest.raises(CircuitOpenError):
        b.call(lambda: 4)  # the local state opened
    stats = b.stats()
    assert (stats.storage_degraded, stats.successes, stats.failures) == (True, 3, 2)
    records = [r for r in caplog.records if r.name == "stalwart.redis"]
    assert [r.levelno for r in records] == [logging.WARNING]  # once, for all those calls
    assert records[0].getMessage().startswith(message.format(key=key))
    assert "Redis is unavailable" not in records[0].getMessage()

    client.delete(key)  # an operator clears the key: the breaker starts afresh, shared
    assert b.call(lambda: 5) == 5
    assert b.stats().storage_degraded is False
    assert [r.levelno for r in caplog.records if r.name == "stalwart.redis"] == [
        logging.WARNING,
        logging.INFO,
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        *(
            ({field: value}, f"field {field} of {{key}} is not {what}: {value})")
            for field, value, what in [
                ("generation", "-1", "a count"),
                ("generation", "2.5", "a count"),
                ("generation", "1e300", "a count"),
                ("generation", "0x10", "a count"),
                ("consecutive_failures", "-2", "a count"),
                ("failures", "inf", "a count"),
                ("rejected", "nan", "a count"),
                ("half_open_successes", "-1", "a count"),
                ("window_head", "0.5", "an integer"),
                ("last_failure_at", "nan", "a finite number"),
                ("last_failure_at", "-inf", "a finite number"),
                ("probes", "soon", "a list of times, oldest first"),
                ("probes", "20 10", "a list of times, oldest first"),
            ]
        ),
        (
            {"ok:0": "-3"},  # a plain success adds one before the script reads it
            "field ok:0 of {key} is not a count: -2)",
        ),
        (
            {"state": "open", "opened_at": "nan"},
            "field opened_at of {key} is not a finite number: nan)",
        ),
        (
            {"state": "open"},  # without opened_at
            "field opened_at of {key} is not a time the breaker opened at: nothing)",
        ),
        *(
            (
                {"state": "open", "opened_at": value},  # would reject every call until then
                f"field opened_at of {{key}} is not a time before now + recovery: {value})",
            )
            for value in ("1e+20", "1000000000000")
        ),
        (
            {"state": "half_open", "probes": "1e+20"},  # a probe slot held until then
            "field probes of {key} is not a list of times before now + 2 x recovery: 1e+20)",
        ),
        (
            {"closed_generation": "7"},  # admits in generation 7: the script refuses it
            "field closed_generation of {key} is not the generation, 0: 7)",
        ),
        (
            {"state": "disabled", "closed_generation": "0"},
            "field closed_generation of {key} is not absent, as the breaker is disabled: 0)",
        ),
        (
            {"opened_at": "12.5"},  # while closed
            "field opened_at of {key} is not absent, as the breaker is closed: 12.5)",
        ),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else ""
    ),
)
def test_every_field_the_script_reads_is_checked(
    client: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, str],
    message: str,
) -> None:
    """A field the script did not write (a negative or fractional count, NaN, an open
    breaker without its opening time, ...) is refused: the breaker goes local with one
    warning naming it, and calls flow, until the key is fixed."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    storage = RedisStorage(client, prefix=prefix, retry_interval=0.0)  # ask on every call
    b = breaker("corrupt", storage, failure_threshold=2, window=None)
    assert b.call(lambda: 0) == 0
    key = f"{prefix}:{{corrupt}}:state"
    client.hset(key, mapping=fields)
    assert b.call(lambda: 1) == 1  # never "forced open" by a generation of -1
    with pytest.raises(Boom):
        b.call(boom)  # the script reads every field, and refuses this one
    stats = b.stats()
    assert (stats.storage_degraded, stats.state) == (True, "closed")
    records = [r for r in caplog.records if r.name == "stalwart.redis"]
    assert [r.levelno for r in records] == [logging.WARNING]
    expected = "Redis answered breaker 'corrupt' with an error (ResponseError: stalwart: "
    assert records[0].getMessage().startswith(expected + message.format(key=key))
    client.delete(key)  # an operator clears the key: the breaker starts afresh, shared
    assert b.call(lambda: 2) == 2
    assert b.stats().storage_degraded is False


def test_corrupt_window_values_are_refused(client: redis.Redis, prefix: str) -> None:
    """A bucket count or a count-window item the script did not write is refused too."""
    clock = ManualClock(0.0)
    storage = RedisStorage(client, prefix=prefix, clock=clock, retry_interval=0.0)
    config = BreakerConfig(failure_threshold=None, window=2.0, failure_rate=1.0, window_calls=2)
    state = storage.bind("db", config, clock)
    for _ in range(2):
        state.record(state.admit()[0], False, None, None)
    client.rpush(state.keys[2], "7")
    with pytest.raises(ResponseError, match="calls is not an outcome .0 to 3.: 7"):
        state._execute(state._record(0, False, None, None))
    client.delete(state.keys[2])
    time_only = BreakerConfig(failure_threshold=3, window=2.0)
    state = storage.bind("w", time_only, clock)
    state.record(state.admit()[0], True, None, "Boom")
    clock.advance(1.0)
    state.record(state.admit()[0], False, None, None)
    client.hset(state.keys[1], "0:failures", "-1")
    clock.advance(1.5)  # the first bucket leaves the window: its counts are read
    with pytest.raises(ResponseError, match="field 0:failures of .* is not a count: -1"):
        state._execute(state._record(0, True, None, "Boom"))


def test_corrupt_plain_success_field_is_refused_by_hincrby_and_the_script(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-number in an ``ok:<generation>`` field: calls go on locally until it is gone."""
    caplog.set_level(logging.WARNING, logger="stalwart.redis")
    storage = RedisStorage(client, prefix=prefix, retry_interval=0.0)  # ask on every call
    b = breaker("plain", storage, failure_threshold=2, window=None)
    assert b.call(lambda: 0) == 0  # through the script; plain successes from now on
    key = f"{prefix}:{{plain}}:state"
    client.hset(key, "ok:0", "lots")
    assert b.call(lambda: 1) == 1  # HINCRBY refused: counted locally
    stats = b.stats()  # the script refuses the field as well: still local
    assert (stats.storage_degraded, stats.successes) == (True, 1)
    assert "ResponseError: hash value is not an integer" in caplog.records[-1].getMessage()
    client.hdel(key, "ok:0")
    assert b.call(lambda: 2) == 2
    assert (b.stats().storage_degraded, b.stats().successes) == (False, 2)

    client.hset(f"{prefix}:{{fresh}}:state", "ok:0", "lots")  # before its first call
    fresh = breaker("fresh", storage)
    assert fresh.call(lambda: 3) == 3
    assert fresh.stats().storage_degraded is True
    expected = (
        "Redis answered breaker 'fresh' with an error (ResponseError: stalwart: field ok:0"
        f" of {prefix}:{{fresh}}:state is not a number: lots)"
    )
    assert caplog.records[-1].getMessage().startswith(expected)


def test_corrupt_window_key_keeps_the_breaker_local_until_fixed(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A window key of the wrong type: local until it is gone, one warning, no flapping."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    storage = RedisStorage(client, prefix=prefix, retry_interval=0.0)  # ask on every call
    b = breaker("corrupt", storage, failure_threshold=5, window=60.0)
    with pytest.raises(Boom):
        b.call(boom)  # the window now has a bucket
    buckets = f"{prefix}:{{corrupt}}:buckets"
    client.delete(buckets)
    client.set(buckets, "not a hash")
    with pytest.raises(Boom):
        b.call(boom)  # counted in the window: WRONGTYPE, then local
    for _ in range(3):
        assert b.call(lambda: 1) == 1  # each call tries Redis: the check refuses the key
        with pytest.raises(Boom):
            b.call(boom)
    stats = b.stats()
    assert (stats.storage_degraded, stats.failures) == (True, 4)  # local ones
    records = [r for r in caplog.records if r.name == "stalwart.redis"]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "with an error (ResponseError: WRONGTYPE" in records[0].getMessage()
    client.delete(buckets)
    assert b.call(lambda: 2) == 2
    stats = b.stats()
    assert (stats.storage_degraded, stats.state, stats.failures) == (False, "closed", 1)


def test_redis_that_refuses_writes_keeps_the_breaker_local(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads answered, writes refused (NOREPLICAS): local until writes work, no flapping."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    admin = redis.Redis.from_url(private_redis.url)
    storage = RedisStorage(private_redis.url, retry_interval=0.0)  # ask on every call
    try:
        b = breaker("svc", storage, failure_threshold=2, window=None)
        assert b.call(lambda: 0) == 0
        admin.config_set("min-replicas-to-write", 1)  # there are none: writes fail
        for n in range(1, 6):
            assert b.call(lambda n=n: n) == n  # admitted by a read, then recorded locally
        assert b.stats().storage_degraded is True
        records = [r for r in caplog.records if r.name == "stalwart.redis"]
        assert [r.levelno for r in records] == [logging.WARNING]  # not one per call
        assert "with an error (ResponseError: NOREPLICAS" in records[0].getMessage()
        admin.config_set("min-replicas-to-write", 0)
        assert b.call(lambda: 6) == 6
        stats = b.stats()
        assert (stats.storage_degraded, stats.successes) == (False, 2)  # 0 and 6 shared
    finally:
        storage.close()
        admin.close()


class Garbling(redis.Redis):
    """A client whose replies to the script are not the script's (a proxy gone wrong)."""

    garble = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = super().execute_command(*args, **options)
        return _garbled(args[0], reply) if self.garble else reply


class AsyncGarbling(redis.asyncio.Redis):
    """`Garbling` for asyncio."""

    garble = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = await super().execute_command(*args, **options)
        return _garbled(args[0], reply) if self.garble else reply


def _garbled(command: str, reply: Any) -> Any:
    if command == "HGET":
        return b"x"  # not a generation: the script is asked
    return b"garbage" if command == "EVALSHA" else reply


def test_unreadable_replies_never_raise_into_the_call(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply that is not the script's: the call goes on locally, one warning says so."""
    caplog.set_level(logging.WARNING, logger="stalwart.redis")
    client = Garbling.from_url(URL)
    try:
        b = breaker("svc", RedisStorage(client, prefix=prefix))
        assert b.call(lambda: 1) == 1
        client.garble = True
        assert b.call(lambda: 2) == 2
        with pytest.raises(Boom):
            b.call(boom)
        assert b.stats().storage_degraded is True
    finally:
        client.close()
    (warning,) = [r for r in caplog.records if r.name == "stalwart.redis"]
    assert warning.getMessage().startswith(
        "Redis sent breaker 'svc' a reply that cannot be read (ValueError: a reply in 1"
        " fields where the script sends 9)"
    )


@pytest.mark.asyncio
async def test_unreadable_replies_never_raise_into_async_calls(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The async storage treats a reply that is not the script's alike."""
    caplog.set_level(logging.WARNING, logger="stalwart.redis")
    client = AsyncGarbling.from_url(URL)
    try:
        b = breaker("svc", AsyncRedisStorage(client, prefix=prefix))
        assert await b.call_async(_ok) == 1
        client.garble = True
        assert await b.call_async(_ok) == 1
        assert (await b.stats_async()).storage_degraded is True
    finally:
        await client.aclose()
    (warning,) = [r for r in caplog.records if r.name == "stalwart.redis"]
    assert "a reply that cannot be read (ValueError:" in warning.getMessage()


def test_url_storage_has_short_timeouts() -> None:
    """A storage made from a URL fails over within its socket timeout."""
    storage = RedisStorage(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.05)
    try:
        kwargs = storage.client.get_connection_kwargs()
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.05
        state = storage.bind("db", BreakerConfig(), time.monotonic)
        start = time.monotonic()
        assert state.admit()[0] == LOCAL_GENERATIONS
        assert time.monotonic() - start < 1.0
        assert state.degraded
        state.release(LOCAL_GENERATIONS)
        rates = storage.bind("rates", BreakerConfig(failure_rate=0.5), time.monotonic)
        assert rates.admit()[0] == LOCAL_GENERATIONS
        assert rates.record_success(LOCAL_GENERATIONS) is None
        assert rates.counts().successes == 1
    finally:
        storage.close()


@pytest.mark.asyncio
async def test_unreachable_redis_degrades_async(caplog: pytest.LogCaptureFixture) -> None:
    """The async storage degrades the same way: no exception, local state, one warning."""
    caplog.set_level(logging.WARNING, logger="stalwart.redis")
    storage = AsyncRedisStorage(
        f"redis://127.0.0.1:{free_port()}/0", prefix="unreachable", socket_timeout=0.05
    )
    try:
        b = breaker("svc", storage, failure_threshold=2, window=None)

        async def work(fail: bool) -> int:
            if fail:
                raise Boom
            return 1

        for _ in range(10):
            assert await b.call_async(work, False) == 1
        for _ in range(2):
            with pytest.raises(Boom):
                await b.call_async(work, True)
        with pytest.raises(CircuitOpenError):
            await b.call_async(work, False)
        assert b.stats().storage_degraded is True
        assert (await b.stats_async()).storage_degraded is True
        await b.reset_async()
        state = b.fast_state
        assert isinstance(state, AsyncRedisState)
        token, _, _ = await state.admit_async()
        await state.release_async(token)
        assert await state.record_success_async(token) is None
        assert len([r for r in caplog.records if r.name == "stalwart.redis"]) == 1
    finally:
        await storage.aclose()


def test_resynchronises_when_redis_returns(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops: local state, no exception; it returns: shared state again, logged."""
    caplog.set_level(logging.INFO, logger="stalwart.redis")
    storage = RedisStorage(private_redis.url, socket_timeout=0.2, retry_interval=0.0)
    other = RedisStorage(private_redis.url)
    try:
        b = breaker("svc", storage, failure_threshold=2, window=None)
        assert b.call(lambda: 1) == 1
        assert b.stats().storage_degraded is False

        private_redis.stop()
        assert b.call(lambda: 2) == 2  # local now
        assert b.stats().storage_degraded is True
        state = b.fast_state
        local_token = b.admit()
        assert local_token >= LOCAL_GENERATIONS

        private_redis.start()  # empty: the shared state starts fresh
        opener = breaker("svc", other, failure_threshold=2, window=None)
        for _ in range(2):
            with pytest.raises(Boom):
                opener.call(boom)
        with pytest.raises(CircuitOpenError):
            b.call(lambda: 3)  # adopted the shared, open state
        assert b.stats().storage_degraded is False
        assert isinstance(state, RedisState)
        assert not state.degraded
        b.record_failure(local_token)  # a local token after the resync: counted only
        stats = b.stats()
        assert (stats.state, stats.failures, stats.rejected) == ("open", 3, 1)
        messages = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
        assert "answers again" in messages[1][1]
    finally:
        storage.close()
        other.close()


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RedisStorage, AsyncRedisStorage])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": ""}, "prefix must be a non-empty string"),
        ({"prefix": "a{b"}, "prefix must be .* without { or }, got 'a{b'"),
        ({"prefix": "a}"}, "prefix must"),
        ({"prefix": 3}, "prefix must .* got 3"),
        ({"max_staleness": 0}, r"max_staleness must be .* > 0 .*, got 0"),
        ({"max_staleness": -1.0}, "max_staleness must be .* got -1.0"),
        ({"max_staleness": math.nan}, "max_staleness must be .* got nan"),
        ({"socket_timeout": 0}, r"socket_timeout must be .* > 0 .*, got 0"),
        ({"socket_timeout": math.inf}, "socket_timeout must be .* got inf"),
        ({"retry_interval": -0.5}, "retry_interval must be .* got -0.5"),
    ],
)
def test_invalid_arguments_raise_value_error(
    cls: type[Any], kwargs: dict[str, Any], message: str
) -> None:
    """Invalid options raise ValueError naming the parameter and the value."""
    with pytest.raises(ValueError, match=message):
        cls(URL, **kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (RedisStorage, {"client": 5}, "client must be a redis.Redis client or a URL, got 5"),
        (RedisStorage, {"client": redis.asyncio.Redis()}, "use AsyncRedisStorage"),
        (AsyncRedisStorage, {"client": redis.Redis()}, "use RedisStorage"),
        (RedisStorage, {"clock": 5}, "clock must be a callable"),
        (AsyncRedisStorage, {"socket_timeout": "1"}, "socket_timeout must be a finite number"),
    ],
)
def test_wrong_types_raise_type_error(
    cls: type[Any], kwargs: dict[str, Any], message: str
) -> None:
    """A client or clock of the wrong kind raises TypeError."""
    with pytest.raises(TypeError, match=message):
        cls(**kwargs)


def test_valid_arguments_and_defaults(client: redis.Redis) -> None:
    """Durations take timedeltas; a given client is used as is and never closed by us."""
    storage = RedisStorage(
        client,
        prefix="app",
        max_staleness=timedelta(milliseconds=500),
        retry_interval=0,
        clock=time.time,
    )
    assert repr(storage) == "<RedisStorage prefix='app'>"
    assert storage.client is client
    storage.close()
    assert client.ping()
    default = RedisStorage()
    assert default.prefix == "stalwart"
    kwargs = default.client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["socket_timeout"]) == ("127.0.0.1", 6379, 0.25)
    state = default.bind("jobs", BreakerConfig(), time.monotonic)
    assert repr(state) == "<RedisState 'jobs' prefix='stalwart'>"
    assert state.keys == (
        "stalwart:{jobs}:state",
        "stalwart:{jobs}:buckets",
        "stalwart:{jobs}:calls",
    )
    default.close()
    a = AsyncRedisStorage(prefix="x")
    assert repr(a) == "<AsyncRedisStorage prefix='x'>"
    asyncio.run(a.aclose())


def test_import_stalwart_does_not_import_redis() -> None:
    """The core never imports redis; only stalwart.contrib.redis does."""
    code = "import sys, stalwart, stalwart.contrib; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.asyncio
async def test_async_registry_health_reads_the_shared_state(prefix: str) -> None:
    """With AsyncRedisStorage, health_async shows an outage another process detected."""
    from stalwart.breaker import BreakerRegistry

    ours, theirs = AsyncRedisStorage(URL, prefix=prefix), AsyncRedisStorage(URL, prefix=prefix)
    try:
        watching = BreakerRegistry(storage=ours, log=False)
        watching.get("db")
        tripping = BreakerRegistry(storage=theirs, log=False)
        await tripping.get("db").force_open_async()
        health = await watching.health_async()
        assert (health.status, health.open) == ("critical", ("db",))
    finally:
        await ours.aclose()
        await theirs.aclose()


def test_reply_sent_before_an_outage_does_not_end_it(prefix: str) -> None:
    """A reply still in flight when Redis failed is no news of recovery; a later one is."""
    storage = RedisStorage(URL, prefix=prefix)
    try:
        state = storage.bind("svc", BreakerConfig(), time.monotonic)
        sent_before = state._outages
        reply = state._read(state._execute(state._command(b"counts")), counts=True)
        state._failed(ConnectionError("gone"))
        state._answered(reply, sent_before)
        assert state.degraded
        state._answered(reply, state._outages)
        assert not state.degraded
    finally:
        storage.close()
