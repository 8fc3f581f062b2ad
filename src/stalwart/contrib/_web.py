"""Request-level rules the web adapters share: every decision, none of the I/O.

The Django middleware and the ASGI middleware read a request's headers, ask this
module what to do, and write what it answers in their own framework's terms:

- **errors to replies**: `error_reply` turns a `CircuitOpenError` into
  ``503 Service Unavailable`` with ``Retry-After`` and a `TimeoutExceeded` into
  ``504 Gateway Timeout``, as RFC 9457 problem details (``application/problem+json``)
  or as plain text for clients that prefer it (`wants_json`). Bodies are written here,
  never taken from an exception's message.
- **the caller's deadline**: `request_deadline` reads a budget from a header, as
  decimal seconds (``2.5``) or in gRPC's ``grpc-timeout`` form (``100m``, ``2S``),
  caps it, and combines it with the server's own deadline. A malformed value raises
  `DeadlineHeaderError`, which `bad_deadline_reply` answers with ``400 Bad Request``.
- **correlation ids**: `correlation_id_from` keeps a caller's id when it is safe to
  echo (1 to `MAX_CORRELATION_ID_LENGTH` printable ASCII characters, no spaces) and
  otherwise makes a fresh one; `CorrelationIdFilter` puts the id on every log record.

Every reply is a `stalwart.contrib._reply.Reply`, its problem details built by
`stalwart.contrib._reply.problem`. Nothing here imports a web framework.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import TYPE_CHECKING, Final

from .._correlation import current_correlation_id
from ..errors import CircuitOpenError, TimeoutExceeded
from ._reply import PROBLEM_JSON, TEXT_PLAIN, Reply, problem

if TYPE_CHECKING:
    from datetime import timedelta

    from ._reply import Headers

__all__ = [
    "BAD_DEADLINE_TYPE",
    "CIRCUIT_OPEN_TYPE",
    "GRPC_TIMEOUT_HEADER",
    "MAX_CORRELATION_ID_LENGTH",
    "MAX_DEADLINE_HEADER_LENGTH",
    "PROBLEM_JSON",
    "TEXT_PLAIN",
    "TIMEOUT_TYPE",
    "CorrelationIdFilter",
    "DeadlineHeaderError",
    "Reply",
    "bad_deadline_reply",
    "correlation_id_from",
    "error_reply",
    "parse_deadline",
    "request_deadline",
    "retry_after_header",
    "wants_json",
]

CIRCUIT_OPEN_TYPE: Final = "urn:stalwart:problem:circuit-open"
"""The problem ``type`` of a request refused because a circuit breaker is open."""
TIMEOUT_TYPE: Final = "urn:stalwart:problem:timeout"
"""The problem ``type`` of a request cut by a stalwart timeout or deadline."""
BAD_DEADLINE_TYPE: Final = "urn:stalwart:problem:bad-deadline"
"""The problem ``type`` of a request whose deadline header could not be read."""
GRPC_TIMEOUT_HEADER: Final = "grpc-timeout"
"""gRPC's deadline header; its values (``100m``, ``2S``) are accepted in any header."""
MAX_CORRELATION_ID_LENGTH: Final = 128
"""The longest correlation id accepted from a caller; longer ones are replaced."""
MAX_DEADLINE_HEADER_LENGTH: Final = 64
"""The longest deadline header value read; longer ones are malformed."""

# Decimal seconds: digits with an optional fraction (".5" and "2." too); no sign, no
# exponent, no "inf" or "nan", ASCII digits only.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# gRPC: 1 to 8 digits and a unit (Hours, Minutes, Seconds, milli, micro, nano).
_GRPC = re.compile(r"([0-9]{1,8})([HMSmun])")
_GRPC_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Printable ASCII without space, 1 to MAX_CORRELATION_ID_LENGTH characters.
_CORRELATION_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CORRELATION_ID_LENGTH}}}")


class DeadlineHeaderError(ValueError):
    """A deadline header whose value is not a positive duration in a known form.

    Raised by `parse_deadline` and `request_deadline`; `bad_deadline_reply` is the
    ``400 Bad Request`` that answers it.

    Attributes:
        header: The header's name, or ``None`` when unknown.

    .. versionadded:: 0.1.0
    """

    def __init__(self, value: str, header: str | None = None) -> None:
        shown = value if len(value) <= MAX_DEADLINE_HEADER_LENGTH else value[:20] + "..."
        super().__init__(
            f"{header or 'the deadline header'} must be a positive number of seconds"
            f" (2.5) or a gRPC timeout (100m, 2S), got {shown!r}"
        )
        self.header = header


