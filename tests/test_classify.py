"""Tests for stalwart.classify: default rules, custom rules, Retry-After parsing."""

from __future__ import annotations

import asyncio
import builtins
import copy
import errno
import json
import math
import pickle
import socket
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart.classify as classify_module
from stalwart.classify import (
    DEFAULT_CLASSIFIER,
    DEFAULT_RULES,
    TRANSIENT_STATUS_CODES,
    Classifier,
    Rule,
    Verdict,
    classify,
    parse_retry_after,
    retry_after_of,
    status_code_of,
)
from stalwart.errors import CircuitOpenError, PermanentError, TimeoutExceeded, TransientError
from strategies import FakeResponse, HostileObject, exception_types, exceptions, hostile_subclass

T = Verdict.TRANSIENT
P = Verdict.PERMANENT


def fake(module: str, name: str, *bases: type[BaseException]) -> type[BaseException]:
    """Make an exception class that looks like it was defined in `module`."""
    return type(name, bases or (Exception,), {"__module__": module})


def with_attrs(exc: BaseException, **attrs: object) -> BaseException:
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


def default_match(exc: BaseException) -> Verdict | None:
    return Classifier().match(exc)


# --- Verdict and the module surface ------------------------------------------------------


def test_verdict_values():
    """Verdicts have stable string values."""
    assert Verdict.TRANSIENT.value == "transient"
    assert Verdict.PERMANENT.value == "permanent"
    assert {v.value for v in Verdict} == {"transient", "permanent"}


def test_all_is_sorted_and_complete():
    """`__all__` is sorted and every name in it exists."""
    assert classify_module.__all__ == sorted(
        classify_module.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    for name in classify_module.__all__:
        assert hasattr(classify_module, name)


def test_transient_status_codes():
    """The transient HTTP statuses are exactly the documented ones."""
    assert frozenset({408, 425, 429, 500, 502, 503, 504}) == TRANSIENT_STATUS_CODES


# --- Rule 1: never retried ---------------------------------------------------------------

TrioCancelled = fake("trio", "Cancelled", BaseException)


@pytest.mark.parametrize(
    "exc",
    [
        KeyboardInterrupt(),
        SystemExit(1),
        GeneratorExit(),
        asyncio.CancelledError(),
        TrioCancelled(),
        CircuitOpenError("db", retry_after=1.0),
    ],
    ids=repr,
)
def test_never_retried(exc):
    """Cancellation, exits and open circuits are permanent, never unknown."""
    assert default_match(exc) is P
    assert classify(exc) is P


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are 3.11+")
def test_base_exception_group_never_retried():
    """A BaseExceptionGroup (it may hold a cancellation) is never retried."""
    group = builtins.BaseExceptionGroup("group", [KeyboardInterrupt()])
    assert default_match(group) is P


def test_never_retried_beats_status_and_markers():
    """A BaseException carrying a transient status, or an open circuit marked transient, is permanent."""
    exc = with_attrs(KeyboardInterrupt(), status_code=503)
    assert default_match(exc) is P
    both = type("Both", (CircuitOpenError, TransientError), {})
    assert default_match(both("db")) is P


def test_circuit_open_error_with_transient_status_is_permanent():
    """Retrying into an open circuit is never advised, whatever it carries."""
    assert default_match(with_attrs(CircuitOpenError("x"), status_code=503)) is P


# --- Rule 2: markers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (TransientError("flaky"), T),
        (PermanentError("bad"), P),
        (TransientError("flaky", status_code=404), T),
        (PermanentError("bad", status_code=503), P),
        (type("Sub", (TransientError, ValueError), {})("x"), T),
    ],
    ids=repr,
)
def test_markers_win_over_status(exc, verdict):
    """The marker type decides, whatever status code it carries."""
    assert default_match(exc) is verdict


def test_marker_subclassing_both_is_permanent():
    """An exception that is both markers is permanent: retry only what is known safe."""
    both = type("Both", (TransientError, PermanentError), {})
    assert default_match(both()) is P


# --- Rule 3: HTTP statuses ---------------------------------------------------------------


class HTTPishError(Exception):
    pass


@pytest.mark.parametrize("code", sorted(TRANSIENT_STATUS_CODES))
def test_transient_statuses(code):
    """408, 425, 429 and the retryable 5xx are transient."""
    assert default_match(with_attrs(HTTPishError(), status_code=code)) is T


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 409, 410, 422, 451, 499])
def test_other_4xx_are_permanent(code):
    """Every other 4xx is permanent."""
    assert default_match(with_attrs(HTTPishError(), status_code=code)) is P


@pytest.mark.parametrize("code", [100, 200, 204, 301, 304, 501, 505, 599, 600, -1])
def test_other_statuses_have_no_verdict(code):
    """Statuses that are neither retryable nor 4xx fall through."""
    assert default_match(with_attrs(HTTPishError(), status_code=code)) is None


def test_status_via_response():
    """The status of ``exc.response.status_code`` counts, as httpx and requests carry."""
    assert default_match(with_attrs(HTTPishError(), response=FakeResponse(503, {}))) is T
    assert default_match(with_attrs(HTTPishError(), response=FakeResponse(404, {}))) is P


def test_status_via_status_attribute():
    """``exc.status`` counts, as aiohttp and urllib carry."""
    assert default_match(with_attrs(HTTPishError(), status=429)) is T


def test_status_beats_poison_pill():
    """A ValueError carrying 503 is transient: the status rule comes first."""
    assert default_match(with_attrs(ValueError(), status_code=503)) is T


