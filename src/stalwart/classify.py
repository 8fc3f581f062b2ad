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

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import errno
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, NoReturn, TypeAlias, final

from ._record import Record
from ._validate import timedelta_seconds
from .errors import CircuitOpenError, PermanentError, TransientError

if TYPE_CHECKING:
    from datetime import datetime

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

_Predicate: TypeAlias = Callable[[BaseException], bool]
_Matcher: TypeAlias = type[BaseException] | _Predicate
_Decide: TypeAlias = Callable[[BaseException], "Verdict | None"]


# ---------------------------------------------------------------------------------------
# Reading what an exception carries, without ever raising.


def _attr(obj: object, name: str) -> object:
    """Return ``obj.<name>``, or ``None`` when it is missing or reading it raises."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _int_attr(obj: object, name: str) -> int | None:
    """Return ``obj.<name>`` as an int when it is one (booleans are not)."""
    value = _attr(obj, name)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


def status_code_of(exc: BaseException) -> int | None:
    """Return the HTTP status code an exception carries, if any.

    Looks, in order, at ``exc.status_code`` (stalwart's markers and many web
    frameworks), ``exc.response.status_code`` (``httpx.HTTPStatusError``,
    ``requests.HTTPError``) and ``exc.status`` (aiohttp's ``ClientResponseError``,
    ``urllib.error.HTTPError``). Only integers count. Never raises.

    Args:
        exc: The exception to inspect.

    Returns:
        The status code, or ``None`` when the exception carries none.

    .. versionadded:: 0.1.0
    """
    code = _int_attr(exc, "status_code")
    if code is None:
        response = _attr(exc, "response")
        if response is not None:
            code = _int_attr(response, "status_code")
    if code is None:
        code = _int_attr(exc, "status")
    return code


# Compiled on first use (and cached by `re`): most programs never read a Retry-After.
_DELTA_SECONDS: Final = r"[0-9]+(?:\.[0-9]+)?"


def parse_retry_after(
    value: str | bytes | int | float | None,  # noqa: PYI041 (int spelled out: bool is refused)
    *,
    now: datetime | None = None,
) -> float | None:
    """Parse a ``Retry-After`` value into seconds to wait.

    Accepts delta-seconds (``"120"``; a decimal such as ``"1.5"`` is tolerated), an
    HTTP date (RFC 9110 IMF-fixdate ``"Sun, 06 Nov 1994 08:49:37 GMT"``, and the
    obsolete RFC 850 and asctime forms; a date without a zone is read as UTC), or a
    number. Never raises.

    Args:
        value: The header value, as text or bytes, or a number of seconds.
        now: The current time, to measure an HTTP date against. Defaults to
            ``datetime.now(timezone.utc)``; a naive value is read as UTC.

    Returns:
        The seconds to wait, at least ``0.0`` (a date in the past gives ``0.0``), or
        ``None`` when the value is missing, empty, negative, not finite or unreadable.

    .. versionadded:: 0.1.0
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _seconds(value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return _parse_text(value.strip(), now)
    return None


def _parse_text(text: str, now: datetime | None) -> float | None:
    if not text:
        return None
    if re.fullmatch(_DELTA_SECONDS, text):
        return _seconds(float(text))
    from datetime import datetime, timezone  # noqa: PLC0415 - only for HTTP dates
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - only for HTTP dates

    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        if now is None:
            now = datetime.now(timezone.utc)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _seconds(value: object) -> float | None:
    """Return a wait as non-negative finite seconds, or ``None``."""
    from_timedelta = timedelta_seconds(value)
    if from_timedelta is not None:
        value = from_timedelta
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            return None
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _header(headers: object, name: str) -> object:
    """Return a header from any mapping-like object, matching the name in any case."""
    get = _attr(headers, "get")
    if callable(get):
        for key in (name, name.lower()):
            try:
                value = get(key)
            except Exception:
                value = None
            if value is not None:
                return value
    if isinstance(headers, Mapping):
        folded = name.lower()
        try:
            for key, value in headers.items():
                if isinstance(key, str) and key.lower() == folded:
                    return value
        except Exception:
            return None
    return None


def retry_after_of(exc: object) -> float | None:
    """Return how long an exception (or a response) asks its caller to wait.

    Reads ``exc.retry_after`` when it is a non-negative finite number of seconds (or a
    `datetime.timedelta`), as `TransientError` and `CircuitOpenError` carry; otherwise
    the ``Retry-After`` header of ``exc.response.headers`` (httpx, requests) or of
    ``exc.headers`` (aiohttp, urllib, and any HTTP response object), matched in any
    case. Never raises.

    Args:
        exc: The exception to inspect, or an HTTP response.

    Returns:
        The seconds to wait, or ``None`` when the exception carries no usable hint.

    .. versionadded:: 0.1.0
    """
    seconds = _seconds(_attr(exc, "retry_after"))
    if seconds is not None:
        return seconds
    for holder in (_attr(exc, "response"), exc):
        headers = _attr(holder, "headers")
        if headers is None:
            continue
        value = _header(headers, "Retry-After")
        if isinstance(value, str | bytes | int | float):
            seconds = parse_retry_after(value)
            if seconds is not None:
                return seconds
    return None


# ---------------------------------------------------------------------------------------
# Rules.


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
    predicates: tuple[_Predicate, ...]

    def __init__(
        self,
        verdict: Verdict,
        types: tuple[type[BaseException], ...],
        predicates: tuple[_Predicate, ...],
    ) -> None:
        self._set(verdict, types, predicates)

    def __call__(self, exc: BaseException) -> Verdict | None:
        if isinstance(exc, self.types):
            return self.verdict
        for predicate in self.predicates:
            if _holds(predicate, exc):
                return self.verdict
        return None


def _holds(predicate: _Predicate, exc: BaseException) -> bool:
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
    decide: _Decide
    name: str

    def __init__(self, decide: _Decide, name: str = "") -> None:
        if not callable(decide):
            raise TypeError(f"decide must be callable, got {decide!r}")
        self._set(decide, name or _describe(decide))

    def _key(self) -> tuple[_Decide]:
        return (self.decide,)  # the name is a label: rules that decide alike are equal

    @classmethod
    def matching(cls, *matchers: _Matcher, verdict: Verdict) -> Rule:
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
        predicates: list[_Predicate] = []
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


# ---------------------------------------------------------------------------------------
# The default rules.


def _lineage(cls: type) -> tuple[tuple[str, str], ...]:
    """Return ``(module, name)`` for each class in the MRO of `cls`."""
    return tuple(
        (str(getattr(base, "__module__", "")), str(getattr(base, "__name__", "")))
        for base in cls.__mro__
    )


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


class _Family:  # a slotted class: a NamedTuple costs ten times as much to import
    """Exception classes known by name within some packages, recognised in an MRO."""

    __slots__ = ("excluded", "names", "packages")

    def __init__(
        self,
        packages: tuple[str, ...],
        names: frozenset[str],
        excluded: frozenset[str] = frozenset(),
    ) -> None:
        self.packages = packages
        self.names = names
        self.excluded = excluded

    def matches_lineage(self, lineage: tuple[tuple[str, str], ...]) -> bool:
        """Whether a class with this lineage inherits one of `names`, none of `excluded`."""
        found = {
            name
            for module, name in lineage
            if any(_in(module, package) for package in self.packages)
        }
        return bool(found & self.names) and not found & self.excluded


def _never_retry(exc: BaseException) -> Verdict | None:
    """Cancellation, interpreter exits and open circuits are never retried."""
    if not isinstance(exc, Exception) or isinstance(exc, CircuitOpenError):
        return Verdict.PERMANENT
    return None


def _markers(exc: BaseException) -> Verdict | None:
    """`TransientError` and `PermanentError` say what they are (permanent wins a tie)."""
    if isinstance(exc, PermanentError):
        return Verdict.PERMANENT
    if isinstance(exc, TransientError):
        return Verdict.TRANSIENT
    return None


def _http_status(exc: BaseException) -> Verdict | None:
    """Transient for the statuses worth retrying, permanent for other 4xx."""
    code = status_code_of(exc)
    if code is None:
        return None
    if code in TRANSIENT_STATUS_CODES:
        return Verdict.TRANSIENT
    if 400 <= code <= 499:
        return Verdict.PERMANENT
    return None


# --- Library judges: the instance decides, for classes `_known_errors` names so. -------


def _sdk_status(exc: BaseException) -> Verdict | None:
    """An SDK status error: 5xx other than 501 and 505 (Anthropic's 529) is transient."""
    code = status_code_of(exc)
    if code is not None and 500 <= code <= 599 and code not in (501, 505):
        return Verdict.TRANSIENT
    return None


def _grpc(exc: BaseException) -> Verdict | None:
    """A gRPC ``RpcError`` by the name of its status code."""
    from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

    code = _attr(exc, "code")
    if not callable(code):
        return None
    try:
        name = _attr(code(), "name")
    except Exception:
        return None
    if name in _known_errors.GRPC_TRANSIENT:
        return Verdict.TRANSIENT
    if name in _known_errors.GRPC_PERMANENT:
        return Verdict.PERMANENT
    return None


def _google(exc: BaseException) -> Verdict | None:
    """A google-api-core error by its ``code`` (an HTTP status) or its gRPC status."""
    from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

    code = _int_attr(exc, "code")
    if code is not None:
        if code in TRANSIENT_STATUS_CODES:
            return Verdict.TRANSIENT
        return Verdict.PERMANENT if 400 <= code <= 499 else None
    name = _attr(_attr(exc, "grpc_status_code"), "name")
    if name in _known_errors.GRPC_TRANSIENT:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT if name in _known_errors.GRPC_PERMANENT else None


def _botocore(exc: BaseException) -> Verdict | None:
    """A botocore ``ClientError`` by its error code, then by its HTTP status."""
    from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

    response = _attr(exc, "response")
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    if code in _known_errors.AWS_TRANSIENT_CODES:  # throttling comes as a 400 too
        return Verdict.TRANSIENT
    if code in _known_errors.AWS_PERMANENT_CODES:
        return Verdict.PERMANENT
    metadata = response.get("ResponseMetadata")
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    if isinstance(status, int) and not isinstance(status, bool):
        if status in TRANSIENT_STATUS_CODES:
            return Verdict.TRANSIENT
        if 400 <= status <= 499:
            return Verdict.PERMANENT
    return None


def _mongo_labelled(exc: BaseException) -> bool:
    from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

    has_label = _attr(exc, "has_error_label")
    if not callable(has_label):
        return False
    try:
        return any(has_label(label) is True for label in _known_errors.MONGO_TRANSIENT_LABELS)
    except Exception:
        return False


def _mongo(exc: BaseException) -> Verdict | None:
    """A pymongo error carrying a retryable error label is transient."""
    return Verdict.TRANSIENT if _mongo_labelled(exc) else None


def _mongo_operation(exc: BaseException) -> Verdict | None:
    """A pymongo ``OperationFailure``: labels, then retryable codes, else permanent."""
    from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

    if _mongo_labelled(exc) or _int_attr(exc, "code") in _known_errors.MONGO_TRANSIENT_CODES:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def _asyncpg_interface(exc: BaseException) -> Verdict | None:
    """An asyncpg ``InterfaceError`` is transient when it says the connection is closed."""
    try:
        text = str(exc)
    except Exception:
        return None
    return Verdict.TRANSIENT if "connection is closed" in text else None


_JUDGES: Final[dict[str, _Decide]] = {
    "sdk_status": _sdk_status,
    "grpc": _grpc,
    "google": _google,
    "botocore": _botocore,
    "mongo": _mongo,
    "mongo_operation": _mongo_operation,
    "asyncpg_interface": _asyncpg_interface,
}
_STOP: Final = "stop"


def _library_entry(lineage: tuple[tuple[str, str], ...]) -> Verdict | _Decide | str | None:
    """Return what the most derived class the tables name says, or ``None``.

    That is a verdict, a judge taking the exception, or `_STOP`.
    """
    from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

    tables = _known_errors.LIBRARIES
    for module, name in lineage:
        parts = module.split(".")
        for end in range(len(parts), 0, -1):
            table = tables.get(".".join(parts[:end]))
            if table is not None and name in table:
                spec = table[name]
                if spec == _known_errors.PASS:
                    return None
                if spec == _known_errors.STOP:
                    return _STOP
                if spec in (_known_errors.T, _known_errors.P):
                    return Verdict(spec)
                return _JUDGES[spec]
    return None


_DB_PACKAGES = ("psycopg", "psycopg2", "django.db", "sqlalchemy", "sqlite3", "pymysql", "MySQLdb")
_PG_ROLLBACK: Final = _Family(
    ("psycopg", "psycopg2"),
    frozenset(
        {
            "SerializationFailure",
            "DeadlockDetected",
            "TransactionRollback",  # psycopg 3
            "TransactionRollbackError",  # psycopg2
        }
    ),
)
_DB_OPERATIONAL: Final = _Family(_DB_PACKAGES, frozenset({"OperationalError"}))
_DB_INTEGRITY: Final = _Family(_DB_PACKAGES, frozenset({"IntegrityError"}))
_SQLALCHEMY_WRAPPER: Final = _Family(("sqlalchemy",), frozenset({"DBAPIError"}))
# A pool timeout, and a connection the pool found dead (a ping, a checkout listener).
_SQLALCHEMY_TRANSIENT: Final = _Family(
    ("sqlalchemy",), frozenset({"TimeoutError", "DisconnectionError"})
)

_HTTP_CLIENTS: Final = (
    # httpx and httpcore, and the httpx2/httpcore2 forks some SDKs ship with.
    _Family(
        ("httpx", "httpcore", "httpx2", "httpcore2"),
        frozenset({"TimeoutException", "NetworkError", "RemoteProtocolError"}),
    ),
    # requests' exceptions are OSErrors; its SSLError (a ConnectionError) is usually a
    # certificate problem that waiting will not fix, so it is left to later rules.
    _Family(
        ("requests",),
        frozenset({"ConnectionError", "Timeout", "ChunkedEncodingError"}),
        excluded=frozenset({"SSLError"}),
    ),
    # MaxRetryError is left unknown: urllib3 has already retried.
    _Family(("urllib3",), frozenset({"TimeoutError", "ProtocolError", "NewConnectionError"})),
    _Family(
        ("aiohttp",),
        frozenset({"ClientConnectionError", "ServerTimeoutError"}),
        excluded=frozenset({"ClientSSLError", "ServerFingerprintMismatch"}),
    ),
)

# Timeouts that are not the built-in TimeoutError on every supported Python: asyncio's
# and concurrent.futures' before 3.11, and trio's.
_OTHER_TIMEOUTS: Final = _Family(
    ("asyncio", "concurrent.futures", "trio"), frozenset({"TimeoutError", "TooSlowError"})
)
_KNOWN_PACKAGES: list[frozenset[str]] = []
"""The packages the default rules know, computed at the first classification."""


def _known_packages() -> frozenset[str]:
    if not _KNOWN_PACKAGES:
        from . import _known_errors  # noqa: PLC0415 - loaded at the first classification

        families = (*_HTTP_CLIENTS, _DB_OPERATIONAL)
        packages = {*_known_errors.LIBRARIES, *(p for f in families for p in f.packages)}
        _KNOWN_PACKAGES.append(frozenset(packages))
    return _KNOWN_PACKAGES[0]


class _TypeInfo:
    """What the type of an exception alone says to the default rules (cached per type)."""

    __slots__ = ("db_after", "db_first", "http", "known", "library", "other_timeout", "wrapper")

    def __init__(
        self,
        *,
        library: Verdict | _Decide | str | None = None,
        wrapper: bool = False,
        db_first: Verdict | None = None,
        db_after: Verdict | None = None,
        http: Verdict | None = None,
        other_timeout: bool = False,
        known: bool = False,
    ) -> None:
        self.library = library  # a verdict, a judge, `_STOP` or nothing
        self.wrapper = wrapper  # a SQLAlchemy DBAPIError, judged by what it wraps
        self.db_first = db_first  # a psycopg rollback class: before the SQLSTATE
        self.db_after = db_after  # OperationalError, IntegrityError, ...: after it
        self.http = http  # an HTTP client's timeout or connection error
        self.other_timeout = other_timeout  # asyncio's, concurrent.futures' or trio's
        self.known = known  # a class of the MRO comes from a library named here


_TYPE_INFO: dict[type, _TypeInfo] = {}
_MAX_TYPES: Final = 1024
"""Types remembered; past that the cache starts again (bounded whatever the program
does, such as making exception classes on the fly)."""


def _type_info(cls: type) -> _TypeInfo:
    info = _TYPE_INFO.get(cls)
    if info is None:
        info = _compute_type_info(cls)
        if len(_TYPE_INFO) >= _MAX_TYPES:
            _TYPE_INFO.clear()
        _TYPE_INFO[cls] = info
    return info


def _compute_type_info(cls: type) -> _TypeInfo:
    lineage = _lineage(cls)
    packages = _known_packages()
    known = any(_in(module, package) for module, _ in lineage for package in packages)
    if not known:  # built-ins and the program's own exceptions: the common case
        return _TypeInfo(other_timeout=_OTHER_TIMEOUTS.matches_lineage(lineage))
    db_after = None
    if _DB_OPERATIONAL.matches_lineage(lineage) or _SQLALCHEMY_TRANSIENT.matches_lineage(lineage):
        db_after = Verdict.TRANSIENT
    elif _DB_INTEGRITY.matches_lineage(lineage):
        db_after = Verdict.PERMANENT
    http = any(family.matches_lineage(lineage) for family in _HTTP_CLIENTS)
    return _TypeInfo(
        library=_library_entry(lineage),
        wrapper=_SQLALCHEMY_WRAPPER.matches_lineage(lineage),
        db_first=Verdict.TRANSIENT if _PG_ROLLBACK.matches_lineage(lineage) else None,
        db_after=db_after,
        http=Verdict.TRANSIENT if http else None,
        other_timeout=_OTHER_TIMEOUTS.matches_lineage(lineage),
        known=True,
    )


def _libraries(exc: BaseException) -> Verdict | None:
    """Client libraries' errors, by class (cached per type) or by what they carry."""
    entry = _type_info(type(exc)).library
    if entry is None or entry.__class__ is Verdict:
        return entry
    if callable(entry):
        return entry(exc)
    return None  # _STOP


_TRANSIENT_SQLSTATES: Final = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
    }
)
_MAX_WRAPPER_DEPTH: Final = 4


