"""The metric families stalwart exports, as data shared by every metrics exporter.

`stalwart.contrib.prometheus` and `stalwart.contrib.opentelemetry` export the same
families under the names written here, so a dashboard or an alert rule reads the same
meaning from either. Each `Family` says where its value comes from:

* ``"scrape"``: a count the breakers, bulkheads, retry budgets or hedgers already
  keep, read from the breaker registry or the instances shared by name
  (`stalwart._named.Named`) when the metrics are collected (never per call);
* ``"event"``: counted from a rare event (a retry, a state change, a timeout, a dead
  letter, a rollback) delivered to a process-wide subscriber
  (`stalwart.events.subscribe`);
* ``"call"``: measured on every call (the opt-in duration histogram only).

No semantic convention exists yet for circuit breakers or retries in OpenTelemetry;
these names follow its general rules (dotted, lower case, unit in ``unit`` and not in
the name, ``.count`` avoided for counters) and Prometheus' (snake case, ``_total`` on
counters, added by the client library, base units in the name: ``_seconds``, ``_ratio``).
This module imports no framework.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping

__all__ = [
    "BREAKER_STATES",
    "DEFAULT_MAX_LABEL_VALUES",
    "FAMILIES",
    "NAMED_FAMILIES",
    "NAMED_KINDS",
    "OTHER",
    "REJECTION_LABELS",
    "REJECTION_REASONS",
    "Family",
    "LabelCap",
    "by_key",
    "named_samples",
]

OTHER = "other"
"""The label value every name past an exporter's ``max_label_values`` is counted under."""

