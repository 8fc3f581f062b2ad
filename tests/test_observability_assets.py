"""The alert rules and the Grafana dashboard in the docs: well-formed, and built only from
metric names and labels the Prometheus exporter emits."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import stalwart
from named_support import driven
from stalwart.breaker.registry import _OPEN_STATES
from stalwart.contrib import _metrics, prometheus
from stalwart.contrib._transaction import Rollbacks
from stalwart.contrib.celery import DeadLetterEvent
from stalwart.events import forward
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

DOCS = Path(__file__).resolve().parent.parent / "docs"
RULES = DOCS / "alerts" / "stalwart-rules.yml"
DASHBOARD = DOCS / "dashboards" / "stalwart.json"
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every series it scrapes."""
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan"}
)


# -- what the exporter emits: a real scrape ------------------------------------------------


def fail() -> None:
    raise ConnectionError


def scrape_everything() -> dict[str, set[str]]:
    """Drive every family once through its real emission path, scrape, and return each
    sample name with its label names."""
    clock = ManualClock()
    breakers = stalwart.BreakerRegistry(clock=clock, log=False)
    collectors = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=collectors)
    try:
        rated = breakers.get("db", failure_threshold=1, failure_rate=1.0, window_calls=10)
        with pytest.raises(ConnectionError):
            rated.call(fail)  # a failure, a transition, an opening
        with pytest.raises(stalwart.CircuitOpenError):
            rated.call(fail)  # a rejection

        @stalwart.retry(attempts=2, on=ConnectionError, backoff=stalwart.constant(0), log=False)
        def flaky() -> None:
            raise ConnectionError

        with pytest.raises(ConnectionError):
            flaky()  # a retry, a give-up
        with stalwart.deadline(0), pytest.raises(stalwart.TimeoutExceeded):
            stalwart.timeout(1)(lambda: None)()  # a timeout
        Rollbacks(log=False).report(
            ConnectionError(),
            name="save",
            reason="network_error",
            attempt=1,
            database="default",
            will_retry=True,
        )
        forward("on_dead_letter")(DeadLetterEvent("poison_pill", "task", "id"))
        with driven("assets"):  # a bulkhead, a retry budget and a hedger
            text = generate_latest(collectors).decode()
    finally:
        inst.uninstall()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found.setdefault(sample.name, set()).update(sample.labels)
    return found


@pytest.fixture(scope="module")
def emitted() -> dict[str, set[str]]:
    """Sample names a scrape shows, with their label names."""
    return scrape_everything()


def test_the_scrape_shows_every_family_of_the_shared_table(emitted: dict[str, set[str]]) -> None:
    """Every scraped and event family is in the scrape, under its table name and labels."""
    expected = {
        "stalwart_" + f.prometheus + ("_total" if f.kind == "counter" else ""): set(f.labels)
        for f in _metrics.FAMILIES
        if f.source != "call"
    }
    assert emitted == expected


# -- reading PromQL ----------------------------------------------------------------------


def references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The metric names `expr` selects, with the label names each matches on, and the
    label names it groups by.

    A small reader for the PromQL the rules and dashboard use: selectors with matchers,
    functions, aggregations with ``by``/``without``, ranges, Grafana's ``$variables``.
    """
    grouping: set[str] = set()
    for clause in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        grouping.update(label.strip() for label in clause.group(1).split(",") if label.strip())
    rest = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    metrics: dict[str, set[str]] = {}
    for selector in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", rest):
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector.group(2)))
        name = selector.group(1)
        assert name, f"a selector without a metric name in {expr!r}"
        metrics.setdefault(name, set()).update(labels)
    rest = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+|\"[^\"]*\"|\b\d[\w.]*", " ", rest)
    for token in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", rest):
        name, call = token.group(1), token.group(2)
        if call or name in KEYWORDS:
            continue
        metrics.setdefault(name, set())
    return metrics, grouping


def test_the_promql_reader_finds_names_and_labels() -> None:
    """The reader sees metrics with and without matchers, and the grouping labels; it
    does not take functions or keywords for metrics."""
    metrics, grouping = references(
        'sum by (job, reason) (rate(a_total{job=~"$job", reason="x"}[$__rate_interval]))'
        " > 0.5 * sum without (state) (b) unless on (job) c offset 5m"
    )
    assert metrics == {"a_total": {"job", "reason"}, "b": set(), "c": set()}
    assert grouping == {"job", "reason", "state"}


def rule_list() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    exprs += [
        v["definition"].replace("label_values(", "").split(",")[0]
        for v in data["templating"]["list"]
        if v["type"] == "query"
    ]
    return exprs


def check_references(expr: str, emitted: dict[str, set[str]]) -> list[str]:
    """What `expr` names that the exporter does not emit."""
    problems = []
    metrics, grouping = references(expr)
    known_labels = set().union(*emitted.values()) | TARGET_LABELS
    for name, labels in metrics.items():
        if name not in emitted:
            problems.append(f"metric {name}")
        elif labels - emitted[name] - TARGET_LABELS:
            problems.append(f"labels {sorted(labels - emitted[name])} of {name}")
    problems += [f"label {label}" for label in sorted(grouping - known_labels)]
    return problems


def test_a_wrong_name_or_label_is_caught(emitted: dict[str, set[str]]) -> None:
    """The check reports a metric the exporter never emits, and a label it lacks."""
    assert check_references('rate(stalwart_breaker_opens{reason="x"}[5m])', emitted) == [
        "metric stalwart_breaker_opens"
    ]
    assert check_references('sum by (host) (stalwart_retries_total{reason="x"})', emitted) == [
        "labels ['reason'] of stalwart_retries_total",
        "label host",
    ]


# -- the alert rules -----------------------------------------------------------------


def test_the_rules_have_the_shape_prometheus_loads() -> None:
    """groups -> name and rules; each rule has alert, expr, a valid for, labels with a
    severity, and summary and description annotations; no unknown keys."""
    data = yaml.safe_load(RULES.read_text())
    assert set(data) == {"groups"}
    names = []
    for group in data["groups"]:
        assert set(group) == {"name", "rules"}
        assert isinstance(group["name"], str)
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert {"alert", "expr", "labels", "annotations"} <= set(rule)
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "for" in rule:
                assert re.fullmatch(r"\d+[smhdwy]", rule["for"])
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert all(isinstance(v, str) for v in rule["labels"].values())
            assert {"summary", "description"} <= set(rule["annotations"])
            assert rule["expr"].count("(") == rule["expr"].count(")")
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    assert {
        "StalwartBreakerOpen",
        "StalwartRegistryCritical",
        "StalwartDeadLetters",
        "StalwartTransactionRollbackRate",
        "StalwartTimeoutRate",
    } <= set(names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH")
def test_promtool_accepts_the_rules() -> None:
    """``promtool check rules`` accepts the file."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_use_only_emitted_names_and_labels(emitted: dict[str, set[str]]) -> None:
    """Every metric, matcher label and grouping label of the rules is one the exporter
    emits."""
    problems = {r["alert"]: check_references(r["expr"], emitted) for r in rule_list()}
    assert {alert: found for alert, found in problems.items() if found} == {}


