"""Tests for `stalwart.timeout`: sync (SIGALRM and thread fallbacks) and async timeouts."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import anyio
import anyio.lowlevel
import pytest

import stalwart
from blocking import BLOCK_FOR, block, run_in_thread
from stalwart._clock import MAX_WAIT
from stalwart.errors import StalwartError, TimeoutExceeded
from stalwart.timeout import Timeout, timeout

# `stalwart.timeout` the attribute is the function; the module is reached by name.
timeout_module = importlib.import_module("stalwart.timeout")

# pytest-timeout's default method arms SIGALRM itself; its thread method leaves the
# signal to the code under test, so these tests can check that nothing is left armed.
pytestmark = pytest.mark.timeout(60, method="thread")


@pytest.fixture(autouse=True)
def _alarm_untouched():
    """Every test starts and ends with no timer armed, the same handler, no run recorded."""
    handler = signal.getsignal(signal.SIGALRM)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert timeout_module._sync_runs.get() == ()
    yield
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == handler
    assert timeout_module._sync_runs.get() == ()


@pytest.fixture
def foreign_handler():
    """Install a SIGALRM handler that is not stalwart's; it records when it runs."""
    fired = threading.Event()

    def handler(signum, frame):
        fired.set()

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        yield SimpleNamespace(handler=handler, fired=fired)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Sync and async shapes: the same behaviour table runs through every one.


def sync_decorated(seconds, body):
    return timeout(seconds)(body)()


def sync_with(seconds, body):
    with timeout(seconds):
        return body()


async def async_decorated(seconds, body):
    return await timeout(seconds)(body)()


async def async_with(seconds, body):
    async with timeout(seconds):
        return await body()


SYNC_SHAPES = [pytest.param(sync_decorated, id="decorator"), pytest.param(sync_with, id="with")]
ASYNC_SHAPES = [
    pytest.param(async_decorated, id="decorator"),
    pytest.param(async_with, id="async-with"),
]


def sync_fast():
    return 42


def sync_slow():
    block()
    return "too late"


def sync_fails():
    raise ValueError("own error")


async def async_fast():
    await anyio.lowlevel.checkpoint()
    return 42


async def async_slow():
    await anyio.sleep(BLOCK_FOR)
    return "too late"


async def async_fails():
    await anyio.lowlevel.checkpoint()
    raise ValueError("own error")


@pytest.mark.parametrize("run", SYNC_SHAPES)
@pytest.mark.parametrize("where", ["main", "thread"])
def test_sync_fast_body_returns(run, where):
    """A sync body that finishes in time returns its value, in any thread."""
    if where == "main":
        assert run(5, sync_fast) == 42
    else:
        assert run_in_thread(lambda: run(5, sync_fast)) == 42


@pytest.mark.parametrize("run", SYNC_SHAPES)
def test_sync_slow_body_raises(run):
    """A sync body still running at its limit is interrupted with TimeoutExceeded."""
    start = time.monotonic()
    with pytest.raises(TimeoutExceeded) as info:
        run(0.05, sync_slow)
    assert time.monotonic() - start < BLOCK_FOR / 2
    assert info.value.seconds == 0.05
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, StalwartError)
    assert str(info.value) == "call did not finish within 0.05s"


@pytest.mark.parametrize("run", SYNC_SHAPES)
@pytest.mark.parametrize("where", ["main", "thread"])
def test_sync_own_error_passes_through(run, where):
    """An exception raised by a sync body reaches the caller unchanged."""
    with pytest.raises(ValueError, match="own error"):
        if where == "main":
            run(5, sync_fails)
        else:
            run_in_thread(lambda: run(5, sync_fails))


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_async_fast_body_returns(run):
    """An async body that finishes in time returns its value."""
    assert await run(5, async_fast) == 42


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_async_slow_body_raises(run):
    """An async body still running at its limit is cancelled with TimeoutExceeded."""
    start = time.monotonic()
    with pytest.raises(TimeoutExceeded) as info:
        await run(0.05, async_slow)
    assert time.monotonic() - start < BLOCK_FOR / 2
    assert info.value.seconds == 0.05
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value.__cause__, anyio.get_cancelled_exc_class())


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_async_own_error_passes_through(run):
    """An exception raised by an async body reaches the caller unchanged."""
    with pytest.raises(ValueError, match="own error"):
        await run(5, async_fails)


# Construction and surface


@pytest.mark.parametrize(
    "seconds", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, timedelta(0), timedelta(-1)]
)
def test_bad_seconds_value(seconds):
    """Zero, negative, NaN and infinite limits raise ValueError naming seconds and value."""
    with pytest.raises(ValueError, match="seconds") as info:
        timeout(seconds)
    assert repr(seconds) in str(info.value)


