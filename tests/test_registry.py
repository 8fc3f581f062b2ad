"""The breaker registry: get-or-create, conflicts, defaults, storage, health, decorator."""

from __future__ import annotations

import gc
import inspect
import json
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart
import stalwart.breaker
from stalwart.breaker import (
    BreakerConfig,
    BreakerRegistry,
    CircuitBreaker,
    MemoryStorage,
    RegistryHealth,
    State,
    circuit_breaker,
)
from stalwart.breaker.registry import BreakerOptions
from stalwart.errors import CircuitOpenError
from stalwart.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from stalwart.breaker.storage import MemoryState
    from stalwart.events import StateChange


class RecordingStorage(MemoryStorage):
    """A memory storage that remembers which names were bound, optionally slowly."""

    def __init__(self, delay: float = 0.0) -> None:
        self.bound: list[str] = []
        self.delay = delay

    def bind(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> MemoryState:
        self.bound.append(name)
        if self.delay:
            time.sleep(self.delay)  # widens the window in which two creations could race
        return super().bind(name, config, clock)


class Changes:
    """A listener that records state changes as ``(name, old, new)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def on_state_change(self, change: StateChange) -> None:
        self.seen.append((change.name, change.old, change.new))


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(_raise, ConnectionError("connection refused"))


def _raise(exc: BaseException) -> None:
    raise exc


# -- get-or-create ---------------------------------------------------------------------


def test_get_creates_once_and_returns_the_same_breaker() -> None:
    """The first get creates a breaker; later gets of the name return that object."""
    breakers = BreakerRegistry()
    jira = breakers.get("jira")
    assert isinstance(jira, CircuitBreaker)
    assert jira.name == "jira"
    assert breakers.get("jira") is jira
    assert breakers.get("github") is not jira
    assert len(breakers) == 2


def test_defaults_apply_and_get_overrides_them() -> None:
    """Registry defaults shape every new breaker; get's options override them."""
    breakers = BreakerRegistry(failure_threshold=3, recovery_timeout=timedelta(seconds=10))
    plain = breakers.get("plain")
    assert plain.config == BreakerConfig(failure_threshold=3, recovery_timeout=10.0)
    custom = breakers.get("custom", failure_threshold=7, window=None)
    assert custom.config == BreakerConfig(failure_threshold=7, window=None, recovery_timeout=10.0)
    assert breakers.defaults["failure_threshold"] == 3
    assert breakers.defaults["recovery_timeout"] == 10.0


def test_equal_options_return_the_existing_breaker() -> None:
    """Options that come to the breaker's own, however spelled, return it."""
    breakers = BreakerRegistry(failure_threshold=3)
    jira = breakers.get("jira", recovery_timeout=30)
    assert breakers.get("jira", recovery_timeout=30.0) is jira
    assert breakers.get("jira", recovery_timeout=timedelta(seconds=30)) is jira
    assert breakers.get("jira", failure_threshold=3, recovery_timeout=30) is jira
    assert breakers.get("jira") is jira


def test_conflicting_options_raise_naming_each_option_and_both_values() -> None:
    """A different config for an existing name raises, saying what differs and how."""
    breakers = BreakerRegistry()
    jira = breakers.get("jira", failure_threshold=3)
    with pytest.raises(ValueError, match="breaker 'jira'") as info:
        breakers.get("jira", failure_threshold=4, recovery_timeout=5)
    message = str(info.value)
    assert "failure_threshold=3 there, 4 asked for" in message
    assert "recovery_timeout=60.0 there, 5.0 asked for" in message
    assert "window" not in message
    assert breakers.get("jira") is jira


def test_omitted_options_mean_the_defaults_when_others_are_given() -> None:
    """Options describe the whole breaker: one left out is compared as its default."""
    breakers = BreakerRegistry()
    breakers.get("jira", failure_threshold=3, recovery_timeout=5)
    with pytest.raises(ValueError, match="recovery_timeout=5.0 there, 60.0 asked for"):
        breakers.get("jira", failure_threshold=3)


def test_a_default_minimum_calls_follows_the_window_calls_asked_for() -> None:
    """minimum_calls left out is derived per breaker: capped at get's window_calls."""
    breakers = BreakerRegistry(failure_threshold=None, failure_rate=0.5, window=None)
    assert breakers.defaults["minimum_calls"] == 10
    small = breakers.get("small", window_calls=5)
    assert small.config.minimum_calls == 5
    assert breakers.get("small", window_calls=5) is small
    assert breakers.get("small", window_calls=5, minimum_calls=5) is small  # the same config
    with pytest.raises(ValueError, match="minimum_calls=5 there, 4 asked for"):
        breakers.get("small", window_calls=5, minimum_calls=4)
    with pytest.raises(ValueError, match="minimum_calls=6 and window_calls=5"):
        breakers.get("other", window_calls=5, minimum_calls=6)


def test_record_is_compared_too() -> None:
    """The same `record=` returns the breaker; another one is a conflict."""
    breakers = BreakerRegistry()

    def is_failure(exc: BaseException) -> bool:
        return True

    jira = breakers.get("jira", record=(ConnectionError, TimeoutError))
    assert breakers.get("jira", record=(ConnectionError, TimeoutError)) is jira
    assert jira.record == (ConnectionError, TimeoutError)
    with pytest.raises(ValueError, match="record="):
        breakers.get("jira", record=is_failure)
    with pytest.raises(ValueError, match="record="):
        breakers.get("jira", failure_threshold=5)  # record omitted: the default, None


def test_log_is_an_option() -> None:
    """`log=False` silences a breaker's state-change logging and is compared."""
    breakers = BreakerRegistry(log=False)
    quiet = breakers.get("quiet")
    with pytest.raises(ValueError, match="log=False there, True asked for"):
        breakers.get("quiet", log=True)
    assert breakers.get("quiet", log=False) is quiet


def test_listeners_are_compared_only_when_given() -> None:
    """Listeners conflict only when passed and different, as tuples."""
    breakers = BreakerRegistry()
    changes = Changes()
    jira = breakers.get("jira", listeners=[changes])
    assert breakers.get("jira", listeners=(changes,)) is jira
    assert breakers.get("jira", failure_threshold=5) is jira
    with pytest.raises(ValueError, match=r"listeners=\(<.*Changes.*>,\) there, \(\) asked for"):
        breakers.get("jira", listeners=[])
    with pytest.raises(ValueError, match="listeners="):
        breakers.get("jira", listeners=[Changes()])


def test_invalid_options_for_a_new_name_create_nothing() -> None:
    """A bad option raises from get and leaves the registry unchanged."""
    breakers = BreakerRegistry()
    with pytest.raises(ValueError, match="half_open_max_calls must be an integer >= 1, got 0"):
        breakers.get("jira", half_open_max_calls=0)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        breakers.get("")
    assert len(breakers) == 0


@pytest.mark.parametrize("option", ["storage", "clock"])
def test_get_refuses_what_the_registry_sets(option: str) -> None:
    """Storage and clock belong to the registry; get says so."""
    with pytest.raises(TypeError, match=f"{option}=, which the registry sets"):
        BreakerRegistry().get("jira", **{option: None})  # type: ignore[arg-type]


def test_get_rejects_unknown_options() -> None:
    """A misspelt option is a TypeError listing the valid ones."""
    with pytest.raises(TypeError, match="unknown breaker option 'failure_treshold'.*window"):
        BreakerRegistry().get("jira", failure_treshold=3)  # type: ignore[call-arg]


# -- defaults validated at construction ---------------------------------------------------


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be an integer >= 1, got 0"),
        (
            {"window": -1},
            r"window must be a finite number of seconds > 0 \(or a timedelta\), got -1",
        ),
        (
            {"window": 1e-9},
            r"window must be a finite number of seconds >= 0.001 \(or a timedelta\), got 1e-09",
        ),
        ({"window_calls": 20}, "window_calls .* no rate is configured"),
        ({"failure_rate": 2}, r"failure_rate must be a number in \(0, 1\], got 2"),
        ({"recovery_timeout": timedelta(0)}, r"recovery_timeout .* got datetime.timedelta\(0\)"),
        ({"slow_call_duration": 1.0}, "slow_call_duration and slow_call_rate go together"),
        ({"failure_threshold": None}, "a breaker needs a way to trip"),
    ],
)
def test_bad_defaults_are_rejected_at_construction(defaults: dict[str, Any], message: str) -> None:
    """Out-of-range defaults raise ValueError naming the parameter and value."""
    with pytest.raises(ValueError, match=message):
        BreakerRegistry(**defaults)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_treshold": 3}, "unknown breaker option 'failure_treshold'"),
        ({"record": "ConnectionError"}, "record must be exception types or a predicate"),
        ({"storage": object()}, "storage must be a stalwart Storage"),
        ({"clock": 1.5}, "clock must be a callable"),
        ({"listeners": [object()]}, "listeners must hold objects with a method"),
        ({"listeners": 3}, "listeners must be an iterable of listeners .*got 3"),
    ],
)
def test_wrong_kinds_of_defaults_are_type_errors(kwargs: dict[str, Any], message: str) -> None:
    """Unknown options and wrong kinds of object raise TypeError at construction."""
    with pytest.raises(TypeError, match=message):
        BreakerRegistry(**kwargs)


