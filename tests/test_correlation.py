"""Correlation ids: set for a block, nested, seen by tasks, and carried in log records."""

from __future__ import annotations

import logging

import anyio
import pytest

import stalwart
from stalwart import correlation_id, current_correlation_id


def test_no_id_outside_a_block():
    """Without a block there is no correlation id."""
    assert current_correlation_id() is None


def test_block_sets_and_restores_nested_ids():
    """An inner block replaces the id until it ends, then the outer one is back."""
    with correlation_id("outer") as outer:
        assert outer == "outer"
        with correlation_id("inner"):
            assert current_correlation_id() == "inner"
        assert current_correlation_id() == "outer"
    assert current_correlation_id() is None


def test_missing_value_makes_up_an_id():
    """correlation_id() with no value makes a fresh 32-hex-digit id each time."""
    with correlation_id() as first, correlation_id() as second:
        assert len(first) == 32
        assert int(first, 16) >= 0
        assert first != second


@pytest.mark.parametrize(
    ("value", "error"),
    [("", ValueError), ("line\nbreak", ValueError), (42, TypeError), (b"bytes", TypeError)],
)
def test_bad_values_are_refused(value, error):
    """An id that could not go in a header is refused at once, naming the value."""
    with pytest.raises(error, match="value"):
        correlation_id(value)


@pytest.mark.anyio
async def test_async_block_is_seen_by_child_tasks():
    """`async with` sets the id for the task and the tasks it starts."""
    seen: list[str | None] = []

    async def child() -> None:
        seen.append(current_correlation_id())

    async with correlation_id("job-7"), anyio.create_task_group() as group:
        group.start_soon(child)
    assert seen == ["job-7"]
    assert current_correlation_id() is None


def test_retry_logs_carry_the_correlation_id(caplog: pytest.LogCaptureFixture):
    """The logging listener puts the id in the `extra` of every retry record."""
    calls = []

    @stalwart.retry(attempts=2, backoff=stalwart.constant(0))
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return "ok"

    with caplog.at_level(logging.INFO, "stalwart.retry"), correlation_id("req-1"):
        assert flaky() == "ok"
    assert [record.correlation_id for record in caplog.records] == ["req-1"]  # type: ignore[attr-defined]


def test_breaker_state_logs_carry_the_correlation_id(caplog: pytest.LogCaptureFixture):
    """State changes logged inside a block carry its id."""
    breaker = stalwart.CircuitBreaker("cid", failure_threshold=1, window=None)
    with (
        caplog.at_level(logging.WARNING, "stalwart.breaker"),
        correlation_id("req-2"),
        pytest.raises(ConnectionError),
    ):
        breaker.call(_fail)
    assert [record.correlation_id for record in caplog.records] == ["req-2"]  # type: ignore[attr-defined]


def _fail() -> None:
    raise ConnectionError("down")
