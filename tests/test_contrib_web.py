"""The framework-free request rules: deadline headers, correlation ids, error replies."""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart
from stalwart import CircuitOpenError, TimeoutExceeded
from stalwart.contrib._reply import BLANK, JSON, NEVER_CACHE, Reply, never_cache, problem
from stalwart.contrib._web import (
    BAD_DEADLINE_TYPE,
    CIRCUIT_OPEN_TYPE,
    MAX_CORRELATION_ID_LENGTH,
    PROBLEM_JSON,
    TEXT_PLAIN,
    TIMEOUT_TYPE,
    CorrelationIdFilter,
    DeadlineHeaderError,
    bad_deadline_reply,
    correlation_id_from,
    error_reply,
    fresh_correlation_id,
    parse_deadline,
    request_deadline,
    retry_after_header,
    wants_json,
)

FRESH = re.compile(r"[0-9a-f]{32}")

# --- deadline headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2.5", 2.5),
        ("30", 30.0),
        (".5", 0.5),
        ("2.", 2.0),
        (" 1 ", 1.0),
        ("0.001", 0.001),
        ("100m", 0.1),
        ("2S", 2.0),
        ("1M", 60.0),
        ("1H", 3600.0),
        ("250u", 250e-6),
        ("7n", 7e-9),
        ("99999999H", 99999999 * 3600.0),
    ],
)
def test_parse_deadline_reads_decimal_and_grpc(value: str, seconds: float):
    """Decimal seconds and gRPC timeouts read as the seconds they mean."""
    assert parse_deadline(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "abc",
        "-1",
        "+1",
        "0",
        "0.0",
        "0m",
        "00000000S",
        "1e3",
        "nan",
        "inf",
        "1.5s",
        "1.5S",
        "123456789S",
        "1,2",
        "1 2",
        "\uff11",  # a full-width digit, which float() would read
        "1" * 65,
        "0x10",
        "1_000",
    ],
)
def test_parse_deadline_refuses_malformed(value: str):
    """Anything but a positive decimal or a gRPC timeout raises DeadlineHeaderError."""
    with pytest.raises(DeadlineHeaderError):
        parse_deadline(value, "X-Request-Timeout")


def test_deadline_header_error_names_header_and_value():
    """The error is a ValueError naming the header, the forms accepted, and the value."""
    with pytest.raises(
        DeadlineHeaderError, match=r"X-Request-Timeout must be .*100m.*'soon'"
    ) as info:
        parse_deadline("soon", "X-Request-Timeout")
    assert isinstance(info.value, ValueError)
    assert info.value.header == "X-Request-Timeout"


def test_deadline_header_error_shortens_long_values():
    """A long value is shown cut short in the message, not in full."""
    with pytest.raises(DeadlineHeaderError) as info:
        parse_deadline("9" * 10_000)
    assert len(str(info.value)) < 200


@given(st.text())
def test_parse_deadline_never_raises_anything_else(value: str):
    """Any text gives a finite positive number of seconds or DeadlineHeaderError."""
    try:
        seconds = parse_deadline(value)
    except DeadlineHeaderError:
        return
    assert math.isfinite(seconds)
    assert seconds > 0


@given(st.decimals(min_value="0.000001", max_value="1e12", places=6, allow_nan=False))
def test_parse_deadline_reads_any_decimal(value: object):
    """Every positive decimal written out in digits reads as its value."""
    assert parse_deadline(str(value)) == pytest.approx(float(str(value)))


@given(st.integers(1, 99_999_999), st.sampled_from("HMSmun"))
def test_parse_deadline_reads_any_grpc_timeout(amount: int, unit: str):
    """Every gRPC timeout (1 to 8 digits and a unit) reads as amount times its unit."""
    scale = {"H": 3600, "M": 60, "S": 1, "m": 1e-3, "u": 1e-6, "n": 1e-9}[unit]
    assert parse_deadline(f"{amount}{unit}") == pytest.approx(amount * scale)


@given(
    st.one_of(st.none(), st.text(), st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,6})?", fullmatch=True)),
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.one_of(st.none(), st.floats(0.001, 1e6)),
)
def test_request_deadline_cap_always_holds(
    value: str | None, default: float | None, maximum: float | None
):
    """The result never exceeds the server's deadline nor, for a header, the cap."""
    try:
        seconds = request_deadline(value, default=default, maximum=maximum)
    except DeadlineHeaderError:
        assert value is not None
        assert value.strip()
        return
    if default is not None:
        assert seconds is not None
        assert seconds <= default
    if value is not None and value.strip():
        assert seconds is not None
        assert seconds > 0 or default == 0
        if maximum is not None:
            assert seconds <= maximum
    elif default is None:
        assert seconds is None


