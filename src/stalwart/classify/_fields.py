"""Reading what an exception carries, without ever raising.

An HTTP status (`status_code_of`) and a ``Retry-After`` (`retry_after_of`,
`parse_retry_after`), from the attributes and headers HTTP clients and SDKs use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from .._validate import timedelta_seconds

if TYPE_CHECKING:
    from datetime import datetime


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
