"""ResilientTask on real workers, on RabbitMQ and on Redis as brokers."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

import stalwart
from celery_support import broker_params, close_app, make_app, running_worker
from stalwart.contrib.celery import DeadLettered, DeadLetterEvent, ResilientTask
from stalwart.contrib.celery.dead_letter import configure_dead_letters, dead_letters
from stalwart.testing import ManualClock, instant_retries

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 30.0


class Recorder:
    """A listener keeping every event it hears."""

    def __init__(self) -> None:
        self.retries: list[stalwart.RetryDetails] = []
        self.give_ups: list[stalwart.RetryDetails] = []
        self.dead_letters: list[DeadLetterEvent] = []
        self.lock = threading.Lock()

    def on_retry(self, details: stalwart.RetryDetails) -> None:
        with self.lock:
            self.retries.append(details)

    def on_give_up(self, details: stalwart.RetryDetails) -> None:
        with self.lock:
            self.give_ups.append(details)

    def on_dead_letter(self, event: DeadLetterEvent) -> None:
        with self.lock:
            self.dead_letters.append(event)


def no_jitter(initial: float, attempts: int = 3) -> stalwart.RetryPolicy:
    return stalwart.retry(
        attempts=attempts, backoff=stalwart.exponential(initial=initial, max=5, jitter="none")
    )


@pytest.fixture
def app(broker: str) -> Iterator[Celery]:
    """An app on `broker`, closed after the test (queue purged, results deleted)."""
    app = make_app(broker)
    yield app
    close_app(app)


def _eta(request: Any) -> float | None:
    eta = request.eta
    return None if eta is None else datetime.fromisoformat(eta).timestamp()


@broker_params
def test_transient_failures_are_retried_with_the_policy_countdowns(app: Celery) -> None:
    """A transient failure is retried via Task.retry, each ETA the policy's backoff later."""
    recorder = Recorder()
    runs: list[dict[str, Any]] = []

    @app.task(
        base=ResilientTask,
        shared=False,
        bind=True,
        name=app.main + ".flaky",
        retry_with=no_jitter(0.3, attempts=3),
        listeners=[recorder],
    )
    def flaky(self: Any) -> str:
        runs.append({"started": time.time(), "eta": _eta(self.request)})
        if len(runs) < 3:
            runs[-1]["failed"] = time.time()
            raise ConnectionResetError("dropped")
        return "done"

    with running_worker(app):
        assert flaky.delay().get(timeout=TIMEOUT) == "done"
    assert [r.attempt for r in recorder.retries] == [1, 2]
    assert [r.delay for r in recorder.retries] == [0.3, 0.6]
    assert recorder.give_ups == []
    assert recorder.dead_letters == []
    for before, after, delay in zip(runs, runs[1:], [0.3, 0.6], strict=False):
        assert after["eta"] is not None
        assert after["eta"] - before["failed"] == pytest.approx(delay, abs=0.1)
        assert after["started"] >= after["eta"] - 0.01


@broker_params
def test_retries_end_at_the_policy_attempts_and_dead_letter(app: Celery) -> None:
    """No more runs than the policy's attempts; then give-up and max_retries_exceeded."""
    recorder = Recorder()
    runs: list[int] = []

    @app.task(
        base=ResilientTask,
        shared=False,
        bind=True,
        name=app.main + ".down",
        retry_with=no_jitter(0.05, attempts=3),
        listeners=[recorder],
    )
    def down(self: Any) -> None:
        runs.append(self.request.retries)
        raise stalwart.TransientError("service down", status_code=503)

    with running_worker(app):
        result = down.delay()
        with pytest.raises(DeadLettered) as caught:
            result.get(timeout=TIMEOUT)
    assert runs == [0, 1, 2]
    assert caught.value.reason == "max_retries_exceeded"
    assert len(recorder.retries) == 2
    assert [g.attempt for g in recorder.give_ups] == [3]
    [event] = recorder.dead_letters
    assert (event.reason, event.task, event.task_id, event.attempt) == (
        "max_retries_exceeded",
        down.name,
        result.id,
        3,
    )
    assert event.exception_type == "stalwart.TransientError"