def test_breaker_options_match_the_breaker_parameters() -> None:
    """`BreakerOptions` lists every CircuitBreaker option but name, storage, clock, listeners."""
    params = set(inspect.signature(CircuitBreaker).parameters)
    assert set(BreakerOptions.__optional_keys__) == params - {
        "name",
        "storage",
        "clock",
        "listeners",
        "registry",
    }


# -- thread safety --------------------------------------------------------------------------


def test_threads_asking_for_one_new_name_get_one_breaker() -> None:
    """16 threads released at once for the same new name share one breaker, made once."""
    storage = RecordingStorage(delay=0.01)
    breakers = BreakerRegistry(storage=storage)
    barrier = threading.Barrier(16)
    results: list[CircuitBreaker] = []

    def ask() -> None:
        barrier.wait()
        results.append(breakers.get("x"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    assert all(breaker is results[0] for breaker in results)
    assert storage.bound == ["x"]
    assert len(breakers) == 1


# -- what the registry holds ------------------------------------------------------------------


def test_names_contains_len_and_iteration() -> None:
    """names() is sorted; `in`, len() and iteration (in name order) agree with it."""
    breakers = BreakerRegistry()
    for name in ("zendesk", "jira", "github"):
        breakers.get(name)
    assert breakers.names() == ["github", "jira", "zendesk"]
    assert "jira" in breakers
    assert "slack" not in breakers
    assert 42 not in breakers
    assert len(breakers) == 3
    assert [breaker.name for breaker in breakers] == ["github", "jira", "zendesk"]
    assert repr(breakers) == "<BreakerRegistry 3 breakers>"
    breakers.clear()
    assert repr(breakers) == "<BreakerRegistry 0 breakers>"
    breakers.get("one")
    assert repr(breakers) == "<BreakerRegistry 1 breaker>"


def test_snapshot_is_json_ready_and_keeps_secrets_out() -> None:
    """snapshot() maps names to stats that dump to JSON without exception messages."""
    breakers = BreakerRegistry(failure_threshold=1, log=False)
    breakers.get("search")
    payments = breakers.get("payments")
    fail_with = ConnectionError("password=hunter2 rejected")
    with pytest.raises(ConnectionError):
        payments.call(_raise, fail_with)
    snapshot = breakers.snapshot()
    assert list(snapshot) == ["payments", "search"]
    assert snapshot["payments"].state == "open"
    assert snapshot["payments"].last_failure_type == "builtins.ConnectionError"
    dumped = json.dumps({name: stats.as_dict() for name, stats in snapshot.items()})
    assert "hunter2" not in dumped
    assert json.loads(dumped)["search"]["state"] == "closed"


def test_reset_closes_an_open_breaker() -> None:
    """reset(name) closes the named breaker and leaves the others alone."""
    breakers = BreakerRegistry(failure_threshold=1, log=False)
    jira, github = breakers.get("jira"), breakers.get("github")
    fail(jira)
    github.force_open()
    assert breakers.health().open == ("github", "jira")
    breakers.reset("jira")
    assert jira.state is State.CLOSED
    assert breakers.health().open == ("github",)
    breakers.reset_all()
    assert breakers.health().open == ()
    assert github.state is State.CLOSED


def test_unknown_names_raise_key_error_saying_so() -> None:
    """reset and remove of a name the registry does not hold raise a clear KeyError."""
    breakers = BreakerRegistry()
    with pytest.raises(KeyError, match="no breaker named 'nope' in this registry"):
        breakers.reset("nope")
    with pytest.raises(KeyError, match="no breaker named 'nope' in this registry"):
        breakers.remove("nope")


def test_remove_and_clear_forget_breakers() -> None:
    """remove() returns the forgotten breaker; a later get makes a new one; clear() empties."""
    breakers = BreakerRegistry()
    jira = breakers.get("jira")
    breakers.get("github")
    assert breakers.remove("jira") is jira
    assert "jira" not in breakers
    assert breakers.get("jira") is not jira
    breakers.clear()
    assert len(breakers) == 0
    assert breakers.names() == []


# -- health -----------------------------------------------------------------------------------


def test_health_of_an_empty_registry_is_healthy() -> None:
    """No breakers: healthy, nothing open, every state counted as zero."""
    health = BreakerRegistry().health()
    assert health == RegistryHealth(
        status="healthy",
        total=0,
        totals={"closed": 0, "open": 0, "half_open": 0, "forced_open": 0, "disabled": 0},
        open=(),
    )


def test_health_statuses_follow_the_share_of_open_breakers() -> None:
    """Healthy with none open, degraded with some, critical with more than half."""
    clock = ManualClock()
    breakers = BreakerRegistry(failure_threshold=2, clock=clock, log=False)
    a, b, c, d = (breakers.get(name) for name in "dcba")
    assert breakers.health().status == "healthy"
    fail(a, 2)  # opened by real failures
    health = breakers.health()
    assert (health.status, health.open) == ("degraded", ("d",))
    b.force_open()
    health = breakers.health()
    assert (health.status, health.open) == ("degraded", ("c", "d"))  # half is not more
    c.force_open()
    health = breakers.health()
    assert (health.status, health.open) == ("critical", ("b", "c", "d"))
    breakers.reset_all()
    assert breakers.health().status == "healthy"
    assert d.state is State.CLOSED


def test_health_counts_half_open_as_open_and_disabled_as_not() -> None:
    """A half-open breaker is not trusted yet; a disabled one lets everything through."""
    clock = ManualClock()
    breakers = BreakerRegistry(failure_threshold=1, recovery_timeout=30, clock=clock, log=False)
    probing, off, fine = breakers.get("probing"), breakers.get("off"), breakers.get("fine")
    fail(probing)
    clock.advance(30)
    assert breakers.health().totals["open"] == 1  # still open until a call arrives
    token = probing.admit()  # the first probe moves it to half-open
    assert probing.state is State.HALF_OPEN
    off.disable()
    health = breakers.health()
    assert health.status == "degraded"
    assert health.open == ("probing",)
    assert health.total == 3
    assert health.totals == {
        "closed": 1,
        "open": 0,
        "half_open": 1,
        "forced_open": 0,
        "disabled": 1,
    }
    probing.record_success(token)
    assert breakers.health().status == "healthy"
    assert fine.state is State.CLOSED


def test_health_totals_include_every_state_and_dump_to_json() -> None:
    """totals has a key per State; as_dict() is plain JSON."""
    breakers = BreakerRegistry(log=False)
    breakers.get("a").force_open()
    breakers.get("b")
    health = breakers.health()
    assert set(health.totals) == {state.value for state in State}
    assert sum(health.totals.values()) == health.total == 2
    assert json.loads(json.dumps(health.as_dict())) == {
        "status": "degraded",
        "total": 2,
        "totals": {"closed": 1, "open": 0, "half_open": 0, "forced_open": 1, "disabled": 0},
        "open": ["a"],
    }


# -- storage, clock and listeners shared by the registry's breakers -----------------------------


def test_every_breaker_binds_to_the_registry_storage() -> None:
    """The registry's storage is the storage of each breaker it creates, bound by name."""
    storage = RecordingStorage()
    breakers = BreakerRegistry(storage=storage)
    jira, github = breakers.get("jira"), breakers.get("github")
    breakers.get("jira")
    assert storage.bound == ["jira", "github"]
    assert jira.storage is storage
    assert github.storage is storage
    assert isinstance(BreakerRegistry().storage, MemoryStorage)


def test_breakers_use_the_registry_clock() -> None:
    """With a ManualClock on the registry, an open breaker half-opens when it is advanced."""
    clock = ManualClock()
    breakers = BreakerRegistry(failure_threshold=1, recovery_timeout=10, clock=clock, log=False)
    jira = breakers.get("jira")
    fail(jira)
    with pytest.raises(CircuitOpenError) as info:
        jira.call(lambda: None)
    assert info.value.retry_after == 10.0
    clock.advance(10)
    assert jira.call(lambda: "ok") == "ok"
    assert jira.state is State.CLOSED


def test_registry_listeners_hear_every_breaker_it_creates() -> None:
    """Registry listeners get each breaker's state changes, before its own listeners."""
    everything, only_jira = Changes(), Changes()
    breakers = BreakerRegistry(failure_threshold=1, listeners=[everything], log=False)
    jira = breakers.get("jira", listeners=[only_jira])
    github = breakers.get("github")
    assert jira.listeners == (everything, only_jira)
    fail(jira)
    github.force_open()
    assert everything.seen == [("jira", "closed", "open"), ("github", "closed", "forced_open")]
    assert only_jira.seen == [("jira", "closed", "open")]


# -- the default registry and the decorator ----------------------------------------------------


def test_circuit_breaker_decorates_sync_functions_through_the_default_registry() -> None:
    """The decorator's breaker lives in the default registry and trips on failures."""
    calls: list[int] = []

    @circuit_breaker("jira", failure_threshold=2, log=False)
    def search(page: int) -> int:
        calls.append(page)
        if page < 0:
            raise ConnectionError("connection refused")
        return page * 10

    assert search(3) == 30
    assert search.__name__ == "search"
    assert stalwart.breaker.registry.names() == ["jira"]
    for _ in range(2):
        with pytest.raises(ConnectionError):
            search(-1)
    with pytest.raises(CircuitOpenError, match="jira"):
        search(4)
    assert calls == [3, -1, -1]
    assert stalwart.breaker.registry.health().open == ("jira",)


def test_functions_decorated_with_one_name_share_a_breaker() -> None:
    """Two functions decorated with the same name and options share one breaker."""

    @circuit_breaker("jira", failure_threshold=1, log=False)
    def search() -> None:
        raise ConnectionError

    @circuit_breaker("jira", failure_threshold=1, log=False)
    def create() -> str:
        return "created"

    with pytest.raises(ConnectionError):
        search()
    with pytest.raises(CircuitOpenError):
        create()
    with pytest.raises(ValueError, match="failure_threshold=1 there, 2 asked for"):
        circuit_breaker("jira", failure_threshold=2, log=False)


@pytest.mark.anyio
async def test_circuit_breaker_decorates_async_functions() -> None:
    """The decorator protects coroutine functions, which stay coroutine functions."""

    @circuit_breaker("payments", failure_threshold=1, log=False)
    async def charge(amount: int) -> str:
        if amount < 0:
            raise ConnectionError("connection refused")
        return f"charged {amount}"

    assert inspect.iscoroutinefunction(charge)
    assert await charge(5) == "charged 5"
    with pytest.raises(ConnectionError):
        await charge(-1)
    with pytest.raises(CircuitOpenError):
        await charge(5)
    stalwart.breaker.registry.reset("payments")
    assert await charge(7) == "charged 7"


def test_default_registry_and_public_paths() -> None:
    """The default registry is a BreakerRegistry; public classes show the public path."""
    assert isinstance(stalwart.breaker.registry, BreakerRegistry)
    assert BreakerRegistry.__module__ == "stalwart"
    assert RegistryHealth.__module__ == "stalwart"


@pytest.mark.anyio
async def test_async_health_and_snapshot_match_the_sync_ones() -> None:
    """health_async and snapshot_async report what health and snapshot report."""
    registry = BreakerRegistry(log=False)
    registry.get("a").force_open()
    registry.get("b")
    assert await registry.health_async() == registry.health()
    snapshot = await registry.snapshot_async()
    assert list(snapshot) == ["a", "b"]
    assert snapshot["a"].state == "forced_open"


# -- breakers built directly ------------------------------------------------------------


def test_a_breaker_built_directly_shows_in_the_default_registry() -> None:
    """`CircuitBreaker(name)` joins the default registry: get() finds it, health sees it open."""
    jira = CircuitBreaker("jira", failure_threshold=1, log=False)
    assert stalwart.registry.get("jira") is jira
    assert "jira" in stalwart.registry
    assert stalwart.registry.names() == ["jira"]
    fail(jira)
    health = stalwart.registry.health()
    assert (health.status, health.total, health.open) == ("critical", 1, ("jira",))
    assert list(stalwart.registry.snapshot()) == ["jira"]


def test_registry_none_keeps_a_breaker_out_and_a_registry_takes_it_in() -> None:
    """`registry=None` opts out; `registry=breakers` registers there instead."""
    breakers = BreakerRegistry()
    solo = CircuitBreaker("solo", registry=None, log=False)
    mine = CircuitBreaker("mine", registry=breakers, log=False)
    assert "solo" not in stalwart.registry
    assert "mine" not in stalwart.registry
    assert breakers.get("mine") is mine
    assert list(breakers) == [mine]
    assert solo.name == "solo"


def test_registry_must_be_a_registry() -> None:
    """A registry= that is not a BreakerRegistry is a TypeError naming it."""
    with pytest.raises(TypeError, match="registry must be a BreakerRegistry or None, got 'x'"):
        CircuitBreaker("jira", registry="x")  # type: ignore[arg-type]
    assert len(stalwart.registry) == 0


def test_a_live_name_clash_with_other_options_raises_naming_them() -> None:
    """Two live breakers of one name with different options: the second raises, naming them."""
    first = CircuitBreaker("dup", failure_threshold=3, log=False)
    with pytest.raises(
        ValueError,
        match=r"breaker 'dup' already exists with other options: "
        r"failure_threshold=3 there, 5 asked for; recovery_timeout=60.0 there, 1.0 asked for",
    ):
        CircuitBreaker("dup", failure_threshold=5, recovery_timeout=1, log=False)
    assert stalwart.registry.get("dup") is first


def test_a_live_name_clash_with_equal_options_raises_saying_how_to_share() -> None:
    """A second live breaker of one name is refused even with equal options: get() shares."""
    first = CircuitBreaker("dup", log=False)
    with pytest.raises(
        ValueError, match=r"breaker 'dup' already exists.*\.get\('dup'\).*registry=None"
    ):
        CircuitBreaker("dup", log=False)
    assert stalwart.registry.get("dup") is first


def test_get_compares_options_with_a_breaker_built_directly() -> None:
    """get(name, **options) returns a directly built breaker when they agree, else raises."""
    jira = CircuitBreaker("jira", failure_threshold=3, log=False)
    assert stalwart.registry.get("jira", failure_threshold=3, log=False) is jira
    with pytest.raises(ValueError, match="failure_threshold=3 there, 4 asked for"):
        stalwart.registry.get("jira", failure_threshold=4, log=False)


def test_building_a_name_the_registry_created_raises() -> None:
    """A breaker the registry created keeps its name: building another of it raises."""
    created = stalwart.registry.get("jira")
    with pytest.raises(ValueError, match="breaker 'jira' already exists"):
        CircuitBreaker("jira")
    assert stalwart.registry.get("jira") is created


def test_a_dropped_breaker_leaves_the_registry_and_frees_its_name() -> None:
    """The registry holds built breakers weakly: once dropped, they leave health and the name."""
    jira = CircuitBreaker("jira", failure_threshold=1, log=False)
    fail(jira)
    del jira
    gc.collect()
    assert "jira" not in stalwart.registry
    assert len(stalwart.registry) == 0
    assert stalwart.registry.health().status == "healthy"
    assert CircuitBreaker("jira", failure_threshold=2, log=False).config.failure_threshold == 2


def test_breakers_the_registry_creates_stay_without_references() -> None:
    """get() creates breakers the registry holds itself: they stay while nobody else does."""
    breakers = BreakerRegistry()
    breakers.get("jira")
    gc.collect()
    assert breakers.names() == ["jira"]


def test_remove_and_clear_forget_breakers_built_directly() -> None:
    """remove() returns a built breaker and frees its name; clear() forgets every one."""
    jira = CircuitBreaker("jira", log=False)
    assert stalwart.registry.remove("jira") is jira
    again = CircuitBreaker("jira", log=False)
    stalwart.registry.clear()
    assert len(stalwart.registry) == 0
    assert CircuitBreaker("jira", log=False) is not again


def test_a_failed_build_registers_nothing() -> None:
    """A breaker whose options are invalid never reaches the registry."""
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("jira", failure_threshold=0)
    assert "jira" not in stalwart.registry


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=40))
def test_the_registry_holds_exactly_the_live_built_breakers(steps: list[tuple[bool, int]]) -> None:
    """Building and dropping breakers in any order: names() are the live ones, no more."""
    breakers = BreakerRegistry()
    held: dict[str, CircuitBreaker] = {}
    for build, number in steps:
        name = f"b{number}"
        if build and name not in held:
            held[name] = CircuitBreaker(name, registry=breakers, log=False)
        elif not build and held.pop(name, None) is not None:
            gc.collect()  # only after a drop: a full collection is dear with a big heap
        assert breakers.names() == sorted(held)
        assert len(breakers) == len(held)
        assert all((name in breakers) == (name in held) for name in ("b0", "b1", "b2"))
        assert [b.name for b in breakers] == sorted(held)


class SharedStorage:
    """A storage whose breakers of one name share one state, as Redis storage does."""

    def __init__(self) -> None:
        self.states: dict[str, MemoryState] = {}

    def bind(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> MemoryState:
        if name not in self.states:
            self.states[name] = MemoryStorage().bind(name, config, clock)
        return self.states[name]


def test_breakers_of_one_name_on_a_shared_storage_are_views_of_one_state() -> None:
    """With a shared storage, equal breakers of one name coexist; the registry keeps a live one."""
    storage = SharedStorage()
    first = CircuitBreaker("svc", failure_threshold=1, storage=storage, log=False)
    second = CircuitBreaker("svc", failure_threshold=1, storage=storage, log=False)
    with pytest.raises(ValueError, match="failure_threshold=1 there, 2 asked for"):
        CircuitBreaker("svc", failure_threshold=2, storage=storage, log=False)
    with pytest.raises(ValueError, match="share no state"):
        CircuitBreaker("svc", failure_threshold=1, log=False)
    assert stalwart.registry.get("svc") is first
    fail(second)
    assert stalwart.registry.health().open == ("svc",)
    del first
    gc.collect()
    assert stalwart.registry.get("svc") is second
    del second
    gc.collect()
    assert "svc" not in stalwart.registry