@pytest.mark.parametrize("seconds", ["1", True, b"1", [1], object()])
def test_bad_seconds_type(seconds):
    """Limits that are not numbers or timedeltas raise TypeError naming seconds and value."""
    with pytest.raises(TypeError, match="seconds") as info:
        timeout(seconds)
    assert repr(seconds) in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(2, 2.0), (0.25, 0.25), (timedelta(milliseconds=1500), 1.5), (None, None)],
)
def test_seconds_normalised(seconds, expected):
    """Numbers and timedeltas become float seconds; None stays None."""
    assert timeout(seconds).seconds == expected


def test_public_surface():
    """The module exports a sorted __all__ and Timeout presents itself as stalwart's."""
    assert timeout_module.__all__ == sorted(timeout_module.__all__)
    assert set(timeout_module.__all__) == {
        "Deadline",
        "Timeout",
        "deadline",
        "remaining",
        "timeout",
    }
    assert Timeout.__module__ == "stalwart"
    assert repr(timeout(2)) == "stalwart.timeout(2.0)"
    assert repr(timeout(None)) == "stalwart.timeout(None)"
    assert isinstance(timeout(1), Timeout)


def test_decorator_keeps_metadata():
    """Decorated functions keep their name, docs and colour."""

    def fetch():
        """Fetch."""

    async def afetch():
        """Fetch, async."""

    for fn in (fetch, afetch):
        wrapped = timeout(1)(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__doc__ == fn.__doc__
        assert wrapped.__wrapped__ is fn
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)


def test_import_is_cheap():
    """Importing stalwart.timeout imports neither anyio nor an async framework."""
    src = Path(timeout_module.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "import sys, stalwart.timeout\n"
        "loaded = {'anyio', 'trio', 'asyncio'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# No limit at all


def test_no_limit_runs_in_place():
    """timeout(None) outside any deadline arms nothing and calls in the caller's thread."""

    @timeout(None)
    def where():
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        return threading.current_thread()

    assert where() is threading.main_thread()
    assert run_in_thread(lambda: where() is threading.current_thread())
    with timeout(None):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_async_no_limit(run):
    """timeout(None) outside any deadline lets an async body run to its end."""
    assert await run(None, async_fast) == 42


# Nested SIGALRM timers (main thread)


def test_nested_inner_shorter_fires_as_inner():
    """An inner shorter timeout fires with its own seconds and gives the outer timer back."""
    with timeout(5):
        with pytest.raises(TimeoutExceeded) as info, timeout(0.05):
            block()
        assert info.value.seconds == 0.05
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 3 < delay <= 5


def test_nested_inner_longer_does_not_extend_outer():
    """An inner longer timeout leaves the outer timer alone; the outer fires as the outer."""
    start = time.monotonic()
    with pytest.raises(TimeoutExceeded) as info, timeout(0.05), timeout(5):
        assert signal.getitimer(signal.ITIMER_REAL)[0] <= 0.05
        block()
    assert info.value.seconds == 0.05
    assert time.monotonic() - start < BLOCK_FOR / 2


def test_outer_still_fires_after_inner_exits():
    """After an inner timeout ends in time, the outer timer is re-armed and still fires."""
    with pytest.raises(TimeoutExceeded) as info, timeout(0.2):
        with timeout(0.1):
            pass
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < delay <= 0.2
        block()
    assert info.value.seconds == 0.2


def test_nested_decorated_functions():
    """A decorated call inside another fires as the inner and leaves the outer armed."""

    @timeout(0.05)
    def inner():
        block()

    @timeout(5)
    def outer():
        with pytest.raises(TimeoutExceeded) as info:
            inner()
        return info.value.seconds, signal.getitimer(signal.ITIMER_REAL)[0]

    seconds, delay = outer()
    assert seconds == 0.05
    assert 3 < delay <= 5


def test_shared_timeout_nests_with_itself():
    """One Timeout entered twice, nested, keeps the earlier end and unwinds cleanly."""
    limit = timeout(0.2)
    with pytest.raises(TimeoutExceeded) as info, limit:
        with limit:
            pass
        block()
    assert info.value.seconds == 0.2


def test_nothing_left_armed(foreign_handler):
    """After nested timeouts end, however they end, the previous handler is back, unarmed."""
    with timeout(5), timeout(2):
        pass
    with pytest.raises(TimeoutExceeded), timeout(5), timeout(0.05):
        block()
    with pytest.raises(TimeoutExceeded), timeout(0.05), timeout(5):
        block()
    with pytest.raises(ValueError, match="own"), timeout(5), timeout(2):
        sync_fails()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is foreign_handler.handler
    assert not foreign_handler.fired.is_set()


def test_foreign_outer_timer_restored(foreign_handler):
    """A timer armed by other code survives an inner timeout and still fires."""
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    with pytest.raises(TimeoutExceeded) as info, timeout(0.05):
        block()
    assert info.value.seconds == 0.05
    assert signal.getsignal(signal.SIGALRM) is foreign_handler.handler
    assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.3
    assert foreign_handler.fired.wait(BLOCK_FOR)


def test_foreign_outer_timer_sooner_wins():
    """A timer armed by other code that ends sooner fires its own handler, not ours."""

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted), timeout(5):
            assert signal.getsignal(signal.SIGALRM) is handler
            block()
        assert signal.getsignal(signal.SIGALRM) is handler
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_outer_timer_due_during_inner_fires_at_once(foreign_handler, monkeypatch):
    """An outer timer whose time passed while the inner ran fires as soon as the inner ends."""
    signal.setitimer(signal.ITIMER_REAL, 3)
    real = time.monotonic
    with timeout(1):
        monkeypatch.setattr(timeout_module, "_monotonic", lambda: real() + 10)
    monkeypatch.undo()
    assert foreign_handler.fired.wait(2)


