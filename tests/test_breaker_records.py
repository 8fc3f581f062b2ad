"""The breaker's records behave as the frozen dataclasses they replace."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import weakref
from typing import Any

import pytest

import stalwart
from stalwart.breaker import BreakerConfig, RegistryHealth, State
from stalwart.breaker.machine import Transition
from stalwart.breaker.registry import _Entry
from stalwart.breaker.storage import Counts

COUNTS = Counts(
    state=State.OPEN,
    generation=3,
    successes=5,
    failures=2,
    rejected=1,
    slow_calls=0,
    consecutive_failures=2,
    window_calls=None,
    window_failures=2,
    window_slow=0,
    opened_at=10.0,
    last_failure_at=10.0,
    last_failure_type="builtins.OSError",
    retry_after=30.0,
    now=12.0,
)


def breaker_stats() -> stalwart.BreakerStats:
    breaker = stalwart.CircuitBreaker("db", failure_threshold=1, log=False)
    with pytest.raises(ConnectionError):
        breaker.call(_fail)
    return breaker.stats()


def _fail() -> None:
    raise ConnectionError


HASHABLE = [
    BreakerConfig(failure_threshold=3, recovery_timeout=5),
    Transition(State.CLOSED, State.OPEN, "3 consecutive failures", 1.5, 1),
    COUNTS,
]
"""Records whose fields all hash; the others hold a dict, and refuse to hash as a
frozen dataclass holding one does."""
UNHASHABLE = [
    RegistryHealth("degraded", 2, {"closed": 1, "open": 1}, ("db",)),
    _Entry(None, {"failure_threshold": 5}, ()),
]


@pytest.mark.parametrize("record", HASHABLE + UNHASHABLE, ids=lambda r: type(r).__name__)
def test_records_compare_print_copy_and_refuse_changes(record: Any) -> None:
    """Keyword construction, equality, repr, pickling, copying and immutability."""
    fields = record.__slots__
    twin = type(record)(**{name: getattr(record, name) for name in fields})
    assert twin == record
    for index in range(len(fields)):  # differing in any one field
        changed = object.__new__(type(record))
        values = [getattr(record, name) for name in fields]
        values[index] = object()
        changed._set(*values)  # bypasses `__init__`'s checks, unlike `_replace`
        assert changed != record, fields[index]
    assert record != tuple(getattr(record, name) for name in fields)
    shown = ", ".join(f"{name}={getattr(record, name)!r}" for name in fields)
    assert repr(record) == f"{type(record).__qualname__}({shown})"
    if not isinstance(record, _Entry):  # a private record; its refs are weak references
        assert pickle.loads(pickle.dumps(record)) == record  # noqa: S301 - our own bytes
    assert copy.copy(record) == record
    assert copy.deepcopy(record) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.__setattr__(fields[0], None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.__delattr__(fields[0])
    assert not hasattr(record, "__dict__")
    assert not dataclasses.is_dataclass(record)


@pytest.mark.parametrize("record", HASHABLE, ids=lambda r: type(r).__name__)
def test_records_of_hashable_fields_hash_as_equal(record: Any) -> None:
    """Equal records hash alike, so they work as keys and in sets."""
    assert hash(copy.copy(record)) == hash(record)
    assert len({record, copy.copy(record)}) == 1


@pytest.mark.parametrize("record", UNHASHABLE, ids=lambda r: type(r).__name__)
def test_records_holding_a_dict_do_not_hash(record: Any) -> None:
    """As with a frozen dataclass, a dict field makes the record unhashable."""
    with pytest.raises(TypeError, match="unhashable"):
        hash(record)


def test_breaker_stats_behaves_as_a_frozen_dataclass() -> None:
    """A breaker's snapshot compares, prints, pickles and refuses changes."""
    stats = breaker_stats()
    test_records_compare_print_copy_and_refuse_changes(stats)
    assert stats.__match_args__ == stats.__slots__
    match stats:
        case stalwart.BreakerStats("db", "open", 0):
            pass
        case _:
            pytest.fail(f"no positional match for {stats!r}")


def test_breaker_stats_as_dict_is_json_ready_and_a_copy() -> None:
    """`as_dict` has every field in order, dumps to JSON, and its config is a copy."""
    stats = breaker_stats()
    data = stats.as_dict()
    assert list(data) == list(stats.__slots__)
    assert json.loads(json.dumps(data)) == data
    data["config"]["failure_threshold"] = 99
    assert stats.config["failure_threshold"] == 1
    assert stats.as_dict()["config"] is not stats.config


def test_config_defaults_and_keywords_match_the_breaker_defaults() -> None:
    """A config made without arguments holds the documented defaults, all in `as_dict`."""
    config = BreakerConfig()
    assert config.as_dict() == {
        "failure_threshold": 5,
        "window": 60.0,
        "failure_rate": None,
        "minimum_calls": 10,
        "window_calls": None,
        "slow_call_duration": None,
        "slow_call_rate": None,
        "recovery_timeout": 60.0,
        "half_open_max_calls": 1,
        "success_threshold": 1,
    }
    assert BreakerConfig(3, 30.0) == BreakerConfig(failure_threshold=3, window=30.0)
    assert list(config.as_dict()) == list(BreakerConfig.__slots__)


def test_config_replace_validates_the_change() -> None:
    """`_replace` on a config builds a new one, checked as any other."""
    config = BreakerConfig(failure_threshold=3)
    assert config._replace(recovery_timeout=5).recovery_timeout == 5.0
    assert config._replace(recovery_timeout=5).failure_threshold == 3
    with pytest.raises(ValueError, match=r"recovery_timeout.*-1"):
        config._replace(recovery_timeout=-1)


def test_config_refuses_bad_values_naming_them() -> None:
    """Validation still names the parameter and the value."""
    with pytest.raises(ValueError, match=r"failure_threshold.*0"):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(ValueError, match=r"slow_call_rate=None"):
        BreakerConfig(slow_call_duration=1.0)


def test_counts_default_to_not_degraded_and_replace_marks_them() -> None:
    """`degraded` defaults to False; `_replace` sets it and keeps every other field."""
    assert COUNTS.degraded is False
    marked = COUNTS._replace(degraded=True)
    assert marked.degraded is True
    assert marked._asdict() == {**COUNTS._asdict(), "degraded": True}


def test_registry_entry_replace_keeps_the_options() -> None:
    """The registry extends an entry's references through `_replace`."""
    breaker = stalwart.CircuitBreaker("x", log=False)
    entry = _Entry(None, {"log": False}, ())
    grown = entry._replace(refs=(weakref.ref(breaker),))
    assert grown.options is entry.options
    assert grown.live() is breaker
    assert entry.live() is None