@pytest.mark.parametrize(
    ("value", "default", "maximum", "expected"),
    [
        (None, None, 60.0, None),
        ("", None, 60.0, None),
        ("   ", 5.0, 60.0, 5.0),
        (None, 5.0, 60.0, 5.0),
        ("2", None, 60.0, 2.0),
        ("2", 5.0, 60.0, 2.0),
        ("8", 5.0, 60.0, 5.0),
        ("1000000", None, 60.0, 60.0),
        ("1000000", None, None, 1000000.0),
        ("99999999H", 90.0, 60.0, 60.0),
        ("2", timedelta(seconds=1), timedelta(minutes=1), 1.0),
        ("200", None, timedelta(minutes=1), 60.0),
    ],
)
def test_request_deadline_combines_header_setting_and_cap(
    value: str | None,
    default: float | timedelta | None,
    maximum: float | timedelta | None,
    expected: float | None,
):
    """The caller's budget is capped, then the smaller of it and the server's applies."""
    assert request_deadline(value, default=default, maximum=maximum) == expected


# --- correlation ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["order-42", "a", "x" * MAX_CORRELATION_ID_LENGTH, "00-4bf92f35-01", "!~{}"]
)
def test_valid_correlation_id_is_kept(value: str):
    """Printable ASCII without spaces, up to the length bound, is used as it is."""
    assert correlation_id_from(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "has space",
        "x" * (MAX_CORRELATION_ID_LENGTH + 1),
        "caf\u00e9",
        "line\nbreak",
        "tab\there",
        "nul\x00",
        "del\x7f",
    ],
)
def test_invalid_correlation_id_is_replaced(value: str | None):
    """Anything else gives a fresh 32-hex-digit id, never the caller's value."""
    fresh = correlation_id_from(value)
    assert FRESH.fullmatch(fresh)
    assert fresh != value


def test_fresh_correlation_ids_differ():
    """Two fresh ids are not the same."""
    assert correlation_id_from(None) != correlation_id_from(None)


@given(st.one_of(st.none(), st.text()))
def test_correlation_id_is_always_safe(value: str | None):
    """The id is the caller's exactly when it is safe; either way it is safe to echo."""
    result = correlation_id_from(value)
    safe = (
        value is not None
        and 1 <= len(value) <= MAX_CORRELATION_ID_LENGTH
        and all("!" <= c <= "~" for c in value)
    )
    assert (result == value) is safe
    assert 1 <= len(result) <= MAX_CORRELATION_ID_LENGTH
    assert all("!" <= c <= "~" for c in result)
    stalwart.correlation_id(result)  # accepted by the core too


# --- Retry-After and content negotiation ---------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (None, None),
        (0.0, 1),
        (0.2, 1),
        (1.0, 1),
        (1.01, 2),
        (29.999, 30),
        (30.0, 30),
        (math.inf, None),
        (math.nan, None),
    ],
)
def test_retry_after_header_rounds_up(seconds: float | None, header: int | None):
    """Whole seconds rounded up, at least 1; none when unknown."""
    assert retry_after_header(seconds) == header


@given(st.floats(0, 1e9))
def test_retry_after_header_is_never_early(seconds: float):
    """Retry-After is at least 1, never below the wait, and at most a second above it."""
    header = retry_after_header(seconds)
    assert header is not None
    assert header >= 1
    assert header >= seconds
    assert header - seconds < 1 or header == 1


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        (None, True),
        ("", True),
        ("*/*", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/plain;q=0.5, application/json", True),
        ("text/plain, application/json;q=0.5", False),
        ("text/plain;q=0.5, application/json;q=0.5", True),
        ("application/json;q=bogus, text/plain;q=0.1", False),
        ("image/png", True),
    ],
)
def test_wants_json(accept: str | None, json_wanted: bool):
    """JSON unless the Accept header prefers text; a tie goes to JSON."""
    assert wants_json(accept) is json_wanted


# --- replies -------------------------------------------------------------------------------


def test_circuit_open_reply_is_problem_details():
    """An open breaker gives 503, Retry-After and the pinned problem body."""
    reply = error_reply(CircuitOpenError("jira", 29.2))
    assert reply is not None
    assert (reply.status, reply.content_type) == (503, PROBLEM_JSON)
    assert reply.headers == (("Retry-After", "30"),)
    assert json.loads(reply.content) == reply.body
    assert reply.body == {
        "type": CIRCUIT_OPEN_TYPE,
        "title": "Circuit open",
        "status": 503,
        "detail": "The dependency 'jira' is unavailable: its circuit breaker is open."
        " Try again in 30 s.",
        "breaker": "jira",
        "retry_after": 30,
    }


