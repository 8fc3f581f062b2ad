"""Task status views for the 202-Accepted pattern, over `stalwart.contrib.celery`.

- ``GET tasks/<id>/``: `stalwart.contrib.celery.task_status` (never error details),
  for ``TASK_STATUS_ACCESS`` (logged-in users by default);
- ``POST tasks/<id>/revoke/``: `stalwart.contrib.celery.revoke` (without terminating),
  for ``ADMIN_ACCESS`` (staff by default), logged like the operator actions;
- ``GET tasks/active/``: `stalwart.contrib.celery.active_tasks` (never arguments),
  for ``ADMIN_ACCESS``.

Any user allowed by ``TASK_STATUS_ACCESS`` may read the status of any task whose id
they know: the ids Celery makes are random UUIDs, handed to the caller who started
the task. The status never holds an exception's message, a traceback or the task's
arguments. Without Celery installed these views answer 501.

The Celery app is ``STALWART["CELERY_APP"]`` (a dotted path), or Celery's current app.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from .. import _admin
from ._response import to_response
from .conf import stalwart_settings
from .views import caller, not_allowed

if TYPE_CHECKING:
    from types import ModuleType

    from django.http import HttpRequest, HttpResponse

__all__ = ["MAX_TASK_ID_LENGTH", "active_tasks", "task_revoke", "task_status"]

logger = logging.getLogger("stalwart.admin")

MAX_TASK_ID_LENGTH = 255
"""A task id longer than this is refused (400) without asking the backend."""


def _celery() -> ModuleType | None:
    """`stalwart.contrib.celery`, or None when Celery is not installed."""
    try:
        return importlib.import_module("stalwart.contrib.celery")
    except ImportError:
        return None


def _app() -> Any:
    path = stalwart_settings()["CELERY_APP"]
    return None if path is None else import_string(path)


def _refused(request: HttpRequest, access_key: str) -> _admin.Reply | None:
    status = _admin.decide(stalwart_settings()[access_key], caller(request))
    return None if status == 200 else _admin.access_error(status)


def _unavailable() -> _admin.Reply:
    return _admin.problem(501, "Task status needs Celery: pip install 'stalwart[celery]'.")


def _bad_id(task_id: str) -> _admin.Reply | None:
    if len(task_id) > MAX_TASK_ID_LENGTH:
        return _admin.problem(400, f"A task id has at most {MAX_TASK_ID_LENGTH} characters.")
    return None


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError  # noqa: PLC0415 - with Celery only

    return (OperationalError, OSError)


def task_status(request: HttpRequest, task_id: str) -> HttpResponse:
    """``GET tasks/<id>/``: the task's status from the result backend.

    .. versionadded:: 0.1.0
    """
    if request.method not in ("GET", "HEAD"):
        return not_allowed("GET", "HEAD")
    refused = _refused(request, "TASK_STATUS_ACCESS") or _bad_id(task_id)
    if refused is not None:
        return to_response(refused)
    celery = _celery()
    if celery is None:
        return to_response(_unavailable())
    try:
        status = celery.task_status(task_id, app=_app())
    except _broker_errors():
        return to_response(_admin.problem(503, "The result backend is unavailable."))
    return to_response(_admin.reply(200, dict(status)))


def task_revoke(request: HttpRequest, task_id: str) -> HttpResponse:
    """``POST tasks/<id>/revoke/``: tell the workers not to run the task (logged).

    .. versionadded:: 0.1.0
    """
    if request.method != "POST":
        return not_allowed("POST")
    refused = _refused(request, "ADMIN_ACCESS") or _bad_id(task_id)
    if refused is not None:
        return to_response(refused)
    celery = _celery()
    if celery is None:
        return to_response(_unavailable())
    who = caller(request).name or "unknown"
    try:
        result = celery.revoke(task_id, app=_app())
    except _broker_errors():
        return to_response(_admin.problem(503, "The broker is unavailable."))
    logger.warning(
        "task %r: revoke by %s",
        task_id,
        who,
        extra={"task_id": task_id, "action": "revoke", "actor": who},
    )
    return to_response(_admin.reply(200, dict(result)))


def active_tasks(request: HttpRequest) -> HttpResponse:
    """``GET tasks/active/``: the tasks the workers run now.

    .. versionadded:: 0.1.0
    """
    if request.method not in ("GET", "HEAD"):
        return not_allowed("GET", "HEAD")
    refused = _refused(request, "ADMIN_ACCESS")
    if refused is not None:
        return to_response(refused)
    celery = _celery()
    if celery is None:
        return to_response(_unavailable())
    try:
        tasks = celery.active_tasks(app=_app())
    except _broker_errors():
        return to_response(_admin.problem(503, "The broker is unavailable."))
    return to_response(_admin.reply(200, {"timestamp": _admin.timestamp(), "tasks": tasks}))
