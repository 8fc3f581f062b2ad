"""The metric family table both exporters read (`stalwart.contrib._metrics`)."""

from __future__ import annotations

import re

import pytest

from stalwart.breaker import State
from stalwart.contrib._metrics import BREAKER_STATES, FAMILIES, by_key


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
