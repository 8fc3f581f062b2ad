"""`stalwart.contrib.opentelemetry`: metrics read by the SDK's in-memory reader, span events."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.metrics import NoOpCounter, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext

import stalwart
from named_support import EXPECTED, driven
from stalwart.contrib import _metrics
from stalwart.contrib.opentelemetry import (
    ATTRIBUTES,
    SPAN_EVENTS,
    Instrumentation,
    attributes_of,
    instrument,
)
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from opentelemetry.util.types import Attributes

BREAKER = "stalwart.breaker.name"
STATE = "stalwart.breaker.state"
OUTCOME = "stalwart.breaker.outcome"
RETRY = "stalwart.retry.name"

Points = dict[str, dict[frozenset[tuple[str, Any]], Any]]


def points(reader: InMemoryMetricReader) -> Points:
    """Every stalwart data point collected now: name -> attributes -> value (or count, sum)."""
    found: Points = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "stalwart":
                continue
            for metric in scope.metrics:
                found[metric.name] = {
                    frozenset((p.attributes or {}).items()): (
                        (p.count, p.sum) if hasattr(p, "count") else p.value
                    )
                    for p in metric.data.data_points
                }
    return found


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    """Attributes as `points` keys them; ``breaker=`` and friends spelled short."""
    names = {"breaker": BREAKER, "state": STATE, "outcome": OUTCOME, "retry": RETRY}
    return frozenset((names.get(k, k), v) for k, v in attributes.items())


def states(found: Points, breaker: str) -> dict[str, float]:
    """The state gauge of one breaker, by state."""
    gauge = found["stalwart.breaker.state"]
    return {s: gauge[key(breaker=breaker, state=s)] for s in _metrics.BREAKER_STATES}


@pytest.fixture
def sdk() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    """A meter provider and its in-memory reader, shut down after the test."""
    memory = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[memory], shutdown_on_exit=False)
    yield meters, memory
    meters.shutdown()


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A tracer whose finished spans land in an in-memory exporter."""
    exporter = InMemorySpanExporter()
    tracers = TracerProvider(shutdown_on_exit=False)
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracers.get_tracer("tests"), exporter
    tracers.shutdown()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def registry(clock: ManualClock) -> stalwart.BreakerRegistry:
    """A registry of its own, on a manual clock, logging nothing."""
    return stalwart.BreakerRegistry(clock=clock, log=False)


@pytest.fixture
def installed(
    sdk: tuple[MeterProvider, InMemoryMetricReader], registry: stalwart.BreakerRegistry
) -> Iterator[Instrumentation]:
    """The instrumentation of `registry` on the `sdk` provider, uninstalled after."""
    with instrument(registry, meter_provider=sdk[0]) as inst:
        yield inst


def fail() -> None:
    raise ConnectionError("refused")