def test_status_code_of_order_and_types():
    """status_code_of prefers status_code, then response, then status; only ints count."""
    exc = with_attrs(HTTPishError(), status_code=404, response=FakeResponse(503, {}), status=500)
    assert status_code_of(exc) == 404
    exc = with_attrs(HTTPishError(), status_code=None, response=FakeResponse(503, {}), status=500)
    assert status_code_of(exc) == 503
    exc = with_attrs(HTTPishError(), response=FakeResponse("503", {}), status=500)
    assert status_code_of(exc) == 500
    assert status_code_of(with_attrs(HTTPishError(), status_code="503")) is None
    assert status_code_of(with_attrs(HTTPishError(), status_code=True)) is None
    assert status_code_of(with_attrs(HTTPishError(), status_code=503.0)) is None
    assert status_code_of(HTTPishError()) is None


def test_status_code_of_int_enum():
    """An IntEnum status such as HTTPStatus is read as its plain int."""
    code = status_code_of(with_attrs(HTTPishError(), status_code=HTTPStatus.BAD_GATEWAY))
    assert code == 502
    assert type(code) is int


def test_status_code_of_hostile_attributes():
    """status_code_of returns None when reading the attributes raises."""
    exc = hostile_subclass(Exception)()
    assert status_code_of(exc) is None
    assert status_code_of(with_attrs(HTTPishError(), response=HostileObject())) is None


# --- Rule 4: databases -------------------------------------------------------------------

# psycopg 3
PgError = fake("psycopg", "Error")
PgOperational = fake("psycopg", "OperationalError", PgError)
PgRollback = fake("psycopg.errors", "TransactionRollback", PgOperational)
PgSerialization = fake("psycopg.errors", "SerializationFailure", PgRollback)
PgDeadlock = fake("psycopg.errors", "DeadlockDetected", PgRollback)
PgIntegrity = fake("psycopg", "IntegrityError", PgError)
PgUnique = fake("psycopg.errors", "UniqueViolation", PgIntegrity)
PgProgramming = fake("psycopg", "ProgrammingError", PgError)
# psycopg2
Pg2Error = fake("psycopg2", "Error")
Pg2Operational = fake("psycopg2", "OperationalError", Pg2Error)
Pg2Rollback = fake("psycopg2.extensions", "TransactionRollbackError", Pg2Operational)
Pg2Serialization = fake("psycopg2.errors", "SerializationFailure", Pg2Rollback)
Pg2Integrity = fake("psycopg2", "IntegrityError", Pg2Error)
# SQLAlchemy
SAError = fake("sqlalchemy.exc", "SQLAlchemyError")
SAStatement = fake("sqlalchemy.exc", "StatementError", SAError)
SADBAPI = fake("sqlalchemy.exc", "DBAPIError", SAStatement)
SAOperational = fake("sqlalchemy.exc", "OperationalError", SADBAPI)
SAIntegrity = fake("sqlalchemy.exc", "IntegrityError", SADBAPI)
SAInterface = fake("sqlalchemy.exc", "InterfaceError", SADBAPI)
SAPoolTimeout = fake("sqlalchemy.exc", "TimeoutError", SAError)


def wrapped(cls: type[BaseException], orig: object, **attrs: object) -> BaseException:
    return with_attrs(cls("statement failed"), orig=orig, **attrs)


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (PgSerialization(), T),
        (PgDeadlock(), T),
        (PgRollback(), T),
        (PgOperational(), T),
        (PgIntegrity(), P),
        (PgUnique(), P),
        (Pg2Serialization(), T),
        (Pg2Rollback(), T),
        (Pg2Operational(), T),
        (Pg2Integrity(), P),
        (SAPoolTimeout(), T),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_postgres_drivers(exc, verdict):
    """psycopg and psycopg2 rollbacks and operational errors retry; integrity does not."""
    assert default_match(exc) is verdict


@pytest.mark.parametrize(
    "module",
    ["psycopg", "psycopg2", "django.db.utils", "sqlalchemy.exc", "sqlite3", "pymysql.err"],
)
def test_operational_and_integrity_errors_by_module(module):
    """OperationalError is transient and IntegrityError permanent in every known DB module."""
    assert default_match(fake(module, "OperationalError")()) is T
    assert default_match(fake(module, "IntegrityError")()) is P


def test_mysqldb_operational_error():
    """MySQLdb's OperationalError is transient."""
    assert default_match(fake("MySQLdb._exceptions", "OperationalError")()) is T


@pytest.mark.parametrize("module", ["myapp.db", "psycopgx", "sqlalchemy_utils", "django"])
def test_database_names_elsewhere_are_unknown(module):
    """Database class names from other modules are not recognised."""
    assert default_match(fake(module, "OperationalError")()) is None
    assert default_match(fake(module, "SerializationFailure")()) is None
    assert default_match(fake(module, "IntegrityError")()) is None


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("40001", T),
        ("40P01", T),
        ("08006", T),
        ("08001", T),
        ("57P01", T),
        ("53300", T),
        ("23505", P),
        ("23503", P),
        ("42601", None),
        ("4000", None),
        (40001, None),
    ],
)
@pytest.mark.parametrize("attribute", ["sqlstate", "pgcode"])
def test_sqlstate(attribute, code, verdict):
    """SQLSTATE (psycopg 3 ``sqlstate``, psycopg2 ``pgcode``) decides by class and code."""
    exc = with_attrs(PgProgramming(), **{attribute: code})
    assert default_match(exc) is verdict