def test_forced_open_reply_has_no_retry_after():
    """A breaker held open by an operator gives 503 without Retry-After, retry_after null."""
    reply = error_reply(CircuitOpenError("jira", None))
    assert reply is not None
    assert reply.status == 503
    assert reply.headers == ()
    body = json.loads(reply.content)
    assert body == reply.body
    assert b'"retry_after": null' in reply.content
    assert body["retry_after"] is None
    assert body["breaker"] == "jira"
    assert "held open" in body["detail"]


def test_timeout_reply_is_problem_details():
    """A TimeoutExceeded gives 504 and the pinned problem body, without its message."""
    reply = error_reply(TimeoutExceeded(1.5, "secret: db password is hunter2"))
    assert reply is not None
    assert (reply.status, reply.content_type, reply.headers) == (504, PROBLEM_JSON, ())
    assert json.loads(reply.content) == reply.body
    assert reply.body == {
        "type": TIMEOUT_TYPE,
        "title": "Timeout",
        "status": 504,
        "detail": "The request did not finish within its time limit.",
    }
    assert b"hunter2" not in reply.content


def test_replies_never_carry_the_exception_message():
    """The exception's own message is not in the body, JSON or text."""
    exc = CircuitOpenError("jira", 5.0)
    for as_json in (True, False):
        reply = error_reply(exc, as_json=as_json)
        assert reply is not None
        assert str(exc).encode() not in reply.content
        assert str(exc) not in reply.body.values()


def test_text_replies():
    """For text clients the same replies are plain text, headers unchanged."""
    reply = error_reply(CircuitOpenError("jira", 0.1), as_json=False)
    assert reply is not None
    assert (reply.status, reply.content_type) == (503, TEXT_PLAIN)
    assert reply.headers == (("Retry-After", "1"),)
    assert reply.content == (
        b"Circuit open: The dependency 'jira' is unavailable: its circuit breaker is open."
        b" Try again in 1 s.\n"
    )
    as_json = error_reply(CircuitOpenError("jira", 0.1))
    assert as_json is not None
    assert reply.body == as_json.body  # the same problem, shown as a line
    timeout = error_reply(TimeoutExceeded(1), as_json=False)
    assert timeout is not None
    assert timeout.content == b"Timeout: The request did not finish within its time limit.\n"


@pytest.mark.parametrize(
    "exc", [RuntimeError("x"), TimeoutError(), stalwart.BulkheadFull(), KeyError("k")]
)
def test_other_exceptions_get_no_reply(exc: BaseException):
    """Only CircuitOpenError and TimeoutExceeded are answered here."""
    assert error_reply(exc) is None


def test_bad_deadline_reply():
    """A malformed deadline header gets 400 naming the header and the accepted forms."""
    reply = bad_deadline_reply("X-Request-Timeout")
    assert (reply.status, reply.content_type, reply.headers) == (400, PROBLEM_JSON, ())
    assert json.loads(reply.content) == reply.body
    assert reply.body == {
        "type": BAD_DEADLINE_TYPE,
        "title": "Bad deadline",
        "status": 400,
        "detail": "The X-Request-Timeout header must be a positive number of seconds (2.5)"
        " or a gRPC timeout (100m, 2S).",
    }
    text = bad_deadline_reply("X-Request-Timeout", as_json=False)
    assert text.content_type == TEXT_PLAIN
    assert text.content.startswith(b"Bad deadline: The X-Request-Timeout header")
    assert text.content.endswith(b"(100m, 2S).\n")


# --- the shared reply record and problem builder ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
    ],
)
def test_plain_problem_is_about_blank_with_the_status_phrase(status: int, title: str):
    """A plain problem has type about:blank, the status phrase as title, and four members."""
    reply = problem(status, "Why.")
    assert (reply.status, reply.content_type, reply.headers) == (status, PROBLEM_JSON, ())
    assert reply.body == {"type": BLANK, "title": title, "status": status, "detail": "Why."}


def test_problem_types_of_our_own_carry_extensions():
    """A stalwart type takes its title, extension members and headers."""
    reply = problem(
        503,
        "Down.",
        problem_type=CIRCUIT_OPEN_TYPE,
        title="Circuit open",
        headers=(("Retry-After", "3"),),
        breaker="jira",
        retry_after=3,
    )
    assert reply.body == {
        "type": CIRCUIT_OPEN_TYPE,
        "title": "Circuit open",
        "status": 503,
        "detail": "Down.",
        "breaker": "jira",
        "retry_after": 3,
    }
    assert reply.header("retry-after") == "3"
    assert reply.header("Allow") is None


