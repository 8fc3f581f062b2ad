"""One rule for bad input, over every public parameter.

A value of the wrong type raises `TypeError`; a value of the right type that is out of
range raises `ValueError`. Either way the message names the parameter and shows the
value as given, and it is raised where the object is made, not at call time.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart
from stalwart import _validate
from stalwart.breaker import BreakerRegistry, CircuitBreaker
from stalwart.testing import ManualClock, inject_faults

if TYPE_CHECKING:
    from collections.abc import Callable

WRONG_TYPE = TypeError
WRONG_VALUE = ValueError


def _breaker(name: Any = "validated", **options: Any) -> object:
    return CircuitBreaker(name, **options)


def _registry(**options: Any) -> object:
    return BreakerRegistry(**options)


def _registry_get(**options: Any) -> object:
    return BreakerRegistry().get("validated", **options)


def _policy(**options: Any) -> object:
    return stalwart.Policy(**options)


# (what makes the object, the parameter, a bad value, the error it must raise)
_SECONDS_CASES: list[tuple[str, Any, type[Exception]]] = [
    ("'1'", "1", WRONG_TYPE),
    ("None-like list", [1], WRONG_TYPE),
    ("True", True, WRONG_TYPE),
    ("-1", -1, WRONG_VALUE),
    ("nan", math.nan, WRONG_VALUE),
    ("inf", math.inf, WRONG_VALUE),
    ("negative timedelta", timedelta(seconds=-1), WRONG_VALUE),
]
"""Bad values for any parameter that takes seconds (a number or a timedelta)."""

_POSITIVE_SECONDS_CASES = [*_SECONDS_CASES, ("0", 0, WRONG_VALUE)]
"""Bad values for seconds that must be more than zero."""

_COUNT_CASES: list[tuple[str, Any, type[Exception]]] = [
    ("'3'", "3", WRONG_TYPE),
    ("1.5", 1.5, WRONG_TYPE),
    ("True", True, WRONG_TYPE),
    ("0", 0, WRONG_VALUE),
    ("-1", -1, WRONG_VALUE),
]
"""Bad values for a count that must be an integer >= 1."""

_RATE_CASES: list[tuple[str, Any, type[Exception]]] = [
    ("'0.5'", "0.5", WRONG_TYPE),
    ("True", True, WRONG_TYPE),
    ("0", 0, WRONG_VALUE),
    ("1.5", 1.5, WRONG_VALUE),
    ("nan", math.nan, WRONG_VALUE),
]
"""Bad values for a fraction in (0, 1]."""

_MAKERS: dict[str, Callable[..., object]] = {
    "retry": stalwart.retry,
    "retrying": stalwart.retrying,
    "timeout": stalwart.timeout,
    "deadline": stalwart.deadline,
    "exponential": stalwart.exponential,
    "linear": stalwart.linear,
    "constant": stalwart.constant,
    "decorrelated": stalwart.decorrelated,
    "CircuitBreaker": _breaker,
    "BreakerRegistry": _registry,
    "BreakerRegistry.get": _registry_get,
    "Policy": _policy,
    "ManualClock": ManualClock,
    "inject_faults": inject_faults,
    "correlation_id": stalwart.correlation_id,
}

_PARAMETERS: list[tuple[str, str, list[tuple[str, Any, type[Exception]]]]] = [
    ("retry", "attempts", _COUNT_CASES),
    ("retry", "deadline", _POSITIVE_SECONDS_CASES),
    ("retry", "max_retry_after", _SECONDS_CASES),
    ("retrying", "attempts", _COUNT_CASES),
    ("retrying", "deadline", _POSITIVE_SECONDS_CASES),
    ("retrying", "max_retry_after", _SECONDS_CASES),
    ("timeout", "seconds", _POSITIVE_SECONDS_CASES),
    ("deadline", "seconds", _SECONDS_CASES),
    ("exponential", "initial", _POSITIVE_SECONDS_CASES),
    ("exponential", "max", _SECONDS_CASES),
    ("linear", "initial", _SECONDS_CASES),
    ("linear", "step", _SECONDS_CASES),
    ("linear", "max", _SECONDS_CASES),
    ("constant", "delay", _SECONDS_CASES),
    ("decorrelated", "base", _SECONDS_CASES),
    ("decorrelated", "max", _SECONDS_CASES),
    ("Policy", "deadline", _POSITIVE_SECONDS_CASES),
    ("Policy", "timeout", _POSITIVE_SECONDS_CASES),
    *(
        (maker, option, cases)
        for maker in ("CircuitBreaker", "BreakerRegistry", "BreakerRegistry.get")
        for option, cases in (
            ("failure_threshold", _COUNT_CASES),
            ("window", _POSITIVE_SECONDS_CASES),
            ("minimum_calls", _COUNT_CASES),
            ("recovery_timeout", _POSITIVE_SECONDS_CASES),
            ("half_open_max_calls", _COUNT_CASES),
            ("success_threshold", _COUNT_CASES),
            ("failure_rate", _RATE_CASES),
        )
    ),
]

_NEEDS = {
    # Options that are only valid together with another one.
    "minimum_calls": {"failure_rate": 0.5},
}

_CASES = [
    pytest.param(maker, parameter, value, error, id=f"{maker}-{parameter}={label}")
    for maker, parameter, cases in _PARAMETERS
    for label, value, error in cases
]


@pytest.mark.parametrize(("maker", "parameter", "value", "error"), _CASES)
def test_bad_values_raise_the_right_error_naming_parameter_and_value(
    maker: str, parameter: str, value: Any, error: type[Exception]
) -> None:
    """A wrong type is a TypeError, a wrong value a ValueError, both naming what was given."""
    make = _MAKERS[maker]
    options = {**_NEEDS.get(parameter, {}), parameter: value}
    with pytest.raises(Exception) as caught:
        make(**options)
    assert type(caught.value) is error, f"{maker}({parameter}={value!r}): {caught.value!r}"
    message = str(caught.value)
    assert parameter in message, message
    assert repr(value) in message, message


@pytest.mark.parametrize(
    ("maker", "options"),
    [
        ("exponential", {"multiplier": "2"}),
        ("exponential", {"jitter": 1}),
        ("linear", {"jitter": 1}),
        ("constant", {"jitter": 1}),
        ("retry", {"on": 5}),
        ("retry", {"backoff": 5}),
        ("retry", {"retry_if_result": 5}),
        ("retry", {"classifier": 5}),
        ("retry", {"listeners": 5}),
        ("retrying", {"name": 5}),
        ("CircuitBreaker", {"record": 5}),
        ("CircuitBreaker", {"storage": 5}),
        ("CircuitBreaker", {"clock": 5}),
        ("CircuitBreaker", {"listeners": 5}),
        ("BreakerRegistry", {"storage": 5}),
        ("BreakerRegistry", {"clock": 5}),
        ("Policy", {"fallback": 5}),
        ("Policy", {"retry": 5}),
        ("Policy", {"breaker": 5}),
        ("ManualClock", {"start": "0"}),
        ("inject_faults", {"rate": "0.5"}),
        ("inject_faults", {"exc": 5}),
        ("correlation_id", {"value": 5}),
    ],
    ids=str,
)
def test_objects_of_the_wrong_kind_are_type_errors(maker: str, options: dict[str, Any]) -> None:
    """Passing an object of the wrong kind is a TypeError naming the parameter and value."""
    [(parameter, value)] = options.items()
    with pytest.raises(TypeError) as caught:
        _MAKERS[maker](**options)
    message = str(caught.value)
    assert parameter in message, message
    assert repr(value) in message, message


@pytest.mark.parametrize(
    ("maker", "options"),
    [
        ("exponential", {"multiplier": 0.5}),
        ("exponential", {"jitter": "some"}),
        ("exponential", {"initial": 2, "max": 1}),
        ("linear", {"initial": 2, "max": 1}),
        ("decorrelated", {"base": 2, "max": 1}),
        ("CircuitBreaker", {"name": ""}),
        ("inject_faults", {"rate": 1.5}),
        ("ManualClock", {"start": math.nan}),
        ("correlation_id", {"value": "two\nlines"}),
    ],
    ids=str,
)
def test_out_of_range_values_are_value_errors(maker: str, options: dict[str, Any]) -> None:
    """A value of the right kind but out of range is a ValueError naming the parameter."""
    parameter = next(iter(options)) if len(options) == 1 else "max"
    with pytest.raises(ValueError, match=parameter) as caught:
        _MAKERS[maker](**options)
    assert repr(options[parameter]) in str(caught.value)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (stalwart.timeout, "seconds"),
        (stalwart.exponential, "initial"),
        (stalwart.decorrelated, "base"),
        (lambda seconds: stalwart.retry(deadline=seconds), "deadline"),
        (lambda seconds: CircuitBreaker("zero", recovery_timeout=seconds), "recovery_timeout"),
    ],
    ids=["timeout", "exponential", "decorrelated", "retry", "CircuitBreaker"],
)
def test_zero_and_negative_seconds_share_one_message(
    make: Callable[[float], object], parameter: str
) -> None:
    """-1 and 0 break the same rule (> 0), so they say the same thing."""
    with pytest.raises(ValueError, match=parameter) as negative:
        make(-1)
    with pytest.raises(ValueError, match=parameter) as zero:
        make(0)
    assert str(negative.value).replace("-1", "0") == str(zero.value)


def test_a_breaker_name_of_the_wrong_type_is_a_type_error() -> None:
    """CircuitBreaker(5) is a TypeError naming `name`; CircuitBreaker('') a ValueError."""
    with pytest.raises(TypeError, match=r"name.*5"):
        CircuitBreaker(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"name.*''"):
        CircuitBreaker("")


@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**9), max_value=10**9),
        st.timedeltas(),
    ),
    positive=st.booleans(),
)
def test_seconds_accepts_exactly_finite_non_negative(value: Any, *, positive: bool) -> None:
    """Durations are accepted exactly when finite and >= 0 (> 0 when positive)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    valid = math.isfinite(seconds) and (seconds > 0 or (seconds == 0 and not positive))
    if valid:
        assert _validate.seconds("budget", value, positive=positive) == seconds
    else:
        with pytest.raises(ValueError, match="budget"):
            _validate.seconds("budget", value, positive=positive)


