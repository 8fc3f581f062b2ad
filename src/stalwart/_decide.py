"""The retry decisions both call states share: stop reasons, hints, notes, budgets.

A retried call's decisions run in a fixed order after each attempt: retry or not
(the exception predicate or the classifier, or the result predicate), how long to
wait (the backoff, raised to a ``Retry-After`` hint), whether to stop (attempts,
the deadline, a timeout around the call, a wait too long to make), whether the retry
budget allows the retry, then the ``on_retry`` hooks. `stalwart.retry.OwnCall` makes
them directly for stalwart's own wait strategies (`stalwart.backoff`), which need
nothing but the attempt number: no tenacity objects are built, and tenacity is not
even imported. `stalwart.retry._Call` makes the same decisions through tenacity's
engine, for wait strategies written for tenacity. Both use the functions here, so
they cannot drift apart.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

from . import _clock
from ._deadline import deadline_at
from .backoff import Backoff, Decorrelated
from .classify import retry_after_of
from .timeout import timeout_expired

if TYPE_CHECKING:
    from .retry import RetryPolicy

__all__ = [
    "DELAY",
    "MAX_NOTES",
    "NOTE",
    "STEP",
    "Budget",
    "add_note",
    "budget_name",
    "call_deadline",
    "explicit_retry",
    "hinted",
    "not_retried",
    "own_steps",
    "stop_reason",
]

NOTE = "stalwart: "
"""How every note stalwart leaves on an exception begins."""

MAX_NOTES = 4
"""The most notes stalwart leaves on one exception, however many retries raise it."""


class Budget(Protocol):
    """What ``budget=`` accepts: a `stalwart.RetryBudget`, or anything shaped like one."""

    @property
    def name(self) -> str:
        """The budget's name, for the note on a refused retry."""

    def deposit(self) -> None:
        """Count a call's first attempt."""

    def withdraw(self) -> bool:
        """Ask for one retry: True allows it, False refuses it."""


def _speaks_for(note: object, name: str) -> bool:
    """Whether `note` is the note of a retry of `name` (gave up, or not retried)."""
    return isinstance(note, str) and (
        note.startswith(f"{NOTE}gave up on {name} after ")
        or (note.startswith(f"{NOTE}not retried; attempt ") and note.endswith(f" of {name}"))
    )


def add_note(exc: BaseException, note: str, name: str | None = None) -> None:
    """Add a PEP 678 note to `exc`, keeping stalwart's notes on it few.

    One exception may be raised by many retried calls (a shared failed future, a
    cached error): each would add its note. A note for the retry of `name` replaces
    the earlier note of a retry of the same name, and at most `MAX_NOTES` of
    stalwart's notes stay, the oldest going first. The caller's own notes are kept.
    An exception that cannot take a note is left as it is: it is never replaced.
    """
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        try:
            exc.__notes__ = notes  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # pragma: no cover - an exception that refuses
            return
    elif not isinstance(notes, list):  # Python refuses to add a note there too
        return
    if name is not None:
        notes[:] = [n for n in notes if not _speaks_for(n, name)]
    ours = [i for i, n in enumerate(notes) if isinstance(n, str) and n.startswith(NOTE)]
    for i in reversed(ours[: max(len(ours) - MAX_NOTES + 1, 0)]):
        del notes[i]
    notes.append(note)


def not_retried(exc: BaseException, attempt: int, name: str) -> None:
    """Note on `exc` that attempt `attempt` of `name` raised it and it was not retried."""
    if attempt > 1:
        add_note(exc, f"{NOTE}not retried; attempt {attempt} of {name}", name)


def call_deadline(policy: RetryPolicy, start: float) -> float | None:
    """When a call that started at `start` must end: its own deadline, or the ambient one."""
    at, seconds = deadline_at(), policy.deadline
    if seconds is None:
        return at
    own = start + seconds
    return own if at is None or own < at else at


def hinted(policy: RetryPolicy, delay: float, outcome: object) -> float:
    """Raise `delay` to the ``Retry-After`` hint `outcome` carries (an error or a result)."""
    try:  # Most failures carry nothing to read: skip the careful reading then.
        bare = (
            getattr(outcome, "retry_after", None) is None
            and getattr(outcome, "response", None) is None
            and getattr(outcome, "headers", None) is None
        )
    except Exception:
        bare = False
    if bare:
        return delay
    hint = retry_after_of(outcome)
    if hint is not None:
        cap = policy.max_retry_after
        if cap is not None:
            hint = min(hint, cap)
        delay = max(delay, hint)
    return delay


def stop_reason(policy: RetryPolicy, attempt: int, at: float | None, upcoming: float) -> str:
    """Why retries stop after attempt `attempt`, before a wait of `upcoming`; "" to go on."""
    if attempt >= policy.attempts:
        return f"{attempt} attempts"
    # A sync timeout around the retry has passed: its SIGALRM fired (once) inside
    # the attempt, or its worker was abandoned. Another attempt would run unlimited.
    if timeout_expired():
        return "a timeout around the call"
    # At the deadline exactly, an attempt would start with no time left: stop.
    if at is not None and _clock.now() + upcoming >= at:
        return "the deadline"
    # Longer than the platform can wait (a Retry-After of years): never started.
    if upcoming > _clock.MAX_WAIT:
        return f"a wait too long to make ({upcoming:g}s)"
    return ""


def budget_name(budget: object) -> str:
    """The name a budget goes by in notes: its ``name``, or its repr."""
    name = getattr(budget, "name", None)
    return name if isinstance(name, str) else repr(budget)


def explicit_retry(exc: BaseException) -> bool:
    """Whether `exc` is tenacity's `TryAgain`, which asks for a retry whatever `on` says.

    Only code that imported tenacity can raise it: otherwise nothing is imported.
    """
    tenacity = sys.modules.get("tenacity")
    try_again = getattr(tenacity, "TryAgain", None) if tenacity is not None else None
    return try_again is not None and isinstance(exc, try_again)


DELAY = 1
"""`own_steps`: ask the strategy for ``delay(attempt)``."""
STEP = 2
"""`own_steps`: ask the strategy for ``step(attempt, previous)``."""


def own_steps(backoff: object) -> int:
    """How `OwnCall` asks `backoff` for waits; 0 if it cannot (a tenacity strategy).

    A stalwart strategy whose tenacity form only reads the attempt number is asked
    for ``delay(attempt)``; decorrelated jitter for ``step(attempt, previous)``,
    keeping its state in the call. Anything else goes through tenacity.
    """
    if not isinstance(backoff, Backoff):
        return 0
    call = type(backoff).__call__
    if call is Backoff.__call__:
        return DELAY
    if call is Decorrelated.__call__:
        return STEP
    return 0
