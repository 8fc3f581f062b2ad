"""The checks of the default rules, with the per-type cache.

Markers, HTTP status, libraries, databases, HTTP clients, built-ins, and which
exception a cause chain goes on to.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Mapping
from typing import Final

from ..errors import CircuitOpenError, PermanentError, TransientError
from ._fields import _attr, _int_attr, status_code_of
from ._rule import TRANSIENT_STATUS_CODES, Decide, Verdict


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


# Library judges: the instance decides, for the classes `_known_errors` marks so.


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


_JUDGES: Final[dict[str, Decide]] = {
    "sdk_status": _sdk_status,
    "grpc": _grpc,
    "google": _google,
    "botocore": _botocore,
    "mongo": _mongo,
    "mongo_operation": _mongo_operation,
    "asyncpg_interface": _asyncpg_interface,
}
_STOP: Final = "stop"


def _library_entry(lineage: tuple[tuple[str, str], ...]) -> Verdict | Decide | str | None:
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
        library: Verdict | Decide | str | None = None,
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