def test_stray_sigalrm_is_not_a_timeout():
    """A SIGALRM that arrives before the limit (sent by someone else) does not time out."""
    with timeout(5):
        signal.raise_signal(signal.SIGALRM)
        time.sleep(0)  # let the handler run
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 3 < delay <= 5


def test_timers_firing_around_exits(foreign_handler):
    """Tiny nested timeouts firing anywhere (even mid-exit) report the right limit, leak nothing."""
    rng = random.Random(1234)

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    for _ in range(300):
        outer_s, inner_s = rng.uniform(2e-4, 2e-3), rng.uniform(1e-4, 2e-3)
        work = rng.uniform(0, 2e-3)
        fired = {}
        try:
            with timeout(outer_s):
                try:
                    with timeout(inner_s):
                        spin(work)
                except TimeoutExceeded as exc:
                    if exc.seconds != inner_s:
                        raise  # the outer's, passing through the inner block
                    fired["inner"] = exc.seconds
                spin(work)
        except TimeoutExceeded as exc:
            fired["outer"] = exc.seconds
        assert fired.get("outer", outer_s) == outer_s
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert timeout_module._sync_runs.get() == ()
        assert signal.getsignal(signal.SIGALRM) is foreign_handler.handler
    assert not foreign_handler.fired.is_set()


def test_alarm_during_bookkeeping_waits(monkeypatch):
    """An alarm firing inside Timeout's own enter/exit is retried moments later, not raised."""
    real = time.monotonic
    alarm = timeout_module._Alarm.open(timeout_module._Limit(1.0, None))
    assert alarm is not None
    monkeypatch.setattr(timeout_module, "_monotonic", lambda: real() + 10)
    frame = SimpleNamespace(f_code=Timeout.__exit__.__code__)
    with pytest.raises(TimeoutExceeded) as info:
        alarm._on_alarm(signal.SIGALRM, frame)  # waits: no exception here ...
        block()  # ... the retry fires here
    assert info.value.seconds == 1.0
    alarm.close(failed=True)  # already restored by the handler: nothing left to do


def test_alarm_firing_inside_its_own_deferral_waits(monkeypatch):
    """A deferred alarm that fires again inside its handler still defers, judged by the caller."""
    real = time.monotonic
    alarm = timeout_module._Alarm.open(timeout_module._Limit(1.0, None))
    assert alarm is not None
    monkeypatch.setattr(timeout_module, "_monotonic", lambda: real() + 10)
    teardown = SimpleNamespace(f_code=Timeout.__exit__.__code__, f_back=None)
    handler = SimpleNamespace(f_code=timeout_module._Alarm._on_alarm.__code__, f_back=teardown)
    alarm._on_alarm(signal.SIGALRM, handler)  # waits: the handler interrupted a teardown
    assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= timeout_module._SOON
    alarm.close(failed=False)


def test_alarm_after_close_is_ignored():
    """A SIGALRM handled after its timeout ended (it fired as the block exited) is ignored."""
    alarm = timeout_module._Alarm.open(timeout_module._Limit(5.0, None))
    assert alarm is not None
    handler = signal.getsignal(signal.SIGALRM)
    alarm.close(failed=False)
    handler(signal.SIGALRM, None)  # no exception
    alarm.close(failed=False)  # closing twice is harmless