def parse_deadline(value: str, header: str | None = None) -> float:
    """Return the seconds a deadline header value asks for.

    Two forms are read, whatever the header is called:

    ==================  ========================================================
    ``2.5``, ``30``     Decimal seconds: ASCII digits with an optional fraction;
                        no sign, no exponent.
    ``100m``, ``2S``    gRPC's ``grpc-timeout``: 1 to 8 digits and a unit,
                        ``H`` hours, ``M`` minutes, ``S`` seconds, ``m``
                        milliseconds, ``u`` microseconds, ``n`` nanoseconds.
    ==================  ========================================================

    Spaces around the value are ignored. The result is finite and greater than zero;
    it is not capped here (see `request_deadline`).

    Args:
        value: The header's value.
        header: The header's name, for the error message.

    Raises:
        DeadlineHeaderError: `value` is in neither form, is zero, or is longer than
            `MAX_DEADLINE_HEADER_LENGTH` characters.

    .. versionadded:: 0.1.0
    """
    text = value.strip()
    seconds = 0.0
    if len(text) <= MAX_DEADLINE_HEADER_LENGTH:
        if _DECIMAL.fullmatch(text):
            seconds = float(text)
        elif match := _GRPC.fullmatch(text):
            seconds = int(match[1]) * _GRPC_UNITS[match[2]]
    # Zero is refused rather than read as "no deadline" or "already spent": clients
    # disagree on what it means, and a 400 says so plainly.
    if not seconds > 0:
        raise DeadlineHeaderError(value, header)
    return seconds


def request_deadline(
    value: str | None,
    *,
    default: float | timedelta | None = None,
    maximum: float | timedelta | None = None,
    header: str | None = None,
) -> float | None:
    """Return the deadline a request runs under, in seconds, or ``None`` for none.

    The caller's budget (the header `value`) is capped at `maximum`; the result is
    the smaller of that and the server's own `default`. A missing or blank header
    leaves `default`.

    Args:
        value: The deadline header's value, or ``None`` when absent.
        default: The server's deadline for every request, or ``None``.
        maximum: The largest budget a caller may ask for, or ``None`` for no cap.
        header: The header's name, for the error message.

    Raises:
        DeadlineHeaderError: the header is present but malformed (see `parse_deadline`).

    .. versionadded:: 0.1.0
    """
    server = _as_seconds(default)
    if value is None or not value.strip():
        return server
    asked = parse_deadline(value, header)
    cap = _as_seconds(maximum)
    if cap is not None and asked > cap:
        asked = cap
    return asked if server is None or asked < server else server


def _as_seconds(value: float | timedelta | None) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    return value.total_seconds()


def correlation_id_from(value: str | None) -> str:
    """Return the caller's correlation id if it is safe to use and echo, else a new one.

    Accepted: 1 to `MAX_CORRELATION_ID_LENGTH` printable ASCII characters without
    spaces (so it can go back in a header and into logs as it is). Anything else,
    or nothing, gives a fresh id (a random UUID as 32 hex digits); the caller's value
    is dropped, never echoed.

    .. versionadded:: 0.1.0
    """
    if value is not None and _CORRELATION_ID.fullmatch(value):
        return value
    return fresh_correlation_id()


# Fresh correlation ids come from a pool: one `os.urandom` call makes _POOL of them.
# A system call per request costs more than the rest of the id (what it evicts from the
# CPU caches included), and each request without an id needs one.
_POOL: Final = 128
# The ids not yet handed out. `list.pop` and `list.extend` are atomic, so no id is
# handed out twice; threads that find it empty at once each add a pool of their own.
_ids: list[str] = []
# Byte maps setting a UUID's version (4: random) and variant bits, applied to the
# pool's bytes 6 and 8 of each id at once.
_VERSION_4: Final = bytes(byte & 0x0F | 0x40 for byte in range(256))
_RFC_4122_VARIANT: Final = bytes(byte & 0x3F | 0x80 for byte in range(256))


def fresh_correlation_id() -> str:
    """A random UUID (version 4) as 32 hex digits: a new correlation id.

    Taken from a pool that one `os.urandom` call fills with `_POOL` ids: a system call
    per request costs more than the rest of the id, and every request that comes
    without an id needs one. Thread-safe, and a forked child never hands out its
    parent's ids.

    .. versionadded:: 0.1.0
    """
    try:
        return _ids.pop()
    except IndexError:
        pass
    raw = bytearray(os.urandom(16 * _POOL))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122_VARIANT)
    text = raw.hex()
    _ids.extend([text[start : start + 32] for start in range(32, 32 * _POOL, 32)])
    return text[:32]  # the first id is this caller's