def test_sqlstate_on_other_drivers():
    """An asyncpg-style ``sqlstate`` counts whatever the module."""
    exc = with_attrs(fake("asyncpg.exceptions", "PostgresError")(), sqlstate="40P01")
    assert default_match(exc) is T


def test_sqlstate_beats_generic_class():
    """A decisive SQLSTATE wins over the generic OperationalError class."""
    assert default_match(with_attrs(PgOperational(), sqlstate="23505")) is P


def test_real_sqlite3_errors():
    """Real sqlite3 errors: operational transient, integrity permanent."""
    connection = sqlite3.connect(":memory:")
    try:
        with pytest.raises(sqlite3.OperationalError) as operational:
            connection.execute("select * from missing")
        connection.execute("create table t (id integer primary key)")
        connection.execute("insert into t values (1)")
        with pytest.raises(sqlite3.IntegrityError) as integrity:
            connection.execute("insert into t values (1)")
    finally:
        connection.close()
    assert default_match(operational.value) is T
    assert default_match(integrity.value) is P


def test_sqlalchemy_connection_invalidated_wins():
    """A wrapper whose connection was invalidated is transient, even an IntegrityError."""
    exc = wrapped(SAIntegrity, PgUnique(), connection_invalidated=True)
    assert default_match(exc) is T
    exc = wrapped(SAIntegrity, PgUnique(), connection_invalidated=False)
    assert default_match(exc) is P


@pytest.mark.parametrize(
    ("wrapper", "orig", "verdict"),
    [
        (SADBAPI, PgSerialization(), T),
        (SADBAPI, Pg2Serialization(), T),
        (SADBAPI, PgIntegrity(), P),
        (SAIntegrity, with_attrs(PgProgramming(), sqlstate="40001"), T),
        (SAOperational, with_attrs(PgProgramming(), sqlstate="23505"), P),
        (SAInterface, ConnectionResetError(), T),
        (SAOperational, RuntimeError("driver"), T),
        (SAIntegrity, RuntimeError("driver"), P),
        (SADBAPI, RuntimeError("driver"), None),
        (SAOperational, "not an exception", T),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__),
)
def test_sqlalchemy_wrapper_judged_by_orig_first(wrapper, orig, verdict):
    """The driver error in ``.orig`` decides before the wrapper's generic class."""
    assert default_match(wrapped(wrapper, orig)) is verdict


def test_sqlalchemy_orig_cycles_terminate():
    """Wrappers whose ``orig`` chain loops back still get a verdict, without recursing forever."""
    exc = SAIntegrity("x")
    exc.orig = exc  # type: ignore[attr-defined]
    assert default_match(exc) is P
    first, second = SADBAPI("a"), SAOperational("b")
    first.orig, second.orig = second, first  # type: ignore[attr-defined]
    assert default_match(first) is T


def test_sqlalchemy_orig_depth_is_bounded():
    """A very deep ``orig`` chain is not followed to the end."""
    exc: BaseException = PgSerialization()
    for _ in range(2):
        exc = wrapped(SADBAPI, exc)
    assert default_match(exc) is T
    for _ in range(10):
        exc = wrapped(SADBAPI, exc)
    assert default_match(exc) is None


# --- Rule 5: HTTP clients ----------------------------------------------------------------

HX = "httpx._exceptions"
HxHTTPError = fake(HX, "HTTPError")
HxRequestError = fake(HX, "RequestError", HxHTTPError)
HxTransportError = fake(HX, "TransportError", HxRequestError)
HxTimeout = fake(HX, "TimeoutException", HxTransportError)
HxNetwork = fake(HX, "NetworkError", HxTransportError)
HxProtocol = fake(HX, "ProtocolError", HxTransportError)
HxStatus = fake(HX, "HTTPStatusError", HxHTTPError)
HTTPX_TRANSIENT = [
    fake(HX, "ConnectTimeout", HxTimeout),
    fake(HX, "ReadTimeout", HxTimeout),
    fake(HX, "WriteTimeout", HxTimeout),
    fake(HX, "PoolTimeout", HxTimeout),
    fake(HX, "ConnectError", HxNetwork),
    fake(HX, "ReadError", HxNetwork),
    fake(HX, "WriteError", HxNetwork),
    fake(HX, "CloseError", HxNetwork),
    fake(HX, "RemoteProtocolError", HxProtocol),
]
HTTPX_UNKNOWN = [
    fake(HX, "LocalProtocolError", HxProtocol),
    fake(HX, "UnsupportedProtocol", HxTransportError),
    fake(HX, "ProxyError", HxTransportError),
    fake(HX, "DecodingError", HxRequestError),
    HxStatus,
]


@pytest.mark.parametrize("cls", HTTPX_TRANSIENT, ids=lambda c: c.__name__)
def test_httpx_transient(cls):
    """httpx timeouts, network errors and remote protocol errors are transient."""
    assert default_match(cls("boom")) is T


@pytest.mark.parametrize("cls", HTTPX_UNKNOWN, ids=lambda c: c.__name__)
def test_httpx_others_unknown(cls):
    """Other httpx errors are not transient."""
    assert default_match(cls("boom")) is None


def test_httpx_status_error_uses_response_status():
    """httpx.HTTPStatusError is judged by its response's status."""
    assert default_match(with_attrs(HxStatus("x"), response=FakeResponse(502, {}))) is T
    assert default_match(with_attrs(HxStatus("x"), response=FakeResponse(404, {}))) is P


def test_user_subclass_of_httpx_error_matches():
    """A user subclass of an httpx timeout is recognised through its MRO."""
    mine = fake("myapp.client", "SlowUpstream", HTTPX_TRANSIENT[1])
    assert default_match(mine()) is T


