"""stalwart's own retry loop (`OwnCall`) against tenacity's engine (`_Call`), and budgets.

The differential tests run the same scripted call through both call states, on a
manual clock with seeded jitter, and compare everything a user can see: what the
call returned or raised (with its notes), every hook's record, every sleep, and the
retry budget's calls.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

import stalwart
from stalwart import _clock
from stalwart._run import Done, aiterate, iterate, wrap
from stalwart.events import RetryDetails, subscribe
from stalwart.retry import OwnCall, RetryPolicy, _Call
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable


class Hinted(stalwart.TransientError):
    """A transient failure carrying a ``Retry-After`` hint."""


class Reply:
    """A result carrying an HTTP status and a ``Retry-After`` header."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        self.status_code = status
        self.headers = {} if retry_after is None else {"Retry-After": retry_after}

    def __repr__(self) -> str:
        return f"Reply({self.status_code}, {self.headers})"


class Recorder:
    """Records every hook's record, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, RetryDetails]] = []

    def on_retry(self, details: RetryDetails) -> None:
        self.seen.append(("retry", details))

    def on_give_up(self, details: RetryDetails) -> None:
        self.seen.append(("give_up", details))


@dataclass
class FakeBudget:
    """A retry budget that allows retries as `allow` says, in turn (then always)."""

    allow: list[bool] = field(default_factory=list)
    name: str = "fake"
    calls: list[str] = field(default_factory=list)

    def deposit(self) -> None:
        self.calls.append("deposit")

    def withdraw(self) -> bool:
        allowed = self.allow.pop(0) if self.allow else True
        self.calls.append(f"withdraw:{allowed}")
        return allowed


OUTCOMES = st.one_of(
    st.just(("transient",)),
    st.just(("permanent",)),
    st.just(("try_again",)),
    st.tuples(st.just("hint"), st.floats(0, 20)),
    st.tuples(st.just("result"), st.sampled_from(["ok", "retry"])),
    st.tuples(st.just("reply"), st.sampled_from([200, 503]), st.sampled_from([None, "2", "x"])),
)

BACKOFFS = st.one_of(
    st.builds(stalwart.constant, st.floats(0, 3), st.sampled_from(["none", "full", "equal"])),
    st.builds(
        stalwart.exponential,
        st.floats(0.01, 2),
        st.floats(1, 4),
        st.just(30.0),
        st.sampled_from(["none", "full", "equal"]),
    ),
    st.builds(
        stalwart.linear,
        st.floats(0, 2),
        st.floats(0, 2),
        st.just(30.0),
        st.sampled_from(["none", "full"]),
    ),
    st.builds(stalwart.decorrelated, st.floats(0.01, 2), st.just(30.0)),
)


@dataclass
class Scenario:
    outcomes: list[tuple[Any, ...]]
    durations: list[float]
    attempts: int
    deadline: float | None
    backoff: Any
    max_retry_after: float | None
    on: str
    results: bool
    allow: list[bool] | None
    seed: int
    instant: bool
    subscriber: bool


SCENARIOS = st.builds(
    Scenario,
    outcomes=st.lists(OUTCOMES, max_size=6),
    durations=st.lists(st.floats(0, 3), max_size=6),
    attempts=st.integers(1, 5),
    deadline=st.none() | st.floats(0.5, 20),
    backoff=BACKOFFS,
    max_retry_after=st.none() | st.floats(0, 5),
    on=st.sampled_from(["classifier", "types", "predicate"]),
    results=st.booleans(),
    allow=st.none() | st.lists(st.booleans(), max_size=5),
    seed=st.integers(0, 2**16),
    instant=st.booleans(),
    subscriber=st.booleans(),
)


def make_policy(s: Scenario, recorder: Recorder) -> tuple[RetryPolicy, FakeBudget | None]:
    budget = None if s.allow is None else FakeBudget(list(s.allow))
    on: Any = {
        "classifier": None,
        "types": (ConnectionError, stalwart.TransientError, tenacity.TryAgain),
        "predicate": lambda exc: not isinstance(exc, ValueError),
    }[s.on]
    policy = stalwart.retry(
        on=on,
        attempts=s.attempts,
        deadline=s.deadline,
        backoff=s.backoff,
        max_retry_after=s.max_retry_after,
        retry_if_result=(
            (lambda r: r == "retry" or getattr(r, "status_code", 200) == 503)
            if s.results
            else None
        ),
        listeners=[recorder],
        log=False,
        budget=budget,  # type: ignore[arg-type]
    )
    return policy, budget


def outcome_of(s: Scenario, attempt: int) -> Any:
    """Raise or return what attempt number `attempt` (from 1) of the script does."""
    spec = s.outcomes[attempt - 1] if attempt <= len(s.outcomes) else ("result", "ok")
    kind = spec[0]
    if kind == "transient":
        raise ConnectionError(attempt)
    if kind == "permanent":
        raise ValueError(attempt)
    if kind == "try_again":
        raise tenacity.TryAgain(attempt)
    if kind == "hint":
        raise Hinted(f"attempt {attempt}", retry_after=spec[1])
    if kind == "reply":
        return Reply(spec[1], spec[2])
    return spec[1]


def transcript(
    s: Scenario,
    outcome: tuple[Any, ...],
    clock: ManualClock,
    rec: Recorder,
    sub: Recorder,
    budget: FakeBudget | None,
) -> dict[str, Any]:
    def record(hook: str, d: RetryDetails) -> tuple[Any, ...]:
        exc = None if d.exception is None else (type(d.exception).__name__, d.exception.args)
        return (hook, d.name, d.attempt, d.delay, d.elapsed, exc, repr(d.result), d.reason)

    return {
        "outcome": outcome,
        "events": [record(h, d) for h, d in rec.seen],
        "subscribed": [record(h, d) for h, d in sub.seen],
        "sleeps": clock.sleeps,
        "now": clock(),
        "budget": None if budget is None else budget.calls,
    }


def begin_with(kind: str, policy: RetryPolicy) -> Callable[..., Any]:
    call_type: Any = OwnCall if kind == "own" else _Call

    def begin(name: str, start: float, fn: Any, args: Any, kwargs: Any) -> Any:
        return call_type(policy, name, start, fn, args, kwargs)

    return begin


def settle(value: Any) -> tuple[Any, ...]:
    return ("returned", repr(value))


def raised(exc: BaseException) -> tuple[Any, ...]:
    return ("raised", type(exc).__name__, exc.args, getattr(exc, "__notes__", None))


def run_sync(kind: str, s: Scenario, *, block: bool) -> dict[str, Any]:
    """Run the scenario through call state `kind` ("own" or "tenacity"), sync."""
    random.seed(s.seed)
    rec, sub = Recorder(), Recorder()
    policy, budget = make_policy(s, rec)
    clock = ManualClock(100.0)
    attempt = 0

    def work() -> Any:
        nonlocal attempt
        attempt += 1
        clock.advance(s.durations[attempt - 1] if attempt <= len(s.durations) else 0.5)
        return outcome_of(s, attempt)

    work.__qualname__ = "work"
    unsubscribe = subscribe(sub) if s.subscriber else None
    deposit = None if budget is None else budget.deposit
    try:
        with clock, _clock.use(instant=s.instant):
            try:
                if block:
                    value = None
                    for each in iterate(begin_with(kind, policy), "block", deposit):
                        with each:
                            value = work()
                else:
                    value = wrap(work, begin_with(kind, policy), policy.retry_if_result, deposit)()
                outcome = settle(value)
            except Exception as exc:
                outcome = raised(exc)
    finally:
        if unsubscribe is not None:
            unsubscribe()
    return transcript(s, outcome, clock, rec, sub, budget)


def run_async(kind: str, s: Scenario, *, block: bool) -> dict[str, Any]:
    """`run_sync`, awaiting each attempt and sleeping through the async clock."""
    random.seed(s.seed)
    rec, sub = Recorder(), Recorder()
    policy, budget = make_policy(s, rec)
    clock = ManualClock(100.0)
    attempt = 0

    async def work() -> Any:
        nonlocal attempt
        attempt += 1
        clock.advance(s.durations[attempt - 1] if attempt <= len(s.durations) else 0.5)
        return outcome_of(s, attempt)

    work.__qualname__ = "work"
    deposit = None if budget is None else budget.deposit

    async def main() -> tuple[Any, ...]:
        try:
            if block:
                value = None
                async for each in aiterate(begin_with(kind, policy), "block", deposit):
                    with each:
                        value = await work()
            else:
                wrapped: Any = wrap(
                    work, begin_with(kind, policy), policy.retry_if_result, deposit
                )
                value = await wrapped()
            return settle(value)
        except Exception as exc:
            return raised(exc)

    unsubscribe = subscribe(sub) if s.subscriber else None
    try:
        with clock, _clock.use(instant=s.instant):
            outcome = anyio.run(main)
    finally:
        if unsubscribe is not None:
            unsubscribe()
    return transcript(s, outcome, clock, rec, sub, budget)


@settings(max_examples=300, deadline=None)
@given(SCENARIOS, st.booleans())
def test_own_loop_decides_as_tenacity_does_sync(s: Scenario, block: bool) -> None:
    """Sync: the own loop and tenacity's engine give the same outcome, hooks and sleeps."""
    assert run_sync("own", s, block=block) == run_sync("tenacity", s, block=block)