def _forget_pool() -> None:
    """Drop the pool in a forked child, which would otherwise hand out its parent's ids."""
    _ids.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forget_pool)


def retry_after_header(seconds: float | None) -> int | None:
    """Return the ``Retry-After`` for a wait of `seconds`: whole seconds, rounded up, >= 1.

    ``None`` (a breaker held open by an operator: no one knows when it will close)
    and non-finite waits give ``None``: no ``Retry-After`` is sent then.

    .. versionadded:: 0.1.0
    """
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(1, math.ceil(seconds))


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, number = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(number)
            except ValueError:
                return 0.0
            return quality if 0 <= quality <= 1 else 0.0
    return 1.0


def wants_json(accept: str | None) -> bool:
    """Whether a client with this ``Accept`` header gets JSON rather than plain text.

    JSON unless the client prefers text: a JSON type (``application/json``,
    ``application/problem+json``, any ``+json``) or a wildcard counts for JSON;
    ``text/plain``, ``text/html`` or ``text/*`` for text; the higher quality wins and
    a tie goes to JSON. No ``Accept`` header means JSON. So API clients and ``*/*``
    get problem details, and browsers (``text/html,...,*/*;q=0.8``) get text.

    .. versionadded:: 0.1.0
    """
    if not accept:
        return True
    best_json = best_text = 0.0
    for media_range in accept.split(","):
        kind, *params = media_range.split(";")
        kind = kind.strip().lower()
        quality = _quality(params)
        if kind in {"*/*", "application/*"} or "json" in kind:
            best_json = max(best_json, quality)
        if kind in {"*/*", "text/*", "text/plain", "text/html"}:
            best_text = max(best_text, quality)
    return best_json >= best_text


def error_reply(exc: BaseException, *, as_json: bool = True) -> Reply | None:
    """Return the reply for an exception that escaped a request, or ``None``.

    ==========================  ============================================
    `CircuitOpenError`           ``503`` with ``Retry-After`` (see
                                 `retry_after_header`); the problem names the
                                 breaker and carries ``retry_after`` (whole
                                 seconds, or ``null`` when forced open).
    `TimeoutExceeded`            ``504``.
    anything else               ``None``: not ours to answer.
    ==========================  ============================================

    Problem details carry ``type``, ``title``, ``status`` and ``detail``, all written
    here; the exception's message is never sent.

    Args:
        exc: The exception.
        as_json: Problem details (``application/problem+json``) if true, plain text
            if false (see `wants_json`).

    .. versionadded:: 0.1.0
    """
    if isinstance(exc, CircuitOpenError):
        name = exc.name
        wait = retry_after_header(exc.retry_after)
        if wait is None:
            detail = f"The dependency {name!r} is unavailable: its circuit breaker is held open."
            headers: Headers = ()
        else:
            detail = (
                f"The dependency {name!r} is unavailable: its circuit breaker is open."
                f" Try again in {wait} s."
            )
            headers = (("Retry-After", str(wait)),)
        return problem(
            503,
            detail,
            problem_type=CIRCUIT_OPEN_TYPE,
            title="Circuit open",
            headers=headers,
            as_json=as_json,
            breaker=name,
            retry_after=wait,
        )
    if isinstance(exc, TimeoutExceeded):
        return problem(
            504,
            "The request did not finish within its time limit.",
            problem_type=TIMEOUT_TYPE,
            title="Timeout",
            as_json=as_json,
        )
    return None


def bad_deadline_reply(header: str, *, as_json: bool = True) -> Reply:
    """Return the ``400 Bad Request`` for a malformed deadline header named `header`.

    The caller's value is not repeated in the reply.

    .. versionadded:: 0.1.0
    """
    detail = (
        f"The {header} header must be a positive number of seconds (2.5)"
        " or a gRPC timeout (100m, 2S)."
    )
    return problem(
        400, detail, problem_type=BAD_DEADLINE_TYPE, title="Bad deadline", as_json=as_json
    )


class CorrelationIdFilter(logging.Filter):
    """A logging filter that gives every record a ``correlation_id`` attribute.

    Records made inside `stalwart.correlation_id` (the web middleware puts one around
    every request) get its id, others ``None``; a record that already has one (from
    ``extra``) keeps it. Add it to a handler (a filter on a logger sees only that
    logger's own records) and use ``%(correlation_id)s`` in the format. The web
    adapters re-export it, for example as
    ``stalwart.contrib.django.middleware.CorrelationIdFilter``.

    .. versionadded:: 0.1.0
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the current correlation id to `record`; never drop it."""
        if not hasattr(record, "correlation_id"):
            record.correlation_id = current_correlation_id()
        return True