def test_module_prefix_respects_dots():
    """``httpxyz`` or ``requests_toolbelt`` are not httpx or requests."""
    assert default_match(fake("httpxyz.errors", "TimeoutException")()) is None
    assert default_match(fake("requests_toolbelt.exceptions", "Timeout")()) is None


RQ = "requests.exceptions"
RqBase = fake(RQ, "RequestException", OSError)
RqConnection = fake(RQ, "ConnectionError", RqBase)
RqTimeout = fake(RQ, "Timeout", RqBase)
REQUESTS_TRANSIENT = [
    RqConnection,
    RqTimeout,
    fake(RQ, "ConnectTimeout", RqConnection, RqTimeout),
    fake(RQ, "ReadTimeout", RqTimeout),
    fake(RQ, "ChunkedEncodingError", RqBase),
    fake(RQ, "ProxyError", RqConnection),
]
REQUESTS_NOT_TRANSIENT = [
    (fake(RQ, "SSLError", RqConnection), None),
    (fake(RQ, "TooManyRedirects", RqBase), None),
    (fake(RQ, "HTTPError", RqBase), None),
    (fake(RQ, "ContentDecodingError", RqBase), None),
    (fake(RQ, "InvalidURL", RqBase, ValueError), P),
    (fake(RQ, "MissingSchema", RqBase, ValueError), P),
]


@pytest.mark.parametrize("cls", REQUESTS_TRANSIENT, ids=lambda c: c.__name__)
def test_requests_transient(cls):
    """requests connection errors and timeouts are transient although they are OSErrors."""
    assert issubclass(cls, OSError)
    assert default_match(cls("boom")) is T


@pytest.mark.parametrize(("cls", "verdict"), REQUESTS_NOT_TRANSIENT, ids=str)
def test_requests_others_not_transient(cls, verdict):
    """requests errors not named (InvalidURL, SSLError, ...) are never transient."""
    assert default_match(cls("boom")) is verdict


def test_requests_network_errno_still_counts():
    """A requests error the client rule ignores still falls to the errno rule."""
    exc = fake(RQ, "TooManyRedirects", RqBase)(errno.ECONNRESET, "reset")
    assert default_match(exc) is T


U3 = "urllib3.exceptions"
U3HTTPError = fake(U3, "HTTPError")
U3Timeout = fake(U3, "TimeoutError", U3HTTPError)
U3ConnectTimeout = fake(U3, "ConnectTimeoutError", U3Timeout)
U3Pool = fake(U3, "PoolError", U3HTTPError)
U3Request = fake(U3, "RequestError", U3Pool)