@settings(max_examples=100, deadline=None)
@given(SCENARIOS, st.booleans())
def test_own_loop_decides_as_tenacity_does_async(s: Scenario, block: bool) -> None:
    """Async: the own loop and tenacity's engine give the same outcome, hooks and sleeps."""
    assert run_async("own", s, block=block) == run_async("tenacity", s, block=block)


def test_differential_transcripts_see_retries_and_give_ups() -> None:
    """The transcripts compared above do record retries, sleeps, notes and give-ups."""
    s = Scenario(
        outcomes=[("transient",), ("hint", 2.0), ("transient",)],
        durations=[0.1, 0.1, 0.1],
        attempts=3,
        deadline=None,
        backoff=stalwart.constant(1),
        max_retry_after=None,
        on="classifier",
        results=False,
        allow=None,
        seed=0,
        instant=False,
        subscriber=True,
    )
    own = run_sync("own", s, block=False)
    assert own["sleeps"] == [1.0, 2.0]
    assert [e[0] for e in own["events"]] == ["retry", "retry", "give_up"]
    assert own["events"][-1][-1] == "3 attempts"
    assert own["subscribed"] == own["events"]
    assert own["outcome"][0] == "raised"
    note = "stalwart: gave up on test_retry_loop.work after 3 attempts over 3.300s"
    assert own["outcome"][3] == [f"{note} (stopped by 3 attempts)"]
    assert own == run_sync("tenacity", s, block=False)