@broker_params
def test_a_retry_budget_counts_first_runs_and_refuses_past_its_share(app: Celery) -> None:
    """A task's first run deposits; its reruns withdraw; a refused retry ends the task."""
    recorder = Recorder()
    runs: list[int] = []
    # One retry per first run, no floor, on a clock that never moves: one deposit
    # allows exactly one retry.
    budget = stalwart.RetryBudget("tasks", ratio=1.0, min_per_second=0, clock=ManualClock())
    policy = stalwart.retry(
        attempts=5, backoff=stalwart.constant(0.05, jitter="none"), budget=budget
    )

    @app.task(
        base=ResilientTask,
        shared=False,
        bind=True,
        name=app.main + ".budgeted",
        retry_with=policy,
        listeners=[recorder],
    )
    def budgeted(self: Any) -> None:
        runs.append(self.request.retries)
        raise stalwart.TransientError("service down", status_code=503)

    with running_worker(app):
        result = budgeted.delay()
        with pytest.raises(DeadLettered) as caught:
            result.get(timeout=TIMEOUT)
    assert runs == [0, 1]
    assert caught.value.reason == "max_retries_exceeded"
    [give_up] = recorder.give_ups
    assert (give_up.attempt, give_up.reason) == (2, "retry budget 'tasks'")
    stats = budget.stats()
    assert (stats.deposits, stats.retries_allowed, stats.retries_refused) == (1, 1, 1)


@broker_params
def test_permanent_failure_fails_once(app: Celery) -> None:
    """A permanent failure fails the task at its first run: no retry, no dead letter."""
    recorder = Recorder()
    runs: list[int] = []

    @app.task(base=ResilientTask, shared=False, name=app.main + ".denied", listeners=[recorder])
    def denied() -> None:
        runs.append(1)
        raise stalwart.PermanentError("forbidden", status_code=403)

    with running_worker(app):
        result = denied.delay()
        with pytest.raises(stalwart.PermanentError):
            result.get(timeout=TIMEOUT)
    assert runs == [1]
    assert result.state == "FAILURE"
    assert recorder.retries == recorder.give_ups == recorder.dead_letters == []


@broker_params
def test_poison_pills_are_dead_lettered_at_once(app: Celery) -> None:
    """A poison class, or a call with missing arguments, is dead-lettered on its first run."""
    recorder = Recorder()
    runs: list[int] = []

    @app.task(base=ResilientTask, shared=False, name=app.main + ".parse", listeners=[recorder])
    def parse(payload: dict[str, Any]) -> Any:
        runs.append(1)
        return payload["missing"]

    with running_worker(app):
        with pytest.raises(DeadLettered) as bad_key:
            parse.delay({}).get(timeout=TIMEOUT)
        # Sent by name, past the caller's own argument check.
        with pytest.raises(DeadLettered) as bad_call:
            app.send_task(parse.name, args=[]).get(timeout=TIMEOUT)
    assert runs == [1]
    assert (bad_key.value.reason, bad_key.value.exception_type) == (
        "poison_pill",
        "builtins.KeyError",
    )
    assert (bad_call.value.reason, bad_call.value.exception_type) == (
        "poison_pill",
        "builtins.TypeError",
    )
    assert [e.reason for e in recorder.dead_letters] == ["poison_pill", "poison_pill"]
    assert recorder.retries == recorder.give_ups == []
    letters = _wait_for_letters(app, 2)
    assert sorted(x.exception_type for x in letters) == ["builtins.KeyError", "builtins.TypeError"]
    assert {x.reason for x in letters} == {"poison_pill"}


@broker_params
def test_an_open_breaker_sets_the_countdown_floor(app: Celery) -> None:
    """CircuitOpenError is retried no sooner than the breaker's retry_after."""
    recorder = Recorder()
    breaker = stalwart.registry.get("celery-open", failure_threshold=1, recovery_timeout=2.0)
    runs: list[float] = []

    @app.task(
        base=ResilientTask,
        shared=False,
        name=app.main + ".guarded",
        breaker="celery-open",
        retry_with=no_jitter(0.01, attempts=3),
        listeners=[recorder],
    )
    def guarded() -> str:
        runs.append(time.monotonic())
        return "through"

    with running_worker(app):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)  # opened now, for 2 s
        opened = time.monotonic()
        assert guarded.delay().get(timeout=TIMEOUT) == "through"
    [retry] = recorder.retries
    assert isinstance(retry.exception, stalwart.CircuitOpenError)
    assert retry.exception.retry_after is not None
    assert retry.delay >= retry.exception.retry_after > 0
    assert len(runs) == 1  # the body ran once: when the breaker let it through
    assert runs[0] >= opened + 2.0 - 0.05


