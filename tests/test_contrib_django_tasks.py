"""The task status views: Celery's task status, revoke and active tasks over HTTP."""

from __future__ import annotations

import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client

from celery_support import running_worker, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from celery import Celery
    from pytest_django.fixtures import SettingsWrapper

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.redis]

CSRF = "b" * 32
APP: Any = None
"""The Celery app the views use (``CELERY_APP`` names it), set by the `app` fixture."""


@pytest.fixture
def app(
    celery_apps: Callable[..., Celery], settings: SettingsWrapper, monkeypatch: pytest.MonkeyPatch
) -> Celery:
    """A Celery app on Redis (its own queue and keys), named by CELERY_APP."""
    celery_app = celery_apps("redis")
    monkeypatch.setattr(sys.modules[__name__], "APP", celery_app)
    settings.STALWART = {"CELERY_APP": f"{__name__}.APP"}
    return celery_app


def _client(django_user_model: Any, who: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = CSRF
    if who != "anonymous":
        user = django_user_model.objects.create_user(who, is_staff=who == "staff")
        client.force_login(user)
    return client


@pytest.mark.parametrize("who", ["anonymous", "user", "staff"])
def test_task_status_for_users(app: Celery, django_user_model: Any, who: str) -> None:
    """GET tasks/<id>/: the status from the backend for logged-in users; anonymous 401."""
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {"n": 1}, "SUCCESS")
    response = _client(django_user_model, who).get(f"/resilience/tasks/{task_id}/")
    if who == "anonymous":
        assert response.status_code == 401
        return
    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == task_id
    assert body["status"] == "SUCCESS"
    assert body["result"] == {"n": 1}
    assert body["error_message"] is None
    assert body["traceback"] is None


def test_failed_task_status_shows_the_type_not_the_message(
    app: Celery, django_user_model: Any
) -> None:
    """A failure shows the exception's type name, never its message."""
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, ValueError("password=hunter2"), "FAILURE")
    response = _client(django_user_model, "user").get(f"/resilience/tasks/{task_id}/")
    assert response.json()["error"] == "builtins.ValueError"
    assert b"hunter2" not in response.content


@pytest.mark.parametrize(("who", "code"), [("anonymous", 401), ("user", 403), ("staff", 200)])
def test_revoke_and_active_for_staff(
    app: Celery, django_user_model: Any, who: str, code: int
) -> None:
    """POST tasks/<id>/revoke/ and GET tasks/active/: staff only; wrong methods 405."""
    client = _client(django_user_model, who)
    revoked = client.post("/resilience/tasks/abc/revoke/", headers={"X-CSRFToken": CSRF})
    assert revoked.status_code == code
    active = client.get("/resilience/tasks/active/")
    assert active.status_code == code
    if code == 200:
        assert revoked.json() == {"task_id": "abc", "terminate": False, "workers": []}
        assert active.json()["tasks"] == []
    assert client.get("/resilience/tasks/abc/revoke/").status_code == 405
    assert client.post("/resilience/tasks/abc/", headers={"X-CSRFToken": CSRF}).status_code == 405


def test_revoke_needs_the_csrf_token(app: Celery, django_user_model: Any) -> None:
    """A staff revoke without the CSRF token is refused (403)."""
    client = _client(django_user_model, "staff")
    assert client.post("/resilience/tasks/abc/revoke/").status_code == 403


def test_over_long_task_id_is_refused(app: Celery, django_user_model: Any) -> None:
    """A task id over the bound is 400, without asking the backend."""
    response = _client(django_user_model, "user").get(f"/resilience/tasks/{'x' * 300}/")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "A task id has at most 255 characters.",
    }


def test_without_celery_the_views_answer_501(
    django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the Celery integration cannot be imported, every task view answers 501."""
    monkeypatch.setitem(sys.modules, "stalwart.contrib.celery", None)  # import fails
    client = _client(django_user_model, "staff")
    for response in (
        client.get("/resilience/tasks/abc/"),
        client.get("/resilience/tasks/active/"),
        client.post("/resilience/tasks/abc/revoke/", headers={"X-CSRFToken": CSRF}),
    ):
        assert response.status_code == 501
        assert response["Content-Type"] == "application/problem+json"
        assert response.json() == {
            "type": "about:blank",
            "title": "Not Implemented",
            "status": 501,
            "detail": "Task status needs Celery: pip install 'stalwart[celery]'.",
        }


@pytest.mark.django_db(transaction=True)
def test_with_a_real_worker(app: Celery, django_user_model: Any) -> None:
    """A running task shows in tasks/active/, its revocation reaches the worker, and
    its status ends SUCCESS.

    Committed data (transaction=True): Celery's Django fix-up closes the database
    connections when a worker starts, which would end a test's enclosing transaction.
    """
    release = threading.Event()

    @app.task(name=f"{app.main}.wait")
    def wait() -> str:
        release.wait(30)
        return "done"

    client = _client(django_user_model, "staff")
    with running_worker(app, pool="threads", concurrency=2) as worker:
        result = wait.delay()
        try:
            active = wait_for(
                lambda: client.get("/resilience/tasks/active/").json()["tasks"],
                "the task to run",
            )
            assert [task["task_id"] for task in active] == [result.id]
            revoked = client.post(
                f"/resilience/tasks/{result.id}/revoke/", headers={"X-CSRFToken": CSRF}
            ).json()
            assert revoked["workers"] == [worker.hostname]
        finally:
            release.set()
        status = wait_for(
            lambda: (
                (body := client.get(f"/resilience/tasks/{result.id}/").json())["ready"] and body
            ),
            "the task to finish",
        )
    assert status["status"] == "SUCCESS"
    assert status["result"] == "done"
