"""Prometheus metrics for what stalwart's strategies do.

Every breaker, retry, bulkhead, retry budget, hedger, timeout, dead letter and
rollback.

.. code-block:: python

    import stalwart.contrib.prometheus

    stalwart.contrib.prometheus.instrument()  # then serve prometheus_client as usual

Install with the ``[prometheus]`` extra. One call covers the breakers of a
`stalwart.BreakerRegistry` (present and future) and every rare event of the process:

* the counts the breakers keep already (state, calls by outcome, rejections, slow
  calls, failure rate) are read from the registry when Prometheus scrapes, by a
  custom collector: a call through a breaker pays nothing for them; so are those of
  every bulkhead, retry budget and hedger shared by name (`stalwart._named.Named`);
* transitions, opens, retries, give-ups, timeouts, dead-lettered messages and
  transaction rollbacks are counted by a subscriber (`stalwart.events.subscribe`),
  which runs only when such an event happens.

The families and their names are listed in `stalwart.contrib._metrics` and in the
observability docs. An exporter that fails is logged and never breaks a call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .. import _validate
from ..breaker.registry import BreakerRegistry
from ..breaker.registry import registry as default_registry
from ..events import subscribe
from ._metrics import (
    BREAKER_STATES,
    DEFAULT_MAX_LABEL_VALUES,
    FAMILIES,
    NAMED_FAMILIES,
    NAMED_KINDS,
    OTHER,
    REJECTION_LABELS,
    Family,
    LabelCap,
    by_key,
    named_samples,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from prometheus_client.metrics_core import Metric

    from ..breaker.circuit import BreakerStats
    from ..events import BreakerEvent, BulkheadEvent, RetryDetails, StateChange, TimeoutEvent

__all__ = ["DEFAULT_MAX_LABEL_VALUES", "DEFAULT_PREFIX", "Instrumentation", "instrument"]

logger = logging.getLogger("stalwart.prometheus")

DEFAULT_PREFIX = "stalwart_"
"""What family names start with, unless mapped to a name of the user's own."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def _multiprocess() -> bool:
    """Whether prometheus_client writes its values to files for several processes."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Names:
    """The exposed name of each family: the user's own, or the prefix and ours."""

    def __init__(self, prefix: str, names: Mapping[str, str] | None) -> None:
        if not isinstance(prefix, str) or (prefix and not _NAME.match(prefix)):
            raise ValueError(
                f"prefix must be empty or a valid Prometheus name start, got {prefix!r}"
            )
        keys = {family.key for family in FAMILIES}
        chosen: dict[str, str] = {}
        for key, name in dict(names or {}).items():
            if key not in keys:
                raise ValueError(
                    f"names: {key!r} is not a metric family; the families are {sorted(keys)}"
                )
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"names[{key!r}] must be a valid Prometheus name, got {name!r}")
            chosen[key] = name
        self.prefix = prefix
        self.chosen = chosen

    def __call__(self, family: Family) -> str:
        """The family's name as prometheus_client takes it (counters without ``_total``)."""
        name = self.chosen.get(family.key, self.prefix + family.prometheus)
        if family.kind == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        return name