@pytest.mark.parametrize(
    "options",
    [
        {"title": "Mine"},
        {"name": "jira"},
        {"problem_type": CIRCUIT_OPEN_TYPE},
        {"problem_type": CIRCUIT_OPEN_TYPE, "title": ""},
    ],
)
def test_problem_refuses_extensions_on_about_blank_and_untitled_types(options: dict[str, str]):
    """about:blank takes no title nor extension; another type needs a title."""
    with pytest.raises(ValueError, match="about:blank|needs a title"):
        problem(404, "Why.", **options)


def test_json_content_is_written_as_json_dumps_defaults():
    """JSON replies are ASCII with ', ' and ': ' separators, as Django's JsonResponse."""
    reply = Reply(200, {"name": "caf\u00e9", "n": [1, None]})
    assert reply.content_type == JSON
    assert reply.content == b'{"name": "caf\\u00e9", "n": [1, null]}'


@given(
    st.sampled_from([400, 404, 503]),
    st.text(),
    st.dictionaries(st.sampled_from(["breaker", "name", "retry_after"]), st.text()),
    st.booleans(),
)
def test_problem_content_always_shows_the_body(
    status: int, detail: str, extensions: dict[str, str], as_json: bool
):
    """Any problem encodes to ASCII JSON of its body, or to its 'title: detail' line."""
    reply = problem(
        status,
        detail,
        problem_type=TIMEOUT_TYPE,
        title="Timeout",
        as_json=as_json,
        **extensions,
    )
    if as_json:
        assert reply.content.isascii()
        assert json.loads(reply.content) == reply.body
        assert reply.body["detail"] == detail
    else:
        assert reply.content == f"Timeout: {detail}\n".encode()


def test_never_cache_adds_expires_and_cache_control():
    """never_cache keeps the reply's headers and adds Expires (now) and Cache-Control."""
    reply = never_cache(problem(405, "No.", headers=(("Allow", "POST"),)))
    names = [name for name, _ in reply.headers]
    assert names == ["Allow", "Expires", "Cache-Control"]
    assert reply.header("Cache-Control") == NEVER_CACHE
    expires = reply.header("expires")
    assert expires is not None
    age = datetime.now(timezone.utc) - parsedate_to_datetime(expires)
    assert timedelta(seconds=-1) < age < timedelta(minutes=1)


# --- logging -------------------------------------------------------------------------------


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    record.__dict__.update(extra)
    return record


def test_filter_adds_current_correlation_id():
    """Records get the id in force, None outside any, and keep one given in extra."""
    log_filter = CorrelationIdFilter()
    outside = _record()
    assert log_filter.filter(outside) is True
    assert getattr(outside, "correlation_id", "missing") is None
    with stalwart.correlation_id("order-42"):
        inside = _record()
        given_one = _record(correlation_id="mine")
        assert log_filter.filter(inside)
        assert log_filter.filter(given_one)
    assert getattr(inside, "correlation_id", None) == "order-42"
    assert getattr(given_one, "correlation_id", None) == "mine"


def test_importing_web_rules_imports_no_framework():
    """stalwart.contrib._web loads without Django, Starlette or FastAPI."""
    code = (
        "import sys, stalwart.contrib._web;"
        "print(sorted(m for m in ('django', 'starlette', 'fastapi', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


UUID4 = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")


def test_fresh_ids_are_uuid4_and_never_repeat_across_threads() -> None:
    """Ids cut from the shared pool are random UUIDv4s; 8 threads never get the same one."""
    seen: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def take(mine: list[str]) -> None:
        start.wait()
        mine.extend(fresh_correlation_id() for _ in range(2_000))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ids = [one for mine in seen for one in mine]
    assert len(ids) == 16_000
    assert len(set(ids)) == len(ids)
    assert all(UUID4.fullmatch(one) for one in ids)


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    """After a fork the child fills a pool of its own: its ids are not the parent's next."""
    # In a fresh process of one thread: forking this multi-threaded one is unsafe.
    script = """
import os
from stalwart.contrib._web import fresh_correlation_id
fresh_correlation_id()  # a pool is filled, with ids left in it
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, "".join(fresh_correlation_id() for _ in range(4)).encode())
    os._exit(0)
os.close(write)
child = os.read(read, 1000).decode()
os.waitpid(pid, 0)
print(child, "".join(fresh_correlation_id() for _ in range(4)))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    child, parent = completed.stdout.split()
    assert len(child) == len(parent) == 4 * 32
    assert not {child[i : i + 32] for i in range(0, 128, 32)} & {
        parent[i : i + 32] for i in range(0, 128, 32)
    }