DEFAULT_MAX_LABEL_VALUES = 1000
"""How many values of one label (breaker names, retry names) an exporter keeps apart."""

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
"""Every state of `stalwart.breaker.State`: ``breaker_state`` has one series per state."""


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family, as both exporters name and describe it.

    Attributes:
        key: The family's key: what users name in an exporter's ``names`` mapping.
        prometheus: The Prometheus family name after the prefix (``"stalwart_"`` by
            default). Counters are exposed with ``_total`` appended.
        otel: The OpenTelemetry instrument name after the prefix (``"stalwart."``).
        kind: ``"gauge"``, ``"counter"`` or ``"histogram"``.
        unit: The UCUM unit for OpenTelemetry (``"1"`` for plain counts and ratios,
            ``"s"`` for seconds, ``"{call}"`` style annotations for counts of things).
        labels: The label (attribute) names, in order.
        help: One line saying what the value means.
        source: ``"scrape"``, ``"event"`` or ``"call"`` (see the module).
    """

    key: str
    prometheus: str
    otel: str
    kind: Literal["gauge", "counter", "histogram"]
    unit: str
    labels: tuple[str, ...]
    help: str
    source: Literal["scrape", "event", "call"]


FAMILIES: tuple[Family, ...] = (
    # Read from the registry at collection time.
    Family(
        "breaker_state",
        "breaker_state",
        "breaker.state",
        "gauge",
        "1",
        ("breaker", "state"),
        "1 for the circuit breaker's current state, 0 for each other state.",
        "scrape",
    ),
    Family(
        "breaker_calls",
        "breaker_calls",
        "breaker.calls",
        "counter",
        "{call}",
        ("breaker", "outcome"),
        "Calls a circuit breaker let through, by outcome (success, failure).",
        "scrape",
    ),
    Family(
        "breaker_rejections",
        "breaker_rejected_calls",
        "breaker.rejected_calls",
        "counter",
        "{call}",
        ("breaker",),
        "Calls a circuit breaker rejected without running them.",
        "scrape",
    ),
    Family(
        "breaker_slow_calls",
        "breaker_slow_calls",
        "breaker.slow_calls",
        "counter",
        "{call}",
        ("breaker",),
        "Calls slower than the breaker's slow_call_duration.",
        "scrape",
    ),
    Family(
        "breaker_failure_rate",
        "breaker_failure_rate_ratio",
        "breaker.failure_rate",
        "gauge",
        "1",
        ("breaker",),
        "Failed fraction (0-1) of the calls in the breaker's window; only for breakers"
        " with a failure_rate or slow_call_rate.",
        "scrape",
    ),
    # Read from the bulkheads, retry budgets and hedgers shared by name, at collection time.
    Family(
        "bulkhead_in_use",
        "bulkhead_in_use",
        "bulkhead.in_use",
        "gauge",
        "{call}",
        ("bulkhead",),
        "Slots of the bulkhead held now (calls running).",
        "scrape",
    ),
    Family(
        "bulkhead_queued",
        "bulkhead_queued",
        "bulkhead.queued",
        "gauge",
        "{call}",
        ("bulkhead",),
        "Calls waiting now for a slot of the bulkhead.",
        "scrape",
    ),
    Family(
        "bulkhead_max_concurrent",
        "bulkhead_max_concurrent",
        "bulkhead.max_concurrent",
        "gauge",
        "{call}",
        ("bulkhead",),
        "The bulkhead's limit on concurrent calls.",
        "scrape",
    ),
    Family(
        "bulkhead_admitted",
        "bulkhead_admitted_calls",
        "bulkhead.admitted_calls",
        "counter",
        "{call}",
        ("bulkhead",),
        "Calls the bulkhead let in, at once or after waiting.",
        "scrape",
    ),
    Family(
        "bulkhead_rejections",
        "bulkhead_rejected_calls",
        "bulkhead.rejected_calls",
        "counter",
        "{call}",
        ("bulkhead", "reason"),
        "Calls the bulkhead refused, by reason (queue_full, timed_out).",
        "scrape",
    ),
    Family(
        "retry_budget_deposits",
        "retry_budget_deposits",
        "retry_budget.deposits",
        "counter",
        "{deposit}",
        ("budget",),
        "First attempts deposited in the retry budget.",
        "scrape",
    ),
    Family(
        "retry_budget_allowed",
        "retry_budget_allowed_retries",
        "retry_budget.allowed_retries",
        "counter",
        "{retry}",
        ("budget",),
        "Retries the retry budget allowed.",
        "scrape",
    ),
    Family(
        "retry_budget_refused",
        "retry_budget_refused_retries",
        "retry_budget.refused_retries",
        "counter",
        "{retry}",
        ("budget",),
        "Retries the retry budget refused (the call gave up instead).",
        "scrape",
    ),
    Family(
        "retry_budget_balance",
        "retry_budget_balance",
        "retry_budget.balance",
        "gauge",
        "{retry}",
        ("budget",),
        "Retries the retry budget would allow now (below 1: it refuses).",
        "scrape",
    ),
    Family(
        "hedger_calls",
        "hedger_calls",
        "hedger.calls",
        "counter",
        "{call}",
        ("hedger",),
        "Calls through the hedger that ended (returned, raised or were cancelled).",
        "scrape",
    ),
    Family(
        "hedger_hedges",
        "hedger_hedges",
        "hedger.hedges",
        "counter",
        "{hedge}",
        ("hedger",),
        "Hedges the hedger started: attempts beyond the first.",
        "scrape",
    ),
    Family(
        "hedger_wins",
        "hedger_hedge_wins",
        "hedger.hedge_wins",
        "counter",
        "{hedge}",
        ("hedger",),
        "Calls whose result came from a hedged attempt, not the first.",
        "scrape",
    ),
    Family(
        "hedger_delay",
        "hedger_delay_seconds",
        "hedger.delay",
        "gauge",
        "s",
        ("hedger",),
        "How long the hedger's next call waits before its first hedge.",
        "scrape",
    ),
    # Counted from rare events.
    Family(
        "breaker_transitions",
        "breaker_transitions",
        "breaker.transitions",
        "counter",
        "{transition}",
        ("breaker", "from_state", "to_state"),
        "Circuit breaker state changes, by state left and state entered.",
        "event",
    ),
    Family(
        "breaker_opens",
        "breaker_opens",
        "breaker.opens",
        "counter",
        "{open}",
        ("breaker",),
        "Times a circuit breaker opened (tripped or reopened after a failed probe).",
        "event",
    ),
    Family(
        "retries",
        "retries",
        "retries",
        "counter",
        "{retry}",
        ("name",),
        "Failed attempts that were retried, by retried function or block name.",
        "event",
    ),
    Family(
        "retry_give_ups",
        "retry_give_ups",
        "retry.give_ups",
        "counter",
        "{give_up}",
        ("name",),
        "Retried calls that ended without success, by name.",
        "event",
    ),
    Family(
        "timeouts",
        "timeouts",
        "timeouts",
        "counter",
        "{timeout}",
        ("name", "where"),
        "Timeouts and deadlines that expired, by name and where (timeout, deadline).",
        "event",
    ),
    Family(
        "dead_letters",
        "dead_lettered_messages",
        "dead_lettered_messages",
        "counter",
        "{message}",
        ("reason",),
        "Messages sent to the dead-letter queue, by reason.",
        "event",
    ),
    Family(
        "transaction_rollbacks",
        "transaction_rollbacks",
        "transaction.rollbacks",
        "counter",
        "{rollback}",
        ("reason",),
        "Database transaction attempts rolled back, by reason.",
        "event",
    ),
    # Measured on every call: opt-in.
    Family(
        "breaker_call_duration",
        "breaker_call_duration_seconds",
        "breaker.call.duration",
        "histogram",
        "s",
        ("breaker",),
        "Duration of calls through a circuit breaker (opt-in: costs a clock read and a"
        " histogram update per call).",
        "call",
    ),
)
"""Every family, in the order exporters list them."""

_BY_KEY = {family.key: family for family in FAMILIES}


def by_key(key: str) -> Family:
    """Return the family named `key`.

    Raises:
        KeyError: No family has that key; the message lists the keys.
    """
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no metric family {key!r}; the families are {sorted(_BY_KEY)}") from None


class LabelCap:
    """Hands out label values as given until `limit` of them are taken, then `OTHER`.

    Names of breakers and retries may come from outside (one HTTP breaker per host):
    past the limit every new name shares the value ``"other"``, and a warning is
    logged once, on `logger`.

    Both exporters follow this one rule, so they give a breaker the same label value.
    """

    __slots__ = ("label", "limit", "lock", "logger", "seen", "warned")

    def __init__(self, label: str, limit: int, logger: logging.Logger) -> None:
        self.label = label
        self.limit = limit
        self.logger = logger
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.warned = False

    def __call__(self, value: str | None) -> str:
        value = "" if value is None else value
        if value in self.seen:
            return value
        with self.lock:
            if value in self.seen:
                return value
            if len(self.seen) < self.limit:
                self.seen.add(value)
                return value
            if not self.warned:
                self.warned = True
                self.logger.warning(
                    "stalwart metrics: more than %d values of label %r; the series of %r"
                    " and every later one are counted under %s=%r",
                    self.limit,
                    self.label,
                    value,
                    self.label,
                    OTHER,
                )
        return OTHER


# -- the strategies shared by name -------------------------------------------------------

NAMED_KINDS: Final = (
    ("bulkhead", "stalwart.bulkhead", "bulkheads"),
    ("budget", "stalwart.budget", "budgets"),
    ("hedger", "stalwart.hedge", "hedgers"),
)
"""The kinds shared by name that are exported: the label naming an instance, the module
holding the kind's `stalwart._named.Named`, and that attribute's name."""

REJECTION_LABELS: Final = {"queue full": "queue_full", "timed out": "timed_out"}
"""A bulkhead refusal's reason (`stalwart.BulkheadFull.reason`) as the ``reason`` label
of ``bulkhead_rejections`` spells it."""

REJECTION_REASONS: Final = (
    ("queue_full", "rejected_queue_full"),
    ("timed_out", "rejected_timed_out"),
)
"""The ``reason`` label values of ``bulkhead_rejections``, each with the stats field
counting it (`stalwart.BulkheadStats`)."""

Sample = tuple[tuple[str, ...], float]
"""One sample of a family: its label values in the family's order, and its value."""