class _BreakerCollector(Collector):
    """Reads the registry's breakers when Prometheus scrapes."""

    def __init__(self, registry: BreakerRegistry, names: _Names, cap: LabelCap) -> None:
        self.registry = registry
        self.names = names
        self.cap = cap
        self.families = {
            f.key: f for f in FAMILIES if f.source == "scrape" and f.key not in NAMED_FAMILIES
        }

    def describe(self) -> list[Metric]:
        """Nothing: the families are collected only when scraped (not at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the breaker families, read now from every breaker of the registry."""
        try:
            stats = [breaker.stats() for breaker in self.registry]
        except Exception:  # a storage that fails (Redis down) must not fail the scrape
            logger.exception("stalwart metrics: reading the breakers failed")
            return
        yield from self._families(stats)

    def _families(self, stats: list[BreakerStats]) -> Iterator[Metric]:
        f, name = self.families, self.names
        state = GaugeMetricFamily(
            name(f["breaker_state"]), f["breaker_state"].help, labels=["breaker", "state"]
        )
        calls = CounterMetricFamily(
            name(f["breaker_calls"]), f["breaker_calls"].help, labels=["breaker", "outcome"]
        )
        rejected = CounterMetricFamily(
            name(f["breaker_rejections"]), f["breaker_rejections"].help, labels=["breaker"]
        )
        slow = CounterMetricFamily(
            name(f["breaker_slow_calls"]), f["breaker_slow_calls"].help, labels=["breaker"]
        )
        rate = GaugeMetricFamily(
            name(f["breaker_failure_rate"]), f["breaker_failure_rate"].help, labels=["breaker"]
        )
        # Past the cap, breakers are summed under OTHER: states count breakers then.
        totals: dict[str, list[float]] = {}
        for s in stats:
            label = self.cap(s.name)
            row = totals.setdefault(label, [0.0] * (len(BREAKER_STATES) + 4))
            row[BREAKER_STATES.index(s.state)] += 1
            base = len(BREAKER_STATES)
            row[base] += s.successes
            row[base + 1] += s.failures
            row[base + 2] += s.rejected
            row[base + 3] += s.slow_calls
            if s.failure_rate is not None and label != OTHER:
                rate.add_metric([label], s.failure_rate)
        base = len(BREAKER_STATES)
        for label, row in totals.items():
            for i, st in enumerate(BREAKER_STATES):
                state.add_metric([label, st], row[i])
            calls.add_metric([label, "success"], row[base])
            calls.add_metric([label, "failure"], row[base + 1])
            rejected.add_metric([label], row[base + 2])
            slow.add_metric([label], row[base + 3])
        yield from (state, calls, rejected, slow, rate)


class _NamedCollector(Collector):
    """Reads the bulkheads, retry budgets and hedgers shared by name when Prometheus scrapes."""

    def __init__(self, names: _Names, caps: Mapping[str, LabelCap]) -> None:
        self.names = names
        self.caps = caps
        self.families = [by_key(key) for key in NAMED_FAMILIES]

    def describe(self) -> list[Metric]:
        """Nothing: the families are collected only when scraped (not at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the families of every kind shared by name, read now."""
        samples = named_samples(self.caps, logger)
        for family in self.families:
            kind = GaugeMetricFamily if family.kind == "gauge" else CounterMetricFamily
            metric = kind(self.names(family), family.help, labels=list(family.labels))
            for labels, value in samples[family.key]:
                metric.add_metric(list(labels), value)
            yield metric


