"""The exception hierarchy and what each exception carries."""

from __future__ import annotations

import copy
import json
import pickle
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stalwart
import stalwart.errors
from exception_catalogue import ATTRIBUTES, instances, stalwart_exceptions
from stalwart._decide import add_note
from stalwart.breaker.storage import new_open_error

if TYPE_CHECKING:
    from collections.abc import Callable


def test_markers_carry_status_and_retry_after() -> None:
    """TransientError and PermanentError keep message, status code and retry-after."""
    exc = stalwart.TransientError("slow down", status_code=429, retry_after=2.5)
    assert (exc.message, exc.status_code, exc.retry_after) == ("slow down", 429, 2.5)
    assert str(exc) == "slow down"
    assert repr(exc) == "TransientError('slow down', status_code=429, retry_after=2.5)"
    assert repr(stalwart.PermanentError("gone")) == "PermanentError('gone')"


def test_hierarchy() -> None:
    """What stalwart raises derives from StalwartError; TimeoutExceeded is a TimeoutError."""
    assert issubclass(stalwart.CircuitOpenError, stalwart.StalwartError)
    assert issubclass(stalwart.BulkheadFull, stalwart.StalwartError)
    assert issubclass(stalwart.TimeoutExceeded, stalwart.StalwartError)
    assert issubclass(stalwart.TimeoutExceeded, TimeoutError)
    assert not issubclass(stalwart.TransientError, stalwart.StalwartError)


def test_circuit_open_error_names_breaker_and_wait() -> None:
    """CircuitOpenError says which breaker and how long until it probes again."""
    exc = stalwart.CircuitOpenError("payments", 1.5)
    assert (exc.name, exc.retry_after) == ("payments", 1.5)
    assert str(exc) == "circuit 'payments' is open; retry after 1.500s"
    assert str(stalwart.CircuitOpenError("db")) == "circuit 'db' is forced open"


def test_timeout_exceeded_says_the_limit() -> None:
    """TimeoutExceeded keeps the limit in seconds and says it."""
    exc = stalwart.TimeoutExceeded(0.25)
    assert exc.seconds == 0.25
    assert str(exc) == "call did not finish within 0.25s"
    assert str(stalwart.TimeoutExceeded(1, "deadline passed")) == "deadline passed"


@pytest.mark.parametrize(
    "exc",
    [
        stalwart.CircuitOpenError("x", 2.0),
        stalwart.TimeoutExceeded(3.0),
        stalwart.TransientError("t", status_code=503, retry_after=1.0),
    ],
)
def test_exceptions_survive_pickling(exc: Exception) -> None:
    """Exceptions cross process boundaries (Celery, multiprocessing) intact."""
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own objects
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert vars(copy) == vars(exc)


# -- every stalwart exception survives serialisation -----------------------------------


def _described(exc: BaseException) -> dict[str, object]:
    """What must survive: type, message, args, public attributes and the instance dict."""
    return {
        "type": type(exc),
        "str": str(exc),
        "repr": repr(exc),
        "args": exc.args,
        "vars": vars(exc),
        **{name: getattr(exc, name) for name in ATTRIBUTES if hasattr(exc, name)},
    }


def test_exception_discovery_finds_every_class() -> None:
    """The round-trip tests cover every exception in errors.__all__ at least."""
    assert new_open_error is stalwart.CircuitOpenError.__new__  # what the tests build with
    classes = stalwart_exceptions()
    assert {getattr(stalwart.errors, name) for name in stalwart.errors.__all__} <= set(classes)


@pytest.mark.parametrize("exc", instances(), ids=repr)
@pytest.mark.parametrize(
    "round_trip",
    [
        pytest.param(lambda e: pickle.loads(pickle.dumps(e)), id="pickle"),  # noqa: S301
        pytest.param(lambda e: pickle.loads(pickle.dumps(e, 0)), id="pickle0"),  # noqa: S301
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
        pytest.param(lambda e: type(e)(*e.args), id="args"),
        pytest.param(lambda e: type(e)(*json.loads(json.dumps(e.args))), id="json-args"),
    ],
)
def test_exceptions_round_trip(
    exc: BaseException, round_trip: Callable[[BaseException], BaseException]
) -> None:
    """pickle, copy and rebuilding from (JSON) args keep the type and every attribute."""
    assert _described(round_trip(exc)) == _described(exc)


@given(
    message=st.text(),
    status_code=st.none() | st.integers(100, 599),
    retry_after=st.none() | st.floats(0, 1e6),
    permanent=st.booleans(),
)
def test_marker_args_rebuild_the_marker(
    message: str, status_code: int | None, retry_after: float | None, permanent: bool
) -> None:
    """For any message, status code and retry-after, the args rebuild an equal marker."""
    cls = stalwart.PermanentError if permanent else stalwart.TransientError
    exc = cls(message, status_code=status_code, retry_after=retry_after)
    assert exc.args[0] == message
    assert _described(cls(*exc.args)) == _described(exc)


def test_subclass_with_its_own_init_still_pickles() -> None:
    """A user's marker subclass with a narrower __init__ pickles and copies intact."""
    exc = _NotFound("user 7")
    assert str(exc) == "user 7 not found"
    for copied in (pickle.loads(pickle.dumps(exc)), copy.copy(exc)):  # noqa: S301
        assert _described(copied) == _described(exc)


class _NotFound(stalwart.PermanentError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found", status_code=404)


def test_timeout_exceeded_refuses_a_message_for_seconds() -> None:
    """TimeoutExceeded("...") says that the seconds come first, at construction."""
    with pytest.raises(TypeError, match=r"seconds must be a number, got 'upstream too slow'"):
        stalwart.TimeoutExceeded("upstream too slow")  # type: ignore[arg-type]


@pytest.mark.parametrize("exc", instances(), ids=repr)
def test_notes_survive_pickling_and_copying(exc: BaseException) -> None:
    """A retry's PEP 678 note travels with the exception through pickle and copy."""
    add_note(exc, "gave up after 3 attempts over 1.2s")  # as stalwart notes, on 3.10 too
    for copied in (pickle.loads(pickle.dumps(exc)), copy.copy(exc)):  # noqa: S301
        assert copied.__notes__ == ["gave up after 3 attempts over 1.2s"]