@pytest.mark.parametrize(
    ("cls", "verdict"),
    [
        (U3Timeout, T),
        (U3ConnectTimeout, T),
        (fake(U3, "ReadTimeoutError", U3Timeout, U3Request), T),
        (fake(U3, "NewConnectionError", U3ConnectTimeout), T),
        (fake(U3, "NewConnectionError", U3HTTPError), T),
        (fake(U3, "ProtocolError", U3HTTPError), T),
        (fake(U3, "MaxRetryError", U3Request), None),
        (fake(U3, "SSLError", U3HTTPError), None),
        (fake(U3, "DecodeError", U3HTTPError), None),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_urllib3(cls, verdict):
    """urllib3 timeouts, protocol and new-connection errors are transient; MaxRetryError is not."""
    assert default_match(cls("boom")) is verdict


AIO = "aiohttp.client_exceptions"
AioClient = fake(AIO, "ClientError")
AioConnection = fake(AIO, "ClientConnectionError", AioClient)
AioOSError = fake(AIO, "ClientOSError", AioConnection, OSError)
AioConnector = fake(AIO, "ClientConnectorError", AioOSError)
AioSSL = fake(AIO, "ClientSSLError", AioConnector)
AioServer = fake(AIO, "ServerConnectionError", AioConnection)


@pytest.mark.parametrize(
    ("cls", "verdict"),
    [
        (AioConnection, T),
        (AioConnector, T),
        (fake(AIO, "ServerDisconnectedError", AioServer), T),
        (fake(AIO, "ServerTimeoutError", AioServer), T),
        (AioSSL, None),
        (fake(AIO, "ClientConnectorCertificateError", AioSSL), None),
        (fake(AIO, "ServerFingerprintMismatch", AioServer), None),
        (fake(AIO, "ClientPayloadError", AioClient), None),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_aiohttp(cls, verdict):
    """aiohttp connection errors and server timeouts are transient; TLS failures are not."""
    assert default_match(cls("boom")) is verdict


def test_aiohttp_response_error_uses_status():
    """aiohttp's ClientResponseError is judged by its ``status``."""
    exc = with_attrs(fake(AIO, "ClientResponseError", AioClient)(), status=503)
    assert default_match(exc) is T


class TestRealRequests:
    """The same rules against the real requests and urllib3, when installed."""

    @pytest.fixture(autouse=True)
    def _libs(self):
        self.requests = pytest.importorskip("requests")
        self.urllib3 = pytest.importorskip("urllib3")

    def test_transient(self):
        """Real requests connection errors and timeouts are transient."""
        exceptions = self.requests.exceptions
        for cls in (
            exceptions.ConnectionError,
            exceptions.Timeout,
            exceptions.ConnectTimeout,
            exceptions.ReadTimeout,
            exceptions.ChunkedEncodingError,
        ):
            assert classify(cls("boom")) is T, cls

    def test_not_transient(self):
        """Real requests errors that waiting cannot fix are not transient."""
        exceptions = self.requests.exceptions
        assert classify(exceptions.InvalidURL("x")) is P
        assert default_match(exceptions.TooManyRedirects("x")) is None
        assert default_match(exceptions.SSLError("x")) is None

    def test_http_error_status(self):
        """A real requests.HTTPError is judged by its response status."""
        response = self.requests.Response()
        response.status_code = 503
        response.headers["Retry-After"] = "7"
        exc = self.requests.HTTPError("503", response=response)
        assert classify(exc) is T
        assert retry_after_of(exc) == 7.0

    def test_urllib3(self):
        """Real urllib3 protocol errors are transient and MaxRetryError unknown."""
        exceptions = self.urllib3.exceptions
        assert classify(exceptions.ProtocolError("reset")) is T
        assert classify(exceptions.ReadTimeoutError(None, "/", "slow")) is T
        assert default_match(exceptions.MaxRetryError(None, "/")) is None


# --- Rule 6: built-ins -------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        TimeoutExceeded(1.0),
        socket.timeout(),  # noqa: UP041 (the alias, spelled as users meet it)
        ConnectionError(),
        ConnectionResetError(),
        ConnectionRefusedError(),
        ConnectionAbortedError(),
        BrokenPipeError(),
        fake("asyncio.exceptions", "TimeoutError")(),
        fake("concurrent.futures._base", "TimeoutError")(),
        fake("trio", "TooSlowError")(),
    ],
    ids=repr,
)
def test_timeouts_and_connection_errors(exc):
    """Timeouts (stalwart's, asyncio's, trio's) and connection errors are transient."""
    assert default_match(exc) is T


@pytest.mark.parametrize(
    "name",
    [
        name
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
        )
        if hasattr(errno, name)
    ],
)
def test_network_errnos(name):
    """An OSError with a network errno is transient."""
    assert default_match(OSError(getattr(errno, name), name)) is T


@pytest.mark.parametrize("name", ["ENOENT", "EACCES", "EPERM", "ENOSPC", "EAGAIN"])
def test_other_errnos_unknown(name):
    """An OSError with a non-network errno, or none, is unknown."""
    assert default_match(OSError(getattr(errno, name), name)) is None
    assert default_match(OSError("no errno")) is None


def test_dns_try_again_is_transient():
    """A temporary DNS failure (EAI_AGAIN) is transient; other DNS failures are not."""
    assert default_match(socket.gaierror(socket.EAI_AGAIN, "try again")) is T
    assert default_match(socket.gaierror(socket.EAI_NONAME, "no such host")) is None


def test_dns_error_codes_are_not_errnos():
    """A gaierror is judged by its EAI code only, even if it equals a network errno."""
    assert default_match(socket.gaierror(errno.ECONNRESET, "x")) is None


# --- Rule 7: poison pills and unknowns ---------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        json.JSONDecodeError("bad", "{", 0),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        KeyError("k"),
        ValueError("v"),
        TypeError("t"),
        AttributeError("a"),
    ],
    ids=repr,
)
def test_poison_pills(exc):
    """Poison pills are decided permanent (not merely unknown)."""
    assert default_match(exc) is P


@pytest.mark.parametrize(
    "exc", [RuntimeError(), ZeroDivisionError(), LookupError(), Exception(), HTTPishError()]
)
def test_unknown(exc):
    """Unknown exceptions have no verdict and classify as permanent."""
    assert default_match(exc) is None
    assert Classifier().classify(exc) is P
    assert classify(exc) is P


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are 3.11+")
def test_exception_group_is_unknown():
    """An ExceptionGroup is not judged by its members."""
    assert default_match(builtins.ExceptionGroup("g", [TimeoutError()])) is None


def test_defaults_in_documented_order():
    """DEFAULT_RULES hold the nine rules in order, and the default classifier uses them."""
    assert [rule.name.split(":")[0] for rule in DEFAULT_RULES] == [
        "never retry",
        "markers",
        "HTTP status",
        "libraries",
        "databases",
        "HTTP clients",
        "timeouts and network errors",
        "permanent",
        "causes",
    ]
    assert Classifier().rules == DEFAULT_RULES
    assert DEFAULT_CLASSIFIER.rules == DEFAULT_RULES


# --- custom rules ------------------------------------------------------------------------


class Flaky(Exception):
    pass


def test_custom_type_overrides_defaults():
    """A user rule wins over the default rules."""
    assert Classifier().transient(KeyError).classify(KeyError()) is T
    assert Classifier().permanent(TimeoutError).classify(TimeoutError()) is P
    assert Classifier().transient(Flaky).match(Flaky()) is T
    assert Classifier().transient(Flaky).match(type("Sub", (Flaky,), {})()) is T


def test_latest_rule_wins():
    """Of two conflicting user rules, the one added last wins."""
    assert Classifier().transient(Flaky).permanent(Flaky).match(Flaky()) is P
    assert Classifier().permanent(Flaky).transient(Flaky).match(Flaky()) is T


def test_predicates():
    """A predicate matches when it returns true."""
    classifier = Classifier().transient(lambda exc: "flaky" in str(exc))
    assert classifier.match(RuntimeError("flaky disk")) is T
    assert classifier.match(RuntimeError("solid")) is None


def boom(exc: BaseException) -> bool:
    raise RuntimeError("predicate bug")


def test_raising_predicate_does_not_match():
    """A predicate that raises is skipped; the next matcher or rule decides."""
    assert Classifier().transient(boom).match(ValueError()) is P
    assert Classifier().transient(boom, lambda exc: True).match(RuntimeError()) is T


