"""OpenTelemetry metrics and span events for what stalwart's strategies do.

Breakers, retries, bulkheads, retry budgets, hedgers, timeouts, dead letters and
rollbacks.

.. code-block:: python

    from stalwart.contrib.opentelemetry import instrument

    instrumentation = instrument()  # the default registry, the global meter provider

One call exports, through the OpenTelemetry metrics API, the families that
`stalwart.contrib.prometheus` exports (the same meanings, under OpenTelemetry's names):

- what the breakers already count (state, calls by outcome, rejections, slow calls,
  failure rate), and every bulkhead, retry budget and hedger shared by name, through
  **observable instruments** whose callbacks read them when the metrics are
  collected: a call that succeeds pays nothing;
- the rare events (state changes, openings, retries, give-ups, timeouts, dead
  letters, rollbacks), through **counters** fed by one process-wide subscriber
  (`stalwart.events.subscribe`): every breaker, retry, timeout, task and transaction,
  present and future, without being passed to each;
- **span events** on the current span for retries, give-ups, breaker rejections,
  breaker state changes and bulkhead rejections, when that span is recording.

With ``opentelemetry-api`` alone (no SDK configured) nothing breaks and next to
nothing is paid: the instruments are the API's no-op proxies (they start recording if
an SDK meter provider is set later), no span records, and calls that succeed never
reach this module. Install with ``pip install "stalwart[otel]"``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

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
    Family,
    LabelCap,
    named_samples,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from types import TracebackType

    from opentelemetry.metrics import (
        CallbackOptions,
        Counter,
        Histogram,
        Meter,
        MeterProvider,
        Observation,
    )
    from opentelemetry.util.types import AttributeValue
    from typing_extensions import Self

    from ..breaker.circuit import BreakerStats
    from ..events import BreakerEvent, BulkheadEvent, RetryDetails, StateChange, TimeoutEvent

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_MAX_LABEL_VALUES",
    "DEFAULT_PREFIX",
    "SPAN_EVENTS",
    "Instrumentation",
    "attributes_of",
    "instrument",
]

logger = logging.getLogger("stalwart.opentelemetry")
"""The logger this module writes to."""

DEFAULT_PREFIX = "stalwart."
"""What `instrument` puts before every instrument name by default."""

"""How many breaker names (and, apart, retry and timeout names) get attributes of their
own; later ones are counted under ``"other"``."""

ATTRIBUTES: Mapping[str, str] = {
    "breaker": "stalwart.breaker.name",
    "state": "stalwart.breaker.state",
    "outcome": "stalwart.breaker.outcome",
    "from_state": "stalwart.breaker.from_state",
    "to_state": "stalwart.breaker.to_state",
    "where": "stalwart.timeout.where",
    "bulkhead": "stalwart.bulkhead.name",
    "budget": "stalwart.retry_budget.name",
    "hedger": "stalwart.hedger.name",
}
"""The OpenTelemetry attribute of each family label that means one thing everywhere.

