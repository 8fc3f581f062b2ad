"""Decide whether trying a failed call again can help.

A `Classifier` is an ordered, immutable list of rules. Each rule looks at an exception
and gives a `Verdict` (`TRANSIENT`: trying again may help; `PERMANENT`: it cannot) or
passes. The first rule with a verdict wins; an exception no rule recognises is
*unknown*: `Classifier.match` returns ``None`` for it and `Classifier.classify` calls it
permanent, so unknown exceptions are not retried. Circuit breakers tell the two apart:
an unknown exception counts as a failure of the dependency, a permanent one (the
dependency answered, say with a 404) does not.

Third-party exceptions (database drivers, HTTP clients, redis-py, pymongo, the OpenAI
and Anthropic SDKs, botocore, gRPC, google-api-core, elasticsearch, amqp and kombu) are
recognised by the module and name of the classes they inherit from, and by what they
carry (status codes, gRPC status, AWS error codes, SQLSTATEs, MongoDB error labels), so
this module imports none of those libraries. What a type alone decides is worked out
once per exception type and cached (a bounded cache); what an instance carries is read
every time.

The default rules, first match wins:

1. Never retried (permanent): cancellation and other `BaseException` that are not an
   `Exception` (`KeyboardInterrupt`, `SystemExit`, `GeneratorExit`,
   `asyncio.CancelledError`, `trio.Cancelled`), and `CircuitOpenError`.
2. Markers: `TransientError` is transient and `PermanentError` permanent, whatever
   status code they carry.
3. The HTTP status an exception carries (see `status_code_of`): 408, 425, 429, 500,
   502, 503 and 504 are transient, any other 4xx is permanent.
4. Client libraries: redis-py, pymongo, asyncpg, the OpenAI and Anthropic SDKs
   (Anthropic's 529 "overloaded"), botocore (throttling and 5xx codes), gRPC status
   codes, google-api-core, elasticsearch, amqp and kombu: connection errors, timeouts,
   throttling and unavailability are transient; their bad-request, not-found,
   permission and conflict errors are permanent.
5. Databases: serialization failures, deadlocks, connection-class SQLSTATEs,
   ``OperationalError`` and SQLAlchemy's ``DisconnectionError`` and pool timeout are
   transient; ``IntegrityError`` and SQLSTATE class 23 are permanent. SQLAlchemy
   wrappers are judged by the driver error they wrap first.
6. HTTP clients: httpx, httpcore, requests, urllib3 and aiohttp timeouts and
   connection errors are transient.
7. Built-ins: `TimeoutError`, `ConnectionError`, an `OSError` with a network errno and
   a temporary DNS failure are transient.
8. Poison pills (permanent): `json.JSONDecodeError`, `UnicodeDecodeError`, `KeyError`,
   `ValueError`, `TypeError`, `AttributeError`.
9. Causes: an exception no rule above recognises is judged by the exception it was
   raised from (``__cause__``), with all the classifier's rules, up to four links
   deep. ``__context__`` (raised while handling another) counts only for exceptions
   of the libraries above, and never when suppressed (``raise ... from None``).
   Errors of libraries that have already retried (urllib3's ``MaxRetryError``,
   google-api-core's and tenacity's ``RetryError``) hide their causes.

This module holds `Classifier` and the default rules in their order; ``_rule`` holds
`Verdict` and `Rule`, ``_fields`` reads status codes and ``Retry-After``,
``_defaults`` holds the checks of the default rules, and ``_known_errors`` the tables of
library classes.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NoReturn, final

from ._defaults import (
    _MAX_CAUSES,
    _builtins,
    _database,
    _http_clients,
    _http_status,
    _libraries,
    _markers,
    _never_retry,
    _next_cause,
)
from ._fields import parse_retry_after, retry_after_of, status_code_of
from ._rule import TRANSIENT_STATUS_CODES, Matcher, Rule, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "DEFAULT_CLASSIFIER",
    "DEFAULT_RULES",
    "TRANSIENT_STATUS_CODES",
    "Classifier",
    "Rule",
    "Verdict",
    "classify",
    "parse_retry_after",
    "retry_after_of",
    "status_code_of",
]


def _causes(exc: BaseException) -> Verdict | None:
    """Judge the cause chain with the default classifier (a `Classifier` uses itself)."""
    return DEFAULT_CLASSIFIER._match_cause(exc, 0, ())  # noqa: SLF001


DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    Rule(_never_retry, "never retry: cancellation, exits, open circuits"),
    Rule(_markers, "markers: TransientError, PermanentError"),
    Rule(_http_status, "HTTP status"),
    Rule(_libraries, "libraries: redis, pymongo, asyncpg, SDKs, clouds, gRPC, brokers"),
    Rule(_database, "databases"),
    Rule(_http_clients, "HTTP clients"),
    Rule(_builtins, "timeouts and network errors"),
    # json.JSONDecodeError is a ValueError: matched here without importing json.
    Rule.matching(
        UnicodeDecodeError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        verdict=Verdict.PERMANENT,
    ),
    Rule(_causes, "causes: what the exception was raised from"),
)
"""The rules a `Classifier` starts with, in the order they are checked.

