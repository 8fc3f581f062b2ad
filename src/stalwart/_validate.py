"""Checks of what users pass in: one rule and one wording for every public parameter.

A value of the wrong type raises `TypeError`; a value of the right type that is out of
range raises `ValueError`. Both say ``<name> must be <what>, got <value!r>``, with the
value as it was given (a `timedelta` shows as one), and the same words whichever way
the value is wrong, so that ``timeout(-1)`` and ``timeout(0)`` read alike.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["count", "fraction", "name", "number", "seconds", "timedelta_seconds"]


def timedelta_seconds(value: object) -> float | None:
    """Return the seconds of a `datetime.timedelta`, or `None` for anything else.

    `datetime` is not imported for this (it costs ~1.5 ms at import): a timedelta
    can only exist once it is.
    """
    datetime = sys.modules.get("datetime")
    if datetime is None:
        return None
    kind: type[timedelta] = datetime.timedelta
    return value.total_seconds() if isinstance(value, kind) else None


def _is_number(value: object) -> TypeGuard[float]:
    """Whether `value` is an int or a float (a bool, though an int, is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def seconds(
    name: str,
    value: float | timedelta,
    *,
    positive: bool = False,
    minimum: float = 0.0,
    decorator: str | None = None,
) -> float:
    """Return a duration given as seconds or a `timedelta`, in seconds.

    Args:
        name: The parameter, as the user wrote it.
        value: What was given.
        positive: Whether zero is refused too.
        minimum: The smallest duration accepted, when more than zero.
        decorator: The public name of a decorator taking `value` first: a function
            given instead is that decorator used bare, and the error shows the call.

    Raises:
        TypeError: `value` is neither a number nor a `timedelta`.
        ValueError: `value` is NaN, infinite, negative, zero when `positive`, or
            below `minimum`.
    """
    bound = f">= {minimum:g}" if minimum > 0 else "> 0" if positive else ">= 0"
    what = f"{name} must be a finite number of seconds {bound} (or a timedelta), got {value!r}"
    if _is_number(value):
        result = float(value)
    else:
        from_timedelta = timedelta_seconds(value)
        if from_timedelta is None:
            if decorator is not None and callable(value):
                raise TypeError(
                    f"@{decorator} takes its {name} first: write @{decorator}(5),"
                    f" got the function {value!r}"
                )
            raise TypeError(what)
        result = from_timedelta
    if not math.isfinite(result) or result < minimum or result < 0 or (positive and result == 0):
        raise ValueError(what)
    return result


def count(name: str, value: object) -> int:
    """Return `value`, an integer >= 1 (a count of calls, attempts, ...).

    Raises:
        TypeError: `value` is not an `int` (a `bool`, a float or a string is not).
        ValueError: `value` is below 1.
    """
    what = f"{name} must be an integer >= 1, got {value!r}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(what)
    if value < 1:
        raise ValueError(what)
    return value


def fraction(name: str, value: object, *, zero: bool = False) -> float:
    """Return `value`, a fraction in (0, 1], or in [0, 1] when `zero` is allowed.

    Raises:
        TypeError: `value` is not a number.
        ValueError: `value` is NaN or outside the range.
    """
    low = "[0" if zero else "(0"
    what = f"{name} must be a number in {low}, 1], got {value!r}"
    if not _is_number(value):
        raise TypeError(what)
    number_ = float(value)
    if math.isnan(number_) or not (0 <= number_ <= 1) or (number_ == 0 and not zero):
        raise ValueError(what)
    return number_


def number(name: str, value: object, *, minimum: float | None = None) -> float:
    """Return `value`, a finite number (at least `minimum`, when given).

    Raises:
        TypeError: `value` is not a number.
        ValueError: `value` is NaN, infinite, or below `minimum`.
    """
    bound = "" if minimum is None else f" >= {minimum:g}"
    what = f"{name} must be a finite number{bound}, got {value!r}"
    if not _is_number(value):
        raise TypeError(what)
    result = float(value)
    if not math.isfinite(result) or (minimum is not None and result < minimum):
        raise ValueError(what)
    return result


def name(value: object, spelling: str, kind: str) -> str:
    """Return `value` if it is a valid name for a `kind` (``"breaker"``, ...), else raise.

    `spelling` is how the caller is written (``@stalwart.bulkhead``, say): a function
    given for a name is a decorator used without its name, and the error shows the
    call to write instead.

    Raises:
        TypeError: `value` is not a string (a function: the decorator without its name).
        ValueError: `value` is empty.
    """
    if isinstance(value, str):
        if not value:
            raise ValueError(f"name must be a non-empty string, got {value!r}")
        return value
    if callable(value):
        raise TypeError(
            f'{spelling} takes the {kind}\'s name first: write {spelling}("name"),'
            f" got the function {value!r}"
        )
    raise TypeError(f"name must be a string, got {value!r}")
