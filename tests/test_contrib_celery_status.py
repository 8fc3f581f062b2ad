"""Task status, revocation, active tasks, and stalwart exceptions through Celery results.

Real workers in this process on RabbitMQ and Redis; results in Redis either way.
Tasks that must be held while running use the threads pool, so that the worker still
answers control commands (revoke, inspect) meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from celery.signals import before_task_publish

import stalwart
import stalwart.errors
from celery_support import broker_params, close_app, make_app, running_worker, wait_for
from exception_catalogue import ATTRIBUTES, instances, stalwart_exceptions
from stalwart.contrib.celery import DeadLettered
from stalwart.contrib.celery._wire import CORRELATION_HEADER
from stalwart.contrib.celery.status import active_tasks, revoke, task_status, track_pending

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator

    from celery import Celery

pytestmark = pytest.mark.redis

WAIT = 15.0
"""Seconds any wait on a worker may take before the test fails."""


@pytest.fixture
def apps(celery_apps: Callable[..., Celery]) -> Callable[..., Celery]:
    """Apps closed after the test (see `celery_support.celery_apps`)."""
    return celery_apps


def _threads_worker(app: Celery) -> contextlib.AbstractContextManager[Any]:
    return running_worker(app, pool="threads", concurrency=1)


# -- task_status ------------------------------------------------------------------------


def test_unknown_id_is_pending_and_not_known(apps: Callable[..., Celery]) -> None:
    """An id the backend has no record of is PENDING, known False, every key present."""
    app = apps()
    status = task_status(str(uuid.uuid4()), app=app)
    assert status["status"] == "PENDING"
    assert status["known"] is False
    assert status["ready"] is False
    assert status["result"] is status["error"] is status["dead_lettered"] is None
    assert json.loads(json.dumps(status)) == status


@broker_params
def test_success_shape(apps: Callable[..., Celery], broker: str) -> None:
    """SUCCESS carries the result, the extended fields and the stamped correlation id."""
    app = apps(broker)

    @app.task(name=app.main + ".add")
    def add(a: int, b: int) -> dict[str, object]:
        return {"sum": a + b, "at": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)}

    with running_worker(app):
        result = add.apply_async(
            (2, 3), stamped_headers=[CORRELATION_HEADER], **{CORRELATION_HEADER: "req-42"}
        )
        result.get(timeout=WAIT)
    status = task_status(result.id, app=app)
    assert json.loads(json.dumps(status)) == status
    assert status["status"] == "SUCCESS"
    assert status["known"] is status["ready"] is True
    assert status["result"] == {"sum": 5, "at": "2024-01-02T00:00:00+00:00"}
    assert status["error"] is None
    assert status["correlation_id"] == "req-42"
    assert status["name"] == app.main + ".add"
    assert status["queue"] == app.main
    assert status["worker"]
    assert status["retries"] == 0
    assert status["date_done"] is not None
    assert dt.datetime.fromisoformat(status["date_done"])
    assert task_status(result.id, app=app, include_result=False)["result"] is None


@broker_params
def test_failure_shape_names_the_type_and_never_the_message(
    apps: Callable[..., Celery], broker: str
) -> None:
    """FAILURE gives the exception's type only; message and traceback need an opt-in."""
    app = apps(broker)

    @app.task(name=app.main + ".leak")
    def leak() -> None:
        raise stalwart.PermanentError("password=hunter2", status_code=403)

    with running_worker(app):
        result = leak.delay()
        result.get(timeout=WAIT, propagate=False)
    status = task_status(result.id, app=app)
    assert status["status"] == "FAILURE"
    assert status["ready"] is True
    assert status["error"] == "stalwart.PermanentError"
    assert status["error_message"] is status["traceback"] is None
    assert status["dead_lettered"] is None
    assert status["result"] is None
    assert "hunter2" not in json.dumps(status)

    detailed = task_status(result.id, app=app, include_error_details=True)
    assert detailed["error_message"] == "password=hunter2"
    assert detailed["traceback"] is not None
    assert "PermanentError" in detailed["traceback"]


