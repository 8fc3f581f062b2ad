"""The default classifier against real exceptions of the client libraries users call.

Every exception here is an instance of the library's own class, built as the library
builds it (or raised by the library itself against a closed port on loopback or the
real services), never a look-alike. stalwart imports none of these libraries.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import subprocess
import sys
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import aiohttp
import amqp
import amqp.exceptions
import anthropic
import asyncpg
import asyncpg.exceptions
import botocore.exceptions
import elastic_transport
import elasticsearch
import grpc
import grpc.aio
import httpcore
import httpx
import httpx2
import kombu
import kombu.exceptions
import openai
import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import pymongo
import pymongo.errors
import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.exceptions
import redis.retry
import requests
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.pool
import tenacity
import urllib3.exceptions

import stalwart.classify._defaults as classify_defaults
from stalwart.classify import DEFAULT_RULES, Classifier, Verdict, classify

with warnings.catch_warnings():
    # google-api-core warns when the optional grpcio-status is missing.
    warnings.simplefilter("ignore", ImportWarning)
    import google.api_core.exceptions as google_exceptions

T = Verdict.TRANSIENT
P = Verdict.PERMANENT
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def match(exc: BaseException) -> Verdict | None:
    return Classifier().match(exc)


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NO_RETRY = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
ASYNC_NO_RETRY = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
"""redis-py retries refused connections itself by default: not here."""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception `fn` raises (it must raise)."""
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError(f"{fn!r} did not raise")


# --- Library instances, as the libraries build them --------------------------------------

HTTPX2_REQUEST = httpx2.Request("POST", "https://api.example.com/v1/messages")


def sdk_error(module: Any, name: str, status: int) -> BaseException:
    """An OpenAI or Anthropic status error with a real response, as the SDK makes it."""
    response = httpx2.Response(status, request=HTTPX2_REQUEST, json={"error": {}})
    error: BaseException = getattr(module, name)("boom", response=response, body=None)
    return error


