"""The metric family table both exporters read (`stalwart.contrib._metrics`)."""

from __future__ import annotations

import logging
import re
import sys
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.breaker import State
from stalwart.contrib import _metrics
from stalwart.contrib._metrics import (
    BREAKER_STATES,
    FAMILIES,
    NAMED_FAMILIES,
    NAMED_KINDS,
    REJECTION_REASONS,
    LabelCap,
    by_key,
)


def test_keys_and_names_are_unique_and_valid() -> None:
    """Every key, Prometheus name and OpenTelemetry name is unique and well formed."""
    for attr in ("key", "prometheus", "otel"):
        values = [getattr(f, attr) for f in FAMILIES]
        assert len(values) == len(set(values)), attr
    for family in FAMILIES:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", family.prometheus)
        assert not family.prometheus.endswith("_total")  # the client library adds it
        assert re.fullmatch(r"[a-z][a-z0-9_.]*", family.otel)
        assert family.kind in {"gauge", "counter", "histogram"}
        assert family.source in {"scrape", "event", "call"}
        assert family.help.endswith(".")
        assert family.labels


def test_the_breaker_states_are_the_state_enum() -> None:
    """breaker_state has one series per State member, no more, no fewer."""
    assert set(BREAKER_STATES) == {s.value for s in State}


def test_by_key_finds_a_family_or_lists_the_keys() -> None:
    """by_key returns the family; an unknown key raises naming the known ones."""
    assert by_key("breaker_opens").prometheus == "breaker_opens"
    with pytest.raises(KeyError, match="breaker_opens"):
        by_key("nope")


def test_every_named_family_reads_a_field_its_stats_have() -> None:
    """Each family of a kind shared by name reads a field of that kind's stats record."""
    from stalwart import BudgetStats, BulkheadStats, HedgeStats

    fields = {
        "bulkhead": set(BulkheadStats.__slots__),
        "budget": set(BudgetStats.__slots__),
        "hedger": set(HedgeStats.__slots__),
    }
    labels = {label for label, _, _ in NAMED_KINDS}
    for key in NAMED_FAMILIES:
        family = by_key(key)
        assert family.source == "scrape"
        assert family.labels[0] in labels
        kind = family.labels[0]
        stats = dict.fromkeys(fields[kind], 7)
        samples = _metrics._READS[key][1](stats)
        assert samples
        assert all(len(labels_) == len(family.labels) - 1 for labels_, _ in samples)
    assert {f for _, f in REJECTION_REASONS} <= fields["bulkhead"]


class _FakeNamed:
    kind = "bulkhead"

    def __init__(self, stats: dict[str, dict[str, Any]]) -> None:
        self._stats = stats

    def __len__(self) -> int:
        return len(self._stats)

    def stats(self) -> dict[str, dict[str, Any]]:
        return self._stats


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.tuples(st.integers(0, 10**6), st.floats(0, 60, allow_nan=False)),
        max_size=12,
    ),
    st.integers(1, 6),
)
def test_capped_names_never_lose_a_count(hedgers_: dict[str, tuple[int, float]], cap: int) -> None:
    """Past the cap, counts are summed under "other" (none lost, at most cap + 1 series);
    delays, which do not add up, are left out for "other"."""
    logger = logging.getLogger("tests")
    stats = {
        name: {"calls": calls, "hedges": 0, "hedge_wins": 0, "delay": delay}
        for name, (calls, delay) in hedgers_.items()
    }
    caps = {label: LabelCap(label, cap, logger) for label, _, _ in NAMED_KINDS}
    module = types.ModuleType("stalwart.hedge")
    module.hedgers = _FakeNamed(stats)  # type: ignore[attr-defined]
    saved = sys.modules.get("stalwart.hedge")
    sys.modules["stalwart.hedge"] = module
    try:
        found = _metrics.named_samples(caps, logger)
    finally:
        if saved is None:
            del sys.modules["stalwart.hedge"]
        else:
            sys.modules["stalwart.hedge"] = saved
    calls = dict(found["hedger_calls"])
    assert sum(calls.values()) == sum(c for c, _ in hedgers_.values())
    assert len(calls) <= cap + 1
    delays = dict(found["hedger_delay"])
    assert (_metrics.OTHER,) not in delays or _metrics.OTHER in hedgers_
    for (name,), delay in delays.items():
        assert stats[name]["delay"] == delay


def test_a_kind_that_fails_to_be_read_is_logged_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A kind whose stats raise is logged; the others are still read."""

    class Broken(_FakeNamed):
        def stats(self) -> dict[str, dict[str, Any]]:
            raise RuntimeError("down")

    logger = logging.getLogger("tests.named")
    caps = {label: LabelCap(label, 10, logger) for label, _, _ in NAMED_KINDS}
    module = types.ModuleType("stalwart.bulkhead")
    module.bulkheads = Broken({"x": {}})  # type: ignore[attr-defined]
    saved = sys.modules.get("stalwart.bulkhead")
    sys.modules["stalwart.bulkhead"] = module
    try:
        with caplog.at_level(logging.ERROR, "tests.named"):
            found = _metrics.named_samples(caps, logger)
    finally:
        if saved is None:
            del sys.modules["stalwart.bulkhead"]
        else:
            sys.modules["stalwart.bulkhead"] = saved
    assert found["bulkhead_in_use"] == []
    assert "reading the bulkhead failed" in caplog.text


def test_rejection_labels_spell_every_bulkhead_reason() -> None:
    """Each reason a bulkhead refuses with has its label, the one the stats read under."""
    from stalwart.bulkhead import QUEUE_FULL, TIMED_OUT

    assert set(_metrics.REJECTION_LABELS) == {QUEUE_FULL, TIMED_OUT}
    assert set(_metrics.REJECTION_LABELS.values()) == {label for label, _ in REJECTION_REASONS}