@broker_params
def test_started_shape(apps: Callable[..., Celery], broker: str) -> None:
    """A running task is STARTED (with task_track_started), known, not ready."""
    app = apps(broker, task_track_started=True)
    release = threading.Event()

    @app.task(name=app.main + ".hold")
    def hold() -> str:
        release.wait(WAIT)
        return "done"

    with _threads_worker(app):
        try:
            result = hold.delay()
            status = wait_for(
                lambda: (s := task_status(result.id, app=app))["status"] == "STARTED" and s,
                "STARTED",
            )
        finally:
            release.set()
        assert result.get(timeout=WAIT) == "done"
    assert status["known"] is True
    assert status["ready"] is False
    assert status["result"] is status["error"] is None
    assert status["name"] == app.main + ".hold"
    assert status["worker"]
    assert json.loads(json.dumps(status)) == status


@broker_params
def test_retry_shape(apps: Callable[..., Celery], broker: str) -> None:
    """RETRY names the error behind the retry and counts the retry it scheduled."""
    app = apps(broker)
    release = threading.Event()

    @app.task(name=app.main + ".flaky", bind=True, max_retries=3)
    def flaky(self: Any) -> int:
        if self.request.retries == 0:
            raise self.retry(countdown=0.1, exc=stalwart.TransientError("busy: token=abc", 503))
        release.wait(WAIT)  # the retry runs; without task_track_started it stays RETRY
        return self.request.retries

    with running_worker(app):
        try:
            result = flaky.delay()
            status = wait_for(
                lambda: (s := task_status(result.id, app=app))["status"] == "RETRY" and s,
                "RETRY",
            )
        finally:
            release.set()
        assert result.get(timeout=WAIT) == 1
    assert status["known"] is True
    assert status["ready"] is False
    assert status["error"] == "stalwart.TransientError"
    assert status["retries"] == 1
    assert "token=abc" not in json.dumps(status)
    assert task_status(result.id, app=app)["retries"] == 1


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_dead_lettered_shape(apps: Callable[..., Celery], serializer: str) -> None:
    """A DeadLettered failure gives its reason and correlation id, not its message."""
    app = apps(result_serializer=serializer, result_accept_content=["json", "pickle"])
    task_id = str(uuid.uuid4())
    app.backend.mark_as_failure(
        task_id,
        DeadLettered("poison_pill", "billing.charge", "builtins.KeyError", "req-7"),
    )
    status = task_status(task_id, app=app)
    assert json.loads(json.dumps(status)) == status
    assert status["status"] == "FAILURE"
    assert status["error"] == "stalwart.contrib.celery.DeadLettered"
    assert status["dead_lettered"] == {"reason": "poison_pill"}
    assert status["correlation_id"] == "req-7"
    assert "billing.charge" not in json.dumps(status)


def test_correlation_id_from_progress_meta(apps: Callable[..., Celery]) -> None:
    """A record stored by update_state with the correlation id in its meta shows it."""
    app = apps()
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {CORRELATION_HEADER: "req-9", "done": 3}, "PROGRESS")
    status = task_status(task_id, app=app)
    assert (status["status"], status["correlation_id"], status["result"]) == (
        "PROGRESS",
        "req-9",
        None,
    )


class _Opaque:
    """A return value with no JSON form."""


def test_result_that_is_not_json_ready_is_named_not_returned(
    apps: Callable[..., Celery],
) -> None:
    """A result JSON cannot carry is left out and its type named; dumps still works."""
    app = apps(result_serializer="pickle", result_accept_content=["json", "pickle"])
    task_id = str(uuid.uuid4())
    app.backend.mark_as_done(task_id, {"rows": (1, 2), "obj": _Opaque()})
    status = task_status(task_id, app=app)
    assert status["result"] is None
    assert status["result_type"] == f"{__name__}._Opaque"
    json.dumps(status)
    converted = str(uuid.uuid4())
    app.backend.mark_as_done(converted, {"rows": (1, 2), "ids": {uuid.UUID(int=1)}})
    assert task_status(converted, app=app)["result"] == {
        "rows": [1, 2],
        "ids": ["00000000-0000-0000-0000-000000000001"],
    }