``name`` and ``reason`` depend on the family: see `attributes_of`. Attribute names do
not take the instrument prefix: they name stalwart's concepts wherever the instruments
are.
"""

_FAMILY_ATTRIBUTES: dict[str, dict[str, str]] = {
    "retries": {"name": "stalwart.retry.name"},
    "retry_give_ups": {"name": "stalwart.retry.name"},
    "timeouts": {"name": "stalwart.timeout.name"},
    "dead_letters": {"reason": "stalwart.dead_letter.reason"},
    "transaction_rollbacks": {"reason": "stalwart.rollback.reason"},
    "bulkhead_rejections": {"reason": "stalwart.bulkhead.reason"},
}

SPAN_EVENTS = (
    "stalwart.retry",
    "stalwart.retry.give_up",
    "stalwart.breaker.rejected",
    "stalwart.breaker.state_change",
    "stalwart.bulkhead.rejected",
)
"""The names of the span events added to the current span."""

_BY_KEY = {family.key: family for family in FAMILIES}
_SCRAPED = tuple(family for family in FAMILIES if family.source == "scrape")


def attributes_of(family: Family) -> tuple[str, ...]:
    """Return the OpenTelemetry attribute names of `family`'s labels, in their order.

    .. versionadded:: 0.1.0
    """
    own = _FAMILY_ATTRIBUTES.get(family.key, {})
    return tuple(own.get(label) or ATTRIBUTES[label] for label in family.labels)


# -- instruments, shared by every instrumentation of one meter provider ------------------


class _Instruments:
    """One meter's instruments, and the instrumentations that feed them.

    Instruments cannot be removed from a meter, and an SDK meter asked again for an
    observable instrument returns the first one, with its first callbacks. So each
    meter provider (and set of names) gets one set of instruments, whose callbacks ask
    the instrumentations installed now: none after the last one's `uninstall`.
    """

    def __init__(self, meter: Meter, names: Mapping[str, str]) -> None:
        self.meter = meter
        self.names = names
        self.active: tuple[Instrumentation, ...] = ()
        self.counters: dict[str, Counter] = {}
        self._histogram: Histogram | None = None
        for family in FAMILIES:
            name, unit, description = names[family.key], family.unit, family.help
            if family.source == "event":
                self.counters[family.key] = meter.create_counter(name, unit, description)
            elif family.source == "scrape":
                callback = self._callback(family.key)
                if family.kind == "gauge":
                    meter.create_observable_gauge(name, [callback], unit, description)
                else:
                    meter.create_observable_counter(name, [callback], unit, description)

    @property
    def histogram(self) -> Histogram:
        """The call-duration histogram, made when first asked for (``durations=True``)."""
        if self._histogram is None:
            family = _BY_KEY["breaker_call_duration"]
            self._histogram = self.meter.create_histogram(
                self.names[family.key], family.unit, family.help
            )
        return self._histogram

    def _callback(self, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        named = key in NAMED_FAMILIES

        def observe(options: CallbackOptions) -> Iterator[Observation]:  # noqa: ARG001
            # The kinds shared by name are the process's, not a registry's: one
            # instrumentation observes them, else each would repeat the same series.
            for instrumentation in self.active[:1] if named else self.active:
                yield from instrumentation.observe(key)

        observe.__qualname__ = f"stalwart.{key}"
        return observe


_meters: weakref.WeakKeyDictionary[MeterProvider, dict[tuple[str, ...], _Instruments]] = (
    weakref.WeakKeyDictionary()
)
_installing = threading.Lock()


# -- the instrumentation -------------------------------------------------------------


class Instrumentation:
    """What `instrument` installed; `uninstall` stops it.

    Also a context manager, which uninstalls on exit.

    Attributes:
        registry: The breaker registry whose breakers are observed.
        names: The instrument name of each family, by family key.
        span_events: Whether span events are added to the current span.
        durations: With ``durations=True``, a breaker listener to give the breakers
            whose call durations are wanted (``listeners=[inst.durations]``); else
            ``None``.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_caps",
        "_instruments",
        "_lock",
        "_read",
        "_snapshot",
        "_unsubscribe",
        "durations",
        "names",
        "registry",
        "span_events",
    )

    def __init__(
        self,
        registry: BreakerRegistry,
        instruments: _Instruments,
        max_label_values: int,
        *,
        span_events: bool,
        durations: bool,
    ) -> None:
        self.registry = registry
        self.names = dict(instruments.names)
        self.span_events = span_events
        self._instruments: _Instruments | None = instruments
        self._caps = {
            "breaker": LabelCap("breaker", max_label_values, logger),
            "name": LabelCap("name", max_label_values, logger),
            "timeout": LabelCap("name", max_label_values, logger),  # apart from retries'
            **{label: LabelCap(label, max_label_values, logger) for label, _, _ in NAMED_KINDS},
        }
        self._lock = threading.Lock()
        self._snapshot: dict[str, list[Observation]] = {}
        self._read: set[str] = set()
        self.durations = (
            _Durations(instruments.histogram, self._caps["breaker"]) if durations else None
        )
        self._unsubscribe: Callable[[], None] = subscribe(_Subscriber(self, instruments))

    def __repr__(self) -> str:
        state = "installed" if self.installed else "uninstalled"
        return f"<stalwart OpenTelemetry instrumentation, {state}>"

    @property
    def installed(self) -> bool:
        """Whether it still observes (`uninstall` not called yet)."""
        return self._instruments is not None

    def uninstall(self) -> None:
        """Stop: no more event counts, span events or breaker observations.

        The counters keep the totals they reached (an SDK exports cumulative sums as
        long as it runs); the observable instruments report nothing more. Calling it
        again does nothing.
        """
        with _installing:
            instruments, self._instruments = self._instruments, None
            if instruments is not None:
                instruments.active = tuple(i for i in instruments.active if i is not self)
        self._unsubscribe()
        if self.durations is not None:
            self.durations.stopped = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstall()

    def observe(self, key: str) -> list[Observation]:
        """Return the observations of the scraped family `key` (for the callbacks).

        The breakers, bulkheads, retry budgets and hedgers are read once per
        collection: the first family to ask after it
        has already been answered (so, in a new collection) takes a fresh snapshot,
        which every family then reads, so that states and counts agree. A registry
        that fails to be read (a storage down) is logged and observes nothing.
        """
        with self._lock:
            if key in self._read or not self._read:
                self._read.clear()
                try:
                    stats = list(self.registry.snapshot().values())
                except Exception:
                    logger.exception("stalwart metrics: reading the breakers failed")
                    stats = []
                self._snapshot = self._observations(stats)
            self._read.add(key)
            return self._snapshot[key]

    def _observations(self, snapshot: list[BreakerStats]) -> dict[str, list[Observation]]:
        """Every scraped family's observations, by family key.

        Breakers past the cap are summed under ``"other"``: the state gauge then
        counts how many of them are in each state. Their failure rates, which do not
        add up, are left out.
        """
        cap = self._caps["breaker"]
        base = len(BREAKER_STATES)
        totals: dict[str, list[int]] = {}
        found: dict[str, list[Observation]] = {family.key: [] for family in _SCRAPED}
        name = ATTRIBUTES["breaker"]
        for stats in snapshot:
            label = cap(stats.name)
            row = totals.setdefault(label, [0] * (base + 4))
            row[BREAKER_STATES.index(stats.state)] += 1
            row[base] += stats.successes
            row[base + 1] += stats.failures
            row[base + 2] += stats.rejected
            row[base + 3] += stats.slow_calls
            if stats.failure_rate is not None and label != OTHER:
                found["breaker_failure_rate"].append(
                    metrics.Observation(stats.failure_rate, {name: label})
                )
        state, outcome = ATTRIBUTES["state"], ATTRIBUTES["outcome"]
        for label, row in totals.items():
            found["breaker_state"].extend(
                metrics.Observation(row[i], {name: label, state: value})
                for i, value in enumerate(BREAKER_STATES)
            )
            found["breaker_calls"] += [
                metrics.Observation(row[base], {name: label, outcome: "success"}),
                metrics.Observation(row[base + 1], {name: label, outcome: "failure"}),
            ]
            found["breaker_rejections"].append(metrics.Observation(row[base + 2], {name: label}))
            found["breaker_slow_calls"].append(metrics.Observation(row[base + 3], {name: label}))
        for key, samples in named_samples(self._caps, logger).items():
            names = attributes_of(_BY_KEY[key])
            found[key] = [
                metrics.Observation(value, dict(zip(names, labels, strict=True)))
                for labels, value in samples
            ]
        return found