def _spin_until(end):
    # A function of its own: Python 3.13 compiles no exception handler around the jump
    # back of a loop whose body is `pass`, so an exception a signal raises there would
    # escape the `try` blocks of the test around it.
    while time.perf_counter() < end:
        pass


def _nested_tiny_timeouts(rng, spin=_spin_until):
    """One round of the nested, sub-millisecond timeouts of the test above; a tiny spin."""
    outer_s, inner_s = rng.uniform(2e-4, 2e-3), rng.uniform(1e-4, 2e-3)
    end = time.perf_counter() + rng.uniform(0, 2e-3)
    try:
        with timeout(outer_s):
            try:
                with timeout(inner_s):
                    spin(end)
            except TimeoutExceeded as exc:
                if exc.seconds != inner_s:
                    raise
    except TimeoutExceeded:
        pass


def test_timers_firing_inside_a_trace_hook_leave_its_lock_alone():
    """A tracer that locks in Python (as coverage's does) never sees its lock leak.

    Python 3.10 runs signal handlers inside trace hooks: a timeout raised there, between
    the hook's acquire and release, would leave the lock held and deadlock the next call.
    """
    lock = threading.Lock()
    leaked = []

    def lock_data():
        if not lock.acquire(timeout=BLOCK_FOR):
            leaked.append(True)  # held by a hook that a timeout unwound
            sys.settrace(None)

    def unlock_data():
        lock.release()

    def tracer(frame, event, arg):
        if event == "call":
            lock_data()
            try:
                for _ in range(30):  # Python code while the lock is held: a window to hit
                    pass
            finally:
                unlock_data()

    rng = random.Random(4321)
    previous = sys.gettrace()  # coverage's, when the suite runs under it
    sys.settrace(tracer)
    try:
        for _ in range(500):
            _nested_tiny_timeouts(rng)
            assert timeout_module._sync_runs.get() == ()
    finally:
        sys.settrace(previous)
    assert not leaked
    assert not lock.locked()


def test_timers_firing_as_generators_resume():
    """Alarms landing as a generator of stalwart's resumes leave every run closed.

    Under coverage on Python 3.10, coverage's tracer takes its lock as a generator in a
    measured file resumes: a timeout raised there would leave the lock held.
    """
    backoff = stalwart.constant(0.0)

    def spin(end):
        delays = backoff.delays()  # a generator in stalwart's own code; a timeout ends it
        while time.perf_counter() < end:
            next(delays)

    rng = random.Random(2468)
    for _ in range(500):
        _nested_tiny_timeouts(rng, spin)
        assert timeout_module._sync_runs.get() == ()


class _Code:
    """A stand-in for a code object: its bytecode, hashable (by identity) as code is."""

    def __init__(self, co_code):
        self.co_code = co_code


def _frame(lasti, code=bytes(8), back=None):
    return SimpleNamespace(f_code=_Code(code), f_lasti=lasti, f_back=back, f_trace=None)


def test_python_310_opcodes_are_named_right():
    """The opcodes at which a frame can only be waiting on a hook are Python 3.10's."""
    import dis

    if sys.version_info[:2] != (3, 10):
        pytest.skip("the opcodes are read on Python 3.10 only")
    assert {dis.opmap["YIELD_VALUE"], dis.opmap["RETURN_VALUE"]} == timeout_module._HOOK_OPCODES


@pytest.mark.parametrize(
    ("caller", "inside"),
    [
        (_frame(-1), True),  # not started: a hook handles its call
        (_frame(0, bytes([86, 0])), True),  # at a yield: a hook handles its resumption
        (_frame(2, bytes([0, 0, 83, 0])), True),  # at a return: a hook handles it
        (_frame(0, bytes([131, 1])), False),  # at any other instruction: a plain call
    ],
)
def test_frames_waiting_on_a_c_hook_are_recognised(caller, inside):
    """On Python 3.10, a caller frame that cannot be running a call is waiting on a hook."""
    interrupted = _frame(-1, back=_frame(4, back=caller))  # a callee about to start is fine
    assert timeout_module._inside_hook(interrupted) is (inside and timeout_module._PY310)
    assert timeout_module._inside_hook(_frame(-1)) is False


def test_frames_running_a_python_hook_are_recognised():
    """Trace and profile functions, and code they call, are inside a hook; traced code is not."""
    seen = []

    def check(where):
        seen.append((where, timeout_module._inside_hook(sys._getframe())))

    def local_tracer(frame, event, arg):
        if event == "line":
            check("local trace function")
        return local_tracer

    def tracer(frame, event, arg):
        if frame.f_code is not traced.__code__:
            return None
        check("trace function")
        return local_tracer

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code is traced.__code__:
            check("profile function")

    def traced():
        check("traced code")

    previous = sys.gettrace(), sys.getprofile()
    sys.settrace(tracer)
    sys.setprofile(profiler)
    try:
        traced()
    finally:
        sys.setprofile(previous[1])
        sys.settrace(previous[0])
    assert sorted(set(seen)) == [
        ("local trace function", True),
        ("profile function", True),
        ("trace function", True),
        ("traced code", False),
    ]