def _wrapped(exc: BaseException, depth: int) -> Verdict | None:
    """Judge a SQLAlchemy ``DBAPIError`` by the connection and by the driver's error."""
    if _attr(exc, "connection_invalidated") is True:
        return Verdict.TRANSIENT
    # The driver's error is more specific than the wrapper's generic class: a
    # serialization failure inside an OperationalError decides on its own.
    orig = _attr(exc, "orig")
    if isinstance(orig, BaseException) and orig is not exc and depth < _MAX_WRAPPER_DEPTH:
        return _database_at(orig, depth + 1) or _libraries(orig) or _builtins(orig)
    return None


def _sqlstate(exc: BaseException) -> Verdict | None:
    """Judge the SQLSTATE of psycopg 3 and asyncpg (``sqlstate``) or psycopg2 (``pgcode``)."""
    for name in ("sqlstate", "pgcode"):
        code = _attr(exc, name)
        if isinstance(code, str) and len(code) == 5:
            if code in _TRANSIENT_SQLSTATES or code.startswith("08"):
                return Verdict.TRANSIENT
            if code.startswith("23"):
                return Verdict.PERMANENT
            return None
    return None


def _database(exc: BaseException) -> Verdict | None:
    """Retry serialization failures, deadlocks and lost connections; not integrity errors."""
    return _database_at(exc, 0)