class _Subscriber:
    """The process-wide subscriber: counts rare events and adds span events."""

    __slots__ = ("_caps", "_counters", "_registry", "_span_events")

    def __init__(self, instrumentation: Instrumentation, instruments: _Instruments) -> None:
        self._registry = instrumentation.registry
        self._span_events = instrumentation.span_events
        self._caps = instrumentation._caps  # noqa: SLF001 - shared with its instrumentation
        self._counters = {
            key: (counter, attributes_of(_BY_KEY[key]))
            for key, counter in instruments.counters.items()
        }

    def _add(self, key: str, *values: str) -> None:
        counter, names = self._counters[key]
        counter.add(1, dict(zip(names, values, strict=True)))

    def on_retry(self, details: RetryDetails) -> None:
        self._add("retries", self._caps["name"](details.name))
        if self._span_events:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event("stalwart.retry", _retry_attributes(details))

    def on_give_up(self, details: RetryDetails) -> None:
        self._add("retry_give_ups", self._caps["name"](details.name))
        if self._span_events:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event("stalwart.retry.give_up", _retry_attributes(details))

    def on_state_change(self, change: StateChange) -> None:
        if self._span_events:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event(
                    "stalwart.breaker.state_change",
                    {
                        "stalwart.breaker.name": change.name,
                        "stalwart.breaker.from_state": change.old,
                        "stalwart.breaker.to_state": change.new,
                        "stalwart.breaker.reason": change.reason,
                    },
                )
        if change.name not in self._registry:  # counted by the registry's own exporter
            return
        label = self._caps["breaker"](change.name)
        self._add("breaker_transitions", label, change.old, change.new)
        if change.new == "open":
            self._add("breaker_opens", label)

    def on_rejected(self, event: BreakerEvent) -> None:
        if not self._span_events:
            return
        span = trace.get_current_span()
        if span.is_recording():
            attributes: dict[str, AttributeValue] = {
                "stalwart.breaker.name": event.name,
                "stalwart.breaker.state": event.state,
            }
            if event.retry_after is not None:
                attributes["stalwart.breaker.retry_after"] = event.retry_after
            span.add_event("stalwart.breaker.rejected", attributes)

    def on_bulkhead_full(self, event: BulkheadEvent) -> None:
        # Counted at collection time (bulkhead.rejected_calls): only the span event here.
        if not self._span_events:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "stalwart.bulkhead.rejected",
                {
                    "stalwart.bulkhead.name": event.name,
                    "stalwart.bulkhead.reason": event.reason,
                    "stalwart.bulkhead.in_use": event.in_use,
                    "stalwart.bulkhead.queued": event.queued,
                },
            )

    def on_timeout(self, event: TimeoutEvent) -> None:
        self._add("timeouts", self._caps["timeout"](event.name), event.where)

    def on_dead_letter(self, event: Any) -> None:
        self._add("dead_letters", event.reason)

    def on_rollback(self, event: Any) -> None:
        self._add("transaction_rollbacks", event.reason)