@given(st.one_of(st.text(), st.none(), st.booleans(), st.binary(), st.lists(st.integers())))
def test_seconds_refuses_non_numbers(value: object) -> None:
    """Anything but a number or a timedelta is a TypeError naming the parameter."""
    with pytest.raises(TypeError, match="budget"):
        _validate.seconds("budget", value)  # type: ignore[arg-type]


@given(st.one_of(st.integers(), st.floats(), st.text(), st.booleans(), st.none()))
def test_counts_are_integers_of_at_least_one(value: object) -> None:
    """A count is an int >= 1; other types are TypeErrors, smaller ints ValueErrors."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            assert _validate.count("calls", value) == value
        else:
            with pytest.raises(ValueError, match="calls"):
                _validate.count("calls", value)
    else:
        with pytest.raises(TypeError, match="calls"):
            _validate.count("calls", value)


@pytest.mark.parametrize(
    ("decorator", "spelling"),
    [(stalwart.timeout, "stalwart.timeout"), (stalwart.deadline, "stalwart.deadline")],
    ids=["timeout", "deadline"],
)
def test_bare_time_decorators_say_what_to_write(
    decorator: Callable[[Any], object], spelling: str
) -> None:
    """`@stalwart.timeout` without its seconds is a TypeError showing the call to write."""

    def fetch() -> None: ...

    with pytest.raises(TypeError, match=rf"@{spelling}\(5\).* got the function .*fetch"):
        decorator(fetch)
