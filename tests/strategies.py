"""Hypothesis strategies shared by the test modules."""

from __future__ import annotations

import builtins
import contextlib
import errno
import socket
from typing import Any, NoReturn

from hypothesis import strategies as st

from stalwart.errors import CircuitOpenError, PermanentError, TimeoutExceeded, TransientError

# --- exceptions -------------------------------------------------------------------------


def _instantiable(cls: type[BaseException]) -> bool:
    try:
        cls()
    except Exception:
        return False
    return True


#: Every built-in exception class that can be made without arguments, including the
#: ``BaseException``-only ones (``KeyboardInterrupt``, ``SystemExit``, ...).
BUILTIN_EXCEPTION_TYPES: list[type[BaseException]] = sorted(
    (
        obj
        for obj in vars(builtins).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and _instantiable(obj)
    ),
    key=lambda cls: cls.__name__,
)

#: Modules and class names that the classifier recognises in third-party libraries.
THIRD_PARTY_MODULES = [
    "httpx._exceptions",
    "requests.exceptions",
    "urllib3.exceptions",
    "aiohttp.client_exceptions",
    "psycopg.errors",
    "psycopg2",
    "psycopg2.extensions",
    "django.db.utils",
    "sqlalchemy.exc",
    "sqlite3",
    "pymysql.err",
    "MySQLdb._exceptions",
    "asyncio.exceptions",
    "trio",
    "myapp.errors",
]
THIRD_PARTY_NAMES = [
    "TimeoutException",
    "ReadTimeout",
    "NetworkError",
    "RemoteProtocolError",
    "ConnectionError",
    "Timeout",
    "ChunkedEncodingError",
    "SSLError",
    "ProtocolError",
    "NewConnectionError",
    "TimeoutError",
    "ClientConnectionError",
    "ClientSSLError",
    "ServerTimeoutError",
    "SerializationFailure",
    "DeadlockDetected",
    "TransactionRollbackError",
    "OperationalError",
    "IntegrityError",
    "DBAPIError",
    "TooSlowError",
    "Cancelled",
]

NETWORK_ERRNO_NAMES = ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "EPIPE"]


def _raise(*_args: object) -> NoReturn:
    raise RuntimeError("hostile attribute")