@broker_params
def test_track_pending_tells_queued_from_unknown(apps: Callable[..., Celery], broker: str) -> None:
    """With track_pending, a queued task is known PENDING (with its correlation id)."""
    app = apps(broker)

    @app.task(name=app.main + ".later")
    def later() -> int:
        return 7

    track_pending(app)
    track_pending(app)  # once is enough; again does nothing
    queued = later.apply_async(stamped_headers=[CORRELATION_HEADER], **{CORRELATION_HEADER: "c1"})
    status = task_status(queued.id, app=app)
    assert (status["status"], status["known"]) == ("PENDING", True)
    assert status["name"] == app.main + ".later"
    assert status["correlation_id"] == "c1"
    assert task_status(str(uuid.uuid4()), app=app)["known"] is False
    with running_worker(app):
        assert queued.get(timeout=WAIT) == 7
    assert task_status(queued.id, app=app)["result"] == 7


def test_track_pending_never_breaks_publishing(
    apps: Callable[..., Celery], caplog: pytest.LogCaptureFixture
) -> None:
    """A result backend that is down costs the publisher a warning, never an error."""
    app = apps(result_backend="redis://127.0.0.1:1/0", redis_socket_connect_timeout=1)
    app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 0}}

    @app.task(name=app.main + ".sent")
    def sent() -> None: ...

    track_pending(app)
    task_id = str(uuid.uuid4())
    # What Celery sends just before it publishes (its own apply_async would fail on
    # this backend anyway, subscribing for the result).
    with caplog.at_level("WARNING", logger="stalwart.contrib.celery"):
        replies = before_task_publish.send(
            sender=sent.name, headers={"id": task_id, "task": sent.name, "retries": 0}
        )
    assert all(reply is None for _, reply in replies)
    assert f"could not record task {task_id} as pending: ConnectionError" in caplog.text


# -- revoke and active_tasks ------------------------------------------------------------


@broker_params
def test_revoke_a_queued_task(apps: Callable[..., Celery], broker: str) -> None:
    """A revoked task still in the queue is never run and ends REVOKED."""
    app = apps(broker)
    release, started = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.task(name=app.main + ".busy", acks_late=True)
    def busy() -> None:
        started.set()
        release.wait(WAIT)

    @app.task(name=app.main + ".victim")
    def victim() -> None:
        ran.append("victim")

    with _threads_worker(app) as worker:
        try:
            busy.delay()
            assert started.wait(WAIT)
            queued = victim.delay()  # the worker is full (prefetch 1, busy unacked)
            answer = revoke(queued.id, app=app)
        finally:
            release.set()
        assert answer == {"task_id": queued.id, "terminate": False, "workers": [worker.hostname]}
        json.dumps(answer)
        status = wait_for(
            lambda: (s := task_status(queued.id, app=app))["status"] == "REVOKED" and s,
            "REVOKED",
        )
    assert ran == []
    assert status["ready"] is True
    assert status["error"] == "celery.exceptions.TaskRevokedError"


def test_revoke_without_workers_says_nobody_heard(apps: Callable[..., Celery]) -> None:
    """With no worker running, revoke returns an empty list of workers."""
    app = apps()
    assert revoke(str(uuid.uuid4()), app=app, timeout=0.2)["workers"] == []