_READS: Final[dict[str, tuple[str, Callable[[Mapping[str, Any]], list[Sample]]]]] = {
    "bulkhead_in_use": ("bulkhead", lambda s: [((), s["in_use"])]),
    "bulkhead_queued": ("bulkhead", lambda s: [((), s["queued"])]),
    "bulkhead_max_concurrent": ("bulkhead", lambda s: [((), s["max_concurrent"])]),
    "bulkhead_admitted": ("bulkhead", lambda s: [((), s["admitted"])]),
    "bulkhead_rejections": (
        "bulkhead",
        lambda s: [((reason,), s[field]) for reason, field in REJECTION_REASONS],
    ),
    "retry_budget_deposits": ("budget", lambda s: [((), s["deposits"])]),
    "retry_budget_allowed": ("budget", lambda s: [((), s["retries_allowed"])]),
    "retry_budget_refused": ("budget", lambda s: [((), s["retries_refused"])]),
    "retry_budget_balance": ("budget", lambda s: [((), s["balance"])]),
    "hedger_calls": ("hedger", lambda s: [((), s["calls"])]),
    "hedger_hedges": ("hedger", lambda s: [((), s["hedges"])]),
    "hedger_wins": ("hedger", lambda s: [((), s["hedge_wins"])]),
    "hedger_delay": ("hedger", lambda s: [((), s["delay"])]),
}
"""How each family of a kind shared by name reads one instance's `stats_dict()`."""

NAMED_FAMILIES: Final = tuple(_READS)
"""The keys of the families read from the instances shared by name."""

_NOT_SUMMED: Final = frozenset({"hedger_delay", "retry_budget_balance"})
"""Families whose values do not add up: left out for the instances counted as `OTHER`."""


def named_samples(caps: Mapping[str, LabelCap], log: logging.Logger) -> dict[str, list[Sample]]:
    """Read every bulkhead, retry budget and hedger now, as samples of their families.

    Each kind's `stalwart._named.Named` is read once (`Named.stats`), so the families
    of one instance agree. A kind whose module nobody imported has no instance and
    is not imported here. The instance name goes through ``caps[label]`` (label from
    `NAMED_KINDS`): instances past the cap are summed under `OTHER`, except in the
    families whose values do not add up (a delay, a balance), which leave them out.
    A kind whose stats cannot be read is logged on `log` and left out.

    Returns:
        Every key of `NAMED_FAMILIES` with its samples (label values in the family's
        label order, the instance's label first).
    """
    found: dict[str, list[Sample]] = {key: [] for key in _READS}
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    for label, module_name, attribute in NAMED_KINDS:
        named = getattr(sys.modules.get(module_name), attribute, None)
        if named is None or not len(named):
            continue
        try:
            stats[label] = named.stats()
        except Exception:  # one kind failing leaves the others (and the breakers) exported
            log.exception("stalwart metrics: reading the %s failed", named.kind)
    for key, (label, read) in _READS.items():
        totals: dict[tuple[str, ...], float] = {}
        for name, instance in stats.get(label, {}).items():
            value = caps[label](name)
            if value == OTHER and key in _NOT_SUMMED:
                continue
            for rest, sample in read(instance):
                labels = (value, *rest)
                totals[labels] = totals.get(labels, 0) + sample
        found[key] = list(totals.items())
    return found