def aws_error(code: str, status: int) -> BaseException:
    """A botocore ClientError from a real error response."""
    response: Any = {
        "Error": {"Code": code, "Message": "from the service"},
        "ResponseMetadata": {"RequestId": "1", "HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    return botocore.exceptions.ClientError(response, "PutItem")


def grpc_error(code: grpc.StatusCode) -> BaseException:
    """A grpc.aio call error carrying `code`."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


def es_error(cls: type[BaseException], status: int) -> BaseException:
    """An elasticsearch API error with real response metadata."""
    node = elastic_transport.NodeConfig("http", "127.0.0.1", 9200)
    meta = elastic_transport.ApiResponseMeta(
        status, "1.1", elastic_transport.HttpHeaders(), 0.01, node
    )
    return cls("error", meta=meta, body={})


def aiohttp_status(status: int) -> BaseException:
    """aiohttp's ClientResponseError for a response with `status`."""
    url = aiohttp.client_reqrep.URL("http://127.0.0.1/")
    info = aiohttp.RequestInfo(
        url,
        "GET",
        aiohttp.client_reqrep.CIMultiDictProxy(aiohttp.client_reqrep.CIMultiDict()),
        url,
    )
    return aiohttp.ClientResponseError(info, (), status=status, message="x")


def httpx_status(status: int) -> BaseException:
    """httpx's HTTPStatusError for a real response with `status`."""
    request = httpx.Request("GET", "https://example.com/")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError("x", request=request, response=response)


def requests_status(status: int) -> BaseException:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def sqlalchemy_wrapped(orig: BaseException, **kw: Any) -> BaseException:
    """Wrap a driver error as SQLAlchemy does."""
    return sqlalchemy.exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error, **kw)


CASES: list[tuple[str, Callable[[], BaseException], Verdict | None]] = [
    # redis-py (redis.asyncio raises the same classes)
    ("redis ConnectionError", lambda: redis.exceptions.ConnectionError("refused"), T),
    ("redis TimeoutError", lambda: redis.exceptions.TimeoutError("timed out"), T),
    ("redis BusyLoadingError", lambda: redis.exceptions.BusyLoadingError("loading"), T),
    ("redis ReadOnlyError", lambda: redis.exceptions.ReadOnlyError("READONLY"), T),
    ("redis ClusterDownError", lambda: redis.exceptions.ClusterDownError("CLUSTERDOWN"), T),
    ("redis TryAgainError", lambda: redis.exceptions.TryAgainError("TRYAGAIN"), T),
    ("redis MasterDownError", lambda: redis.exceptions.MasterDownError("MASTERDOWN"), T),
    ("redis WatchError", lambda: redis.exceptions.WatchError("watched key changed"), T),
    ("redis ResponseError", lambda: redis.exceptions.ResponseError("WRONGTYPE"), P),
    ("redis DataError", lambda: redis.exceptions.DataError("bad value"), P),
    ("redis AuthenticationError", lambda: redis.exceptions.AuthenticationError("bad"), P),
    ("redis NoScriptError", lambda: redis.exceptions.NoScriptError("NOSCRIPT"), P),
    ("redis OutOfMemoryError", lambda: redis.exceptions.OutOfMemoryError("OOM"), None),
    # pymongo (and motor, which raises pymongo's exceptions)
    ("mongo AutoReconnect", lambda: pymongo.errors.AutoReconnect("primary gone"), T),
    ("mongo NetworkTimeout", lambda: pymongo.errors.NetworkTimeout("slow"), T),
    (
        "mongo ServerSelectionTimeoutError",
        lambda: pymongo.errors.ServerSelectionTimeoutError("no server"),
        T,
    ),
    ("mongo ConnectionFailure", lambda: pymongo.errors.ConnectionFailure("down"), T),
    ("mongo NotPrimaryError", lambda: pymongo.errors.NotPrimaryError("not primary"), T),
    (
        "mongo TransientTransactionError label",
        lambda: pymongo.errors.OperationFailure(
            "WriteConflict", code=112, details={"errorLabels": ["TransientTransactionError"]}
        ),
        T,
    ),
    (
        "mongo RetryableWriteError label",
        lambda: pymongo.errors.WriteError(
            "stepped down", code=11602, details={"errorLabels": ["RetryableWriteError"]}
        ),
        T,
    ),
    (
        "mongo PyMongoError with a label",
        lambda: pymongo.errors.PyMongoError("x", error_labels=["RetryableWriteError"]),
        T,
    ),
    ("mongo PyMongoError without", lambda: pymongo.errors.PyMongoError("x"), None),
    ("mongo ShutdownInProgress", lambda: pymongo.errors.OperationFailure("x", code=91), T),
    (
        "mongo DuplicateKeyError",
        lambda: pymongo.errors.DuplicateKeyError("E11000 duplicate key", code=11000),
        P,
    ),
    (
        "mongo OperationFailure auth",
        lambda: pymongo.errors.OperationFailure("Authentication failed.", code=18),
        P,
    ),
    ("mongo WriteError", lambda: pymongo.errors.WriteError("validation", code=121), P),
    ("mongo InvalidOperation", lambda: pymongo.errors.InvalidOperation("closed"), P),
    # psycopg 3 and psycopg2, by class and SQLSTATE
    ("psycopg 40001", lambda: psycopg.errors.lookup("40001")("could not serialize"), T),
    ("psycopg 40P01", lambda: psycopg.errors.lookup("40P01")("deadlock detected"), T),
    ("psycopg 08006", lambda: psycopg.errors.lookup("08006")("connection failure"), T),
    ("psycopg 57P01", lambda: psycopg.errors.lookup("57P01")("terminating"), T),
    ("psycopg 23505", lambda: psycopg.errors.lookup("23505")("duplicate key"), P),
    ("psycopg 23503", lambda: psycopg.errors.lookup("23503")("foreign key"), P),
    ("psycopg2 40001", lambda: psycopg2.errors.lookup("40001")("could not serialize"), T),
    ("psycopg2 40P01", lambda: psycopg2.errors.lookup("40P01")("deadlock detected"), T),
    ("psycopg2 57P02", lambda: psycopg2.errors.lookup("57P02")("crash shutdown"), T),
    ("psycopg2 23505", lambda: psycopg2.errors.lookup("23505")("duplicate key"), P),
    ("psycopg2 42601", lambda: psycopg2.errors.lookup("42601")("syntax error"), None),
    # asyncpg
    ("asyncpg SerializationError", lambda: asyncpg.exceptions.SerializationError("x"), T),
    ("asyncpg DeadlockDetectedError", lambda: asyncpg.exceptions.DeadlockDetectedError("x"), T),
    (
        "asyncpg ConnectionDoesNotExistError",
        lambda: asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-query"),
        T,
    ),
    ("asyncpg CannotConnectNowError", lambda: asyncpg.exceptions.CannotConnectNowError("x"), T),
    ("asyncpg AdminShutdownError", lambda: asyncpg.exceptions.AdminShutdownError("x"), T),
    (
        "asyncpg PostgresConnectionError",
        lambda: asyncpg.exceptions.PostgresConnectionError("x"),
        T,
    ),
    (
        "asyncpg TooManyConnectionsError",
        lambda: asyncpg.exceptions.TooManyConnectionsError("x"),
        T,
    ),
    (
        "asyncpg InterfaceError closed",
        lambda: asyncpg.exceptions.InterfaceError(
            "cannot perform operation: connection is closed"
        ),
        T,
    ),
    (
        "asyncpg InterfaceError misuse",
        lambda: asyncpg.exceptions.InterfaceError(
            "cannot perform operation: another operation is in progress"
        ),
        None,
    ),
    ("asyncpg UniqueViolationError", lambda: asyncpg.exceptions.UniqueViolationError("x"), P),
    (
        "asyncpg ForeignKeyViolationError",
        lambda: asyncpg.exceptions.ForeignKeyViolationError("x"),
        P,
    ),
    # SQLAlchemy
    ("sqlalchemy DisconnectionError", lambda: sqlalchemy.exc.DisconnectionError("dead"), T),
    ("sqlalchemy InvalidatePoolError", lambda: sqlalchemy.exc.InvalidatePoolError("dead"), T),
    ("sqlalchemy pool TimeoutError", lambda: sqlalchemy.exc.TimeoutError("pool"), T),
    (
        "sqlalchemy connection_invalidated",
        lambda: sqlalchemy_wrapped(
            psycopg.errors.lookup("23505")("x"), connection_invalidated=True
        ),
        T,
    ),
    (
        "sqlalchemy OperationalError 40001",
        lambda: sqlalchemy_wrapped(psycopg.errors.lookup("40001")("x")),
        T,
    ),
    (
        "sqlalchemy OperationalError 23505 inside",
        lambda: sqlalchemy.exc.OperationalError(
            "SELECT 1", {}, psycopg.errors.lookup("23505")("x")
        ),
        P,
    ),
    (
        "sqlalchemy IntegrityError",
        lambda: sqlalchemy_wrapped(psycopg.errors.lookup("23505")("duplicate key")),
        P,
    ),
    (
        "sqlalchemy wrapping asyncpg closed",
        lambda: sqlalchemy.exc.InterfaceError(
            "SELECT 1",
            {},
            asyncpg.exceptions.InterfaceError("cannot perform operation: connection is closed"),
        ),
        T,
    ),
    ("sqlalchemy NoResultFound", lambda: sqlalchemy.exc.NoResultFound("none"), None),
    # aiohttp
    (
        "aiohttp ServerDisconnectedError",
        lambda: aiohttp.ServerDisconnectedError("Server disconnected"),
        T,
    ),
    ("aiohttp ServerTimeoutError", lambda: aiohttp.ServerTimeoutError("slow"), T),
    ("aiohttp ClientConnectionError", lambda: aiohttp.ClientConnectionError("reset"), T),
    ("aiohttp ClientResponseError 503", lambda: aiohttp_status(503), T),
    ("aiohttp ClientResponseError 404", lambda: aiohttp_status(404), P),
    ("aiohttp ClientPayloadError", lambda: aiohttp.ClientPayloadError("bad body"), None),
    # httpx and httpcore (and the httpx2 fork the SDKs use)
    ("httpx ConnectError", lambda: httpx.ConnectError("refused"), T),
    ("httpx ReadTimeout", lambda: httpx.ReadTimeout("slow"), T),
    ("httpx WriteError", lambda: httpx.WriteError("reset"), T),
    ("httpx RemoteProtocolError", lambda: httpx.RemoteProtocolError("peer closed"), T),
    ("httpx HTTPStatusError 502", lambda: httpx_status(502), T),
    ("httpx HTTPStatusError 404", lambda: httpx_status(404), P),
    ("httpx LocalProtocolError", lambda: httpx.LocalProtocolError("bad"), None),
    ("httpx UnsupportedProtocol", lambda: httpx.UnsupportedProtocol("ftp"), None),
    ("httpcore ConnectTimeout", lambda: httpcore.ConnectTimeout("slow"), T),
    ("httpcore ReadError", lambda: httpcore.ReadError("reset"), T),
    ("httpcore WriteTimeout", lambda: httpcore.WriteTimeout("slow"), T),
    ("httpcore PoolTimeout", lambda: httpcore.PoolTimeout("pool"), T),
    ("httpcore RemoteProtocolError", lambda: httpcore.RemoteProtocolError("closed"), T),
    ("httpcore LocalProtocolError", lambda: httpcore.LocalProtocolError("bad"), None),
    ("httpcore UnsupportedProtocol", lambda: httpcore.UnsupportedProtocol("ftp"), None),
    ("httpx2 ConnectError", lambda: httpx2.ConnectError("refused"), T),
    # requests and urllib3
    ("requests ConnectionError", lambda: requests.ConnectionError("refused"), T),
    ("requests ReadTimeout", lambda: requests.ReadTimeout("slow"), T),
    ("requests HTTPError 503", lambda: requests_status(503), T),
    ("requests HTTPError 403", lambda: requests_status(403), P),
    ("requests SSLError", lambda: requests.exceptions.SSLError("certificate"), None),
    ("urllib3 ProtocolError", lambda: urllib3.exceptions.ProtocolError("reset"), T),
    (
        "urllib3 MaxRetryError",
        lambda: urllib3.exceptions.MaxRetryError(None, "/", reason=None),
        None,
    ),
    # openai
    ("openai APIConnectionError", lambda: openai.APIConnectionError(request=HTTPX2_REQUEST), T),
    ("openai APITimeoutError", lambda: openai.APITimeoutError(request=HTTPX2_REQUEST), T),
    ("openai RateLimitError", lambda: sdk_error(openai, "RateLimitError", 429), T),
    ("openai InternalServerError", lambda: sdk_error(openai, "InternalServerError", 500), T),
    ("openai InternalServerError 520", lambda: sdk_error(openai, "InternalServerError", 520), T),
    ("openai AuthenticationError", lambda: sdk_error(openai, "AuthenticationError", 401), P),
    ("openai BadRequestError", lambda: sdk_error(openai, "BadRequestError", 400), P),
    ("openai PermissionDeniedError", lambda: sdk_error(openai, "PermissionDeniedError", 403), P),
    ("openai NotFoundError", lambda: sdk_error(openai, "NotFoundError", 404), P),
    (
        "openai UnprocessableEntityError",
        lambda: sdk_error(openai, "UnprocessableEntityError", 422),
        P,
    ),
    # anthropic
    (
        "anthropic APIConnectionError",
        lambda: anthropic.APIConnectionError(request=HTTPX2_REQUEST),
        T,
    ),
    ("anthropic APITimeoutError", lambda: anthropic.APITimeoutError(request=HTTPX2_REQUEST), T),
    ("anthropic RateLimitError", lambda: sdk_error(anthropic, "RateLimitError", 429), T),
    ("anthropic InternalServerError", lambda: sdk_error(anthropic, "InternalServerError", 500), T),
    ("anthropic OverloadedError 529", lambda: sdk_error(anthropic, "OverloadedError", 529), T),
    ("anthropic APIStatusError 529", lambda: sdk_error(anthropic, "APIStatusError", 529), T),
    ("anthropic APIStatusError 501", lambda: sdk_error(anthropic, "APIStatusError", 501), None),
    ("anthropic AuthenticationError", lambda: sdk_error(anthropic, "AuthenticationError", 401), P),
    ("anthropic BadRequestError", lambda: sdk_error(anthropic, "BadRequestError", 400), P),
    ("anthropic NotFoundError", lambda: sdk_error(anthropic, "NotFoundError", 404), P),
    (
        "anthropic PermissionDeniedError",
        lambda: sdk_error(anthropic, "PermissionDeniedError", 403),
        P,
    ),
    # botocore (and aiobotocore, which raises botocore's exceptions)
    (
        "botocore EndpointConnectionError",
        lambda: botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3"),
        T,
    ),
    (
        "botocore ConnectTimeoutError",
        lambda: botocore.exceptions.ConnectTimeoutError(endpoint_url="https://s3"),
        T,
    ),
    (
        "botocore ReadTimeoutError",
        lambda: botocore.exceptions.ReadTimeoutError(endpoint_url="https://s3"),
        T,
    ),
    (
        "botocore ConnectionClosedError",
        lambda: botocore.exceptions.ConnectionClosedError(endpoint_url="https://s3"),
        T,
    ),
    ("aws Throttling 400", lambda: aws_error("Throttling", 400), T),
    ("aws ThrottlingException 400", lambda: aws_error("ThrottlingException", 400), T),
    ("aws ThrottledException", lambda: aws_error("ThrottledException", 400), T),
    ("aws RequestLimitExceeded", lambda: aws_error("RequestLimitExceeded", 503), T),
    ("aws TooManyRequestsException", lambda: aws_error("TooManyRequestsException", 429), T),
    (
        "aws ProvisionedThroughputExceededException",
        lambda: aws_error("ProvisionedThroughputExceededException", 400),
        T,
    ),
    ("aws SlowDown", lambda: aws_error("SlowDown", 503), T),
    ("aws RequestTimeout 400", lambda: aws_error("RequestTimeout", 400), T),
    ("aws ServiceUnavailable", lambda: aws_error("ServiceUnavailable", 503), T),
    ("aws InternalError", lambda: aws_error("InternalError", 500), T),
    ("aws InternalFailure", lambda: aws_error("InternalFailure", 500), T),
    ("aws unlisted code 502", lambda: aws_error("SomethingOdd", 502), T),
    ("aws AccessDenied", lambda: aws_error("AccessDenied", 403), P),
    ("aws ValidationException", lambda: aws_error("ValidationException", 400), P),
    ("aws NoSuchKey", lambda: aws_error("NoSuchKey", 404), P),
    ("aws unlisted code 409", lambda: aws_error("SomethingOdd", 409), P),
    ("aws HeadObject 404", lambda: aws_error("404", 404), P),
    ("botocore NoCredentialsError", botocore.exceptions.NoCredentialsError, P),
    (
        "botocore ParamValidationError",
        lambda: botocore.exceptions.ParamValidationError(report="Bucket is required"),
        P,
    ),
    # grpc and grpc.aio
    ("grpc UNAVAILABLE", lambda: grpc_error(grpc.StatusCode.UNAVAILABLE), T),
    ("grpc DEADLINE_EXCEEDED", lambda: grpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), T),
    ("grpc RESOURCE_EXHAUSTED", lambda: grpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED), T),
    ("grpc ABORTED", lambda: grpc_error(grpc.StatusCode.ABORTED), T),
    ("grpc INVALID_ARGUMENT", lambda: grpc_error(grpc.StatusCode.INVALID_ARGUMENT), P),
    ("grpc NOT_FOUND", lambda: grpc_error(grpc.StatusCode.NOT_FOUND), P),
    ("grpc PERMISSION_DENIED", lambda: grpc_error(grpc.StatusCode.PERMISSION_DENIED), P),
    ("grpc UNAUTHENTICATED", lambda: grpc_error(grpc.StatusCode.UNAUTHENTICATED), P),
    ("grpc ALREADY_EXISTS", lambda: grpc_error(grpc.StatusCode.ALREADY_EXISTS), P),
    ("grpc FAILED_PRECONDITION", lambda: grpc_error(grpc.StatusCode.FAILED_PRECONDITION), P),
    ("grpc CANCELLED", lambda: grpc_error(grpc.StatusCode.CANCELLED), P),
    ("grpc INTERNAL", lambda: grpc_error(grpc.StatusCode.INTERNAL), None),
    ("grpc UNKNOWN", lambda: grpc_error(grpc.StatusCode.UNKNOWN), None),
    ("grpc bare RpcError", lambda: grpc.RpcError("no code"), None),
    # google-api-core
    ("google ServiceUnavailable", lambda: google_exceptions.ServiceUnavailable("x"), T),
    ("google TooManyRequests", lambda: google_exceptions.TooManyRequests("x"), T),
    ("google ResourceExhausted", lambda: google_exceptions.ResourceExhausted("x"), T),
    ("google InternalServerError", lambda: google_exceptions.InternalServerError("x"), T),
    ("google GatewayTimeout", lambda: google_exceptions.GatewayTimeout("x"), T),
    ("google DeadlineExceeded", lambda: google_exceptions.DeadlineExceeded("x"), T),
    ("google Aborted", lambda: google_exceptions.Aborted("x"), T),
    (
        "google from_grpc_status UNAVAILABLE",
        lambda: google_exceptions.from_grpc_status(grpc.StatusCode.UNAVAILABLE, "x"),
        T,
    ),
    ("google BadRequest", lambda: google_exceptions.BadRequest("x"), P),
    ("google InvalidArgument", lambda: google_exceptions.InvalidArgument("x"), P),
    ("google NotFound", lambda: google_exceptions.NotFound("x"), P),
    ("google Forbidden", lambda: google_exceptions.Forbidden("x"), P),
    ("google PermissionDenied", lambda: google_exceptions.PermissionDenied("x"), P),
    ("google Conflict", lambda: google_exceptions.Conflict("x"), P),
    ("google AlreadyExists", lambda: google_exceptions.AlreadyExists("x"), P),
    ("google Unauthenticated", lambda: google_exceptions.Unauthenticated("x"), P),
    ("google from_http_status 418", lambda: google_exceptions.from_http_status(418, "x"), P),
    ("google Unknown", lambda: google_exceptions.Unknown("x"), None),
    # elasticsearch 8/9 (elastic_transport underneath)
    ("es ConnectionError", lambda: elasticsearch.ConnectionError("refused"), T),
    ("es ConnectionTimeout", lambda: elasticsearch.ConnectionTimeout("slow"), T),
    ("es ApiError 429", lambda: es_error(elasticsearch.ApiError, 429), T),
    ("es ApiError 503", lambda: es_error(elasticsearch.ApiError, 503), T),
    ("es BadRequestError", lambda: es_error(elasticsearch.BadRequestError, 400), P),
    ("es NotFoundError", lambda: es_error(elasticsearch.NotFoundError, 404), P),
    ("es ConflictError", lambda: es_error(elasticsearch.ConflictError, 409), P),
    ("es SerializationError", lambda: elasticsearch.SerializationError("bad json"), P),
    ("es TlsError", lambda: elastic_transport.TlsError("certificate"), None),
    # amqp and kombu
    ("amqp ConnectionError", lambda: amqp.exceptions.ConnectionError("lost"), T),
    (
        "amqp RecoverableConnectionError",
        lambda: amqp.exceptions.RecoverableConnectionError("connection already closed"),
        T,
    ),
    ("amqp ConnectionForced", lambda: amqp.exceptions.ConnectionForced("shutdown"), T),
    ("amqp ResourceLocked", lambda: amqp.exceptions.ResourceLocked("exclusive"), T),
    ("amqp NotFound", lambda: amqp.exceptions.NotFound("no queue"), P),
    ("amqp AccessRefused", lambda: amqp.exceptions.AccessRefused("login refused"), P),
    ("amqp PreconditionFailed", lambda: amqp.exceptions.PreconditionFailed("args"), P),
    ("amqp NotAllowed", lambda: amqp.exceptions.NotAllowed("vhost"), P),
    ("amqp FrameError", lambda: amqp.exceptions.FrameError("bad frame"), None),
    ("kombu OperationalError", lambda: kombu.exceptions.OperationalError("refused"), T),
    (
        "kombu ConnectionLimitExceeded",
        lambda: kombu.exceptions.ConnectionLimitExceeded("pool"),
        T,
    ),
    ("kombu EncodeError", lambda: kombu.exceptions.EncodeError("bad"), P),
    ("kombu ContentDisallowed", lambda: kombu.exceptions.ContentDisallowed("pickle"), P),
    # tenacity: it has already retried
    ("tenacity RetryError", lambda: tenacity.RetryError(None), None),
]


