"""Tell transient failures (worth retrying) from permanent ones.

Run it with ``python examples/classify_errors.py``.
"""

from __future__ import annotations

import errno
import sqlite3
from datetime import datetime, timezone

import stalwart
from stalwart.classify import (
    Classifier,
    Verdict,
    classify,
    parse_retry_after,
    retry_after_of,
    status_code_of,
)


class Response:
    """The shape of an httpx or requests response, as far as stalwart looks."""

    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = headers or {}


class HTTPStatusError(Exception):
    """Like httpx.HTTPStatusError: the status lives on ``exc.response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"server answered {response.status_code}")
        self.response = response


class QuotaExceeded(ConnectionError):
    """A connection error that waiting a few seconds will not fix."""


def show(label: str, exc: BaseException, classifier: Classifier | None = None) -> None:
    verdict = (classifier or Classifier()).match(exc)
    shown = "unknown (not retried)" if verdict is None else verdict.value
    print(f"  {label:<56} -> {shown}")


def main() -> None:
    print("1. The default rules:")
    show("ConnectionError()", ConnectionError())
    show("TimeoutError()", TimeoutError())
    show("OSError(ENETUNREACH)", OSError(errno.ENETUNREACH, "Network is unreachable"))
    show("KeyError('user')  (a bug, not an outage)", KeyError("user"))
    show("ValueError('bad input')", ValueError("bad input"))
    locked = sqlite3.OperationalError("database is locked")
    show("sqlite3.OperationalError('database is locked')", locked)
    duplicate = sqlite3.IntegrityError("UNIQUE constraint failed")
    show("sqlite3.IntegrityError('UNIQUE constraint failed')", duplicate)
    show("RuntimeError('something odd')", RuntimeError("something odd"))
    print()

    print("2. HTTP statuses, read from exc.status_code or exc.response.status_code:")
    busy = stalwart.TransientError("search cluster busy", status_code=503, retry_after=2.0)
    show("TransientError('search cluster busy', status_code=503)", busy)
    print(f"    status_code_of: {status_code_of(busy)}, retry_after_of: {retry_after_of(busy)}")
    for code in (404, 409, 429, 502):
        show(f"HTTPStatusError(response with status {code})", HTTPStatusError(Response(code)))
    print()

    print("3. Your rules win over the defaults (the rule added last wins):")
    custom = (
        Classifier()
        .permanent(QuotaExceeded)
        .statuses({409}, Verdict.TRANSIENT)
        .transient(lambda exc: "try again" in str(exc))
    )
    show("QuotaExceeded()  (a ConnectionError)", QuotaExceeded(), custom)
    show("HTTPStatusError(409)", HTTPStatusError(Response(409)), custom)
    show("RuntimeError('lock held, try again')", RuntimeError("lock held, try again"), custom)
    show("ConnectionError()  (defaults still apply)", ConnectionError(), custom)
    print()

    print("4. Retry-After header values:")
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=timezone.utc)
    for value in ("120", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""):
        call = f"parse_retry_after({value!r})"
        print(f"  {call:<56} -> {parse_retry_after(value, now=now)}")
    print(f"  (HTTP dates are measured against now = {now:%Y-%m-%d %H:%M:%S} UTC)")
    throttled = HTTPStatusError(Response(429, {"Retry-After": "7"}))
    call = "retry_after_of(a 429 response with 'Retry-After: 7')"
    print(f"  {call:<56} -> {retry_after_of(throttled)}")
    print(f"  {'classify(that 429 error)':<56} -> {classify(throttled).value}")


if __name__ == "__main__":
    main()
