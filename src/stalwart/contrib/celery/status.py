"""Task status for the 202-Accepted pattern: what a web endpoint tells its caller.

`task_status` reads a task's record in the result backend and returns a JSON-ready
dict; `revoke` and `active_tasks` ask the workers. None of them returns an exception's
message, a traceback or a task's arguments unless the caller asks: they may hold
secrets.

Where each field comes from:

============================  ===============================================================
field                         source
============================  ===============================================================
``status``                    Celery's state: PENDING, STARTED (with
                              ``task_track_started``), RETRY, SUCCESS, FAILURE, REVOKED
``known``                     whether the backend holds a record for the id at all
``result``                    the return value of a task in SUCCESS
``error``                     the qualified type name of the exception (FAILURE, RETRY,
                              REVOKED)
``dead_lettered``             ``{"reason": ...}`` when the failure is a `DeadLettered`
``correlation_id``            the dead letter's, else the record's
                              ``stalwart_correlation_id`` stamp (needs ``result_extended``)
``name``, ``worker``,         the record's extended fields: they need
``queue``, ``retries``        ``result_extended = True``
``date_done``                 when the task finished (ISO 8601)
============================  ===============================================================

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import uuid
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, TypedDict

from celery import current_app, states
from celery.backends.base import BaseKeyValueStoreBackend
from celery.signals import before_task_publish
from celery.utils.serialization import UnpickleableExceptionWrapper

from ... import _validate
from ._wire import CORRELATION_HEADER, DeadLettered

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "ActiveTask",
    "DeadLetterInfo",
    "RevokeResult",
    "TaskStatus",
    "active_tasks",
    "revoke",
    "task_status",
    "track_pending",
]

logger = logging.getLogger("stalwart.contrib.celery")

_DEAD_LETTERED_MODULE: Final = DeadLettered.__module__
_DEAD_LETTERED_TYPE: Final = DeadLettered.__qualname__
_ERROR_STATES: Final = frozenset({states.FAILURE, states.RETRY, states.REVOKED})


class DeadLetterInfo(TypedDict):
    """Why a task's message went to the dead-letter queue.

    .. versionadded:: 0.1.0
    """

    reason: str
    """``"poison_pill"``, ``"max_retries_exceeded"`` or ``"max_redeliveries"``."""


class TaskStatus(TypedDict):
    """What `task_status` returns: a JSON-ready dict, every key always present.

    .. versionadded:: 0.1.0
    """

    task_id: str
    known: bool
    """Whether the result backend holds a record for the id. Celery stores nothing
    for a task until a worker starts it (``task_track_started``) or finishes it, so
    without `track_pending` a queued task is ``False`` too."""
    status: str
    ready: bool
    """Whether the task is over (SUCCESS, FAILURE or REVOKED)."""
    result: Any
    """The return value in SUCCESS (JSON-ready), else ``None``."""
    result_type: str | None
    """The qualified type name of a return value that is not JSON-ready (then
    `result` is ``None``), else ``None``."""
    error: str | None
    """The qualified type name of the exception, never its message."""
    error_message: str | None
    """The exception's message, only with ``include_error_details=True``."""
    traceback: str | None
    """The worker's traceback, only with ``include_error_details=True``."""
    dead_lettered: DeadLetterInfo | None
    correlation_id: str | None
    retries: int | None
    """How many retries were made (a RETRY record counts the one it scheduled);
    needs ``result_extended``."""
    name: str | None
    worker: str | None
    queue: str | None
    date_done: str | None


class RevokeResult(TypedDict):
    """What `revoke` returns.

    .. versionadded:: 0.1.0
    """

    task_id: str
    terminate: bool
    workers: list[str]
    """The workers that acknowledged the revocation within the timeout, sorted. Empty
    when none is running: a worker started later does not know of it."""


class ActiveTask(TypedDict):
    """One task a worker is running, as `active_tasks` returns it.

    .. versionadded:: 0.1.0
    """

    task_id: str
    name: str | None
    worker: str
    started_at: str | None
    """When the worker started it (ISO 8601, UTC)."""
    queue: str | None
    acknowledged: bool
    worker_pid: int | None
    args: Any
    """The arguments as the worker shows them, only with ``include_args=True``."""
    kwargs: Any


