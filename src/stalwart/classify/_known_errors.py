"""What the exceptions of common client libraries mean, as data.

`stalwart.classify` reads these tables; nothing here imports those libraries. A class
is known by the package its module lives in (the package itself or any module below
it) and by its name. For an exception, the most derived class of its MRO that a table
names decides, so a subclass listed on its own (redis' ``AuthenticationError``, a
``ConnectionError``) wins over its base. Each name maps to:

- ``"transient"`` or ``"permanent"``: the verdict, whatever the instance carries;
- ``"pass"``: no verdict from this table (later rules may still decide);
- ``"stop"``: no verdict, and the exception's causes are not judged either, because
  the library has already retried (urllib3's ``MaxRetryError``, google-api-core's and
  tenacity's ``RetryError``);
- any other word: the instance decides, through the judge of that name in
  `stalwart.classify` (gRPC status codes, botocore error codes, MongoDB error labels,
  SDK status codes, ...).
"""

from __future__ import annotations

from typing import Final

T: Final = "transient"
P: Final = "permanent"
PASS: Final = "pass"  # noqa: S105 - not a password
STOP: Final = "stop"

LIBRARIES: Final[dict[str, dict[str, str]]] = {
    # redis-py, sync and asyncio (redis.asyncio raises the same classes).
    "redis": {
        "ConnectionError": T,
        "TimeoutError": T,
        "BusyLoadingError": T,  # the server is loading its dataset
        "MaxClientsReachedError": T,
        "MaxConnectionsError": T,  # the client's pool is exhausted
        "AuthenticationError": P,  # a ConnectionError: listed to win over it
        "AuthorizationError": P,
        "ExternalAuthProviderError": P,
        "ReadOnlyError": T,  # a replica during a failover: the primary comes back
        "ClusterError": T,
        "ClusterDownError": T,
        "MasterDownError": T,
        "TryAgainError": T,  # a slot being migrated
        "SlotNotCoveredError": T,
        "RedisClusterUnreachableError": T,
        "WatchError": T,  # optimistic locking: run the transaction again
        "OutOfMemoryError": PASS,  # the server is in trouble: unknown, a breaker failure
        "ResponseError": P,  # WRONGTYPE, syntax errors, NOSCRIPT, MOVED outside a cluster
        "DataError": P,
        "NoPermissionError": P,
        "ClusterCrossSlotError": P,
        "CrossSlotTransactionError": P,
    },
    # pymongo, and motor, which raises pymongo's exceptions.
    "pymongo": {
        "PyMongoError": "mongo",  # transient only with a retryable error label
        "ConnectionFailure": T,  # AutoReconnect, NetworkTimeout, NotPrimaryError,
        "AutoReconnect": T,  # ServerSelectionTimeoutError, WaitQueueTimeoutError
        "ExecutionTimeout": T,  # maxTimeMS expired
        "OperationFailure": "mongo_operation",  # labels, retryable codes, else permanent
        "WriteConcernError": "mongo",  # the write may have happened: unknown
        "CursorNotFound": "mongo",
        "ConfigurationError": P,
        "InvalidOperation": P,
        "InvalidName": P,
        "CollectionInvalid": P,
        "DocumentTooLarge": P,
    },
    "bson": {"BSONError": P},
    # asyncpg: connection and rollback classes also carry their SQLSTATE (judged by the
    # database rule); listed so subclasses and unusual instances agree.
    "asyncpg": {
        "PostgresConnectionError": T,  # class 08: ConnectionDoesNotExistError, ...
        "CannotConnectNowError": T,
        "AdminShutdownError": T,
        "CrashShutdownError": T,
        "TooManyConnectionsError": T,
        "SerializationError": T,
        "DeadlockDetectedError": T,
        "OutdatedSchemaCacheError": T,  # prepared again on the next attempt
        "IntegrityConstraintViolationError": P,  # unique, foreign key, check, not null
        "InterfaceError": "asyncpg_interface",  # transient when the connection is closed
        "ClientConfigurationError": P,
    },
    # The OpenAI and Anthropic SDKs: status errors carry ``status_code``, judged by the
    # HTTP status rule first; these names decide what carries no usable status.
    "openai": {
        "APIConnectionError": T,  # raised from the transport's error; APITimeoutError too
        "RateLimitError": T,
        "InternalServerError": T,
        "APIStatusError": "sdk_status",
        "AuthenticationError": P,
        "BadRequestError": P,
        "PermissionDeniedError": P,
        "NotFoundError": P,
        "ConflictError": P,
        "UnprocessableEntityError": P,
    },
    "anthropic": {
        "APIConnectionError": T,
        "RateLimitError": T,
        "InternalServerError": T,
        "OverloadedError": T,  # 529
        "ServiceUnavailableError": T,
        "GatewayTimeoutError": T,
        "HTTPNotImplementedError": P,
        "APIStatusError": "sdk_status",  # 529 and other 5xx
        "AuthenticationError": P,
        "BadRequestError": P,
        "PermissionDeniedError": P,
        "NotFoundError": P,
        "ConflictError": P,
        "UnprocessableEntityError": P,
        "CredentialsError": P,
    },
    # botocore, and aiobotocore, which raises botocore's exceptions.
    "botocore": {
        "ConnectionError": T,  # EndpointConnectionError, ConnectTimeoutError, proxies
        "HTTPClientError": T,  # ReadTimeoutError, ConnectionClosedError, streaming
        "SSLError": PASS,  # usually a certificate problem that waiting will not fix
        "ClientError": "botocore",  # by error code, then HTTP status
        "NoCredentialsError": P,
        "PartialCredentialsError": P,
        "ParamValidationError": P,
        "NoRegionError": P,
        "UnknownServiceError": P,
    },
    # grpc and grpc.aio: RpcError subclasses answer ``code()``.
    "grpc": {
        "RpcError": "grpc",
        "FutureTimeoutError": T,
        "FutureCancelledError": P,
    },
    "google.api_core": {
        "GoogleAPICallError": "google",  # by its ``code`` (an HTTP status)
        "ServiceUnavailable": T,
        "TooManyRequests": T,  # ResourceExhausted
        "InternalServerError": T,
        "BadGateway": T,
        "GatewayTimeout": T,  # DeadlineExceeded
        "Aborted": T,  # a concurrency conflict: the whole operation may run again
        "BadRequest": P,  # InvalidArgument, FailedPrecondition, OutOfRange
        "Unauthorized": P,  # Unauthenticated
        "Forbidden": P,  # PermissionDenied
        "NotFound": P,
        "Conflict": P,  # AlreadyExists
        "MethodNotAllowed": P,
        "LengthRequired": P,
        "PreconditionFailed": P,
        "RequestRangeNotSatisfiable": P,
        "MethodNotImplemented": P,
        "Cancelled": P,
        "Unknown": PASS,
        "DataLoss": PASS,
        "RetryError": STOP,
    },
    "google.auth": {
        "TransportError": T,
        "DefaultCredentialsError": P,
    },
    # elasticsearch 8 and 9 raise elastic_transport's transport errors; elasticsearch 7
    # its own. Status errors (ApiError, TransportError in 7) carry ``status_code``.
    "elastic_transport": {
        "ConnectionError": T,
        "ConnectionTimeout": T,
        "TlsError": PASS,
        "SerializationError": P,
    },
    "elasticsearch": {
        "ConnectionError": T,
        "ConnectionTimeout": T,
        "SSLError": PASS,
        "SerializationError": P,
        "BadRequestError": P,
        "RequestError": P,
        "NotFoundError": P,
        "ConflictError": P,
        "AuthenticationException": P,
        "AuthorizationException": P,
        "UnsupportedProductError": P,
    },
    # py-amqp and kombu (kombu re-exports amqp's connection and channel errors).
    "amqp": {
        "ConnectionError": T,
        "RecoverableConnectionError": T,  # ConnectionForced, ResourceError, Blocked
        "IrrecoverableConnectionError": PASS,  # framing and protocol errors
        "NotAllowed": P,  # a virtual host the user may not open
        "RecoverableChannelError": T,  # ResourceLocked, NoConsumers
        "ContentTooLarge": P,
        "IrrecoverableChannelError": P,  # NotFound, AccessRefused, PreconditionFailed
    },
    "kombu": {
        "OperationalError": T,  # how kombu reports a lost broker connection
        "LimitExceeded": T,  # a connection or channel pool is exhausted
        "InconsistencyError": PASS,
        "SerializationError": P,  # EncodeError, DecodeError
        "SerializerNotInstalled": P,  # ContentDisallowed
        "NotBoundError": P,
        "MessageStateError": P,
    },
    # Retry libraries that wrap their last failure: they have already retried.
    "urllib3": {"MaxRetryError": STOP},
    "tenacity": {"RetryError": STOP},
}
"""Package -> class name -> what an instance means (see the module docstring)."""

GRPC_TRANSIENT: Final = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
)
GRPC_PERMANENT: Final = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "CANCELLED",
    }
)
"""gRPC status names; the others (UNKNOWN, INTERNAL, DATA_LOSS, OK) are left unknown."""

AWS_TRANSIENT_CODES: Final = frozenset(
    {
        # Throttling, as botocore's standard retry mode lists it.
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        # Transient service errors.
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "IDPCommunicationError",
    }
)
AWS_PERMANENT_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "ValidationError",
        "ValidationException",
        "InvalidParameterValue",
        "InvalidParameterException",
        "InvalidRequest",
        "MissingParameter",
        "NoSuchKey",
        "NoSuchBucket",
        "NoSuchEntity",
        "ResourceNotFoundException",
        "ConditionalCheckFailedException",
        "ResourceInUseException",
    }
)
"""botocore ``ClientError`` codes (``response["Error"]["Code"]``)."""

MONGO_TRANSIENT_LABELS: Final = ("RetryableWriteError", "TransientTransactionError")
MONGO_TRANSIENT_CODES: Final = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        134,  # ReadConcernMajorityNotAvailableYet
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
"""MongoDB server error codes the drivers' retryable reads and writes retry."""
