"""`stalwart.contrib.prometheus`: a real /metrics endpoint, scraped over HTTP."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import stalwart
from named_support import EXPECTED, driven
from stalwart.contrib import prometheus
from stalwart.contrib._metrics import OTHER as OTHER_LABEL
from stalwart.contrib._metrics import LabelCap
from stalwart.contrib._transaction import Rollbacks
from stalwart.events import emit

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Serve `registry` on loopback, GET /metrics once, stop, and parse the samples."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def setup() -> Iterator[tuple[stalwart.BreakerRegistry, CollectorRegistry, Any]]:
    breakers = stalwart.BreakerRegistry()
    collectors = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=collectors)
    yield breakers, collectors, inst
    inst.uninstall()


def _trip(breaker: stalwart.CircuitBreaker, rejections: int) -> None:
    @breaker
    def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        down()
    for _ in range(rejections):
        with pytest.raises(stalwart.CircuitOpenError):
            down()


def test_a_scrape_shows_breakers_retries_timeouts_dead_letters_and_rollbacks(
    setup: tuple[stalwart.BreakerRegistry, CollectorRegistry, Any],
) -> None:
    """Every family carries the exact counts of what was driven before the scrape."""
    breakers, collectors, _ = setup
    ok = breakers.get("ok-svc", failure_threshold=3)
    for _ in range(4):
        ok.call(lambda: 1)
    _trip(breakers.get("down-svc", failure_threshold=1, log=False), rejections=2)
    calls = [0]

    @stalwart.retry(attempts=3, on=ConnectionError, backoff=stalwart.constant(0), log=False)
    def flaky() -> int:
        calls[0] += 1
        raise ConnectionError

    with pytest.raises(ConnectionError):
        flaky()

    @stalwart.timeout(0.02)
    def stuck() -> None:
        threading.Event().wait(5)

    with pytest.raises(stalwart.TimeoutExceeded):
        stuck()
    # The dead-letter hooks of a real resilient task, called as its `_dead_letter` does.
    from celery import Celery

    from stalwart.contrib.celery import DeadLetterEvent, ResilientTask

    app = Celery("prom", broker="memory://", set_as_current=False)

    @app.task(base=ResilientTask, shared=False, name="prom.task")
    def task() -> None: ...

    hooks = app.tasks["prom.task"]._stalwart_dead_letter_hooks  # type: ignore[attr-defined]
    for reason in ("poison_pill", "poison_pill", "max_retries_exceeded"):
        emit(hooks, DeadLetterEvent(reason, "prom.task", "id", None))
    # The rollback path `atomic_retry` reports through.
    Rollbacks(log=False).report(
        ConnectionError(),
        name="save",
        reason="network_error",
        attempt=1,
        database="default",
        will_retry=True,
    )

    s = _scrape(collectors)
    assert _value(s, "stalwart_breaker_state", breaker="down-svc", state="open") == 1.0
    assert _value(s, "stalwart_breaker_state", breaker="down-svc", state="closed") == 0.0
    assert _value(s, "stalwart_breaker_state", breaker="ok-svc", state="closed") == 1.0
    assert _value(s, "stalwart_breaker_calls_total", breaker="ok-svc", outcome="success") == 4.0
    assert _value(s, "stalwart_breaker_calls_total", breaker="down-svc", outcome="failure") == 1.0
    assert _value(s, "stalwart_breaker_rejected_calls_total", breaker="down-svc") == 2.0
    assert _value(s, "stalwart_breaker_slow_calls_total", breaker="ok-svc") == 0.0
    assert (
        _value(
            s,
            "stalwart_breaker_transitions_total",
            breaker="down-svc",
            from_state="closed",
            to_state="open",
        )
        == 1.0
    )
    assert _value(s, "stalwart_breaker_opens_total", breaker="down-svc") == 1.0
    name = flaky.__qualname__
    retried = [v for (n, labels), v in s.items() if n == "stalwart_retries_total"]
    assert retried == [2.0]
    assert any(
        dict(labels)["name"].endswith(name)
        for (n, labels) in s
        if n.startswith("stalwart_retries")
    )
    assert [v for (n, _), v in s.items() if n == "stalwart_retry_give_ups_total"] == [1.0]
    timeouts = {
        dict(labels)["where"]: v for (n, labels), v in s.items() if n == "stalwart_timeouts_total"
    }
    assert timeouts == {"timeout": 1.0}
    assert _value(s, "stalwart_dead_lettered_messages_total", reason="poison_pill") == 2.0
    assert _value(s, "stalwart_dead_lettered_messages_total", reason="max_retries_exceeded") == 1.0
    assert _value(s, "stalwart_transaction_rollbacks_total", reason="network_error") == 1.0


def test_a_rate_breaker_exports_its_failure_rate(
    setup: tuple[stalwart.BreakerRegistry, CollectorRegistry, Any],
) -> None:
    """A breaker with a failure rate exports it; one without exports no rate series."""
    breakers, collectors, _ = setup
    rated = breakers.get(
        "rated", failure_threshold=None, failure_rate=0.9, window_calls=4, minimum_calls=4
    )
    rated.call(lambda: 1)
    with pytest.raises(ConnectionError):
        rated.call(_raise)
    breakers.get("plain")
    s = _scrape(collectors)
    assert _value(s, "stalwart_breaker_failure_rate_ratio", breaker="rated") == 0.5
    assert _value(s, "stalwart_breaker_failure_rate_ratio", breaker="plain") is None


def _raise() -> None:
    raise ConnectionError


def test_label_values_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    """Past max_label_values, breakers share the "other" series, with one warning."""
    breakers = stalwart.BreakerRegistry()
    collectors = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=collectors, max_label_values=2)
    try:
        kept = [breakers.get(f"host-{i}", failure_threshold=1, log=False) for i in range(5)]
        for breaker in kept:
            _trip(breaker, rejections=1)
        with caplog.at_level(logging.WARNING, "stalwart.prometheus"):
            s = _scrape(collectors)
            s = _scrape(collectors)
    finally:
        inst.uninstall()
    breaker_labels = {
        dict(labels)["breaker"] for (n, labels) in s if n == "stalwart_breaker_state"
    }
    assert breaker_labels == {"host-0", "host-1", "other"}
    assert _value(s, "stalwart_breaker_state", breaker="other", state="open") == 3.0
    assert _value(s, "stalwart_breaker_rejected_calls_total", breaker="other") == 3.0
    assert _value(s, "stalwart_breaker_opens_total", breaker="other") == 3.0
    warnings = [r for r in caplog.records if "counted under" in r.getMessage()]
    assert len(warnings) <= 1  # once per label, ever (it may have gone out before capture)


def test_families_map_to_the_names_operators_alert_on() -> None:
    """Mapped families appear under the user's names; the rest keep the prefix given."""
    breakers = stalwart.BreakerRegistry()
    collectors = CollectorRegistry()
    inst = prometheus.instrument(
        breakers,
        collector_registry=collectors,
        prefix="app_",
        names={
            "breaker_opens": "llm_circuit_breaker_opens_total",
            "dead_letters": "messages_sent_to_dlq_total",
            "transaction_rollbacks": "database_transaction_rollbacks",
        },
    )
    try:
        _trip(breakers.get("llm", failure_threshold=1, log=False), rejections=0)
        Rollbacks(log=False).report(
            ConnectionError(),
            name="save",
            reason="network_error",
            attempt=1,
            database="default",
            will_retry=False,
        )
        s = _scrape(collectors)
    finally:
        inst.uninstall()
    assert _value(s, "llm_circuit_breaker_opens_total", breaker="llm") == 1.0
    assert _value(s, "database_transaction_rollbacks_total", reason="network_error") == 1.0
    assert _value(s, "app_breaker_state", breaker="llm", state="open") == 1.0
    assert not any(n.startswith("stalwart_") for n, _ in s)