def test_frame_entering_an_exception_handler_is_recognised(monkeypatch):
    """A frame whose exception in flight was last seen where it stands is entering a handler."""
    frame = _frame(12)
    with monkeypatch.context() as patch:
        patch.setattr(
            sys, "exc_info", lambda: (None, None, SimpleNamespace(tb_frame=frame, tb_lasti=12))
        )
        entering = timeout_module._entering_handler(frame)
        patch.setattr(
            sys, "exc_info", lambda: (None, None, SimpleNamespace(tb_frame=frame, tb_lasti=4))
        )
        running = timeout_module._entering_handler(frame)
    assert (entering, running) == (True, False)
    try:
        raise KeyError
    except KeyError:
        assert not timeout_module._entering_handler(sys._getframe())  # the handler runs
    assert not timeout_module._entering_handler(sys._getframe())  # nothing in flight


@pytest.mark.parametrize(
    "place",
    [
        "_inside_hook",
        pytest.param(
            "_entering_handler",
            marks=pytest.mark.skipif(sys.version_info >= (3, 11), reason="Python 3.10 only"),
        ),
    ],
)
def test_alarm_at_an_unsafe_place_waits(monkeypatch, place):
    """An alarm due inside a hook (or, on Python 3.10, at a handler's start) tries again soon."""
    real = time.monotonic
    alarm = timeout_module._Alarm.open(timeout_module._Limit(1.0, None))
    assert alarm is not None
    monkeypatch.setattr(timeout_module, "_monotonic", lambda: real() + 10)
    monkeypatch.setattr(timeout_module, place, lambda frame: True)
    alarm._on_alarm(signal.SIGALRM, sys._getframe())  # waits: no exception here
    assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= timeout_module._SOON
    monkeypatch.setattr(timeout_module, place, lambda frame: False)
    with pytest.raises(TimeoutExceeded):  # out of it: the alarm raises
        alarm._on_alarm(signal.SIGALRM, sys._getframe())
    alarm.close(failed=True)


def test_handler_installed_from_c_falls_back(monkeypatch, fake_time):
    """When the SIGALRM handler cannot be restored, the thread fallbacks are used instead."""
    with monkeypatch.context() as patch:  # undone before `_alarm_untouched` checks
        patch.setattr(signal, "getsignal", lambda signum: None)

        @timeout(5)
        def where():
            return threading.current_thread()

        assert where() is not threading.main_thread()
        with pytest.raises(TimeoutExceeded) as info, timeout(1):
            fake_time.advance(2)
        assert info.value.seconds == 1.0


# Off the main thread


def test_worker_decorator_returns_and_raises():
    """Off the main thread, the decorator runs the call in a worker and hands back its outcome."""
    caller = {}

    @timeout(5)
    def work(x, *, y):
        caller["thread"] = threading.current_thread()
        return x + y

    @timeout(5)
    def fails():
        raise KeyError("missing")

    assert run_in_thread(lambda: work(1, y=2)) == 3
    assert caller["thread"].name.startswith("stalwart-timeout:")
    assert caller["thread"].daemon
    with pytest.raises(KeyError, match="missing"):
        run_in_thread(fails)


def test_worker_decorator_times_out_and_worker_runs_on():
    """Off the main thread, a slow call raises TimeoutExceeded; its worker finishes later."""
    release, finished = threading.Event(), threading.Event()

    @timeout(0.05)
    def slow():
        release.wait(BLOCK_FOR)
        finished.set()

    start = time.monotonic()
    try:
        with pytest.raises(TimeoutExceeded) as info:
            run_in_thread(slow)
        assert time.monotonic() - start < BLOCK_FOR / 2
        assert info.value.seconds == 0.05
        assert not finished.is_set()
    finally:
        release.set()
    assert finished.wait(BLOCK_FOR)


def test_worker_sees_context_variables():
    """The worker runs in a copy of the caller's context: context variables are visible."""
    var: ContextVar[str] = ContextVar("var", default="unset")

    @timeout(5)
    def read():
        return var.get(), threading.current_thread().name

    def caller():
        var.set("from caller")
        return read()

    value, name = run_in_thread(caller)
    assert value == "from caller"
    assert name.startswith("stalwart-timeout:")