def _fail() -> None:
    raise ConnectionError("down")


@broker_params
def test_the_soft_time_limit_is_the_deadline_inside(app: Celery) -> None:
    """stalwart.remaining() inside the task shows its soft time limit, or the call's."""

    @app.task(base=ResilientTask, shared=False, name=app.main + ".budget", soft_time_limit=50)
    def budget() -> float | None:
        return stalwart.remaining()

    with running_worker(app):
        left = budget.delay().get(timeout=TIMEOUT)
        per_call = budget.apply_async(soft_time_limit=20, time_limit=25).get(timeout=TIMEOUT)
    assert 45 < left <= 50
    assert 15 < per_call <= 20


@broker_params
def test_soft_time_limit_exceeded_is_retried_as_a_timeout(app: Celery) -> None:
    """SoftTimeLimitExceeded is judged as a TimeoutExceeded: transient, so retried."""
    recorder = Recorder()
    runs: list[int] = []

    @app.task(
        base=ResilientTask,
        shared=False,
        name=app.main + ".slow",
        retry_with=no_jitter(0.05),
        listeners=[recorder],
    )
    def slow() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise SoftTimeLimitExceeded
        return "fast enough"

    with running_worker(app):
        assert slow.delay().get(timeout=TIMEOUT) == "fast enough"
    [retry] = recorder.retries
    assert isinstance(retry.exception, stalwart.TimeoutExceeded)
    assert isinstance(retry.exception.__cause__, SoftTimeLimitExceeded)


@broker_params
def test_the_correlation_id_travels_with_the_message(app: Celery) -> None:
    """The caller's correlation id is current in the task and its retries; else a new one."""
    seen: list[str | None] = []

    @app.task(
        base=ResilientTask, shared=False, name=app.main + ".trace", retry_with=no_jitter(0.05)
    )
    def trace() -> str | None:
        seen.append(stalwart.current_correlation_id())
        if len(seen) == 1:
            raise ConnectionResetError
        return seen[-1]

    with running_worker(app):
        with stalwart.correlation_id("req-42"):
            result = trace.delay()
        assert result.get(timeout=TIMEOUT) == "req-42"
        fresh = trace.delay().get(timeout=TIMEOUT)
    assert seen[:2] == ["req-42", "req-42"]
    assert isinstance(fresh, str)
    assert len(fresh) == 32
    assert fresh != "req-42"
    assert stalwart.current_correlation_id() is None


@broker_params
def test_an_undecodable_message_is_dead_lettered_and_the_worker_goes_on(app: Celery) -> None:
    """A raw invalid-JSON message lands in the DLQ, and the worker keeps running tasks."""
    configure_dead_letters(app)

    @app.task(base=ResilientTask, shared=False, name=app.main + ".ok")
    def ok() -> str:
        return "ok"

    with running_worker(app):
        with app.producer_or_acquire() as producer:
            producer.publish(
                b"{not json",
                exchange="",
                routing_key=app.conf.task_default_queue,
                content_type="application/json",
                content_encoding="utf-8",
                headers={"task": ok.name, "id": "raw-1"},
                declare=app.conf.task_queues,
            )
        assert ok.delay().get(timeout=TIMEOUT) == "ok"
        letters = _wait_for_letters(app, 1)
    [letter] = letters
    assert letter.reason == "poison_pill"
    assert letter.task_id == "raw-1"