def test_predicate_truthiness_that_raises():
    """A predicate whose result cannot be made a bool does not match."""
    assert Classifier().transient(lambda exc: HostileObject()).match(ValueError()) is P


def test_statuses_rule():
    """Custom status rules override the default HTTP status rule."""
    conflict = with_attrs(HTTPishError(), status_code=409)
    assert Classifier().match(conflict) is P
    assert Classifier().statuses({409}, T).match(conflict) is T
    assert Classifier().statuses([503, 504], P).match(with_attrs(HTTPishError(), status=503)) is P
    assert Classifier().statuses({409}, T).match(with_attrs(HTTPishError(), status_code=410)) is P


def test_custom_rule_objects():
    """A Rule wrapping a function decides, passes with None, and is skipped if it raises."""

    def decide(exc: BaseException) -> Verdict | None:
        return T if isinstance(exc, RuntimeError) else None

    def broken(exc: BaseException) -> Verdict | None:
        raise RuntimeError

    def nonsense(exc: BaseException) -> Verdict | None:
        return "transient"  # type: ignore[return-value]

    classifier = Classifier([Rule(broken), Rule(nonsense), Rule(decide)])
    assert classifier.match(RuntimeError()) is T
    assert classifier.match(ValueError()) is P
    assert classifier.rules[:3] == (Rule(broken), Rule(nonsense), Rule(decide))
    assert classifier.rules[3:] == DEFAULT_RULES
    assert Rule(decide).name == "test_custom_rule_objects.<locals>.decide"
    assert Rule(decide)(RuntimeError()) is T


def test_with_rules_puts_rules_first_in_order():
    """with_rules checks the new rules, in the order given, before the old ones."""
    first = Rule.matching(Flaky, verdict=T)
    second = Rule.matching(Flaky, verdict=P)
    classifier = Classifier().with_rules(first, second)
    assert classifier.rules == (first, second, *DEFAULT_RULES)
    assert classifier.match(Flaky()) is T


def test_defaults_false_is_empty():
    """Classifier(defaults=False) has no rules: everything is unknown."""
    empty = Classifier(defaults=False)
    assert empty.rules == ()
    for exc in (TimeoutError(), KeyboardInterrupt(), ValueError(), TransientError()):
        assert empty.match(exc) is None
        assert empty.classify(exc) is P
    assert empty.transient(ValueError).rules == (Rule.matching(ValueError, verdict=T),)


def test_rules_replace_defaults():
    """Explicit rules with defaults=False are the only rules."""
    classifier = Classifier([Rule.matching(KeyError, verdict=T)], defaults=False)
    assert classifier.match(KeyError()) is T
    assert classifier.match(TimeoutError()) is None


def test_immutability():
    """Adding a rule returns a new classifier and leaves the old one unchanged."""
    base = Classifier()
    rules = base.rules
    extended = base.transient(KeyError)
    assert extended is not base
    assert base.rules == rules
    assert base.match(KeyError()) is P
    assert extended.match(KeyError()) is T
    with pytest.raises(AttributeError, match="immutable"):
        base._rules = ()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del base._rules
    with pytest.raises(AttributeError):
        base.extra = 1  # type: ignore[attr-defined]
    assert base.rules == rules


def test_equality_and_hash():
    """Classifiers with the same rules are equal and hash alike."""
    assert Classifier() == Classifier() == DEFAULT_CLASSIFIER
    assert Classifier().transient(KeyError) == Classifier().transient(KeyError)
    assert hash(Classifier().transient(KeyError)) == hash(Classifier().transient(KeyError))
    assert Classifier().transient(KeyError) != Classifier().permanent(KeyError)
    assert Classifier() != Classifier(defaults=False)
    assert Classifier() != object()


def test_pickle_and_copy():
    """A classifier survives pickling and copying with its rules."""
    classifier = Classifier().permanent(TimeoutError).statuses([409], T)
    restored = pickle.loads(pickle.dumps(classifier))  # noqa: S301
    assert restored == classifier
    assert restored.match(TimeoutError()) is P
    assert copy.copy(classifier) == classifier
    assert copy.deepcopy(classifier) == classifier


def test_repr():
    """The repr lists the user's rules and says when defaults are off."""
    assert repr(Classifier()) == "Classifier([])"
    assert repr(Classifier().transient(KeyError)) == "Classifier([Rule('transient: KeyError')])"
    assert repr(Classifier(defaults=False)) == "Classifier([], defaults=False)"
    assert "HTTP [409, 410]" in repr(Classifier(defaults=False).statuses([410, 409], P))


def test_call_is_classify():
    """Calling a classifier classifies."""
    classifier = Classifier().transient(Flaky)
    assert classifier(Flaky()) is T
    assert classifier(RuntimeError()) is P


def test_module_classify_uses_default():
    """stalwart.classify.classify is the default classifier's classify."""
    assert classify(TimeoutError()) is T
    assert classify(KeyError()) is P


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [(42, "matchers.*42"), ("ValueError", "matchers.*'ValueError'"), (int, "matchers.*int")],
)
def test_bad_matchers(bad, pattern):
    """A matcher that is neither an exception type nor callable is refused by name."""
    with pytest.raises(TypeError, match=pattern):
        Classifier().transient(bad)
    with pytest.raises(TypeError, match=pattern):
        Classifier().permanent(ValueError, bad)


def test_no_matchers():
    """transient() and permanent() need at least one matcher."""
    with pytest.raises(TypeError, match="matchers"):
        Classifier().transient()