def test_with_off_main_thread_detects_overrun(fake_time):
    """Off the main thread, a block that ends after its limit raises TimeoutExceeded on exit."""

    def late():
        with timeout(1):
            fake_time.advance(2)
        return "not reached"

    def on_time():
        with timeout(1):
            fake_time.advance(0.5)
        return "ok"

    with pytest.raises(TimeoutExceeded) as info:
        run_in_thread(late)
    assert info.value.seconds == 1.0
    assert run_in_thread(on_time) == "ok"


def test_with_off_main_thread_own_error_wins(fake_time):
    """Off the main thread, a late block's own exception is not replaced by TimeoutExceeded."""

    def late_and_failing():
        with timeout(1):
            fake_time.advance(2)
            raise ValueError("own error")

    with pytest.raises(ValueError, match="own error"):
        run_in_thread(late_and_failing)


def test_shared_timeout_across_threads(fake_time):
    """One Timeout entered by several threads at once tracks each thread's block on its own."""
    limit = timeout(1)
    first_in, second_in = threading.Event(), threading.Event()

    def first():
        with limit:
            first_in.set()
            assert second_in.wait(BLOCK_FOR)
        return "first"

    def second():
        assert first_in.wait(BLOCK_FOR)
        with limit:
            second_in.set()
        return "second"

    results = []
    threads = [threading.Thread(target=lambda f=f: results.append(f())) for f in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BLOCK_FOR)
    assert sorted(results) == ["first", "second"]


# Async cancellation


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_outer_cancel_is_not_a_timeout(run):
    """Cancelling an enclosing scope propagates as cancellation, never as TimeoutExceeded."""

    async def cancel_then_wait():
        outer.cancel()
        await anyio.sleep(BLOCK_FOR)

    with anyio.CancelScope() as outer:
        await run(5, cancel_then_wait)
        pytest.fail("the cancellation did not propagate")
    assert outer.cancelled_caught


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_outer_deadline_is_not_a_timeout(run):
    """An enclosing anyio deadline that expires first is not turned into TimeoutExceeded."""
    with anyio.move_on_after(0.05) as outer:
        await run(5, async_slow)
    assert outer.cancelled_caught


@pytest.mark.anyio
async def test_task_group_cancel_is_not_a_timeout():
    """A task cancelled by its task group inside a timeout ends quietly."""
    started = anyio.Event()

    async def child():
        async with timeout(5):
            started.set()
            await anyio.sleep(BLOCK_FOR)

    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
        await started.wait()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_async_nested_timeouts():
    """Nested async timeouts: the first to expire fires, carrying its own seconds."""
    with pytest.raises(TimeoutExceeded) as info:
        async with timeout(5), timeout(0.05):
            await anyio.sleep(BLOCK_FOR)
    assert info.value.seconds == 0.05
    with pytest.raises(TimeoutExceeded) as info:
        async with timeout(0.05), timeout(5):
            await anyio.sleep(BLOCK_FOR)
    assert info.value.seconds == 0.05


@pytest.mark.anyio
async def test_shared_timeout_across_tasks():
    """One Timeout used by concurrent tasks limits each task's block on its own."""
    limit = timeout(0.2)
    first_in, second_in = anyio.Event(), anyio.Event()
    outcomes = {}

    async def first():
        async with limit:
            first_in.set()
            await second_in.wait()
        outcomes["first"] = "ok"

    async def second():
        await first_in.wait()
        try:
            async with limit:
                second_in.set()
                await anyio.sleep(BLOCK_FOR)
        except TimeoutExceeded as exc:
            outcomes["second"] = exc.seconds

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
    assert outcomes == {"first": "ok", "second": 0.2}


# Retries inside a timeout


def retried_blocker(calls):
    """A retried function whose first attempt blocks far past any limit; later ones return."""

    @stalwart.retry(attempts=4, backoff=stalwart.constant(0), log=False)
    def body():
        calls.append(1)
        if len(calls) == 1:
            block()
        return "finished"

    return body


def async_retried_blocker(calls):
    """`retried_blocker` for async code: the first attempt sleeps far past any limit."""

    @stalwart.retry(attempts=4, backoff=stalwart.constant(0), log=False)
    async def body():
        calls.append(1)
        if len(calls) == 1:
            await anyio.sleep(BLOCK_FOR)
        return "finished"

    return body