def _database_at(exc: BaseException, depth: int) -> Verdict | None:
    info = _type_info(type(exc))
    verdict = _wrapped(exc, depth) if info.wrapper else None
    return verdict or info.db_first or _sqlstate(exc) or info.db_after


def _http_clients(exc: BaseException) -> Verdict | None:
    """httpx, httpcore, requests, urllib3 and aiohttp timeouts and connection errors."""
    return _type_info(type(exc)).http


_NETWORK_ERRNOS: Final = frozenset(
    code
    for code in (
        getattr(errno, name, None)
        for name in (
            "ECONNREFUSED",
            "ECONNRESET",
            "ECONNABORTED",
            "ETIMEDOUT",
            "EHOSTUNREACH",
            "ENETUNREACH",
            "ENETDOWN",
            "ENETRESET",
            "EHOSTDOWN",
            "EPIPE",
            "ESHUTDOWN",
            "WSAECONNREFUSED",
            "WSAECONNRESET",
            "WSAECONNABORTED",
            "WSAETIMEDOUT",
            "WSAEHOSTUNREACH",
            "WSAENETUNREACH",
            "WSAENETDOWN",
            "WSAENETRESET",
            "WSAEHOSTDOWN",
        )
    )
    if isinstance(code, int)
)
_TIMEOUT_OR_CONNECTION: Final = (TimeoutError, ConnectionError)