# -- which call state a policy uses ------------------------------------------------------


@pytest.mark.parametrize(
    "backoff",
    [
        stalwart.exponential(),
        stalwart.linear(),
        stalwart.constant(0),
        stalwart.decorrelated(),
    ],
)
def test_stalwart_strategies_use_the_own_loop(backoff: Any) -> None:
    """Every stalwart wait strategy is decided without tenacity."""
    policy = stalwart.retry(backoff=backoff)
    assert isinstance(policy._begin("f", 0.0, None, (), {}), OwnCall)


@pytest.mark.parametrize(
    "backoff",
    [
        tenacity.wait_fixed(0),
        stalwart.constant(0) + stalwart.constant(1),
        lambda state: 0.0,
    ],
)
def test_other_strategies_use_tenacity(backoff: Any) -> None:
    """A tenacity strategy, a sum of strategies or a plain callable gets tenacity's state."""
    policy = stalwart.retry(backoff=backoff)
    assert isinstance(policy._begin("f", 0.0, None, (), {}), _Call)


def test_a_subclass_with_its_own_call_uses_tenacity() -> None:
    """A stalwart strategy whose tenacity form reads more than the attempt gets tenacity."""

    class Elapsed(stalwart.backoff.Exponential):
        def __call__(self, retry_state: Any) -> float:
            return float(retry_state.seconds_since_start or 0.0)

    policy = stalwart.retry(backoff=Elapsed())
    assert isinstance(policy._begin("f", 0.0, None, (), {}), _Call)