def trip(breaker: stalwart.CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises((ConnectionError, stalwart.CircuitOpenError)):
            breaker.call(fail)


def flaky(failures: int, attempts: int = 3) -> Callable[[], str]:
    """A retried function failing its first `failures` attempts."""
    calls = [0]

    @stalwart.retry(attempts=attempts, on=ConnectionError, backoff=stalwart.constant(0), log=False)
    def fetch() -> str:
        calls[0] += 1
        if calls[0] <= failures:
            raise ConnectionError
        return "ok"

    return fetch


# -- breaker families, read at collection time -------------------------------------------


def test_breaker_counts_are_read_at_collection_time(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    installed: Instrumentation,
    registry: stalwart.BreakerRegistry,
    clock: ManualClock,
) -> None:
    """State per state (1/0), calls by outcome, rejections, slow calls and failure rate
    hold the breaker's exact counts."""
    _, reader = sdk
    breaker = registry.get(
        "payments",
        failure_threshold=None,
        failure_rate=0.5,
        minimum_calls=4,
        window_calls=4,
        slow_call_duration=1.0,
        slow_call_rate=1.0,
    )
    breaker.call(lambda: None)
    breaker.call(lambda: clock.advance(2.0))  # slow, successful
    found = points(reader)
    assert states(found, "payments") == {
        "closed": 1,
        "open": 0,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
    }
    assert found["stalwart.breaker.failure_rate"] == {key(breaker="payments"): 0.0}
    trip(breaker, 2)  # 2 of 4 failed: opens
    for _ in range(3):
        with pytest.raises(stalwart.CircuitOpenError):
            breaker.call(lambda: None)
    found = points(reader)
    assert states(found, "payments")["open"] == 1
    assert sum(states(found, "payments").values()) == 1
    assert found["stalwart.breaker.calls"] == {
        key(breaker="payments", outcome="success"): 2,
        key(breaker="payments", outcome="failure"): 2,
    }
    assert found["stalwart.breaker.rejected_calls"] == {key(breaker="payments"): 3}
    assert found["stalwart.breaker.slow_calls"] == {key(breaker="payments"): 1}
    assert found["stalwart.breaker.failure_rate"] == {key(breaker="payments"): 0.5}


def test_breakers_created_after_install_are_observed(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    installed: Instrumentation,
    registry: stalwart.BreakerRegistry,
) -> None:
    """A breaker made after `instrument` shows at the next collection; one without a
    rate configured has no failure-rate point."""
    _, reader = sdk
    assert "stalwart.breaker.state" not in points(reader)
    registry.get("late").call(lambda: None)
    found = points(reader)
    assert states(found, "late")["closed"] == 1
    assert found["stalwart.breaker.calls"][key(breaker="late", outcome="success")] == 1
    assert "stalwart.breaker.failure_rate" not in found


class CountedRegistry(stalwart.BreakerRegistry):
    """A registry counting its snapshots, which raise once `broken` is set."""

    reads = 0
    broken = False

    def snapshot(self) -> dict[str, Any]:
        self.reads += 1
        if self.broken:
            raise OSError("storage down")
        return super().snapshot()


def test_one_snapshot_per_collection(sdk: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    """The registry is read once per collection, however many families read it."""
    meters, reader = sdk
    registry = CountedRegistry()
    registry.get("a")
    with instrument(registry, meter_provider=meters):
        points(reader)
        assert registry.reads == 1
        points(reader)
        assert registry.reads == 2


def test_a_registry_that_fails_to_be_read_is_logged_and_observes_nothing(
    sdk: tuple[MeterProvider, InMemoryMetricReader], caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot that raises is logged; the event counters are still collected."""
    meters, reader = sdk
    registry = CountedRegistry(log=False)
    breaker = registry.get("db", failure_threshold=1)
    registry.broken = True
    with (
        instrument(registry, meter_provider=meters),
        caplog.at_level(logging.ERROR, logger="stalwart.opentelemetry"),
    ):
        trip(breaker, 1)
        found = points(reader)
    assert "stalwart.breaker.state" not in found
    assert found["stalwart.breaker.opens"] == {key(breaker="db"): 1}
    assert "reading the breakers failed" in caplog.text


# -- event families, from the subscriber -------------------------------------------------


def test_transitions_and_opens_are_counted(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    installed: Instrumentation,
    registry: stalwart.BreakerRegistry,
    clock: ManualClock,
) -> None:
    """Every state change counts by from/to; only entering "open" counts as an opening."""
    _, reader = sdk
    breaker = registry.get("llm", failure_threshold=2, window=None, recovery_timeout=10)
    trip(breaker, 2)  # closed -> open
    clock.advance(10)
    trip(breaker, 1)  # open -> half_open, the probe fails: half_open -> open
    clock.advance(10)
    breaker.call(lambda: None)  # open -> half_open -> closed
    breaker.force_open()  # closed -> forced_open: not an opening
    found = points(reader)
    transitions = found["stalwart.breaker.transitions"]
    t = "stalwart.breaker."
    assert transitions == {
        frozenset({(BREAKER, "llm"), (t + "from_state", a), (t + "to_state", b)}): n
        for a, b, n in [
            ("closed", "open", 1),
            ("open", "half_open", 2),
            ("half_open", "open", 1),
            ("half_open", "closed", 1),
            ("closed", "forced_open", 1),
        ]
    }
    assert found["stalwart.breaker.opens"] == {key(breaker="llm"): 2}


def test_transitions_of_breakers_outside_the_registry_are_not_counted(
    sdk: tuple[MeterProvider, InMemoryMetricReader], installed: Instrumentation
) -> None:
    """A breaker of another registry is another exporter's: its opening is not counted."""
    _, reader = sdk
    elsewhere = stalwart.CircuitBreaker("other", failure_threshold=1, registry=None, log=False)
    trip(elsewhere, 1)
    assert "stalwart.breaker.opens" not in points(reader)


def test_retries_and_give_ups_are_counted_by_name(
    sdk: tuple[MeterProvider, InMemoryMetricReader], installed: Instrumentation
) -> None:
    """Two retries then success, and three failed attempts then a give-up: exact counts."""
    _, reader = sdk
    recovers, never = flaky(2), flaky(5)
    assert recovers() == "ok"
    with pytest.raises(ConnectionError):
        never()
    name = f"{__name__}.flaky.<locals>.fetch"
    found = points(reader)
    assert found["stalwart.retries"] == {key(retry=name): 4}
    assert found["stalwart.retry.give_ups"] == {key(retry=name): 1}


def test_timeouts_are_counted_by_name_and_where(
    sdk: tuple[MeterProvider, InMemoryMetricReader], installed: Instrumentation
) -> None:
    """A timeout's own limit counts where="timeout", a nearer deadline where="deadline";
    a block has the empty name."""
    _, reader = sdk
    never = threading.Event()

    def wait() -> None:
        never.wait(10)

    with pytest.raises(stalwart.TimeoutExceeded):
        stalwart.timeout(0.02)(wait)()
    with stalwart.deadline(0.02), pytest.raises(stalwart.TimeoutExceeded):
        stalwart.timeout(10)(wait)()
    with pytest.raises(stalwart.TimeoutExceeded), stalwart.timeout(0.02):
        wait()
    name = wait.__qualname__
    where = "stalwart.timeout.where"
    assert points(reader)["stalwart.timeouts"] == {
        frozenset({("stalwart.timeout.name", name), (where, "timeout")}): 1,
        frozenset({("stalwart.timeout.name", name), (where, "deadline")}): 1,
        frozenset({("stalwart.timeout.name", ""), (where, "timeout")}): 1,  # a block
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rollbacks_are_counted_by_reason(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    installed: Instrumentation,
    instant_retries: None,
) -> None:
    """`atomic_retry` on PostgreSQL: two serialization failures, then a commit, count
    two rollbacks with reason serialization_failure."""
    from django.db import connection

    from stalwart.contrib.django.db import atomic_retry

    _, reader = sdk
    runs = [0]

    @atomic_retry(attempts=3)
    def body() -> None:
        runs[0] += 1
        if runs[0] <= 2:
            with connection.cursor() as cursor:
                cursor.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '40001'; END $$"
                )

    body()
    assert runs[0] == 3
    assert points(reader)["stalwart.transaction.rollbacks"] == {
        frozenset({("stalwart.rollback.reason", "serialization_failure")}): 2
    }


@pytest.mark.redis
def test_dead_letters_are_counted_by_reason(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    installed: Instrumentation,
    celery_apps: Callable[..., Any],
) -> None:
    """A ResilientTask on a real worker dead-letters a poison pill: counted once, by reason."""
    from kombu import Exchange, Queue

    from celery_support import running_worker, wait_for
    from stalwart.contrib.celery import ResilientTask
    from stalwart.contrib.celery.dead_letter import (
        configure_dead_letters,
        dead_letter_queue_name,
        dead_letters,
    )

    _, reader = sdk
    app = celery_apps("redis")
    configure_dead_letters(app)

    @app.task(base=ResilientTask, name=app.main + ".parse", shared=False)
    def parse(text: str) -> int:
        return int(text)

    try:
        with running_worker(app):
            parse.delay("not a number")
            wait_for(lambda: dead_letters(app), "the dead letter")
            wait_for(lambda: "stalwart.dead_lettered_messages" in points(reader), "the count")
    finally:
        with app.connection_for_write() as connection:
            name = dead_letter_queue_name(app)
            Queue(name, Exchange(""), routing_key=name)(connection.default_channel).delete()
    assert points(reader)["stalwart.dead_lettered_messages"] == {
        frozenset({("stalwart.dead_letter.reason", "poison_pill")}): 1
    }


def test_call_durations_are_recorded_only_for_breakers_given_the_listener(
    sdk: tuple[MeterProvider, InMemoryMetricReader], clock: ManualClock
) -> None:
    """``durations=True``: the breakers given `durations` record each call's duration."""
    meters, reader = sdk
    registry = stalwart.BreakerRegistry(clock=clock, log=False)
    with instrument(registry, meter_provider=meters, durations=True) as inst:
        assert inst.durations is not None
        timed = registry.get(
            "timed", slow_call_duration=5.0, slow_call_rate=1.0, listeners=[inst.durations]
        )
        untimed = registry.get("untimed", slow_call_duration=5.0, slow_call_rate=1.0)
        timed.call(lambda: clock.advance(1.5))
        trip(timed, 1)
        untimed.call(lambda: clock.advance(1.0))
        histogram = points(reader)["stalwart.breaker.call.duration"]
    assert histogram == {key(breaker="timed"): (2, 1.5)}


# -- span events ---------------------------------------------------------------------


def events_of(exporter: InMemorySpanExporter) -> list[tuple[str, dict[str, Any]]]:
    [span] = exporter.get_finished_spans()
    return [(event.name, dict(event.attributes or {})) for event in span.events]


def test_span_events_on_the_current_recording_span(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
    installed: Instrumentation,
    registry: stalwart.BreakerRegistry,
) -> None:
    """Retries, a give-up, a state change and a rejection become events of the current
    span, with the retry's or breaker's name as attributes."""
    tracer, exporter = spans
    breaker = registry.get("search", failure_threshold=1, recovery_timeout=30)
    with tracer.start_as_current_span("request"):
        with pytest.raises(ConnectionError):
            flaky(5, attempts=2)()
        trip(breaker, 1)
        with pytest.raises(stalwart.CircuitOpenError):
            breaker.call(lambda: None)
        pool = stalwart.Bulkhead("pool", max_concurrent=1)
        with pool, pytest.raises(stalwart.BulkheadFull):
            pool.acquire()
    name = f"{__name__}.flaky.<locals>.fetch"
    found = events_of(exporter)
    assert [n for n, _ in found] == [
        "stalwart.retry",
        "stalwart.retry.give_up",
        "stalwart.breaker.state_change",
        "stalwart.breaker.rejected",
        "stalwart.bulkhead.rejected",
    ]
    assert {n for n, _ in found} == set(SPAN_EVENTS)
    retry, give_up, change, rejected, full = (attributes for _, attributes in found)
    assert full == {
        "stalwart.bulkhead.name": "pool",
        "stalwart.bulkhead.reason": "queue full",
        "stalwart.bulkhead.in_use": 1,
        "stalwart.bulkhead.queued": 0,
    }
    assert retry == {
        RETRY: name,
        "stalwart.retry.attempt": 1,
        "stalwart.retry.delay": 0.0,
        "stalwart.retry.elapsed": retry["stalwart.retry.elapsed"],
        "exception.type": "builtins.ConnectionError",
    }
    assert (give_up[RETRY], give_up["stalwart.retry.attempt"]) == (name, 2)
    assert change == {
        BREAKER: "search",
        "stalwart.breaker.from_state": "closed",
        "stalwart.breaker.to_state": "open",
        "stalwart.breaker.reason": change["stalwart.breaker.reason"],
    }
    assert rejected == {BREAKER: "search", STATE: "open", "stalwart.breaker.retry_after": 30.0}


class SpySpan(NonRecordingSpan):
    """A span that does not record, and notes any event added to it all the same."""

    def __init__(self) -> None:
        super().__init__(SpanContext(trace_id=1, span_id=1, is_remote=False))
        self.added: list[str] = []

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        self.added.append(name)


def test_nothing_is_added_to_a_span_that_does_not_record(
    installed: Instrumentation, registry: stalwart.BreakerRegistry
) -> None:
    """With a non-recording span current, no event is built or added."""
    spy = SpySpan()
    breaker = registry.get("quiet", failure_threshold=1)
    with trace.use_span(spy):
        with pytest.raises(ConnectionError):
            flaky(5, attempts=2)()
        trip(breaker, 2)
    assert spy.added == []


def test_span_events_can_be_turned_off(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    """``span_events=False``: metrics are counted, the span gets no event."""
    meters, reader = sdk
    tracer, exporter = spans
    with (
        instrument(meter_provider=meters, span_events=False),
        tracer.start_as_current_span("x"),
        pytest.raises(ConnectionError),
    ):
        flaky(5, attempts=2)()
    assert events_of(exporter) == []
    assert sum(points(reader)["stalwart.retries"].values()) == 1


# -- zero cost on the success path ---------------------------------------------------------


def test_the_success_path_does_no_opentelemetry_work(
    installed: Instrumentation,
    registry: stalwart.BreakerRegistry,
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    """Calls that succeed through a breaker, a retry, a timeout and a policy call no
    function of OpenTelemetry or of this module, even inside a recording span."""
    tracer, _ = spans
    breaker = registry.get("ok")
    policy = stalwart.Policy(retry=stalwart.retry(attempts=3), breaker=registry.get("pol"))

    @breaker
    def guarded() -> int:
        return 1

    @stalwart.retry(attempts=3)
    def retried() -> int:
        return 2

    @stalwart.timeout(5)
    def limited() -> int:
        return 3

    def run() -> None:
        guarded()
        retried()
        limited()
        policy.call(lambda: 4)

    run()  # anything done once, on first use, is done now
    seen: set[str] = set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            seen.add(frame.f_code.co_filename)

    with tracer.start_as_current_span("busy"):
        sys.setprofile(profile)
        try:
            for _ in range(50):
                run()
        finally:
            sys.setprofile(None)
    assert any(name.endswith("test_contrib_opentelemetry.py") for name in seen)  # it saw calls
    assert [name for name in seen if "opentelemetry" in name and "test_" not in name] == []


API_ONLY = r"""
import importlib.abc, logging, sys, threading

class BlockSdk(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ImportError(f"{name} is blocked: only the API is installed")
        return None

sys.meta_path.insert(0, BlockSdk())
records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)

logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.DEBUG)

import stalwart
from opentelemetry import metrics, trace
from stalwart.contrib.opentelemetry import instrument

try:
    import opentelemetry.sdk.metrics
except ImportError:
    pass
else:
    raise SystemExit("the SDK could be imported")

inst = instrument()
breaker = stalwart.CircuitBreaker("dep", failure_threshold=1, log=False)

@stalwart.retry(attempts=2, on=ConnectionError, backoff=stalwart.constant(0), log=False)
def flaky():
    raise ConnectionError

def fail():
    raise ConnectionError

called = set()

def profile(frame, event, arg):
    if event == "call" and "opentelemetry" in frame.f_code.co_filename:
        called.add(frame.f_code.co_name)

with trace.get_tracer("t").start_as_current_span("op") as span:
    assert not span.is_recording()
    sys.setprofile(profile)
    try:
        for _ in range(3):
            try:
                flaky()
            except ConnectionError:
                pass
        for _ in range(3):
            try:
                breaker.call(fail)
            except (ConnectionError, stalwart.CircuitOpenError):
                pass
        try:
            stalwart.timeout(0.01)(threading.Event().wait)(5)
        except stalwart.TimeoutExceeded:
            pass
    finally:
        sys.setprofile(None)
inst.uninstall()

assert "add_event" not in called, called
assert not [m for m in sys.modules if m.startswith("opentelemetry.sdk")]
problems = [r for r in records if r.levelno >= logging.WARNING]
assert not problems, [r.getMessage() for r in problems]
print(type(metrics.get_meter_provider()).__name__, sorted(called))
"""


def test_with_the_api_alone_nothing_breaks_and_no_span_event_is_built() -> None:
    """In a process where the SDK cannot be imported, instrumenting and driving retries,
    rejections, state changes and timeouts raises and logs nothing, and builds no
    span event."""
    done = subprocess.run(
        [sys.executable, "-c", API_ONLY], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    provider, called = done.stdout.split(" ", 1)
    assert provider == "_ProxyMeterProvider"
    assert "add_event" not in called


LATE_SDK = r"""
import stalwart
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from stalwart.contrib.opentelemetry import instrument

inst = instrument()  # the global provider is still the API's proxy
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
breaker = stalwart.CircuitBreaker("late", failure_threshold=1, log=False)
try:
    breaker.call(lambda: 1 / 0)
except ZeroDivisionError:
    pass
data = reader.get_metrics_data()
found = {m.name: [p.value for p in m.data.data_points] for r in data.resource_metrics
         for s in r.scope_metrics for m in s.metrics}
print(found["stalwart.breaker.opens"], found["stalwart.breaker.calls"])
"""


def test_instruments_made_before_the_sdk_is_set_record_once_it_is() -> None:
    """`instrument()` on the global proxy provider starts recording when an SDK meter
    provider is set later (in a process of its own: the global provider is set once)."""
    done = subprocess.run(
        [sys.executable, "-c", LATE_SDK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1]", "[0,", "1]"]


# -- lifecycle -------------------------------------------------------------------------


def test_uninstall_stops_everything(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    spans: tuple[trace.Tracer, InMemorySpanExporter],
    registry: stalwart.BreakerRegistry,
) -> None:
    """After `uninstall`: counters count no more, breakers are observed no more, and
    spans get no events; calling it twice is harmless."""
    meters, reader = sdk
    tracer, exporter = spans
    inst = instrument(registry, meter_provider=meters)
    breaker = registry.get("svc", failure_threshold=1)
    trip(breaker, 1)
    assert points(reader)["stalwart.breaker.opens"] == {key(breaker="svc"): 1}
    inst.uninstall()
    inst.uninstall()
    assert not inst.installed
    breaker.reset()
    with tracer.start_as_current_span("after"):
        trip(breaker, 2)
        with pytest.raises(ConnectionError):
            flaky(5, attempts=2)()
    found = points(reader)
    assert found["stalwart.breaker.opens"] == {key(breaker="svc"): 1}  # as it was
    assert "stalwart.retries" not in found
    assert "stalwart.breaker.state" not in found
    assert events_of(exporter) == []


def test_reinstalling_on_the_same_provider_observes_again(
    sdk: tuple[MeterProvider, InMemoryMetricReader], registry: stalwart.BreakerRegistry
) -> None:
    """Install, uninstall, install again on one provider: the breakers are observed
    again (the SDK keeps an observable instrument's first callbacks)."""
    meters, reader = sdk
    registry.get("a")
    instrument(registry, meter_provider=meters).uninstall()
    with instrument(registry, meter_provider=meters):
        assert states(points(reader), "a")["closed"] == 1


def test_two_registries_on_one_provider_are_both_observed(
    sdk: tuple[MeterProvider, InMemoryMetricReader], clock: ManualClock
) -> None:
    """Two registries instrumented on one provider each show their breakers; the same
    registry twice is refused."""
    meters, reader = sdk
    first = stalwart.BreakerRegistry(clock=clock)
    second = stalwart.BreakerRegistry(clock=clock)
    first.get("one")
    second.get("two")
    with instrument(first, meter_provider=meters), instrument(second, meter_provider=meters):
        found = points(reader)
        assert states(found, "one")["closed"] == states(found, "two")["closed"] == 1
        with pytest.raises(ValueError, match="instrumented already"):
            instrument(first, meter_provider=meters)


def test_a_failing_meter_never_breaks_the_call(
    registry: stalwart.BreakerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A counter that raises is logged; the retried call still returns its value."""

    class Broken(NoOpCounter):
        def add(self, amount: Any, attributes: Any = None, context: Any = None) -> None:
            raise RuntimeError("exporter down")

    class BrokenMeter(NoOpMeter):
        def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
            return Broken(name)

    class BrokenProvider(NoOpMeterProvider):
        def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
            return BrokenMeter(name)

    with (
        instrument(registry, meter_provider=BrokenProvider()),
        caplog.at_level(logging.ERROR, logger="stalwart"),
    ):
        assert flaky(1)() == "ok"
    assert "exporter down" in caplog.text


# -- names, attributes, the cap ------------------------------------------------------------


def test_prefix_and_names_of_your_own(
    sdk: tuple[MeterProvider, InMemoryMetricReader], registry: stalwart.BreakerRegistry
) -> None:
    """``prefix`` renames every instrument; ``names`` gives one its own full name."""
    meters, reader = sdk
    names = {"breaker_opens": "llm.circuit_breaker.opens"}
    with instrument(registry, meter_provider=meters, prefix="app.", names=names) as inst:
        trip(registry.get("llm", failure_threshold=1), 1)
        found = points(reader)
    assert found["llm.circuit_breaker.opens"] == {key(breaker="llm"): 1}
    assert "app.breaker.state" in found
    assert "app.breaker.transitions" in found
    assert inst.names["breaker_state"] == "app.breaker.state"
    assert not any(name.startswith("stalwart.") for name in found)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"registry": object()}, TypeError, "registry must be a stalwart BreakerRegistry"),
        ({"names": {"opens": "x"}}, ValueError, "'opens' is not a metric family"),
        ({"names": {"retries": ""}}, ValueError, r"names\['retries'\] must not be empty"),
        ({"names": {"retries": 3}}, TypeError, r"names\['retries'\] must be a string, got 3"),
        ({"prefix": None}, TypeError, "prefix must be a string, got None"),
        ({"max_label_values": 0}, ValueError, "max_label_values must be an integer >= 1, got 0"),
        ({"max_label_values": 1.5}, TypeError, "max_label_values must be an integer >= 1"),
    ],
)
def test_bad_options_are_refused_naming_the_parameter(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Bad input raises at once, naming the parameter and the value; nothing installed."""
    meters = NoOpMeterProvider()
    with pytest.raises(error, match=message):
        instrument(meter_provider=meters, **options)
    instrument(meter_provider=meters).uninstall()  # the default registry is free still


def test_every_family_has_attributes_and_documented_units() -> None:
    """Each family's labels map one-to-one to dotted ``stalwart.`` attributes."""
    for family in _metrics.FAMILIES:
        attributes = attributes_of(family)
        assert len(attributes) == len(family.labels) == len(set(attributes))
        assert all(a.startswith("stalwart.") for a in attributes)
    assert set(ATTRIBUTES) <= {label for f in _metrics.FAMILIES for label in f.labels}


def test_breakers_past_the_cap_are_summed_under_other(
    sdk: tuple[MeterProvider, InMemoryMetricReader],
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With max_label_values=2, the breakers seen after the first two share the name
    "other": their states, calls and openings add up there; a warning is logged once."""
    meters, reader = sdk
    registry = stalwart.BreakerRegistry(clock=clock, log=False)
    with (
        caplog.at_level(logging.WARNING, logger="stalwart.opentelemetry"),
        instrument(registry, meter_provider=meters, max_label_values=2),
    ):
        for name in ("a", "b", "c", "d"):
            registry.get(name, failure_threshold=1).call(lambda: None)
        points(reader)  # the first names seen, in name order, take the places
        trip(registry.get("d"), 1)
        found = points(reader)
    assert states(found, "a")["closed"] == states(found, "b")["closed"] == 1
    assert states(found, "other") == {
        "closed": 1,
        "open": 1,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
    }
    assert found["stalwart.breaker.calls"][key(breaker="other", outcome="success")] == 2
    assert found["stalwart.breaker.opens"] == {key(breaker="other"): 1}
    assert caplog.text.count("more than 2 values of label 'breaker'") == 1


@settings(max_examples=40)
@given(
    calls=st.lists(st.tuples(st.sampled_from("abcdefg"), st.booleans()), max_size=40),
    cap=st.integers(min_value=1, max_value=5),
)
def test_the_cap_never_loses_a_count(calls: list[tuple[str, bool]], cap: int) -> None:
    """Whatever the breakers and the cap: at most cap + 1 names, one state per breaker,
    and every call counted once."""
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    registry = stalwart.BreakerRegistry(
        clock=ManualClock(), log=False, failure_threshold=None, failure_rate=1.0
    )
    try:
        with instrument(registry, meter_provider=meters, max_label_values=cap):
            for name, ok in calls:
                breaker = registry.get(name)
                if ok:
                    breaker.call(lambda: None)
                else:
                    with pytest.raises(ConnectionError):
                        breaker.call(fail)
            found = points(reader)
    finally:
        meters.shutdown()
    if not calls:
        assert found == {}
        return
    names = {dict(k)[BREAKER] for k in found["stalwart.breaker.state"]}
    assert len(names) <= cap + 1
    assert sum(found["stalwart.breaker.state"].values()) == len({n for n, _ in calls})
    assert sum(found["stalwart.breaker.calls"].values()) == len(calls)


def test_repr_says_whether_installed(registry: stalwart.BreakerRegistry) -> None:
    """The repr tells an installed instrumentation from an uninstalled one."""
    inst = instrument(registry, meter_provider=NoOpMeterProvider())
    assert "installed" in repr(inst)
    inst.uninstall()
    assert "uninstalled" in repr(inst)


# -- bulkheads, retry budgets and hedgers, read at collection time ----------------------


def test_bulkheads_budgets_and_hedgers_are_read_at_collection_time(
    sdk: tuple[MeterProvider, InMemoryMetricReader], installed: Instrumentation
) -> None:
    """Each instance shared by name shows its exact counts, under its own attribute."""
    _, reader = sdk
    with driven("otel") as names:
        found = points(reader)
        pool = {"stalwart.bulkhead.name": names["bulkhead"]}
        budget = {"stalwart.retry_budget.name": names["budget"]}
        hedger = {"stalwart.hedger.name": names["hedger"]}
        b, r, h = EXPECTED["bulkhead"], EXPECTED["budget"], EXPECTED["hedger"]
        assert found["stalwart.bulkhead.in_use"][key(**pool)] == b["in_use"]
        assert found["stalwart.bulkhead.queued"][key(**pool)] == b["queued"]
        assert found["stalwart.bulkhead.max_concurrent"][key(**pool)] == b["max_concurrent"]
        assert found["stalwart.bulkhead.admitted_calls"][key(**pool)] == b["admitted"]
        rejected = found["stalwart.bulkhead.rejected_calls"]
        for reason in ("queue_full", "timed_out"):
            assert rejected[key(**pool, **{"stalwart.bulkhead.reason": reason})] == b[reason]
        assert found["stalwart.retry_budget.deposits"][key(**budget)] == r["deposits"]
        assert found["stalwart.retry_budget.allowed_retries"][key(**budget)] == r["allowed"]
        assert found["stalwart.retry_budget.refused_retries"][key(**budget)] == r["refused"]
        assert found["stalwart.retry_budget.balance"][key(**budget)] == r["balance"]
        assert found["stalwart.hedger.calls"][key(**hedger)] == h["calls"]
        assert found["stalwart.hedger.hedges"][key(**hedger)] == h["hedges"]
        assert found["stalwart.hedger.hedge_wins"][key(**hedger)] == h["wins"]
        assert found["stalwart.hedger.delay"][key(**hedger)] == h["delay"]
    after = points(reader).get("stalwart.bulkhead.in_use", {})
    assert key(**pool) not in after  # read at each collection: a forgotten one is gone


def test_two_instrumentations_observe_each_bulkhead_once(
    sdk: tuple[MeterProvider, InMemoryMetricReader], clock: ManualClock
) -> None:
    """Bulkheads are the process's: with two registries on one provider, the callback
    observes each bulkhead once, while each registry's breakers are observed."""
    meters, _ = sdk
    first = stalwart.BreakerRegistry(clock=clock)
    second = stalwart.BreakerRegistry(clock=clock)
    first.get("one")
    second.get("two")
    with (
        instrument(first, meter_provider=meters) as inst,
        instrument(second, meter_provider=meters),
        driven("twice") as names,
    ):
        shared = inst._instruments
        assert shared is not None
        pools = [
            o.value
            for o in shared._callback("bulkhead_max_concurrent")(None)  # type: ignore[arg-type]
            if (o.attributes or {}).get("stalwart.bulkhead.name") == names["bulkhead"]
        ]
        breakers = {
            (o.attributes or {}).get(BREAKER)
            for o in shared._callback("breaker_rejections")(None)  # type: ignore[arg-type]
        }
    assert pools == [EXPECTED["bulkhead"]["max_concurrent"]]
    assert breakers == {"one", "two"}