def _retry_attributes(details: RetryDetails) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "stalwart.retry.name": details.name,
        "stalwart.retry.attempt": details.attempt,
        "stalwart.retry.delay": details.delay,
        "stalwart.retry.elapsed": details.elapsed,
    }
    if details.exception_type is not None:
        attributes["exception.type"] = details.exception_type
    return attributes


class _Durations:
    """A breaker listener recording call durations (opt-in: it runs on every call)."""

    __slots__ = ("cap", "histogram", "stopped")

    def __init__(self, histogram: Histogram, cap: LabelCap) -> None:
        self.histogram = histogram
        self.cap = cap
        self.stopped = False

    def on_success(self, event: BreakerEvent) -> None:
        """Record a successful call's duration, when the breaker measured it."""
        if event.duration is not None and not self.stopped:
            self.histogram.record(event.duration, {ATTRIBUTES["breaker"]: self.cap(event.name)})

    def on_failure(self, event: BreakerEvent) -> None:
        """Record a failed call's duration, when the breaker measured it."""
        if event.duration is not None and not self.stopped:
            self.histogram.record(event.duration, {ATTRIBUTES["breaker"]: self.cap(event.name)})


def instrument(
    registry: BreakerRegistry | None = None,
    *,
    meter_provider: MeterProvider | None = None,
    prefix: str = DEFAULT_PREFIX,
    names: Mapping[str, str] | None = None,
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    span_events: bool = True,
    durations: bool = False,
) -> Instrumentation:
    """Export stalwart's metrics through OpenTelemetry, and add span events.

    .. code-block:: python

        from opentelemetry.sdk.metrics import MeterProvider
        from stalwart.contrib.opentelemetry import instrument

        provider = MeterProvider(metric_readers=[reader])
        instrumentation = instrument(meter_provider=provider)

    ==================================  ==========================================
    Usage                               Effect
    ==================================  ==========================================
    ``instrument()``                    The default registry, the global provider
    ``instrument(registry=r)``          The breakers of `r` (events: the process)
    ``meter_provider=p``                Instruments made by `p`
    ``prefix="app."``                   ``app.breaker.state``, ``app.retries``...
    ``names={...}``                     Some families under names of your own
    ``span_events=False``               Metrics only
    ``durations=True``                  Also a call-duration histogram (opt-in)
    ==================================  ==========================================

    Args:
        registry: The breaker registry to observe (`stalwart.registry` by default):
            every breaker it holds now and later. Transitions of breakers outside it
            are not counted; retries, timeouts, dead letters and rollbacks are
            counted from the whole process.
        meter_provider: What makes the instruments; the global one by default
            (``opentelemetry.metrics.get_meter_provider()``, a proxy until an SDK
            provider is set: instruments made through it record from then on).
        prefix: Put before each family's instrument name.
        names: Family key to an instrument name of your own, e.g.
            ``{"breaker_opens": "llm.circuit_breaker.opens"}``; the prefix does not
            apply to it. The keys are in `stalwart.contrib._metrics.FAMILIES`.
        max_label_values: How many distinct breaker names get attributes of their
            own; retry names and timeout names have a limit of their own as large.
            Later names are counted under ``"other"``, and a warning is logged once
            per label.
        span_events: Whether to add span events to the current span, when it
            records, for retries, give-ups, breaker rejections and state changes, and
            bulkhead rejections.
        durations: Also make the ``breaker.call.duration`` histogram. It needs a
            listener on every call, so it is not automatic: pass
            ``instrumentation.durations`` in the ``listeners`` of each breaker to time
            (a breaker measures durations only with ``slow_call_duration`` set).

    Returns:
        The `Instrumentation`; its `~Instrumentation.uninstall` stops it.

    Raises:
        TypeError: `registry` is not a `stalwart.BreakerRegistry`, `prefix` or a name
            is not a string, or `max_label_values` is not an integer.
        ValueError: A key of `names` is no family (the message lists them), a name is
            empty, `max_label_values` is below 1, or `registry` is instrumented
            already on that meter provider under the same names.

    .. versionadded:: 0.1.0
    """
    if registry is None:
        registry = default_registry
    elif not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a stalwart BreakerRegistry, got {registry!r}")
    _validate.count("max_label_values", max_label_values)
    resolved = _names(prefix, names)
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    key = tuple(resolved[family.key] for family in FAMILIES)
    with _installing:
        shared = _meters.setdefault(provider, {})
        instruments = shared.get(key)
        if instruments is None:
            meter = provider.get_meter("stalwart", _version())
            instruments = shared[key] = _Instruments(meter, resolved)
        if any(other.registry is registry for other in instruments.active):
            raise ValueError(
                f"registry {registry!r} is instrumented already on {provider!r} under"
                " these names; uninstall that instrumentation first"
            )
        instrumentation = Instrumentation(
            registry,
            instruments,
            max_label_values,
            span_events=span_events,
            durations=durations,
        )
        instruments.active = (*instruments.active, instrumentation)
    return instrumentation


def _names(prefix: object, names: Mapping[str, str] | None) -> dict[str, str]:
    """Every family's instrument name, by key, validated."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {prefix!r}")
    own = dict(names or {})
    for key, name in own.items():
        if key not in _BY_KEY:
            raise ValueError(
                f"names: {key!r} is not a metric family; the families are {sorted(_BY_KEY)}"
            )
        if not isinstance(name, str):
            raise TypeError(f"names[{key!r}] must be a string, got {name!r}")
        if not name:
            raise ValueError(f"names[{key!r}] must not be empty, got {name!r}")
    return {family.key: own.get(family.key) or prefix + family.otel for family in FAMILIES}


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - once

    try:
        return version("stalwart")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return None
