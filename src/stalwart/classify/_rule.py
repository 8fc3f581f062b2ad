"""`Verdict` and `Rule`: what a rule decides, and what it matches.

A rule matches exception types, predicates, or the HTTP statuses exceptions carry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NoReturn, TypeAlias, final

from .._record import Record
from ._fields import status_code_of

if TYPE_CHECKING:
    from collections.abc import Iterable


class Verdict(enum.Enum):
    """Whether trying a failed call again can help.

    .. versionadded:: 0.1.0
    """

    TRANSIENT = "transient"
    """Trying again may succeed (a timeout, a dropped connection, a 503)."""

    PERMANENT = "permanent"
    """Trying again cannot help (bad input, a missing resource, a cancellation)."""


TRANSIENT_STATUS_CODES: Final[frozenset[int]] = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth trying again (timeouts, rate limits and server trouble).

.. versionadded:: 0.1.0
"""

Predicate: TypeAlias = Callable[[BaseException], bool]
Matcher: TypeAlias = type[BaseException] | Predicate
Decide: TypeAlias = Callable[[BaseException], "Verdict | None"]


def _check_verdict(verdict: object) -> Verdict:
    if not isinstance(verdict, Verdict):
        raise TypeError(f"verdict must be a Verdict, got {verdict!r}")
    return verdict


def _describe(matcher: object) -> str:
    name = getattr(matcher, "__qualname__", None)
    return name if isinstance(name, str) else repr(matcher)


class _Matches(Record):
    """Decide `verdict` for instances of `types` or when a predicate holds."""

    __slots__ = ("verdict", "types", "predicates")  # noqa: RUF023 - the fields, in order
    verdict: Verdict
    types: tuple[type[BaseException], ...]
    predicates: tuple[Predicate, ...]

    def __init__(
        self,
        verdict: Verdict,
        types: tuple[type[BaseException], ...],
        predicates: tuple[Predicate, ...],
    ) -> None:
        self._set(verdict, types, predicates)

    def __call__(self, exc: BaseException) -> Verdict | None:
        if isinstance(exc, self.types):
            return self.verdict
        for predicate in self.predicates:
            if _holds(predicate, exc):
                return self.verdict
        return None


def _holds(predicate: Predicate, exc: BaseException) -> bool:
    """Apply a user predicate; one that raises does not match."""
    try:
        return bool(predicate(exc))
    except Exception:
        return False


class _Statuses(Record):
    """Decide `verdict` when the exception carries one of `codes`."""

    __slots__ = ("codes", "verdict")
    codes: frozenset[int]
    verdict: Verdict

    def __init__(self, codes: frozenset[int], verdict: Verdict) -> None:
        self._set(codes, verdict)

    def __call__(self, exc: BaseException) -> Verdict | None:
        return self.verdict if status_code_of(exc) in self.codes else None


@final
class Rule(Record):
    """One classification rule: a function that gives a verdict or passes.

    Most rules are made with `Rule.matching` and `Rule.statuses`, or through the
    `Classifier` methods that build them. For anything else, wrap a function that
    returns a `Verdict`, or ``None`` to let the next rule decide. A rule that raises
    is skipped.

    Args:
        decide: Called with the exception; returns a `Verdict` or ``None``.
        name: A label for reprs; defaults to the function's name.

    Raises:
        TypeError: ``decide`` is not callable.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("decide", "name")
    decide: Decide
    name: str

    def __init__(self, decide: Decide, name: str = "") -> None:
        if not callable(decide):
            raise TypeError(f"decide must be callable, got {decide!r}")
        self._set(decide, name or _describe(decide))

    def _key(self) -> tuple[Decide]:
        return (self.decide,)  # the name is a label: rules that decide alike are equal

    @classmethod
    def matching(cls, *matchers: Matcher, verdict: Verdict) -> Rule:
        """Make a rule that gives `verdict` to matching exceptions.

        Args:
            *matchers: Exception types (subclasses match too) and predicates taking
                the exception and returning whether it matches.
            verdict: The verdict for a match.

        Raises:
            TypeError: No matcher was given, a matcher is neither an exception type
                nor callable, or ``verdict`` is not a `Verdict`.

        .. versionadded:: 0.1.0
        """
        verdict = _check_verdict(verdict)
        if not matchers:
            raise TypeError("matchers must name at least one exception type or predicate")
        types: list[type[BaseException]] = []
        predicates: list[Predicate] = []
        for matcher in matchers:
            if isinstance(matcher, type):
                if not issubclass(matcher, BaseException):
                    _bad_matcher(matcher)
                types.append(matcher)
            elif callable(matcher):
                predicates.append(matcher)
            else:
                _bad_matcher(matcher)
        label = ", ".join(_describe(matcher) for matcher in matchers)
        return cls(_Matches(verdict, tuple(types), tuple(predicates)), f"{verdict.value}: {label}")

    @classmethod
    def statuses(cls, codes: Iterable[int], verdict: Verdict) -> Rule:
        """Make a rule that gives `verdict` to exceptions carrying one of `codes`.

        The status is read with `status_code_of`.

        Args:
            codes: HTTP status codes, each in 100..599.
            verdict: The verdict for a match.

        Raises:
            TypeError: ``codes`` is not an iterable of ints, or ``verdict`` is not a
                `Verdict`.
            ValueError: A code is outside 100..599.

        .. versionadded:: 0.1.0
        """
        verdict = _check_verdict(verdict)
        try:
            listed = tuple(codes)
        except TypeError:
            raise TypeError(f"codes must be an iterable of ints, got {codes!r}") from None
        for code in listed:
            if not isinstance(code, int) or isinstance(code, bool):
                raise TypeError(f"codes must hold ints, got {code!r}")
            if not 100 <= code <= 599:
                raise ValueError(f"codes must be HTTP status codes in 100..599, got {code!r}")
        if not listed:
            raise ValueError(f"codes must name at least one status, got {codes!r}")
        frozen = frozenset(int(code) for code in listed)
        return cls(_Statuses(frozen, verdict), f"{verdict.value}: HTTP {sorted(frozen)}")

    def __call__(self, exc: BaseException) -> Verdict | None:
        """Return this rule's verdict for `exc`, or ``None`` to pass."""
        return self.decide(exc)

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"


def _bad_matcher(matcher: object) -> NoReturn:
    raise TypeError(f"matchers must be exception types or predicates, got {matcher!r}")