Reuse some of them with ``Classifier([...], defaults=False)``.

.. versionadded:: 0.1.0
"""


# ---------------------------------------------------------------------------------------
# The classifier.


@final
class Classifier:
    """An immutable, ordered list of rules that classifies exceptions.

    The first rule with a verdict wins. Methods that add a rule return a new
    classifier whose new rule is checked before all the others, so the rule added
    last wins and your rules take precedence over the defaults.

    ===========================================  =====================================
    Usage                                        Meaning
    ===========================================  =====================================
    ``Classifier()``                             the default rules
    ``Classifier(defaults=False)``               no rules: everything is unknown
    ``Classifier([rule, ...])``                  your rules, then the defaults
    ``c.transient(MyError, predicate)``          retry these too
    ``c.permanent(NotFound)``                    never retry these
    ``c.statuses({409}, Verdict.TRANSIENT)``     judge these HTTP statuses
    ===========================================  =====================================

    >>> from stalwart.classify import Classifier, Verdict
    >>> classifier = Classifier().transient(LookupError)
    >>> classifier(KeyError("cache miss"))
    <Verdict.TRANSIENT: 'transient'>
    >>> Classifier()(KeyError("cache miss"))
    <Verdict.PERMANENT: 'permanent'>
    >>> Classifier(defaults=False).match(KeyError("cache miss")) is None
    True

    Args:
        rules: Rules checked first, in order.
        defaults: Whether `DEFAULT_RULES` follow them.

    Raises:
        TypeError: An item of ``rules`` is not a `Rule`.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_rules",)
    _rules: tuple[Rule, ...]

    def __init__(self, rules: Iterable[Rule] = (), *, defaults: bool = True) -> None:
        own = tuple(rules)
        for rule in own:
            if not isinstance(rule, Rule):
                raise TypeError(f"rules must hold Rule objects, got {rule!r}")
        object.__setattr__(self, "_rules", own + DEFAULT_RULES if defaults else own)

    @classmethod
    def _of(cls, rules: tuple[Rule, ...]) -> Classifier:
        return cls(rules, defaults=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """All the rules, in the order they are checked (defaults included)."""
        return self._rules

    def with_rules(self, *rules: Rule) -> Classifier:
        """Return a classifier that checks `rules`, in order, before this one's.

        Raises:
            TypeError: An item of ``rules`` is not a `Rule`.

        .. versionadded:: 0.1.0
        """
        return Classifier((*rules, *self._rules), defaults=False)

    def transient(self, *matchers: Matcher) -> Classifier:
        """Return a classifier that also calls matching exceptions transient.

        Args:
            *matchers: Exception types (subclasses match too) and predicates taking
                the exception; a predicate that raises does not match.

        Raises:
            TypeError: No matcher was given, or one is neither an exception type nor
                callable.

        .. versionadded:: 0.1.0
        """
        return self.with_rules(Rule.matching(*matchers, verdict=Verdict.TRANSIENT))

    def permanent(self, *matchers: Matcher) -> Classifier:
        """Return a classifier that also calls matching exceptions permanent.

        Args:
            *matchers: Exception types (subclasses match too) and predicates taking
                the exception; a predicate that raises does not match.

        Raises:
            TypeError: No matcher was given, or one is neither an exception type nor
                callable.

        .. versionadded:: 0.1.0
        """
        return self.with_rules(Rule.matching(*matchers, verdict=Verdict.PERMANENT))

    def statuses(self, codes: Iterable[int], verdict: Verdict) -> Classifier:
        """Return a classifier that gives `verdict` to exceptions carrying `codes`.

        Args:
            codes: HTTP status codes, each in 100..599, read with `status_code_of`.
            verdict: The verdict for those statuses.

        Raises:
            TypeError: ``codes`` is not an iterable of ints, or ``verdict`` is not a
                `Verdict`.
            ValueError: A code is outside 100..599.

        .. versionadded:: 0.1.0
        """
        return self.with_rules(Rule.statuses(codes, verdict))

    def match(self, exc: BaseException) -> Verdict | None:
        """Return the verdict of the first rule that has one, or ``None`` (unknown).

        The default causes rule judges what `exc` was raised from with this
        classifier's own rules, so rules you add apply to causes too. Never raises: a
        rule that raises is skipped.

        .. versionadded:: 0.1.0
        """
        return self._match(exc, 0, ())

    def _match(self, exc: BaseException, depth: int, seen: tuple[int, ...]) -> Verdict | None:
        for rule in self._rules:
            if rule.decide is _causes:  # judged with this classifier's own rules
                verdict = self._match_cause(exc, depth, seen)
            else:
                try:
                    verdict = rule.decide(exc)
                except Exception:  # noqa: S112 - a rule that raises is skipped
                    continue
            if verdict.__class__ is Verdict:
                return verdict
        return None

    def _match_cause(
        self, exc: BaseException, depth: int, seen: tuple[int, ...]
    ) -> Verdict | None:
        """Match what `exc` was raised from, up to `_MAX_CAUSES` links, never twice."""
        if depth >= _MAX_CAUSES:
            return None
        cause = _next_cause(exc)
        if cause is None or cause is exc or id(cause) in seen:
            return None
        return self._match(cause, depth + 1, (*seen, id(exc)))

    def classify(self, exc: BaseException) -> Verdict:
        """Return the verdict for `exc`; unknown exceptions are `Verdict.PERMANENT`.

        Never raises.

        .. versionadded:: 0.1.0
        """
        return self.match(exc) or Verdict.PERMANENT

    __call__ = classify

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Classifier is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Classifier is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Callable[[tuple[Rule, ...]], Classifier], tuple[object, ...]]:
        return (Classifier._of, (self._rules,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Classifier):
            return NotImplemented
        return self._rules == other._rules

    def __hash__(self) -> int:
        return hash(self._rules)

    def __repr__(self) -> str:
        mine = len(self._rules) - len(DEFAULT_RULES)
        if mine >= 0 and self._rules[mine:] == DEFAULT_RULES:
            return f"Classifier({list(self._rules[:mine])!r})"
        return f"Classifier({list(self._rules)!r}, defaults=False)"


DEFAULT_CLASSIFIER: Final = Classifier()
"""The classifier used when none is given.

.. versionadded:: 0.1.0
"""


def classify(exc: BaseException) -> Verdict:
    """Classify `exc` with `DEFAULT_CLASSIFIER`; unknown exceptions are permanent.

    >>> from stalwart.classify import classify
    >>> classify(ConnectionResetError())
    <Verdict.TRANSIENT: 'transient'>

    Args:
        exc: The exception to classify.

    Returns:
        `Verdict.TRANSIENT` when trying again may help, else `Verdict.PERMANENT`.

    .. versionadded:: 0.1.0
    """
    return DEFAULT_CLASSIFIER.classify(exc)


for _public in (Rule, Verdict, parse_retry_after, retry_after_of, status_code_of):
    _public.__module__ = __name__  # documented, pickled and shown as stalwart.classify.*
del _public