def test_decorrelated_keeps_its_sequence_in_the_call() -> None:
    """Decorrelated jitter's waits follow one sequence per call, as `delays()` gives it."""
    backoff = stalwart.decorrelated(base=0.5, max=60)
    policy = stalwart.retry(attempts=6, backoff=backoff, log=False)
    random.seed(7)
    expected = [next(it) for it in [backoff.delays()] for _ in range(5)]
    random.seed(7)
    call = OwnCall(policy, "f", 0.0, None, (), {})
    waits = []
    with ManualClock(0.0):
        for _ in range(5):
            action = call.failed(ConnectionError()).next()
            assert isinstance(action, float)
            waits.append(action)
    assert waits == expected


# -- the retry budget --------------------------------------------------------------------


def flaky(failures: int, log: list[str]) -> Callable[[], str]:
    calls = 0

    def fn() -> str:
        nonlocal calls
        calls += 1
        log.append(f"attempt {calls}")
        if calls <= failures:
            raise ConnectionError(calls)
        return "ok"

    return fn


@pytest.mark.parametrize("backoff", [stalwart.constant(0), tenacity.wait_none()])
def test_budget_deposits_once_per_call_and_withdraws_per_retry(backoff: Any) -> None:
    """A call deposits before its first attempt and withdraws before each retry."""
    budget = FakeBudget()
    log = budget.calls
    fn = stalwart.retry(attempts=5, backoff=backoff, budget=budget, log=False)(flaky(2, log))
    assert fn() == "ok"
    assert log == [
        "deposit",
        "attempt 1",
        "withdraw:True",
        "attempt 2",
        "withdraw:True",
        "attempt 3",
    ]


@pytest.mark.parametrize("backoff", [stalwart.constant(0), tenacity.wait_none()])
def test_refused_retry_raises_the_original_error_with_a_note(backoff: Any) -> None:
    """A refused retry ends the call with its error, noted, and tells the give-up hooks."""
    budget = FakeBudget([True, False], name="api")
    rec = Recorder()
    attempts: list[str] = []
    fn = stalwart.retry(attempts=5, backoff=backoff, budget=budget, listeners=[rec], log=False)(
        flaky(4, attempts)
    )
    with pytest.raises(ConnectionError) as caught:
        fn()
    assert caught.value.args == (2,)  # the second attempt's error, as it was raised
    assert caught.value.__notes__ == ["stalwart: retry refused by retry budget 'api'"]
    assert attempts == ["attempt 1", "attempt 2"]
    assert [hook for hook, _ in rec.seen] == ["retry", "give_up"]
    give_up = rec.seen[-1][1]
    assert give_up.attempt == 2
    assert give_up.reason == "retry budget 'api'"
    assert "budget" in give_up.reason


@pytest.mark.parametrize("backoff", [stalwart.constant(0), tenacity.wait_none()])
def test_budget_is_not_asked_when_no_retry_would_follow(backoff: Any) -> None:
    """A permanent error, or the last attempt, never withdraws from the budget."""
    budget = FakeBudget()

    @stalwart.retry(attempts=2, backoff=backoff, budget=budget, log=False)
    def permanent() -> None:
        raise ValueError("permanent")

    with pytest.raises(ValueError, match="permanent"):
        permanent()
    fn = stalwart.retry(attempts=2, backoff=backoff, budget=budget, log=False)(flaky(5, []))
    with pytest.raises(ConnectionError):
        fn()
    assert budget.calls == ["deposit", "deposit", "withdraw:True"]


@pytest.mark.anyio
@pytest.mark.parametrize("backoff", [stalwart.constant(0), tenacity.wait_none()])
async def test_budget_in_async_code_and_blocks(backoff: Any) -> None:
    """Async functions and retry blocks deposit and withdraw as sync functions do."""
    budget = FakeBudget([False])

    @stalwart.retry(backoff=backoff, budget=budget, log=False)
    async def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError) as caught:
        await down()
    assert caught.value.__notes__ == ["stalwart: retry refused by retry budget 'fake'"]
    async for attempt in stalwart.retrying(backoff=backoff, budget=budget, log=False):  # type: ignore[arg-type]
        with attempt:
            if attempt.number == 1:
                raise ConnectionError
    assert budget.calls == ["deposit", "withdraw:False", "deposit", "withdraw:True"]