@pytest.mark.parametrize("code", [99, 600, 0, -404, 1000])
def test_status_out_of_range(code):
    """Status codes outside 100..599 raise ValueError naming codes and the value."""
    with pytest.raises(ValueError, match=f"codes.*{code}"):
        Classifier().statuses([code], T)


@pytest.mark.parametrize(
    ("codes", "pattern"),
    [(["404"], "codes.*'404'"), ([True], "codes.*True"), (404, "codes.*404"), ([4.0], "4.0")],
)
def test_status_not_int(codes, pattern):
    """Non-int codes and a non-iterable raise TypeError naming codes and the value."""
    with pytest.raises(TypeError, match=pattern):
        Classifier().statuses(codes, T)


def test_status_empty():
    """An empty status set is refused."""
    with pytest.raises(ValueError, match="codes"):
        Classifier().statuses([], T)


def test_bad_verdict():
    """A verdict that is not a Verdict is refused by name."""
    with pytest.raises(TypeError, match=r"verdict.*'transient'"):
        Classifier().statuses([503], "transient")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"verdict.*True"):
        Rule.matching(KeyError, verdict=True)  # type: ignore[arg-type]


def test_bad_rules():
    """Classifier(rules=...) and with_rules() accept Rule objects only."""
    with pytest.raises(TypeError, match=r"rules.*42"):
        Classifier([42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"rules.*KeyError"):
        Classifier().with_rules(KeyError)  # type: ignore[arg-type]


def test_rule_needs_callable():
    """Rule(decide) refuses a decide that is not callable."""
    with pytest.raises(TypeError, match=r"decide.*'nope'"):
        Rule("nope")  # type: ignore[arg-type]


# --- parse_retry_after -------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("  7 ", 7.0),
        (b"30", 30.0),
        (5, 5.0),
        (2.5, 2.5),
        (timedelta(seconds=3).total_seconds(), 3.0),
    ],
)
def test_parse_seconds(value, expected):
    """Delta-seconds parse to floats."""
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 21 Oct 2015 07:28:00 GMT",  # IMF-fixdate
        "Wednesday, 21-Oct-15 07:28:00 GMT",  # RFC 850
        "Wed Oct 21 07:28:00 2015",  # asctime
        b"Wed, 21 Oct 2015 07:28:00 GMT",
    ],
)
def test_parse_http_dates(value):
    """HTTP dates in all three RFC 9110 forms parse to seconds from now."""
    assert parse_retry_after(value, now=NOW) == 60.0


def test_parse_http_date_naive_now():
    """A naive `now` is read as UTC."""
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=naive) == 90.0


def test_parse_past_date_is_zero():
    """A date in the past means no wait."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0


def test_parse_default_now():
    """Without `now`, dates are measured against the current time."""
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    header = soon.strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(header)
    assert seconds is not None
    assert 3500 < seconds <= 3600


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "+5",
        "1e3",
        "nan",
        "inf",
        "1.",
        "٣",
        "9" * 400,
        "Sun, 31 Feb 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 +9999",
        b"\xff\xfe",
        -5,
        -0.5,
        math.nan,
        math.inf,
        10**400,
        True,
        False,
    ],
    ids=repr,
)
def test_parse_garbage(value):
    """Garbage, negative and non-finite values give None."""
    assert parse_retry_after(value) is None


def test_parse_wrong_type():
    """A value of the wrong type gives None rather than raising."""
    assert parse_retry_after([1, 2]) is None  # type: ignore[arg-type]


# --- retry_after_of ----------------------------------------------------------------------


class CaseInsensitiveHeaders(Mapping[str, str]):
    """A header map that folds case, as httpx and requests provide."""

    def __init__(self, items: dict[str, str]) -> None:
        self._items = {key.lower(): value for key, value in items.items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class GetRaises(dict[str, str]):
    def get(self, key, default=None):
        raise RuntimeError("no get")


class ItemsRaise(Mapping[str, str]):
    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no iteration")

    def __len__(self) -> int:
        return 1


def error_with_headers(headers: object, *, on_response: bool = True) -> BaseException:
    if on_response:
        return with_attrs(HTTPishError(), response=FakeResponse(429, headers))
    return with_attrs(HTTPishError(), headers=headers)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TransientError("x", retry_after=3), 3.0),
        (TransientError("x", retry_after=0), 0.0),
        (CircuitOpenError("db", retry_after=1.5), 1.5),
        (with_attrs(HTTPishError(), retry_after=timedelta(seconds=2)), 2.0),
        (TransientError("x"), None),
        (TransientError("x", retry_after=-1), None),
        (TransientError("x", retry_after=math.nan), None),
        (TransientError("x", retry_after=math.inf), None),
        (with_attrs(HTTPishError(), retry_after=True), None),
        (with_attrs(HTTPishError(), retry_after="3"), None),
        (with_attrs(HTTPishError(), retry_after=10**400), None),
        (HTTPishError(), None),
    ],
    ids=repr,
)
def test_retry_after_attribute(exc, expected):
    """``exc.retry_after`` counts when it is a non-negative finite number of seconds."""
    assert retry_after_of(exc) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"retry-after": "5"}, 5.0),
        ({"RETRY-AFTER": "7"}, 7.0),
        ({"Retry-After": b"9"}, 9.0),
        ({"Retry-After": 11}, 11.0),
        (CaseInsensitiveHeaders({"rEtRy-AfTeR": "13"}), 13.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ["1"]}, None),
        ({"X-Other": "1"}, None),
        ({}, None),
        (None, None),
        (HostileObject(), None),
        (GetRaises({"RETRY-AFTER": "4"}), 4.0),
        (ItemsRaise(), None),
        ("Retry-After: 5", None),
    ],
    ids=repr,
)
def test_retry_after_header(headers, expected):
    """The Retry-After header of ``exc.response.headers`` counts, in any case."""
    assert retry_after_of(error_with_headers(headers)) == expected


def test_retry_after_header_on_exception():
    """The Retry-After header of ``exc.headers`` counts (aiohttp, urllib)."""
    assert retry_after_of(error_with_headers({"Retry-After": "8"}, on_response=False)) == 8.0


def test_retry_after_attribute_wins_over_header():
    """A valid ``retry_after`` is used before the header; an invalid one is skipped."""
    exc = with_attrs(error_with_headers({"Retry-After": "120"}), retry_after=2)
    assert retry_after_of(exc) == 2.0
    exc = with_attrs(error_with_headers({"Retry-After": "120"}), retry_after=-2)
    assert retry_after_of(exc) == 120.0


def test_retry_after_response_header_wins_over_exception_header():
    """``exc.response.headers`` is read before ``exc.headers``; garbage there is skipped."""
    exc = with_attrs(error_with_headers({"Retry-After": "1"}), headers={"Retry-After": "2"})
    assert retry_after_of(exc) == 1.0
    exc = with_attrs(error_with_headers({"Retry-After": "x"}), headers={"Retry-After": "2"})
    assert retry_after_of(exc) == 2.0


def test_retry_after_hostile():
    """retry_after_of returns None when reading the attributes raises."""
    assert retry_after_of(hostile_subclass(Exception)()) is None
    assert retry_after_of(with_attrs(HTTPishError(), response=HostileObject())) is None


# --- properties --------------------------------------------------------------------------


@given(exceptions())
def test_classify_is_total(exc):
    """classify returns a Verdict for any exception and never raises."""
    assert isinstance(classify(exc), Verdict)
    assert Classifier().match(exc) in {T, P, None}
    assert Classifier(defaults=False).classify(exc) is P


@given(exceptions())
def test_classify_is_match_or_permanent(exc):
    """classify is match, with unknown read as permanent."""
    assert classify(exc) is (default_match(exc) or P)


@given(exception_types(), st.sampled_from(list(Verdict)))
def test_user_type_rule_always_wins(cls, verdict):
    """A user rule naming an exception's type decides it, whatever the defaults say."""
    classifier = Classifier().with_rules(Rule.matching(cls, verdict=verdict))
    assert classifier.classify(cls()) is verdict