def _builtins(exc: BaseException) -> Verdict | None:
    """Timeouts, connection errors, network errnos and temporary DNS failures."""
    if isinstance(exc, _TIMEOUT_OR_CONNECTION) or _type_info(type(exc)).other_timeout:
        return Verdict.TRANSIENT
    # A gaierror can only exist once `socket` is imported: no need to import it here.
    socket = sys.modules.get("socket")
    if socket is not None and isinstance(exc, socket.gaierror):
        # Only "try again later": a name that does not exist will not start existing.
        return Verdict.TRANSIENT if exc.errno == getattr(socket, "EAI_AGAIN", None) else None
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return Verdict.TRANSIENT
    return None


_MAX_CAUSES: Final = 4
"""How many links of a cause chain the causes rule follows."""


def _next_cause(exc: BaseException) -> BaseException | None:
    """The exception `exc` was raised from, or, for a known library's, in handling.

    ``__cause__`` (``raise ... from err``) always counts. ``__context__`` (an exception
    being handled when `exc` was raised) counts only when `exc` comes from a library
    the default rules know and its context is not suppressed (``from None``): in
    application code, the context is often an unrelated error handled earlier.
    Libraries that have already retried (`_STOP`) give no cause.
    """
    info = _type_info(type(exc))
    if info.library is _STOP:
        return None
    cause = _attr(exc, "__cause__")
    if cause is None and info.known and _attr(exc, "__suppress_context__") is False:
        cause = _attr(exc, "__context__")
    return cause if isinstance(cause, BaseException) else None


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

    def transient(self, *matchers: _Matcher) -> Classifier:
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

    def permanent(self, *matchers: _Matcher) -> Classifier:
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