def _app(app: Celery | None) -> Celery:
    if app is None:
        return current_app  # a proxy to the default app, resolved at each use
    return app


def _task_id(task_id: object) -> str:
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a string, got {task_id!r}")
    if not task_id:
        raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
    return task_id


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _NotJSONError(Exception):
    """A value that has no JSON form; carries its type name."""


def _json_ready(value: object) -> Any:
    """Return `value` in JSON types only, or raise `_NotJSONError` naming what is not.

    Dates become ISO 8601, UUIDs and decimals strings, tuples and sets lists.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJSONError(_type_name(type(value)))
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJSONError(_type_name(type(key)))
            out[key] = _json_ready(item)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    raise _NotJSONError(_type_name(type(value)))


def _stored_meta(app: Celery, task_id: str) -> tuple[bool, dict[str, Any]]:
    """Return whether a record exists, and the record with its result left as stored.

    On a key-value backend (Redis, ...) the record is read and decoded, but its
    exception is not rebuilt: naming its type needs no class to be importable here,
    and nothing is instantiated. Other backends give their usual meta.
    """
    backend = app.backend
    if isinstance(backend, BaseKeyValueStoreBackend):
        payload = backend.get(backend.get_key_for_task(task_id))
        if not payload:
            return False, {"status": states.PENDING, "result": None}
        return True, dict(backend.decode(payload))
    meta = dict(backend.get_task_meta(task_id, cache=False))
    return meta.get("status", states.PENDING) != states.PENDING, meta


def _error_type(stored: object) -> str | None:
    """The qualified type name of a stored exception, JSON (a dict) or pickled."""
    if isinstance(stored, UnpickleableExceptionWrapper):
        return f"{stored.exc_module}.{stored.exc_cls_name}"
    if isinstance(stored, BaseException):
        return _type_name(type(stored))
    if isinstance(stored, Mapping) and isinstance(stored.get("exc_type"), str):
        module = stored.get("exc_module")
        return f"{module}.{stored['exc_type']}" if module else str(stored["exc_type"])
    return None


def _dead_letter(stored: object) -> DeadLettered | None:
    """The `DeadLettered` a failure holds, rebuilt from its args if stored as JSON."""
    if isinstance(stored, DeadLettered):
        return stored
    if (
        isinstance(stored, Mapping)
        and stored.get("exc_module") == _DEAD_LETTERED_MODULE
        and stored.get("exc_type") == _DEAD_LETTERED_TYPE
    ):
        args = stored.get("exc_message")
        if isinstance(args, (list, tuple)) and 2 <= len(args) <= 4:  # DeadLettered's arity
            return DeadLettered(*(None if arg is None else str(arg) for arg in args))  # type: ignore[arg-type]
    return None


def _error_message(app: Celery, stored: object) -> str | None:
    """The message of a stored exception, rebuilt as Celery does; ``None`` if it cannot be."""
    if stored is None:
        return None
    try:
        return str(app.backend.exception_to_python(stored))
    except Exception:  # a record we cannot rebuild has no message
        return None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _date(value: object) -> str | None:
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return _optional_str(value)


def task_status(
    task_id: str,
    *,
    app: Celery | None = None,
    include_result: bool = True,
    include_error_details: bool = False,
) -> TaskStatus:
    """Return a task's status as a JSON-ready dict, for a ``202 Accepted`` endpoint.

    .. code-block:: python

        status = task_status(task_id, app=app)
        if not status["known"]:
            return 404                         # with track_pending(app) on the publisher
        return json.dumps(status)

    Every key of `TaskStatus` is always there. An id the backend has no record of is
    ``PENDING`` in Celery, as a queued task is: ``known`` tells them apart when the
    publisher calls `track_pending`; without it ``known`` is ``False`` for both.

    ``error`` is the exception's qualified type name (``"stalwart.TimeoutExceeded"``)
    and never its message; ``dead_lettered`` is ``{"reason": ...}`` when the failure is
    a `DeadLettered`. ``correlation_id`` comes from the dead letter, or from the
    record's ``stalwart_correlation_id`` stamp (`ResilientTask` stamps its messages
    with it; Celery stores stamps with ``result_extended = True``). ``name``,
    ``worker``, ``queue`` and ``retries`` need ``result_extended = True`` (else
    ``None``). A return value that is not JSON-ready after converting dates (ISO
    8601), UUIDs and decimals (strings), tuples and sets (lists) is left out:
    ``result`` is ``None`` and ``result_type`` names its type.

    Args:
        task_id: The task's id.
        app: The Celery app; ``None`` for the current one.
        include_result: Whether to return the value of a task in SUCCESS.
        include_error_details: Whether to return the exception's message and the
            traceback too (``error_message``, ``traceback``). They may hold secrets:
            only for trusted callers.

    Returns:
        The status, a dict ``json.dumps`` takes as it is.

    Raises:
        TypeError: `task_id` is not a string, or a flag is not a bool.
        ValueError: `task_id` is empty.

    .. versionadded:: 0.1.0
    """
    task_id = _task_id(task_id)
    include_result = _flag("include_result", include_result)
    include_error_details = _flag("include_error_details", include_error_details)
    celery_app = _app(app)
    known, meta = _stored_meta(celery_app, task_id)
    status = str(meta.get("status") or states.PENDING)
    stored = meta.get("result")

    result: Any = None
    result_type: str | None = None
    if status == states.SUCCESS and include_result:
        try:
            result = _json_ready(stored)
        except _NotJSONError as exc:
            result_type = str(exc)

    error = error_message = traceback = None
    dead: DeadLettered | None = None
    if status in _ERROR_STATES:
        error = _error_type(stored)
        dead = _dead_letter(stored)
        if include_error_details:
            traceback = _optional_str(meta.get("traceback"))
            error_message = _error_message(celery_app, stored)

    correlation = _optional_str(meta.get(CORRELATION_HEADER))
    if dead is not None and dead.correlation_id:
        correlation = dead.correlation_id
    elif correlation is None and isinstance(stored, Mapping) and status not in _ERROR_STATES:
        correlation = _optional_str(stored.get(CORRELATION_HEADER))  # an update_state meta

    retries = meta.get("retries")
    if not isinstance(retries, int) or isinstance(retries, bool):
        retries = None
    elif status == states.RETRY:
        retries += 1  # the record is the failed attempt's; it scheduled one more

    return {
        "task_id": task_id,
        "known": known,
        "status": status,
        "ready": status in states.READY_STATES,
        "result": result,
        "result_type": result_type,
        "error": error,
        "error_message": error_message,
        "traceback": traceback,
        "dead_lettered": None if dead is None else {"reason": dead.reason},
        "correlation_id": correlation,
        "retries": retries,
        "name": _optional_str(meta.get("name")),
        "worker": _optional_str(meta.get("worker")),
        "queue": _optional_str(meta.get("queue")),
        "date_done": _date(meta.get("date_done")),
    }


def revoke(
    task_id: str,
    *,
    app: Celery | None = None,
    terminate: bool = False,
    timeout: float = 1.0,
) -> RevokeResult:
    """Tell the workers not to run a task (and to stop it, with `terminate`).

    Celery broadcasts the revocation to the running workers, which keep it in memory:
    a queued message is dropped when it reaches one of them, and its status becomes
    ``REVOKED``. A worker started later does not know of it (unless it keeps its
    state with ``--statedb``), so ``workers`` says who acknowledged it.

    Args:
        task_id: The task's id.
        app: The Celery app; ``None`` for the current one.
        terminate: Whether to also kill the process running the task now (with
            SIGTERM; the prefork pool only). Its work may be left half done.
        timeout: Seconds to wait for the workers' acknowledgements.

    Returns:
        The id, `terminate`, and the workers that acknowledged, JSON-ready.

    Raises:
        TypeError: `task_id` is not a string, `terminate` not a bool, `timeout` not
            a number.
        ValueError: `task_id` is empty, or `timeout` is not > 0.

    .. versionadded:: 0.1.0
    """
    task_id = _task_id(task_id)
    terminate = _flag("terminate", terminate)
    wait = _validate.seconds("timeout", timeout, positive=True)
    replies = _app(app).control.revoke(task_id, terminate=terminate, reply=True, timeout=wait)
    workers = sorted({name for reply in replies or () for name in reply})
    return {"task_id": task_id, "terminate": terminate, "workers": workers}


def _started_at(value: object) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).isoformat()
    return None


def active_tasks(
    *,
    app: Celery | None = None,
    timeout: float = 1.0,
    include_args: bool = False,
) -> list[ActiveTask]:
    """Return the tasks the workers are running now, JSON-ready, oldest first.

    Args:
        app: The Celery app; ``None`` for the current one.
        timeout: Seconds to wait for the workers' replies (the call takes that long).
        include_args: Whether to return the arguments too (as the workers' reprs).
            They may hold secrets: only for trusted callers.

    Returns:
        One entry per running task: id, name, worker, start time (ISO 8601, UTC),
        queue, whether its message is acknowledged, the pool process id; ``args``
        and ``kwargs`` are ``None`` unless asked for.

    Raises:
        TypeError: `timeout` is not a number, or `include_args` not a bool.
        ValueError: `timeout` is not > 0.

    .. versionadded:: 0.1.0
    """
    wait = _validate.seconds("timeout", timeout, positive=True)
    include_args = _flag("include_args", include_args)
    # safe=True: the workers send reprs of the arguments, never objects to decode.
    replies = _app(app).control.inspect(timeout=wait).active(safe=True) or {}
    found: list[ActiveTask] = []
    for worker, requests in sorted(replies.items()):
        for info in requests:
            request: Mapping[str, Any] = info
            delivery = request.get("delivery_info")
            queue = delivery.get("routing_key") if isinstance(delivery, Mapping) else None
            pid = request.get("worker_pid")
            found.append(
                {
                    "task_id": str(request.get("id")),
                    "name": _optional_str(request.get("name")),
                    "worker": str(request.get("hostname") or worker),
                    "started_at": _started_at(request.get("time_start")),
                    "queue": _optional_str(queue),
                    "acknowledged": bool(request.get("acknowledged")),
                    "worker_pid": pid if isinstance(pid, int) else None,
                    "args": _optional_str(request.get("args")) if include_args else None,
                    "kwargs": _optional_str(request.get("kwargs")) if include_args else None,
                }
            )
    found.sort(key=lambda task: task["started_at"] or "")
    return found


def track_pending(app: Celery) -> None:
    """Store a ``PENDING`` record for every task `app` publishes, before it is sent.

    Celery stores nothing for a queued task, so an unknown id and a queued task both
    read ``PENDING``. With this called once on the publishing side, `task_status`
    says ``known: True`` for a queued task, and ``False`` only for an id nobody
    published (a ``404``). It costs one write to the result backend per message;
    the record is written before the message leaves, so it never overwrites a
    worker's. Tasks with ``ignore_result`` are skipped. If the backend fails, the
    message is still sent and a warning is logged. Calling it again does nothing.

    Args:
        app: The Celery app whose tasks to track.

    .. versionadded:: 0.1.0
    """

    def store_pending(
        sender: object = None, headers: Mapping[str, Any] | None = None, **_: object
    ) -> None:
        if not headers or headers.get("ignore_result") or sender not in app.tasks:
            return
        task_id = headers.get("id")
        if not isinstance(task_id, str):
            return
        # What Celery records of a request (extended results): the name, the retry
        # count and the stamps (the correlation id); not the arguments.
        request = SimpleNamespace(
            task=sender,
            retries=headers.get("retries"),
            stamped_headers=headers.get("stamped_headers"),
            stamps=headers.get("stamps"),
            children=[],
        )
        try:
            app.backend.store_result(task_id, None, states.PENDING, request=request)
        except Exception as exc:  # publishing must not fail for this
            logger.warning(
                "could not record task %s as pending: %s",
                task_id,
                type(exc).__name__,
                extra={"task_id": task_id},
            )

    before_task_publish.connect(
        store_pending, weak=False, dispatch_uid=f"stalwart.track_pending:{id(app)}"
    )