@broker_params
def test_active_tasks_while_a_task_runs(apps: Callable[..., Celery], broker: str) -> None:
    """A running task is listed with id, name, worker and start time, args hidden."""
    app = apps(broker)
    release, started = threading.Event(), threading.Event()

    @app.task(name=app.main + ".hold")
    def hold(secret: str) -> None:
        started.set()
        release.wait(WAIT)

    with _threads_worker(app) as worker:
        try:
            before = dt.datetime.now(dt.timezone.utc)
            result = hold.delay("s3cr3t")
            assert started.wait(WAIT)
            listed = wait_for(lambda: active_tasks(app=app, timeout=0.5), "the active task")
            shown = wait_for(
                lambda: active_tasks(app=app, timeout=0.5, include_args=True), "the args"
            )
        finally:
            release.set()
        result.get(timeout=WAIT)
        assert active_tasks(app=app, timeout=0.5) == []
    assert len(listed) == 1
    task = listed[0]
    assert task["task_id"] == result.id
    assert task["name"] == app.main + ".hold"
    assert task["worker"] == worker.hostname
    assert task["queue"] == app.main
    assert task["started_at"] is not None
    started_at = dt.datetime.fromisoformat(task["started_at"])
    assert before - dt.timedelta(seconds=1) <= started_at <= dt.datetime.now(dt.timezone.utc)
    assert task["args"] is task["kwargs"] is None
    assert "s3cr3t" not in json.dumps(listed)
    assert "s3cr3t" in str(shown[0]["args"])


# -- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda app: task_status(5, app=app), TypeError, "task_id must be a string, got 5"),
        (lambda app: task_status("", app=app), ValueError, "task_id must be a non-empty"),
        (
            lambda app: task_status("x", app=app, include_result="no"),
            TypeError,
            "include_result must be True or False, got 'no'",
        ),
        (lambda app: revoke("x", app=app, terminate=1), TypeError, "terminate must be True"),
        (lambda app: revoke("x", app=app, timeout=0), ValueError, "timeout must be .* got 0"),
        (lambda app: active_tasks(app=app, timeout=-1), ValueError, "timeout must be .* got -1"),
        (lambda app: active_tasks(app=app, timeout="1"), TypeError, "timeout must be .* got '1'"),
    ],
)
def test_bad_arguments_fail_naming_them(
    apps: Callable[..., Celery],
    call: Callable[[Celery], object],
    error: type[Exception],
    message: str,
) -> None:
    """A wrong type is a TypeError, a wrong value a ValueError; both name the option."""
    with pytest.raises(error, match=message):
        call(apps())


# -- every stalwart exception through the result backend -------------------------------

_TABLE = instances()


def _described(exc: BaseException) -> dict[str, object]:
    return {
        "type": type(exc),
        "str": str(exc),
        "args": exc.args,
        **{name: getattr(exc, name) for name in ATTRIBUTES if hasattr(exc, name)},
    }


def test_round_trip_table_covers_every_exception() -> None:
    """The table holds every exception in errors.__all__, DeadLettered, and subclasses."""
    covered = {type(exc) for exc in _TABLE}
    assert covered == set(stalwart_exceptions())
    assert {getattr(stalwart.errors, n) for n in stalwart.errors.__all__} | {
        DeadLettered
    } <= covered


@pytest.fixture(scope="module", params=["json", "pickle"])
def raising_app(request: pytest.FixtureRequest) -> Iterator[tuple[Celery, Any]]:
    """An app whose worker raises `_TABLE[index]`, with results in `request.param`."""
    serializer = request.param
    app = make_app("redis", result_serializer=serializer, result_accept_content=["json", "pickle"])

    @app.task(name=app.main + ".raise_it")
    def raise_it(index: int) -> None:
        raise _TABLE[index]

    with running_worker(app):
        yield app, raise_it
    close_app(app)


@pytest.mark.parametrize("index", range(len(_TABLE)), ids=[repr(e) for e in _TABLE])
def test_exception_round_trips_through_results(
    raising_app: tuple[Celery, Any], index: int
) -> None:
    """A stalwart exception raised in a task comes back with its type and attributes."""
    app, raise_it = raising_app
    exc = _TABLE[index]
    result = raise_it.delay(index)
    back = result.get(timeout=WAIT, propagate=False)
    assert _described(back) == _described(exc)
    status = task_status(result.id, app=app)
    assert status["error"] == f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, DeadLettered):
        assert status["dead_lettered"] == {"reason": exc.reason}
        assert status["correlation_id"] == exc.correlation_id
    else:
        assert status["dead_lettered"] is None
