"""The metric families stalwart exports, as data shared by every metrics exporter.

`stalwart.contrib.prometheus` and `stalwart.contrib.opentelemetry` export the same
families under the names written here, so a dashboard or an alert rule reads the same
meaning from either. Each `Family` says where its value comes from:

* ``"scrape"``: a count the breakers already keep, read from the registry when the
  metrics are collected (never per call);
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

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import logging

__all__ = [
    "BREAKER_STATES",
    "DEFAULT_MAX_LABEL_VALUES",
    "FAMILIES",
    "OTHER",
    "Family",
    "LabelCap",
    "by_key",
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
