"""`BreakerRegistry.configure`: defaults and storage set after the registry is built."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart
from stalwart import BreakerRegistry
from stalwart.breaker import MemoryStorage


def test_configure_sets_the_defaults_of_breakers_made_afterwards() -> None:
    """A breaker created after configure gets the new defaults and storage."""
    breakers = BreakerRegistry()
    storage = MemoryStorage()
    breakers.configure(storage=storage, failure_threshold=2, recovery_timeout=7)
    jira = breakers.get("jira")
    assert jira.storage is storage
    assert jira.config.failure_threshold == 2
    assert jira.config.recovery_timeout == 7
    assert breakers.defaults["failure_threshold"] == 2


def test_configure_leaves_existing_breakers_alone() -> None:
    """A breaker made before configure keeps its options and its storage."""
    breakers = BreakerRegistry(failure_threshold=4)
    before = breakers.get("before")
    old_storage = breakers.storage
    breakers.configure(storage=MemoryStorage(), failure_threshold=2)
    assert breakers.get("before") is before
    assert before.storage is old_storage
    assert before.config.failure_threshold == 4


def test_configure_replaces_the_defaults_wholly() -> None:
    """Defaults not given go back to the built-in ones; the storage is kept when not given."""
    breakers = BreakerRegistry(failure_threshold=3, recovery_timeout=5)
    storage = breakers.storage
    breakers.configure(failure_threshold=9)
    assert breakers.storage is storage
    assert breakers.defaults == BreakerRegistry(failure_threshold=9).defaults


def test_configure_storage_none_is_a_fresh_memory_storage() -> None:
    """storage=None gives the registry a new MemoryStorage."""
    breakers = BreakerRegistry()
    old = breakers.storage
    breakers.configure(storage=None)
    assert isinstance(breakers.storage, MemoryStorage)
    assert breakers.storage is not old


def test_undo_restores_the_previous_configuration() -> None:
    """The function configure returns puts back the storage and defaults it replaced."""
    breakers = BreakerRegistry(failure_threshold=3)
    storage, defaults = breakers.storage, breakers.defaults
    undo = breakers.configure(storage=MemoryStorage(), failure_threshold=8, window=5)
    undo()
    assert breakers.storage is storage
    assert breakers.defaults == defaults
    assert breakers.get("x", failure_threshold=3).config.failure_threshold == 3


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"recovery_timeout": -1}, ValueError, "recovery_timeout"),
        ({"nonsense": 1}, TypeError, "nonsense"),
        ({"storage_": 1}, TypeError, "storage_"),
    ],
)
def test_bad_defaults_raise_and_change_nothing(
    options: dict[str, Any], error: type[Exception], named: str
) -> None:
    """A bad default raises naming it, and the registry keeps its configuration."""
    breakers = BreakerRegistry(failure_threshold=3)
    storage, defaults = breakers.storage, breakers.defaults
    with pytest.raises(error, match=named):
        breakers.configure(**options)
    assert breakers.storage is storage
    assert breakers.defaults == defaults


def test_a_storage_that_is_not_one_is_refused() -> None:
    """storage= must have a bind method; otherwise TypeError and nothing changes."""
    breakers = BreakerRegistry()
    storage = breakers.storage
    with pytest.raises(TypeError, match="storage must be"):
        breakers.configure(storage="redis://nowhere")  # type: ignore[arg-type]
    assert breakers.storage is storage


def test_the_default_registry_can_be_configured_and_restored() -> None:
    """stalwart.registry takes configure too, and circuit_breaker uses it."""
    undo = stalwart.registry.configure(failure_threshold=2)
    try:
        assert stalwart.circuit_breaker("cfg").config.failure_threshold == 2
    finally:
        undo()
        stalwart.registry.clear()
    assert stalwart.circuit_breaker("cfg2").config.failure_threshold != 2


def test_configure_while_other_threads_get_makes_one_breaker_per_name() -> None:
    """Threads creating breakers while another configures still share one per name."""
    breakers = BreakerRegistry()
    start = threading.Barrier(5)
    seen: list[object] = []

    def getter() -> None:
        start.wait()
        seen.extend(breakers.get(f"b{i % 10}") for i in range(200))

    def configurer() -> None:
        start.wait()
        for threshold in range(1, 50):
            breakers.configure(failure_threshold=threshold)

    threads = [threading.Thread(target=getter) for _ in range(4)]
    threads.append(threading.Thread(target=configurer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len({id(b) for b in seen}) == 10


@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=1, max_value=1000))
def test_configure_then_undo_is_the_identity(first: int, second: int) -> None:
    """Any configure followed by its undo leaves the defaults exactly as they were."""
    breakers = BreakerRegistry(failure_threshold=first)
    before = breakers.defaults
    breakers.configure(failure_threshold=second)()
    assert breakers.defaults == before