def test_refused_retry_of_a_result_returns_it() -> None:
    """A result the policy would retry is returned as it is when the budget refuses."""
    budget = FakeBudget([False])
    fn = stalwart.retry(
        retry_if_result=lambda r: r == "again",
        backoff=stalwart.constant(0),
        budget=budget,  # type: ignore[arg-type]
        log=False,
    )(lambda: "again")
    assert fn() == "again"
    assert budget.calls == ["deposit", "withdraw:False"]


def test_without_a_budget_the_wrapper_is_the_plain_one() -> None:
    """No budget: the decorated function is the retry wrapper itself, nothing around it."""

    def fn() -> None: ...

    assert stalwart.retry()(fn).__wrapped__ is fn  # type: ignore[attr-defined]
    wrapped: Any = stalwart.retry(budget=FakeBudget())(fn)  # type: ignore[arg-type]
    assert wrapped.__wrapped__ is not fn
    assert wrapped.__wrapped__.__wrapped__ is fn


@pytest.mark.parametrize("bad", [object(), "budget", 3])
def test_budget_must_deposit_and_withdraw(bad: object) -> None:
    """A budget without deposit() and withdraw() is refused at construction."""
    with pytest.raises(TypeError, match="budget must be a RetryBudget"):
        stalwart.retry(budget=bad)  # type: ignore[arg-type]


def test_replace_keeps_the_budget() -> None:
    """`replace` carries the budget over, and can change it."""
    budget, other = FakeBudget(), FakeBudget(name="other")
    policy = stalwart.retry(budget=budget)  # type: ignore[arg-type]
    assert policy.replace(attempts=5).budget is budget
    assert policy.replace(budget=other).budget is other


# -- the records ---------------------------------------------------------------------------


def test_give_up_record_says_what_stopped_the_retries(instant_retries: None) -> None:
    """A give-up record carries the reason; a retry record has none and reads as before."""
    del instant_retries
    rec = Recorder()
    fn = stalwart.retry(attempts=2, listeners=[rec], log=False)(flaky(5, []))
    with pytest.raises(ConnectionError):
        fn()
    (_, retried), (_, gave_up) = rec.seen
    assert retried.reason is None
    assert "reason" not in repr(retried)
    assert gave_up.reason == "2 attempts"
    assert "reason='2 attempts'" in repr(gave_up)


def test_no_record_is_built_while_the_logger_drops_warnings(
    monkeypatch: pytest.MonkeyPatch, instant_retries: None
) -> None:
    """Logging on but its logger above WARNING: no record is built, nothing is logged."""
    del instant_retries

    built: list[object] = []
    monkeypatch.setattr(sys.modules["stalwart.retry"], "RetryDetails", lambda *a: built.append(a))
    logger = logging.getLogger("stalwart.retry")
    monkeypatch.setattr(logger, "level", logging.ERROR)
    logger.manager._clear_cache()
    try:
        fn = stalwart.retry(attempts=2)(flaky(5, []))
        with pytest.raises(ConnectionError):
            fn()
    finally:
        logger.manager._clear_cache()
    assert built == []


def test_own_loop_sleeps_raises_or_returns() -> None:
    """A failure is followed by a sleep or raised; a result not retried ends the call."""
    policy = stalwart.retry(attempts=2, backoff=stalwart.constant(0), log=False)
    call = OwnCall(policy, "f", 0.0, None, (), {})
    assert call.failed(ConnectionError()).next() == 0.0
    with pytest.raises(ConnectionError):
        call.failed(ConnectionError()).next()
    done = OwnCall(policy, "f", 0.0, None, (), {}).returned(1).next()
    assert isinstance(done, Done)
    assert done.value == 1


def test_a_policy_keeps_its_retry_budget(instant_retries: None) -> None:
    """A Policy's retry layer deposits and withdraws from the budget its retry was given."""
    del instant_retries
    budget = FakeBudget([False])
    policy = stalwart.Policy(retry=stalwart.retry(budget=budget, log=False))  # type: ignore[arg-type]
    fn = policy(flaky(5, budget.calls))
    with pytest.raises(ConnectionError) as caught:
        fn()
    assert budget.calls == ["deposit", "attempt 1", "withdraw:False"]
    assert caught.value.__notes__ == ["stalwart: retry refused by retry budget 'fake'"]