@pytest.mark.parametrize(("make", "verdict"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_library_exceptions(make, verdict):
    """Each library exception gets its documented verdict (None: unknown) by default."""
    exc = make()
    assert match(exc) is verdict
    assert classify(exc) is (verdict or P)


def test_every_library_has_both_verdicts():
    """The table holds transient and permanent cases for every library it covers."""
    together = {"httpcore": "httpx", "httpx2": "httpx", "urllib3": "requests", "aws": "botocore"}
    libraries: dict[str, set[Verdict | None]] = {}
    for name, _, verdict in CASES:
        library = name.split()[0]
        libraries.setdefault(together.get(library, library), set()).add(verdict)
    del libraries["tenacity"]  # only ever unknown: it has already retried
    assert {library for library, verdicts in libraries.items() if not {T, P} <= verdicts} == set()


def test_attribute_verdicts_are_not_cached_per_type():
    """Instances of one class judged by what they carry get their own verdicts."""
    for _ in range(2):
        assert match(aws_error("ThrottlingException", 400)) is T
        assert match(aws_error("AccessDenied", 403)) is P
        assert match(grpc_error(grpc.StatusCode.UNAVAILABLE)) is T
        assert match(grpc_error(grpc.StatusCode.NOT_FOUND)) is P
        assert match(pymongo.errors.OperationFailure("x", code=91)) is T
        assert match(pymongo.errors.OperationFailure("x", code=2)) is P


def test_grpc_code_raising_is_unknown():
    """A grpc error whose ``code()`` raises, or is not callable, is unknown, never an error."""

    class Broken(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            raise RuntimeError("no status")

    class NotCallable(grpc.RpcError):
        code = "UNAVAILABLE"

    assert match(Broken()) is None
    assert match(NotCallable()) is None


def test_grpc_code_called_only_on_grpc_errors():
    """A ``code()`` method on an exception that is not gRPC's is never called."""
    calls = []

    class Mine(Exception):
        def code(self) -> grpc.StatusCode:
            calls.append(1)
            return grpc.StatusCode.UNAVAILABLE

    assert match(Mine()) is None
    assert calls == []


def test_user_subclasses_are_recognised():
    """A program's own subclass of a library exception is judged like its base."""
    sub_redis = type("CacheDown", (redis.exceptions.ConnectionError,), {})
    sub_grpc = type(
        "Upstream", (grpc.RpcError,), {"code": lambda _self: grpc.StatusCode.UNAVAILABLE}
    )
    assert match(sub_redis("x")) is T
    assert match(sub_grpc()) is T


def test_type_cache_is_bounded():
    """The per-type cache stays bounded however many exception classes a program makes."""
    for i in range(classify_defaults._MAX_TYPES + 50):
        cls = type(f"Made{i}", (redis.exceptions.ConnectionError,), {})
        assert match(cls("x")) is T
    assert len(classify_defaults._TYPE_INFO) <= classify_defaults._MAX_TYPES


def test_hostile_library_attributes_never_raise():
    """Library judges survive attributes that raise or have the wrong shape."""

    class Hostile(botocore.exceptions.ClientError):
        @property
        def response(self) -> Any:
            raise RuntimeError("no")

    exc = aws_error("ThrottlingException", 400)
    exc.__class__ = Hostile
    assert match(exc) is None
    odd = aws_error("ThrottlingException", 400)
    odd.response = {"Error": "not a mapping", "ResponseMetadata": []}
    assert match(odd) is None
    labelled = pymongo.errors.PyMongoError("x")
    labelled.has_error_label = None
    assert match(labelled) is None


# --- Causes ------------------------------------------------------------------------------


def raise_from(outer: BaseException, cause: BaseException | None) -> BaseException:
    """`outer`, raised from `cause` for real."""
    try:
        raise outer from cause
    except BaseException as exc:
        return exc


def raise_during(outer: BaseException, context: BaseException) -> BaseException:
    """`outer`, raised for real while `context` was being handled."""
    try:
        try:
            raise context
        except BaseException:
            raise outer  # noqa: B904 - the implicit context is the subject
    except BaseException as exc:
        return exc


def test_sdk_error_raised_from_transport_error_is_transient():
    """An unrecognised SDK error raised from an httpx ConnectError is transient."""
    for transport in (httpx.ConnectError("refused"), httpx2.ConnectError("refused")):
        assert match(openai.OpenAIError("wrapped")) is None
        assert match(raise_from(openai.OpenAIError("wrapped"), transport)) is T
        assert match(raise_from(anthropic.AnthropicError("wrapped"), transport)) is T


def test_cause_decides_only_when_the_outer_is_unknown():
    """A recognised outer exception keeps its verdict whatever it was raised from."""
    assert match(raise_from(ValueError("bad"), ConnectionResetError())) is P
    assert match(raise_from(RuntimeError("odd"), ConnectionResetError())) is T
    assert match(raise_from(RuntimeError("odd"), KeyError("k"))) is P
    assert match(raise_from(RuntimeError("odd"), RuntimeError("odder"))) is None


def test_cause_chain_depth_is_bounded():
    """Causes are followed four links deep and no further."""

    def chain(links: int) -> BaseException:
        exc: BaseException = ConnectionResetError()
        for _ in range(links):
            exc = raise_from(RuntimeError("wrapper"), exc)
        return exc

    assert match(chain(1)) is T
    assert match(chain(4)) is T
    assert match(chain(5)) is None


def test_cause_cycle_terminates():
    """A cause chain that loops back ends without a verdict, and without recursing."""
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert match(first) is None
    selfish = RuntimeError("c")
    selfish.__cause__ = selfish
    assert match(selfish) is None


def test_hostile_cause_never_raises():
    """An exception whose ``__cause__`` raises on reading is unknown, never an error."""

    class Hostile(Exception):
        @property
        def __cause__(self) -> BaseException | None:
            raise RuntimeError("no")

    assert match(Hostile()) is None
    assert classify(Hostile()) is P


def test_context_is_followed_only_for_library_exceptions():
    """``__context__`` counts for a known library's exception, not a program's own."""
    assert match(raise_during(RuntimeError("mine"), ConnectionResetError())) is None
    library = redis.exceptions.InvalidResponse("garbled")  # a redis class with no verdict
    assert match(library) is None
    assert match(raise_during(library, ConnectionResetError())) is T


def test_suppressed_context_is_ignored():
    """``raise ... from None`` hides the context from the classifier too."""
    exc = raise_during(redis.exceptions.InvalidResponse("garbled"), ConnectionResetError())
    exc.__suppress_context__ = True
    assert match(exc) is None


def test_libraries_that_already_retried_hide_their_causes():
    """urllib3's MaxRetryError, google's and tenacity's RetryError stay unknown."""
    reason = urllib3.exceptions.NewConnectionError(None, "refused")
    max_retry = urllib3.exceptions.MaxRetryError(None, "/", reason=reason)
    assert match(raise_from(max_retry, reason)) is None
    unavailable = google_exceptions.ServiceUnavailable("down")
    retry = google_exceptions.RetryError("deadline exceeded", cause=unavailable)
    assert match(raise_from(retry, unavailable)) is None
    assert match(raise_from(tenacity.RetryError(None), ConnectionResetError())) is None


def test_causes_use_the_classifiers_own_rules():
    """A classifier's own rules judge the causes; no rules means no cause judging."""

    class Flaky(Exception):
        pass

    exc = raise_from(RuntimeError("wrapper"), Flaky())
    assert Classifier().match(exc) is None
    assert Classifier().transient(Flaky).match(exc) is T
    assert Classifier(defaults=False).match(raise_from(RuntimeError(), ConnectionError())) is None
    copied = pickle.loads(pickle.dumps(Classifier()))  # noqa: S301 - our own bytes
    assert copied.match(raise_from(RuntimeError(), TimeoutError())) is T


def test_causes_rule_alone_uses_the_default_classifier():
    """The causes rule called on its own judges the chain with the default rules."""
    causes = DEFAULT_RULES[-1]
    assert causes.name.startswith("causes")
    assert causes(raise_from(RuntimeError(), ConnectionResetError())) is T
    assert causes(RuntimeError()) is None
    only = Classifier([causes], defaults=False)
    assert only.match(raise_from(RuntimeError(), TimeoutError())) is None  # no rule knows it


# --- Raised by the libraries themselves --------------------------------------------------


def test_real_connection_refusals_are_transient():
    """Connection refusals raised by the clients themselves are transient."""
    port = closed_port()
    mongo: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=50, connect=False
    )
    try:
        errors = real_refusals(port, mongo)
    finally:
        mongo.close()
    for error in errors:
        assert classify(error) is T, repr(error)


def real_refusals(port: int, mongo: pymongo.MongoClient[Any]) -> list[BaseException]:
    """What each blocking client raises when nothing listens on `port`."""
    return [
        raised(lambda: redis.Redis(host="127.0.0.1", port=port, retry=NO_RETRY).ping()),
        raised(lambda: httpx.get(f"http://127.0.0.1:{port}/")),
        raised(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=5)),
        raised(lambda: mongo.admin.command("ping")),
        raised(lambda: psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/test")),
        raised(lambda: psycopg2.connect(f"postgresql://postgres@127.0.0.1:{port}/test")),
        raised(
            lambda: sqlalchemy.create_engine(
                f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
            ).connect()
        ),
        raised(
            lambda: kombu.Connection(f"amqp://guest:guest@127.0.0.1:{port}//").ensure_connection(
                max_retries=1, interval_start=0, interval_step=0
            )
        ),
        raised(
            lambda: elasticsearch.Elasticsearch(
                f"http://127.0.0.1:{port}", max_retries=0, request_timeout=5
            ).info()
        ),
        raised(
            lambda: grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/stalwart.Test/Call")(
                b"", timeout=5
            )
        ),
    ]


def test_real_async_connection_refusals_are_transient():
    """redis.asyncio, asyncpg and aiohttp refusals are transient."""
    port = closed_port()

    async def collect() -> list[BaseException]:
        errors = []
        client = redis.asyncio.Redis(host="127.0.0.1", port=port, retry=ASYNC_NO_RETRY)
        try:
            await client.ping()
        except Exception as exc:
            errors.append(exc)
        finally:
            await client.aclose()
        try:
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/test")
        except Exception as exc:
            errors.append(exc)
        async with aiohttp.ClientSession() as session:
            try:
                await session.get(f"http://127.0.0.1:{port}/")
            except Exception as exc:
                errors.append(exc)
        return errors

    errors = asyncio.run(collect())
    assert len(errors) == 3
    for error in errors:
        assert classify(error) is T, repr(error)


def test_real_sqlalchemy_pool_timeout_and_integrity(tmp_path):
    """SQLAlchemy's own pool timeout is transient and its IntegrityError permanent."""
    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        poolclass=sqlalchemy.pool.QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.01,
    )
    try:
        with engine.connect() as held:
            timeout = raised(engine.connect)
            held.execute(sqlalchemy.text("create table t (id integer primary key)"))
            held.execute(sqlalchemy.text("insert into t values (1)"))
            integrity = raised(lambda: held.execute(sqlalchemy.text("insert into t values (1)")))
    finally:
        engine.dispose()
    assert isinstance(timeout, sqlalchemy.exc.TimeoutError)
    assert classify(timeout) is T
    assert isinstance(integrity, sqlalchemy.exc.IntegrityError)
    assert classify(integrity) is P