class _Counting:
    """The subscriber: counts each rare event in its family."""

    def __init__(
        self,
        registry: BreakerRegistry,
        names: _Names,
        caps: dict[str, LabelCap],
        *,
        states: bool,
    ) -> None:
        self.registry = registry
        self.caps = caps
        made: dict[str, Any] = {}
        for family in FAMILIES:
            if family.source != "event":
                continue
            made[family.key] = Counter(
                names(family),
                family.help,
                list(family.labels),
                registry=None,
            )
        self.metrics = made
        self.transitions = made["breaker_transitions"]
        self.opens = made["breaker_opens"]
        self.retries = made["retries"]
        self.give_ups = made["retry_give_ups"]
        self.timeouts = made["timeouts"]
        self.dead_letters = made["dead_letters"]
        self.rollbacks = made["transaction_rollbacks"]
        # Multiprocess mode: the state gauge is written on each change instead of read
        # at scrape time (prometheus_client allows no collector there), and bulkhead
        # rejections are counted from their events.
        self.state: Gauge | None = None
        self.bulkhead_rejections: Counter | None = None
        if states:
            family = by_key("bulkhead_rejections")
            self.bulkhead_rejections = made[family.key] = Counter(
                names(family), family.help, list(family.labels), registry=None
            )
            family = by_key("breaker_state")
            self.state = Gauge(
                names(family),
                family.help + " Summed over the live processes.",
                list(family.labels),
                registry=None,
                multiprocess_mode="livesum",
            )

    def set_states(self) -> None:
        """Set the state gauge for every breaker of the registry (multiprocess mode)."""
        for breaker in self.registry:
            self._set_state(breaker.name, breaker.state.value)

    def _set_state(self, name: str, current: str) -> None:
        assert self.state is not None  # noqa: S101 - only called with the gauge made
        label = self.caps["breaker"](name)
        if label == OTHER:
            return
        for st in BREAKER_STATES:
            self.state.labels(label, st).set(1 if st == current else 0)

    def on_state_change(self, change: StateChange) -> None:
        """Count a transition (and an open); in multiprocess mode, set the state."""
        if change.name not in self.registry:
            return
        label = self.caps["breaker"](change.name)
        self.transitions.labels(label, change.old, change.new).inc()
        if change.new == "open":
            self.opens.labels(label).inc()
        if self.state is not None:
            self._set_state(change.name, change.new)

    def on_retry(self, details: RetryDetails) -> None:
        """Count a retry."""
        self.retries.labels(self.caps["name"](details.name)).inc()

    def on_give_up(self, details: RetryDetails) -> None:
        """Count a give-up."""
        self.give_ups.labels(self.caps["name"](details.name)).inc()

    def on_timeout(self, event: TimeoutEvent) -> None:
        """Count a timeout or deadline that passed."""
        self.timeouts.labels(self.caps["timeout"](event.name), event.where).inc()

    def on_bulkhead_full(self, event: BulkheadEvent) -> None:
        """Count a bulkhead's refusal (multiprocess mode; else read at scrape time)."""
        if self.bulkhead_rejections is not None:
            self.bulkhead_rejections.labels(
                self.caps["bulkhead"](event.name), REJECTION_LABELS.get(event.reason, event.reason)
            ).inc()

    def on_dead_letter(self, event: Any) -> None:
        """Count a dead-lettered message by reason."""
        self.dead_letters.labels(event.reason).inc()

    def on_rollback(self, event: Any) -> None:
        """Count a rolled-back transaction attempt by reason."""
        self.rollbacks.labels(event.reason).inc()


class _Durations:
    """A breaker listener observing call durations (opt-in: it runs on every call)."""

    def __init__(self, histogram: Histogram, cap: LabelCap) -> None:
        self.histogram = histogram
        self.cap = cap

    def on_success(self, event: BreakerEvent) -> None:
        """Observe a successful call's duration, when the breaker measured it."""
        if event.duration is not None:
            self.histogram.labels(self.cap(event.name)).observe(event.duration)

    def on_failure(self, event: BreakerEvent) -> None:
        """Observe a failed call's duration, when the breaker measured it."""
        if event.duration is not None:
            self.histogram.labels(self.cap(event.name)).observe(event.duration)