@pytest.mark.parametrize("run", SYNC_SHAPES)
def test_sync_outer_timeout_stops_retries(run):
    """A sync timeout around a retried call ends it at the limit: its expiry is not retried."""
    calls = []
    start = time.monotonic()
    with pytest.raises(TimeoutExceeded) as info:
        run(0.05, retried_blocker(calls))
    assert time.monotonic() - start < BLOCK_FOR / 2
    assert info.value.seconds == 0.05
    assert len(calls) == 1
    assert "(stopped by a timeout around the call)" in info.value.__notes__[-1]


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_async_outer_timeout_stops_retries(run):
    """An async timeout around a retried call ends it at the limit: cancellation is not retried."""
    calls = []
    start = time.monotonic()
    with pytest.raises(TimeoutExceeded) as info:
        await run(0.05, async_retried_blocker(calls))
    assert time.monotonic() - start < BLOCK_FOR / 2
    assert info.value.seconds == 0.05
    assert calls == [1]


@pytest.mark.parametrize("run", SYNC_SHAPES)
def test_inner_timeout_is_retried_inside_an_outer_one(run, instant_retries):
    """A per-attempt timeout inside the retry is retried, even within a timeout not yet expired."""
    calls = []

    @stalwart.retry(attempts=3, log=False)
    @timeout(0.05)
    def attempt():
        calls.append(1)
        if len(calls) < 3:
            block()
        return "third time"

    assert run(BLOCK_FOR, attempt) == "third time"
    assert len(calls) == 3


def test_abandoned_worker_stops_retrying():
    """Off the main thread, a retry in an abandoned worker ends after its current attempt."""
    release, gave_up = threading.Event(), threading.Event()
    calls = []

    class Listener:
        def on_give_up(self, details):
            gave_up.set()

    @timeout(0.05)
    @stalwart.retry(attempts=5, backoff=stalwart.constant(0), listeners=[Listener()], log=False)
    def flaky():
        calls.append(1)
        release.wait(BLOCK_FOR)
        raise ConnectionError

    try:
        with pytest.raises(TimeoutExceeded):
            run_in_thread(flaky)
    finally:
        release.set()
    assert gave_up.wait(BLOCK_FOR)
    assert calls == [1]


def test_with_off_main_thread_stops_retries(fake_time):
    """Off the main thread, a `with` block past its limit retries nothing more."""
    calls = []

    @stalwart.retry(attempts=5, backoff=stalwart.constant(0), log=False)
    def slow_failure():
        calls.append(1)
        fake_time.advance(2)
        raise ConnectionError

    def run():
        with timeout(1):
            slow_failure()

    with pytest.raises(ConnectionError) as info:
        run_in_thread(run)
    assert calls == [1]
    assert "(stopped by a timeout around the call)" in info.value.__notes__[-1]


@pytest.mark.anyio
async def test_async_callable_objects_and_partials_get_a_cancel_scope():
    """Objects with an async __call__, and partials of coroutine functions, are limited as async."""

    class Slow:
        async def __call__(self, seconds):
            await anyio.sleep(seconds)

    for fn in (Slow(), functools.partial(Slow())):
        wrapped = timeout(0.05)(fn)
        assert inspect.iscoroutinefunction(wrapped)
        with pytest.raises(TimeoutExceeded):
            await wrapped(BLOCK_FOR)


# Limits longer than any wait the platform can make


@pytest.mark.parametrize("seconds", [1e10, 1e300, timedelta(days=999_999_999)])
@pytest.mark.parametrize("run", SYNC_SHAPES)
@pytest.mark.parametrize("where", ["main", "thread"])
def test_sync_limit_past_max_wait_runs_the_body(seconds, run, where):
    """timeout(1e10) is accepted and never overflows: the body runs to its end, unlimited."""
    if where == "main":
        assert run(seconds, sync_fast) == 42
    else:
        assert run_in_thread(lambda: run(seconds, sync_fast)) == 42


@pytest.mark.parametrize("run", SYNC_SHAPES)
@pytest.mark.parametrize("where", ["main", "thread"])
def test_deadline_past_max_wait_runs_the_body(run, where):
    """Within deadline(1e10), a sync timeout(None) or a longer one arms nothing that overflows."""

    def body():
        with stalwart.deadline(1e10):
            return run(None, sync_fast), run(2e10, sync_fast)

    if where == "main":
        assert body() == (42, 42)
    else:
        assert run_in_thread(body) == (42, 42)


@pytest.mark.anyio
@pytest.mark.parametrize("run", ASYNC_SHAPES)
async def test_async_limit_past_max_wait_runs_the_body(run):
    """Async timeouts and deadlines past MAX_WAIT let the body run as well."""
    assert await run(1e300, async_fast) == 42
    async with stalwart.deadline(1e300):
        assert await run(None, async_fast) == 42