def test_uninstall_removes_everything_and_allows_a_new_install() -> None:
    """After uninstall nothing is exported or counted; instrumenting again works."""
    breakers = stalwart.BreakerRegistry()
    collectors = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=collectors)
    breakers.get("u")
    with pytest.raises(ValueError, match="instrumented"):
        prometheus.instrument(breakers, collector_registry=collectors)
    inst.uninstall()
    inst.uninstall()
    _trip(breakers.get("u2", failure_threshold=1, log=False), rejections=0)
    assert not any(n.startswith("stalwart_") for n, _ in _scrape(collectors))
    again = prometheus.instrument(breakers, collector_registry=collectors)
    try:
        s = _scrape(collectors)
    finally:
        again.uninstall()
    assert _value(s, "stalwart_breaker_state", breaker="u2", state="open") == 1.0
    assert _value(s, "stalwart_breaker_opens_total", breaker="u2") is None  # before install


def test_bad_options_are_refused() -> None:
    """Unknown families, bad names and a zero cap raise, naming the option."""
    collectors = CollectorRegistry()
    with pytest.raises(ValueError, match="names"):
        prometheus.instrument(collector_registry=collectors, names={"nope": "x"})
    with pytest.raises(ValueError, match="names"):
        prometheus.instrument(collector_registry=collectors, names={"retries": "bad name"})
    with pytest.raises(ValueError, match="prefix"):
        prometheus.instrument(collector_registry=collectors, prefix="1x")
    with pytest.raises(ValueError, match="max_label_values"):
        prometheus.instrument(collector_registry=collectors, max_label_values=0)
    with pytest.raises(TypeError, match="registry"):
        prometheus.instrument(object(), collector_registry=collectors)  # type: ignore[arg-type]
    assert list(collectors.collect()) == []