def critical(expr: str, samples: dict[str, float]) -> bool:
    """Evaluate the critical-health rule on one target's state samples (by state)."""
    states = re.search(r'state=~"([^"]+)"', expr)
    assert states is not None
    rejecting = sum(samples[s] for s in states.group(1).split("|"))
    factor = re.search(r">\s*([0-9.]+)\s*\*", expr)
    assert factor is not None
    return rejecting > float(factor.group(1)) * sum(samples.values())


def test_the_critical_rule_counts_the_states_health_counts_as_open() -> None:
    """The rule's open states are those `BreakerRegistry.health` counts as open."""
    [rule] = [r for r in rule_list() if r["alert"] == "StalwartRegistryCritical"]
    states = re.search(r'state=~"([^"]+)"', rule["expr"])
    assert states is not None
    open_states = {state.value for state in _OPEN_STATES}
    assert set(states.group(1).split("|")) == open_states


@settings(max_examples=30)
@given(st.lists(st.sampled_from(["closed", "open", "forced_open", "disabled"]), max_size=8))
def test_the_critical_rule_agrees_with_registry_health(wanted: list[str]) -> None:
    """On a real scrape, the critical-health rule fires exactly when the registry's
    health says "critical"."""
    [rule] = [r for r in rule_list() if r["alert"] == "StalwartRegistryCritical"]
    breakers = stalwart.BreakerRegistry(clock=ManualClock(), log=False, failure_threshold=1)
    collectors = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=collectors)
    try:
        for i, state in enumerate(wanted):
            breaker = breakers.get(f"b{i}")
            if state == "open":
                with pytest.raises(ConnectionError):
                    breaker.call(fail)
            elif state == "forced_open":
                breaker.force_open()
            elif state == "disabled":
                breaker.disable()
        text = generate_latest(collectors).decode()
    finally:
        inst.uninstall()
    by_state = dict.fromkeys(_metrics.BREAKER_STATES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "stalwart_breaker_state":
                by_state[sample.labels["state"]] += sample.value
    assert critical(rule["expr"], by_state) == (breakers.health().status == "critical")


# -- the dashboard -----------------------------------------------------------------------


def test_the_dashboard_is_grafana_json_with_unique_panels() -> None:
    """A dashboard with a title, a Prometheus data-source variable, and panels with
    unique ids, a grid position, and a query in each non-row panel."""
    data = json.loads(DASHBOARD.read_text())
    assert data["title"]
    assert data["uid"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in data["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"]
            assert all(t["expr"] for t in panel["targets"])
            assert panel["datasource"]["uid"] == "${datasource}"


def test_the_dashboard_uses_only_emitted_names_and_labels(emitted: dict[str, set[str]]) -> None:
    """Every metric, matcher label and grouping label of the dashboard is emitted."""
    problems = {expr: check_references(expr, emitted) for expr in dashboard_exprs()}
    assert {expr: found for expr, found in problems.items() if found} == {}


def test_the_dashboard_shows_every_family(emitted: dict[str, set[str]]) -> None:
    """Each family the exporter emits has a panel."""
    shown = set().union(*(references(expr)[0] for expr in dashboard_exprs()))
    assert set(emitted) - shown == set()


@pytest.fixture(autouse=True)
def _no_leftover_subscribers() -> Iterator[None]:
    """Each test uninstalls what it installs: no subscriber is left behind."""
    from stalwart.events import _subscriptions

    before = len(_subscriptions)
    yield
    assert len(_subscriptions) == before