def test_limit_at_max_wait_is_still_armed():
    """A limit of exactly MAX_WAIT is a real limit: the timer is armed for it."""
    with timeout(MAX_WAIT):
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert delay > MAX_WAIT - 60


# A timeout that expires while a retry listener runs


class BlockingListener:
    """A retry listener whose on_retry blocks until the timeout around the call fires."""

    def __init__(self, swallow=False):
        self.swallow = swallow

    def on_retry(self, details):
        try:
            block()
        except TimeoutExceeded:
            if not self.swallow:
                raise


def retried_failure(calls, listener):
    """A retried function that fails at once, with `listener` told of each retry."""

    @stalwart.retry(attempts=3, backoff=stalwart.constant(0), listeners=[listener], log=False)
    def body():
        calls.append(1)
        if len(calls) > 1:
            block()  # a second attempt would run with no limit at all
        raise ConnectionError

    return body


@pytest.mark.parametrize("run", SYNC_SHAPES)
def test_timeout_firing_in_a_listener_ends_the_call(run):
    """A SIGALRM timeout that fires inside a retry listener is raised, not swallowed by the guard."""
    calls = []
    with pytest.raises(TimeoutExceeded) as info:
        run(0.05, retried_failure(calls, BlockingListener()))
    assert info.value.seconds == 0.05
    assert calls == [1]


@pytest.mark.parametrize("run", SYNC_SHAPES)
def test_no_attempt_starts_after_the_timeout_expired_in_a_listener(run):
    """A timeout swallowed by a listener still stops the retry: no attempt runs without limit."""
    calls = []
    with pytest.raises(ConnectionError) as info:
        run(0.05, retried_failure(calls, BlockingListener(swallow=True)))
    assert calls == [1]
    assert "(stopped by a timeout around the call)" in info.value.__notes__[-1]


def test_listener_own_timeout_is_still_the_listener_failure(caplog):
    """A listener whose own inner timeout expires is a failing listener: logged, the retry goes on."""
    calls = []

    class Slow:
        def on_retry(self, details):
            with timeout(0.01):
                block()

    @stalwart.retry(attempts=2, backoff=stalwart.constant(0), listeners=[Slow()], log=False)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError
        return "ok"

    with timeout(BLOCK_FOR):
        assert flaky() == "ok"
    assert any("listener" in r.getMessage() for r in caplog.records)


# Sync timeouts inside a running event loop


@pytest.mark.anyio
async def test_sync_with_inside_a_running_loop_is_refused():
    """`with stalwart.timeout()` in a thread running an event loop raises TypeError at once."""
    for seconds in (1, None):
        with pytest.raises(TypeError, match=r"async with stalwart\.timeout"):  # noqa: SIM117
            with timeout(seconds):
                pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.anyio
async def test_sync_decorated_call_inside_a_running_loop_is_refused():
    """A sync function decorated with timeout, called in the loop's thread, raises TypeError."""
    calls = []

    @timeout(1)
    def blocking():
        calls.append(1)

    with pytest.raises(TypeError, match=r"blocking: .* runs an event loop \(.*async def"):
        blocking()
    assert calls == []


@pytest.mark.anyio
async def test_sync_timeout_in_a_worker_thread_of_the_loop_works():
    """Off the loop's thread (anyio.to_thread), sync timeouts work as usual."""

    def work():
        with timeout(1):
            return timeout(1)(sync_fast)()

    assert await anyio.to_thread.run_sync(work) == 42


def test_loop_check_imports_no_async_framework():
    """Checking for a running loop imports neither asyncio nor trio."""
    src = Path(timeout_module.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "import sys, stalwart\n"
        "with stalwart.timeout(1):\n"
        "    pass\n"
        "assert stalwart.timeout(1)(lambda: 1)() == 1\n"
        "loaded = {'anyio', 'trio', 'asyncio'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# Generator functions


def numbers():
    yield 1


async def stream():
    yield 1


@pytest.mark.parametrize(
    ("decorator", "advice"),
    [
        (lambda: timeout(1), "with stalwart.timeout"),
        (lambda: stalwart.deadline(1), "with stalwart.deadline"),
    ],
    ids=["timeout", "deadline"],
)
@pytest.mark.parametrize(
    ("fn", "kind"), [(numbers, "a generator"), (stream, "an async generator")], ids=["gen", "agen"]
)
def test_generator_functions_are_refused_at_decoration(decorator, advice, fn, kind):
    """timeout and deadline refuse generator functions when decorating, naming them."""
    with pytest.raises(TypeError) as info:
        decorator()(fn)
    message = str(info.value)
    assert f"{fn.__qualname__} is {kind} function" in message
    assert advice in message