class HostileObject:
    """An object whose every attribute and truth value raise."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(f"no {name} for you")

    __bool__ = _raise


class FakeResponse:
    """A response-like object with a status code and headers."""

    def __init__(self, status_code: object, headers: object) -> None:
        self.status_code = status_code
        self.headers = headers


def hostile_subclass(base: type[BaseException]) -> type[BaseException]:
    """Return a subclass of `base` whose interesting attributes raise when read."""
    hostile = property(_raise)
    namespace = dict.fromkeys(
        ("status_code", "status", "response", "retry_after", "headers", "sqlstate", "orig"),
        hostile,
    )
    namespace["__getattr__"] = _raise
    return type(f"Hostile{base.__name__}", (base,), namespace)


def special_exceptions() -> st.SearchStrategy[BaseException]:
    """Exceptions that need arguments, or that stalwart defines."""
    groups = []
    if hasattr(builtins, "BaseExceptionGroup"):  # Python 3.11+
        groups = [
            builtins.ExceptionGroup("group", [ValueError(), TimeoutError()]),
            builtins.BaseExceptionGroup("group", [KeyboardInterrupt()]),
        ]
    return st.sampled_from(
        [
            *groups,
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            socket.gaierror(getattr(socket, "EAI_AGAIN", -3), "try again"),
            TransientError("flaky", status_code=503, retry_after=1.0),
            PermanentError("nope", status_code=404),
            CircuitOpenError("db", retry_after=3.0),
            TimeoutExceeded(1.0),
        ]
    )


@st.composite
def exception_types(draw: st.DrawFn) -> type[BaseException]:
    """Built-in exception types, fakes of third-party ones, and hostile subclasses."""
    base = draw(st.sampled_from(BUILTIN_EXCEPTION_TYPES))
    kind = draw(st.sampled_from(["builtin", "fake", "hostile"]))
    if kind == "fake":
        module = draw(st.sampled_from(THIRD_PARTY_MODULES))
        name = draw(st.sampled_from(THIRD_PARTY_NAMES))
        return type(name, (base,), {"__module__": module})
    if kind == "hostile":
        return hostile_subclass(base)
    return base


_ANYTHING: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.builds(HostileObject),
)
_STATUS = st.one_of(_ANYTHING, st.integers(100, 599))
_HEADERS = st.one_of(
    _ANYTHING,
    st.dictionaries(
        st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER", "X-Other"]),
        st.one_of(_ANYTHING, st.sampled_from(["120", "Wed, 21 Oct 2015 07:28:00 GMT"])),
        max_size=3,
    ),
)
_RESPONSE = st.one_of(_ANYTHING, st.builds(FakeResponse, status_code=_STATUS, headers=_HEADERS))
_ERRNO = st.one_of(
    _ANYTHING,
    st.sampled_from([getattr(errno, name) for name in NETWORK_ERRNO_NAMES]),
)
_SQLSTATE = st.one_of(_ANYTHING, st.sampled_from(["40001", "40P01", "08006", "23505", "42601"]))
_ATTRIBUTES = {
    "status_code": _STATUS,
    "status": _STATUS,
    "response": _RESPONSE,
    "headers": _HEADERS,
    "retry_after": _ANYTHING,
    "errno": _ERRNO,
    "sqlstate": _SQLSTATE,
    "pgcode": _SQLSTATE,
    "connection_invalidated": _ANYTHING,
}


@st.composite
def exceptions(draw: st.DrawFn, *, max_depth: int = 2) -> BaseException:
    """Any exception: odd types, odd attributes, hostile attributes, cycles via ``orig``."""
    if draw(st.integers(0, 9)) == 0:
        return draw(special_exceptions())
    cls = draw(exception_types())
    exc = cls()
    for name in draw(st.lists(st.sampled_from(sorted(_ATTRIBUTES)), unique=True, max_size=4)):
        value = draw(_ATTRIBUTES[name])
        with contextlib.suppress(AttributeError, TypeError):  # read-only or hostile
            setattr(exc, name, value)
    if draw(st.booleans()):
        orig: BaseException = draw(exceptions(max_depth=max_depth - 1)) if max_depth > 0 else exc
        with contextlib.suppress(AttributeError, TypeError):
            exc.orig = orig  # type: ignore[attr-defined]
    return exc


# --- circuit breaker ----------------------------------------------------------------------

#: Time windows whose bucket width (window / 20) is a power of two, so that times made
#: of multiples of `TICK` fall on bucket edges exactly, with no float rounding.
DYADIC_WINDOWS = [1.25, 2.5, 5.0, 10.0, 20.0]
#: The clock's smallest step in the breaker's stateful test (exact in binary).
TICK = 1 / 64


@st.composite
def breaker_configs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for a valid `BreakerConfig`, mixing every way to trip.

    Times are dyadic (exact in binary), so clock arithmetic in the tests is exact.
    """
    failure_threshold = draw(st.none() | st.integers(1, 5))
    window = draw(st.none() | st.sampled_from(DYADIC_WINDOWS))
    failure_rate = draw(st.none() | st.sampled_from([0.25, 0.5, 0.6, 1.0]))
    slow_call_rate = draw(st.none() | st.sampled_from([0.25, 0.5, 1.0]))
    if failure_threshold is None and failure_rate is None and slow_call_rate is None:
        failure_threshold = draw(st.integers(1, 5))
    # window_calls only with a rate; minimum_calls at most window_calls, or the default.
    rated = failure_rate is not None or slow_call_rate is not None
    window_calls = draw(st.none() | st.integers(1, 8)) if rated else None
    return {
        "failure_threshold": failure_threshold,
        "window": window,
        "failure_rate": failure_rate,
        "minimum_calls": draw(st.none() | st.integers(1, min(6, window_calls or 6))),
        "window_calls": window_calls,
        "slow_call_duration": (
            None if slow_call_rate is None else draw(st.sampled_from([0.25, 1.0]))
        ),
        "slow_call_rate": slow_call_rate,
        "recovery_timeout": draw(st.sampled_from([0.5, 1.0, 2.5, 30.0])),
        "half_open_max_calls": draw(st.integers(1, 3)),
        "success_threshold": draw(st.integers(1, 3)),
    }


#: Where a breaker's clock starts: at zero, or far along as a monotonic clock is.
breaker_start_times = st.sampled_from([0.0, 0.5, 1_000.0, 123_456.25])

#: One step for a window test: ``(advance, lag, failed, slow, observe)``: move the clock
#: on by `advance`, record an outcome `lag` seconds in the past, and maybe read counts.
window_steps = st.tuples(
    st.one_of(
        st.just(0.0),
        st.floats(0, 1, allow_nan=False),
        st.floats(0, 100, allow_nan=False),
        st.sampled_from([1e3, 1e6]),
    ),
    st.one_of(st.just(0.0), st.floats(0, 50, allow_nan=False)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
