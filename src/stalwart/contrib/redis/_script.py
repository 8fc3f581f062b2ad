"""The Lua script's Python half: its text, its SHA, its arguments and its replies.

The script is ``script.lua``, shipped beside this module as package data; its header
says what it reads, writes and answers.
"""

from __future__ import annotations

import hashlib
import math
from importlib.resources import files
from typing import TYPE_CHECKING, Any, NamedTuple

from ...breaker.machine import DEFAULT_MINIMUM_CALLS, REJECTED, State, Transition
from ...breaker.storage import Counts
from ...breaker.window import DEFAULT_BUCKETS

if TYPE_CHECKING:
    from ...breaker.machine import BreakerConfig

IDLE_MARGIN = 3600.0
"""Seconds an idle breaker's keys outlive its window and recovery timeout."""
HELD_TTL = 30 * 86400.0
"""Seconds an idle breaker's keys live while forced open or disabled by an operator."""
_MAX_TTL = 10 * 365 * 86400.0

SCRIPT = files(__package__).joinpath("script.lua").read_text(encoding="utf-8")
"""The script's text, as Redis runs it."""
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - how Redis names scripts
"""What ``EVALSHA`` calls the script by."""

CLOSED_GENERATION = b"closed_generation"
"""The state hash's field holding the generation while the breaker is closed, and
absent otherwise: what an admission reads instead of calling the script."""

MAX_DIGITS = 15
"""The longest generation read without the script, which checks the same (its EXACT)."""

REPLY_FIELDS = 9
"""Fields in a full reply; "counts" adds `COUNT_FIELDS`."""
COUNT_FIELDS = 12


# --- arguments ------------------------------------------------------------------------


def float_arg(value: float | None) -> str:
    """A float (or None) as the script reads it: exact, or empty."""
    return "" if value is None else repr(float(value))


def _int_arg(value: int | None) -> str:
    return "" if value is None else str(value)


def _ttl_ms(seconds: float) -> str:
    return str(math.ceil(min(seconds, _MAX_TTL) * 1000))


def config_arg(config: BreakerConfig) -> str:
    """The configuration's part of the script's ARGV 1, "|" after each field.

    As exact decimal strings. The fast paths read the first three: the TTL, the TTL
    while held (forced open or disabled), the recovery timeout. The time follows in
    ARGV 1: nothing (Redis server time), or the test clock's reading.
    """
    idle = 2 * max(config.window or 0.0, config.recovery_timeout) + IDLE_MARGIN
    fields = (
        _ttl_ms(idle),
        _ttl_ms(max(idle, HELD_TTL)),
        repr(config.recovery_timeout),
        _int_arg(config.failure_threshold),
        float_arg(config.window),
        float_arg(config.failure_rate),
        str(config.minimum_calls or DEFAULT_MINIMUM_CALLS),
        _int_arg(config.rate_window_calls),
        float_arg(config.slow_call_duration),
        float_arg(config.slow_call_rate),
        str(config.half_open_max_calls),
        str(config.success_threshold),
        str(DEFAULT_BUCKETS),
    )
    return "".join(f"{field}|" for field in fields)


# --- replies --------------------------------------------------------------------------


class Reply(NamedTuple):
    """The script's full answer, in Python's terms."""

    state: State
    generation: int
    now: float
    token: int
    retry_after: float | None
    transition: Transition | None
    counts: Counts | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: str) -> float | None:
    return None if value == "" else float(value)


def _int(value: str) -> int | None:
    return None if value == "" else int(value)


def parse(raw: Any, config: BreakerConfig, *, counts: bool = False) -> Reply:
    """Read a full reply of the script (with the counters, if `counts`).

    Raises:
        ValueError, TypeError, LookupError, AttributeError, ArithmeticError: `raw` is
            not such a reply (a value in Redis that the script did not write, say).
    """
    size = REPLY_FIELDS + COUNT_FIELDS if counts else REPLY_FIELDS
    fields = _text(raw).split("|", size - 1)  # the last, a failure's type, may hold "|"
    if len(fields) != size:
        raise ValueError(f"a reply in {len(fields)} fields where the script sends {size}")
    state = State(fields[0])
    generation = int(fields[1])
    now = float(fields[2])
    token = int(fields[3])
    transition = None
    if fields[5]:
        reason = _reason(config, fields[6], _int(fields[7]), _int(fields[8]))
        transition = Transition(State(fields[5]), state, reason, now, generation)
    return Reply(
        state,
        generation,
        now,
        REJECTED if token < 0 else token,
        _float(fields[4]),
        transition,
        _counts(fields, state, generation, now) if counts else None,
    )


def _counts(fields: list[str], state: State, generation: int, now: float) -> Counts:
    return Counts(
        state=state,
        generation=generation,
        successes=int(fields[9]),
        failures=int(fields[10]),
        rejected=int(fields[11]),
        slow_calls=int(fields[12]),
        consecutive_failures=int(fields[13]),
        window_calls=_int(fields[14]),
        window_failures=int(fields[15]),
        window_slow=int(fields[16]),
        opened_at=_float(fields[17]),
        last_failure_at=_float(fields[18]),
        retry_after=_float(fields[19]),
        last_failure_type=fields[20][1:] if fields[20] else None,
        now=now,
    )


def _reason(config: BreakerConfig, code: str, a: int | None, b: int | None) -> str:
    """The text of a transition's reason, as `stalwart.breaker.machine` writes it."""
    if code == "consecutive":
        return f"{a} consecutive failures"
    if code == "within":
        return f"{a} failures within {config.window:g}s"
    if code in {"failure_rate", "slow_rate"}:
        if a is None or b is None:
            raise ValueError(f"reason {code!r} without its numbers")
        kind = "failure rate" if code == "failure_rate" else "slow call rate"
        return f"{kind} {a / b:.0%} over {b} calls"
    return code