class Instrumentation:
    """What `instrument` installed; `uninstall` takes it all away again.

    Attributes:
        registry: The breaker registry read at scrape time.
        collector_registry: The prometheus_client registry the families are in.
        multiprocess: Whether prometheus_client's multiprocess mode was on.
        durations: With ``durations=True``, a breaker listener to give the breakers
            whose call durations are wanted (``listeners=[inst.durations]``); else
            ``None``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        registry: BreakerRegistry,
        collector_registry: CollectorRegistry,
        *,
        multiprocess: bool,
        durations: _Durations | None,
        registered: list[Any],
        unsubscribe: Callable[[], None],
    ) -> None:
        self.registry = registry
        self.collector_registry = collector_registry
        self.multiprocess = multiprocess
        self.durations = durations
        self._registered = registered
        self._unsubscribe = unsubscribe
        self._lock = threading.Lock()

    def uninstall(self) -> None:
        """Stop counting and remove every family from the collector registry (idempotent)."""
        with self._lock:
            self._unsubscribe()
            registered, self._registered = self._registered, []
            for collector in registered:
                with contextlib.suppress(KeyError):  # already removed by someone else
                    self.collector_registry.unregister(collector)


def instrument(
    registry: BreakerRegistry | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    collector_registry: CollectorRegistry = REGISTRY,
    names: Mapping[str, str] | None = None,
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    durations: bool = False,
) -> Instrumentation:
    """Export stalwart's metrics through prometheus_client.

    Counts the breakers keep are read from `registry` at each scrape, and those of
    every bulkhead, retry budget and hedger shared by name with them; rare events of
    the whole process (retries of every policy, HTTP transport and resilient task,
    breaker transitions, timeouts, dead letters, rollbacks) are counted by a
    subscriber. Nothing runs on a successful call.

    ==========================  ===============================================
    Usage                       Effect
    ==========================  ===============================================
    ``instrument()``            The default registry, names ``stalwart_...``
    ``instrument(registry=r)``  The breakers of `r` (events: the whole process)
    ``prefix="app_"``           ``app_breaker_state``, ``app_retries_total``, ...
    ``names={...}``             Some families under names of your own
    ``durations=True``          Also a call-duration histogram (per call: opt-in)
    ==========================  ===============================================

    Args:
        registry: The `stalwart.BreakerRegistry` whose breakers are exported
            (`stalwart.registry` by default). Transitions of breakers outside it are
            not counted.
        prefix: What family names start with.
        collector_registry: The prometheus_client registry to register in.
        names: Family key to a full name of your own, e.g.
            ``{"breaker_opens": "llm_circuit_breaker_opens_total"}`` (a counter's
            ``_total`` may be given or left out). The keys are in
            `stalwart.contrib._metrics.FAMILIES`.
        max_label_values: How many distinct breaker names get series of their own;
            retry names and timeout names have a limit of their own as large. Later
            names are counted under the label value ``"other"``, and a warning is
            logged once per label.
        durations: Also make the ``breaker_call_duration`` histogram. It needs a
            listener on every call, so it is not automatic: pass
            ``instrumentation.durations`` in the ``listeners`` of each breaker to time.

    Returns:
        An `Instrumentation`; call its ``uninstall()`` to stop.

    Raises:
        ValueError: `prefix` or a name is not a valid Prometheus name, a key of
            `names` is no family, `max_label_values` is below 1, or the families are
            registered already (prometheus_client refuses duplicates).
        TypeError: `registry` is not a `BreakerRegistry`.

    In prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set;
    gunicorn, Celery prefork), collectors are not scraped: event counters are summed
    over the processes through prometheus_client's files, and the breaker state is a
    ``livesum`` gauge set on each state change (the number of live processes where the
    breaker is in each state). The other scrape-time families (calls, rejections, slow
    calls, failure rate) are not exported in that mode.

    .. versionadded:: 0.1.0
    """
    if registry is None:
        registry = default_registry
    elif not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a stalwart BreakerRegistry, got {registry!r}")
    _validate.count("max_label_values", max_label_values)
    naming = _Names(prefix, names)
    caps = {
        "breaker": LabelCap("breaker", max_label_values, logger),
        "name": LabelCap("name", max_label_values, logger),
        "timeout": LabelCap(
            "name", max_label_values, logger
        ),  # timeouts' names, apart from retries'
        **{label: LabelCap(label, max_label_values, logger) for label, _, _ in NAMED_KINDS},
    }
    multiprocess = _multiprocess()
    counting = _Counting(registry, naming, caps, states=multiprocess)
    wanted: list[Any] = [*counting.metrics.values()]
    if counting.state is not None:
        wanted.append(counting.state)
    else:
        wanted.append(_BreakerCollector(registry, naming, caps["breaker"]))
        wanted.append(_NamedCollector(naming, caps))
    timing = None
    if durations:
        family = by_key("breaker_call_duration")
        histogram = Histogram(naming(family), family.help, list(family.labels), registry=None)
        wanted.append(histogram)
        timing = _Durations(histogram, caps["breaker"])
    registered: list[Any] = []
    try:
        for collector in wanted:
            collector_registry.register(collector)
            registered.append(collector)
    except ValueError as exc:  # a name taken: undo what was registered
        for done in registered:
            collector_registry.unregister(done)
        raise ValueError(f"{exc}; is stalwart instrumented in this registry already?") from None
    if counting.state is not None:
        counting.set_states()
    return Instrumentation(
        registry,
        collector_registry,
        multiprocess=multiprocess,
        durations=timing,
        registered=registered,
        unsubscribe=subscribe(counting),
    )