def _wait_for_letters(app: Celery, count: int) -> list[Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        letters = dead_letters(app)
        if len(letters) >= count or time.monotonic() > deadline:
            return letters
        time.sleep(0.05)


# Eager mode and direct calls: no broker.


def _memory_app(**conf: Any) -> Celery:
    app = Celery(
        "stalwart-eager", broker="memory://", backend="cache+memory://", set_as_current=False
    )
    app.conf.update(task_always_eager=True, **conf)
    return app


def test_eager_mode_retries_in_process() -> None:
    """Eagerly, transient failures are retried by the policy in the calling process."""
    app = _memory_app()
    recorder = Recorder()
    runs: list[int] = []

    @app.task(base=ResilientTask, shared=False, name="eager.flaky", listeners=[recorder])
    def flaky() -> str | None:
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionResetError
        return stalwart.current_correlation_id()

    @app.task(base=ResilientTask, shared=False, name="eager.denied")
    def denied() -> None:
        raise stalwart.PermanentError("no")

    with instant_retries(), stalwart.correlation_id("eager-1"):
        assert flaky.delay().get(timeout=TIMEOUT) == "eager-1"
        with pytest.raises(stalwart.PermanentError):
            denied.delay().get(timeout=TIMEOUT)
    assert len(runs) == 3
    assert [r.attempt for r in recorder.retries] == [1, 2]


def test_a_direct_call_runs_the_body_alone() -> None:
    """Called as a function, the task runs its body with no retry or deadline."""
    app = _memory_app()

    @app.task(base=ResilientTask, shared=False, name="direct.add")
    def add(a: int, b: int) -> tuple[int, float | None]:
        return a + b, stalwart.remaining()

    assert add(1, 2) == (3, None)


# Bad configuration fails when the task class is made.


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"bogus": 1}, TypeError, "unknown option bogus=1"),
        ({"autoretry_for": (OSError,)}, TypeError, "autoretry_for"),
        ({"max_retries": 5}, TypeError, "max_retries=5"),
        ({"retry_with": stalwart.presets.NO_RETRY}, ValueError, "retry_with must allow a retry"),
        ({"retry_with": 3}, TypeError, "retry_with must be a stalwart RetryPolicy"),
        ({"soft_time_limit": -1}, ValueError, "soft_time_limit must be"),
        ({"time_limit": 0}, ValueError, "time_limit must be"),
        ({"soft_time_limit": 400}, ValueError, "soft_time_limit must be <= time_limit"),
        ({"dead_letter": 5}, TypeError, "dead_letter must be"),
        ({"dead_letter": ""}, ValueError, "dead_letter must be"),
        ({"breaker": 5}, TypeError, "breaker must be"),
        ({"classifier": "transient"}, TypeError, "classifier must be"),
        ({"listeners": [object()]}, TypeError, "listeners must hold"),
        ({"poison_pills": KeyError}, TypeError, "poison_pills must be"),
        ({"redeliveries": 3}, TypeError, "redeliveries must be"),
        ({"acks_late": "yes"}, TypeError, "acks_late must be a bool"),
    ],
)
def test_bad_options_fail_at_definition(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """A bad option raises when the task is defined on a finalized app, naming it."""
    app = _memory_app()
    app.finalize()
    with pytest.raises(error, match=words):

        @app.task(base=ResilientTask, shared=False, name="bad.task", **options)
        def task() -> None: ...

    assert "bad.task" not in app.tasks


def test_a_listener_of_dead_letters_only_is_accepted() -> None:
    """A listener with only ``on_dead_letter`` is a listener: it is not asked for retry hooks."""

    class Counting:
        def __init__(self) -> None:
            self.events: list[object] = []

        def on_dead_letter(self, event: object) -> None:
            self.events.append(event)

    app = _memory_app()
    app.finalize()
    listener = Counting()

    @app.task(base=ResilientTask, shared=False, name="dlq.only", listeners=[listener])
    def task() -> None: ...

    assert listener.on_dead_letter in app.tasks["dlq.only"]._stalwart_dead_letter_hooks


def test_bad_options_fail_when_a_lazy_app_finalizes() -> None:
    """On an app not finalized yet, the bad option raises when it finalizes."""
    app = _memory_app()

    @app.task(base=ResilientTask, shared=False, name="lazy.task", bogus=1)
    def task() -> None: ...

    with pytest.raises(TypeError, match="unknown option bogus=1"):
        app.finalize()


def test_a_subclass_is_checked_when_defined() -> None:
    """A subclass with a bad option fails at its class statement."""
    with pytest.raises(ValueError, match="soft_time_limit"):

        class Bad(ResilientTask[Any, Any]):
            soft_time_limit = -5


def test_the_defaults() -> None:
    """The documented defaults: 270 s soft, 300 s hard, late acks, DEFAULT policy."""
    assert ResilientTask.soft_time_limit == 270.0
    assert ResilientTask.time_limit == 300.0
    assert ResilientTask.acks_late is True
    assert ResilientTask.reject_on_worker_lost is True
    assert ResilientTask.retry_with is stalwart.presets.DEFAULT
    assert ResilientTask.max_retries == stalwart.presets.DEFAULT.attempts - 1
