"""Cleanup hooks run in the worker threads of sync timeouts (`add_worker_cleanup`)."""

from __future__ import annotations

import logging
import sys
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import pytest

import stalwart
from stalwart.timeout import add_worker_cleanup

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

WAIT = 10.0  # seconds a test waits for something that should happen at once
_request: ContextVar[str | None] = ContextVar("request", default=None)


@pytest.fixture(autouse=True)
def _hooks_restored() -> Iterator[None]:
    """The process's worker cleanups are as they were after every test."""
    module: Any = sys.modules["stalwart.timeout"]  # `stalwart.timeout` is the function
    saved = module._worker_cleanups
    yield
    module._worker_cleanups = saved


def in_thread(fn: Callable[[], Any]) -> Any:
    """Call `fn` in a new (non-main) thread, as a threaded server would; return or raise."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, name="request")
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box["value"]


class Log:
    """Records what ran, in which thread, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, what: str) -> None:
        with self.lock:
            self.entries.append((what, threading.current_thread().name))


def test_hook_runs_in_the_worker_thread_after_the_call() -> None:
    """Off the main thread, the hook runs in the call's worker thread, after it, before return."""
    log = Log()
    add_worker_cleanup(lambda: log.add("cleanup"))

    @stalwart.timeout(WAIT)
    def call() -> int:
        log.add("call")
        return 42

    assert in_thread(call) == 42
    (first, worker), (second, cleaner) = log.entries
    assert (first, second) == ("call", "cleanup")
    assert worker == cleaner
    assert worker.startswith("stalwart-timeout:")


def test_hook_runs_when_the_call_raises() -> None:
    """A call that raises still gets its cleanup, and its exception reaches the caller."""
    log = Log()
    add_worker_cleanup(lambda: log.add("cleanup"))

    @stalwart.timeout(WAIT)
    def call() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        in_thread(call)
    assert [what for what, _ in log.entries] == ["cleanup"]


def test_hook_runs_when_an_abandoned_call_ends() -> None:
    """A call the caller stopped waiting for is cleaned up when it finally ends."""
    release, cleaned = threading.Event(), threading.Event()
    log = Log()

    def cleanup() -> None:
        log.add("cleanup")
        cleaned.set()

    add_worker_cleanup(cleanup)

    @stalwart.timeout(0.05)
    def call() -> None:
        release.wait(WAIT)
        log.add("call")

    with pytest.raises(stalwart.TimeoutExceeded):
        in_thread(call)
    assert log.entries == []
    release.set()
    assert cleaned.wait(WAIT)
    assert [what for what, _ in log.entries] == ["call", "cleanup"]
    assert log.entries[0][1] == log.entries[1][1]


def test_main_thread_calls_run_no_hook() -> None:
    """In the main thread (SIGALRM), the call runs in the caller's thread and no hook runs."""
    assert threading.current_thread() is threading.main_thread()
    log = Log()
    add_worker_cleanup(lambda: log.add("cleanup"))

    @stalwart.timeout(WAIT)
    def call() -> str:
        return threading.current_thread().name

    assert call() == threading.main_thread().name
    assert log.entries == []


def test_a_failing_hook_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook that raises never breaks the call; it is logged and later hooks run."""
    log = Log()

    def broken() -> None:
        raise RuntimeError("cleanup failed")

    add_worker_cleanup(broken)
    add_worker_cleanup(lambda: log.add("cleanup"))

    @stalwart.timeout(WAIT)
    def call() -> str:
        return "ok"

    with caplog.at_level(logging.ERROR, logger="stalwart.timeout"):
        assert in_thread(call) == "ok"
    assert [what for what, _ in log.entries] == ["cleanup"]
    [record] = caplog.records
    assert "cleanup" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_adding_twice_runs_once_and_removing_stops_it() -> None:
    """A hook added twice runs once per call; its remover takes it out (twice is harmless)."""
    log = Log()

    def cleanup() -> None:
        log.add("cleanup")

    add_worker_cleanup(cleanup)
    remove = add_worker_cleanup(cleanup)

    @stalwart.timeout(WAIT)
    def call() -> None:
        return None

    in_thread(call)
    assert len(log.entries) == 1
    remove()
    remove()
    in_thread(call)
    assert len(log.entries) == 1


def test_hook_sees_the_callers_context() -> None:
    """The hook runs in the call's context: the caller's context variables are visible."""
    seen: list[str | None] = []
    add_worker_cleanup(lambda: seen.append(_request.get()))

    @stalwart.timeout(WAIT)
    def call() -> None:
        return None

    def request() -> None:
        _request.set("r-1")
        call()

    in_thread(request)
    assert seen == ["r-1"]


def test_a_hook_must_be_callable() -> None:
    """A hook that cannot be called is refused at once, naming the value."""
    with pytest.raises(TypeError, match="hook must be callable.*42"):
        add_worker_cleanup(42)  # type: ignore[arg-type]