def test_a_failing_exporter_never_breaks_a_call(
    setup: tuple[stalwart.BreakerRegistry, CollectorRegistry, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counters that raise are logged; the breaker still opens and rejects."""
    breakers, _, _ = setup

    def broken(*args: object) -> None:
        raise RuntimeError("exporter down")

    monkeypatch.setattr(LabelCap, "__call__", broken)
    breaker = breakers.get("fragile", failure_threshold=1, log=False)
    _trip(breaker, rejections=1)
    assert breaker.state is stalwart.breaker.State.OPEN


def test_durations_are_opt_in() -> None:
    """The histogram exists only with durations=True, fed by its breaker listener."""
    breakers = stalwart.BreakerRegistry()
    collectors = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=collectors, durations=True)
    try:
        assert inst.durations is not None
        timed = breakers.get("timed", listeners=[inst.durations])

        @timed
        def work() -> int:
            return 1

        work()
        work()
        s = _scrape(collectors)
    finally:
        inst.uninstall()
    assert _value(s, "stalwart_breaker_call_duration_seconds_count", breaker="timed") == 2.0
    plain = prometheus.instrument(stalwart.BreakerRegistry(), collector_registry=collectors)
    try:
        assert plain.durations is None
        assert not any("duration" in n for n, _ in _scrape(collectors))
    finally:
        plain.uninstall()


_CHILD = textwrap.dedent(
    """
    import sys
    import stalwart
    from prometheus_client import CollectorRegistry
    from stalwart.contrib import prometheus

    breakers = stalwart.BreakerRegistry()
    early = breakers.get("early")
    inst = prometheus.instrument(breakers, collector_registry=CollectorRegistry())
    assert inst.multiprocess
    breakers.get("shared", failure_threshold=1, log=False)
    breakers.get("calm")

    @breakers.get("shared")
    def down():
        raise ConnectionError

    try:
        down()
    except ConnectionError:
        pass

    @stalwart.retry(attempts=3, on=ConnectionError, backoff=stalwart.constant(0), log=False)
    def flaky():
        raise ConnectionError

    try:
        flaky()
    except ConnectionError:
        pass
    pool = stalwart.bulkhead("pool", max_concurrent=1)
    with pool:
        try:
            pool.acquire()
        except stalwart.BulkheadFull:
            pass
    print("ready", flush=True)
    sys.stdin.readline()  # alive until the parent has scraped
    """
)


def test_multiprocess_mode_sums_two_real_processes(tmp_path: Path) -> None:
    """Two processes' counters and live state gauges add up in one scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        collectors = CollectorRegistry()
        MultiProcessCollector(collectors, path=str(tmp_path))  # type: ignore[no-untyped-call]
        s = _scrape(collectors)
    finally:
        for child in children:
            child.communicate("\n", timeout=30)
    assert all(child.returncode == 0 for child in children)
    assert _value(s, "stalwart_breaker_opens_total", breaker="shared") == 2.0
    assert (
        _value(
            s,
            "stalwart_breaker_transitions_total",
            breaker="shared",
            from_state="closed",
            to_state="open",
        )
        == 2.0
    )
    assert _value(s, "stalwart_breaker_state", breaker="shared", state="open") == 2.0
    assert _value(s, "stalwart_breaker_state", breaker="shared", state="closed") == 0.0
    assert _value(s, "stalwart_breaker_state", breaker="early", state="closed") == 2.0
    # A breaker made later has a state series from its first state change on.
    assert _value(s, "stalwart_breaker_state", breaker="calm", state="closed") is None
    assert [v for (n, _), v in s.items() if n == "stalwart_retries_total"] == [4.0]
    assert [v for (n, _), v in s.items() if n == "stalwart_retry_give_ups_total"] == [2.0]
    # Counted from their events in this mode, summed over the processes.
    assert (
        _value(s, "stalwart_bulkhead_rejected_calls_total", bulkhead="pool", reason="queue_full")
        == 2.0
    )
    # Read at scrape time in a single process only: not exported in this mode.
    assert not any(n == "stalwart_breaker_calls_total" for n, _ in s)
    assert not any(n == "stalwart_bulkhead_in_use" for n, _ in s)


def test_a_scrape_shows_bulkheads_retry_budgets_and_hedgers(
    setup: tuple[stalwart.BreakerRegistry, CollectorRegistry, Any],
) -> None:
    """The instances shared by name are read at the scrape, with their exact counts."""
    _, collectors, _ = setup
    with driven("prom") as names:
        s = _scrape(collectors)
        pool, budget, hedger = names["bulkhead"], names["budget"], names["hedger"]
        b, r, h = EXPECTED["bulkhead"], EXPECTED["budget"], EXPECTED["hedger"]
        assert _value(s, "stalwart_bulkhead_in_use", bulkhead=pool) == b["in_use"]
        assert _value(s, "stalwart_bulkhead_queued", bulkhead=pool) == b["queued"]
        assert _value(s, "stalwart_bulkhead_max_concurrent", bulkhead=pool) == b["max_concurrent"]
        assert _value(s, "stalwart_bulkhead_admitted_calls_total", bulkhead=pool) == b["admitted"]
        for reason in ("queue_full", "timed_out"):
            assert (
                _value(s, "stalwart_bulkhead_rejected_calls_total", bulkhead=pool, reason=reason)
                == b[reason]
            )
        assert _value(s, "stalwart_retry_budget_deposits_total", budget=budget) == r["deposits"]
        assert (
            _value(s, "stalwart_retry_budget_allowed_retries_total", budget=budget) == r["allowed"]
        )
        assert (
            _value(s, "stalwart_retry_budget_refused_retries_total", budget=budget) == r["refused"]
        )
        assert _value(s, "stalwart_retry_budget_balance", budget=budget) == r["balance"]
        assert _value(s, "stalwart_hedger_calls_total", hedger=hedger) == h["calls"]
        assert _value(s, "stalwart_hedger_hedges_total", hedger=hedger) == h["hedges"]
        assert _value(s, "stalwart_hedger_hedge_wins_total", hedger=hedger) == h["wins"]
        assert _value(s, "stalwart_hedger_delay_seconds", hedger=hedger) == h["delay"]
    after = _scrape(collectors)  # read at each scrape: a forgotten instance is gone
    assert _value(after, "stalwart_bulkhead_in_use", bulkhead=pool) is None


def test_bulkheads_past_the_cap_are_summed_under_other() -> None:
    """Past max_label_values, bulkheads share "other": counts add up, one warning."""
    from stalwart.bulkhead import bulkheads

    collectors = CollectorRegistry()
    inst = prometheus.instrument(
        stalwart.BreakerRegistry(), collector_registry=collectors, max_label_values=1
    )
    made = [f"capped-pool-{i}" for i in range(3)]
    try:
        for name in made:
            stalwart.bulkhead(name, max_concurrent=2)
        total = sum(pool.max_concurrent for pool in bulkheads)
        s = _scrape(collectors)
    finally:
        inst.uninstall()
        for name in made:
            bulkheads.remove(name)
    series = {
        dict(lab)["bulkhead"]: v
        for (n, lab), v in s.items()
        if n == "stalwart_bulkhead_max_concurrent"
    }
    assert len(series) == 2  # the first name seen, and "other" for the rest
    assert OTHER_LABEL in series
    assert sum(series.values()) == total  # summed, none lost