@given(st.integers(100, 599), st.sampled_from(list(Verdict)))
def test_status_rule_property(code, verdict):
    """A custom status rule decides exactly its codes."""
    classifier = Classifier(defaults=False).statuses([code], verdict)
    assert classifier.match(with_attrs(HTTPishError(), status_code=code)) is verdict
    assert classifier.match(with_attrs(HTTPishError(), status_code=code + 1)) is None


@given(st.integers(100, 599))
def test_default_status_rule_property(code):
    """The default status rule: transient set, other 4xx permanent, else no verdict."""
    verdict = default_match(with_attrs(HTTPishError(), status_code=code))
    if code in TRANSIENT_STATUS_CODES:
        assert verdict is T
    elif 400 <= code < 500:
        assert verdict is P
    else:
        assert verdict is None


def _valid_wait(seconds: float | None) -> bool:
    return seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(st.text())
def test_parse_retry_after_total_on_text(text):
    """parse_retry_after never raises on text and gives None or finite seconds >= 0."""
    assert _valid_wait(parse_retry_after(text))


@given(st.binary())
def test_parse_retry_after_total_on_bytes(data):
    """parse_retry_after never raises on bytes and gives None or finite seconds >= 0."""
    assert _valid_wait(parse_retry_after(data))


@given(st.one_of(st.integers(), st.floats()))
def test_parse_retry_after_total_on_numbers(number):
    """Numbers give themselves (as floats) when finite and non-negative, else None."""
    result = parse_retry_after(number)
    try:
        expected = float(number)
    except OverflowError:  # an int too large for a float
        expected = math.inf
    if math.isfinite(expected) and expected >= 0:
        assert result == expected
    else:
        assert result is None


@given(st.integers(min_value=0, max_value=2**53))
def test_parse_retry_after_integers(n):
    """Every non-negative integer (exactly representable as a float) parses to itself."""
    assert parse_retry_after(str(n)) == n


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),  # noqa: DTZ001 (hypothesis bounds are naive)
        max_value=datetime(9000, 1, 1),  # noqa: DTZ001
        timezones=st.just(timezone.utc),
    ),
    st.integers(-(10**6), 10**6),
)
def test_parse_retry_after_dates(now, offset):
    """An HTTP date parses to its distance from now, clamped at 0."""
    now = now.replace(microsecond=0)
    when = now + timedelta(seconds=offset)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(header, now=now) == max(0, offset)


@given(exceptions())
def test_helpers_are_total(exc):
    """status_code_of and retry_after_of never raise and return sane values."""
    code = status_code_of(exc)
    assert code is None or type(code) is int
    assert _valid_wait(retry_after_of(exc))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9999999999", 9999999999.0),
        (b"99999999999999999999", 1e20),
        (1e300, 1e300),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 251956888379.0),
    ],
)
def test_parse_huge_waits_exactly(value, expected):
    """Huge waits parse to their exact finite value, never capped: the caller decides."""
    assert parse_retry_after(value, now=NOW) == expected