@pytest.mark.redis
def test_real_redis_wrongtype_is_permanent():
    """A real WRONGTYPE reply, sync and asyncio, is permanent."""
    key = f"stalwart-test:{uuid.uuid4()}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.set(key, "string")
        sync_error = raised(lambda: client.lpush(key, "x"))

        async def async_wrongtype() -> BaseException:
            aclient = redis.asyncio.Redis(host="127.0.0.1", port=6379)
            try:
                await aclient.lpush(key, "x")
            except Exception as exc:
                return exc
            finally:
                await aclient.aclose()
            raise AssertionError("no error")

        async_error = asyncio.run(async_wrongtype())
    finally:
        client.delete(key)
        client.close()
    for error in (sync_error, async_error):
        assert isinstance(error, redis.exceptions.ResponseError)
        assert classify(error) is P


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A fresh table with one row (id 1) in the real test database."""
    name = f"stalwart_classify_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"create table {name} (id integer primary key)")
        conn.execute(f"insert into {name} values (1)")  # noqa: S608 - our own name
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"drop table if exists {name}")


@pytest.mark.postgres
def test_real_postgres_unique_violations_are_permanent(pg_table):
    """Real unique violations from psycopg, psycopg2 and asyncpg are permanent."""
    insert = f"insert into {pg_table} values (1)"  # noqa: S608 - our own name
    with psycopg.connect(PG_DSN) as conn:
        psycopg_error = raised(lambda: conn.execute(insert))
    conn2 = psycopg2.connect(PG_DSN)
    try:
        psycopg2_error = raised(lambda: conn2.cursor().execute(insert))
    finally:
        conn2.close()

    async def asyncpg_insert() -> BaseException:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(insert)
        except Exception as exc:
            return exc
        finally:
            await conn.close()
        raise AssertionError("no error")

    asyncpg_error = asyncio.run(asyncpg_insert())
    assert psycopg_error.sqlstate == "23505"
    assert psycopg2_error.pgcode == "23505"
    assert asyncpg_error.sqlstate == "23505"
    for error in (psycopg_error, psycopg2_error, asyncpg_error):
        assert classify(error) is P, repr(error)


@pytest.mark.postgres
def test_real_postgres_terminated_backend_is_transient():
    """A connection killed by pg_terminate_backend is transient (psycopg and asyncpg)."""
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        with psycopg.connect(PG_DSN, autocommit=True) as victim:
            admin.execute("select pg_terminate_backend(%s)", (victim.info.backend_pid,))
            psycopg_error = raised(lambda: victim.execute("select 1"))

        async def asyncpg_victim() -> BaseException:
            conn = await asyncpg.connect(PG_DSN)
            try:
                pid = conn.get_server_pid()
                admin.execute("select pg_terminate_backend(%s)", (pid,))
                await conn.fetch("select 1")
            except Exception as exc:
                return exc
            finally:
                await conn.close()
            raise AssertionError("no error")

        asyncpg_error = asyncio.run(asyncpg_victim())
    for error in (psycopg_error, asyncpg_error):
        assert classify(error) is T, repr(error)


@pytest.mark.rabbitmq
def test_real_amqp_missing_queue_is_permanent():
    """Declaring a missing queue passively on the real broker raises a permanent NotFound."""
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")  # noqa: S106
    conn.connect()
    try:
        channel = conn.channel()
        error = raised(
            lambda: channel.queue_declare(f"stalwart-missing-{uuid.uuid4()}", passive=True)
        )
    finally:
        conn.close()
    assert isinstance(error, amqp.exceptions.NotFound)
    assert classify(error) is P


# --- Import hygiene ----------------------------------------------------------------------

LIBRARY_MODULES = [
    "redis",
    "pymongo",
    "motor",
    "bson",
    "sqlalchemy",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "aiohttp",
    "httpx",
    "httpcore",
    "httpx2",
    "requests",
    "urllib3",
    "openai",
    "anthropic",
    "botocore",
    "aiobotocore",
    "grpc",
    "google",
    "elasticsearch",
    "elastic_transport",
    "amqp",
    "kombu",
    "tenacity",
]


def test_classifying_imports_no_library():
    """``import stalwart`` and classifying plain exceptions import none of the libraries."""
    code = f"""
import json, sys
import stalwart
from stalwart.classify import classify
for exc in (RuntimeError("x"), ConnectionResetError(), KeyError("k")):
    classify(exc)
try:
    raise RuntimeError("outer") from ConnectionError("inner")
except RuntimeError as exc:
    classify(exc)
lookalike = type("ConnectionError", (Exception,), {{"__module__": "redis.exceptions"}})
classify(lookalike())
names = {LIBRARY_MODULES!r}
print(json.dumps(sorted(n for n in names if n in sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []
