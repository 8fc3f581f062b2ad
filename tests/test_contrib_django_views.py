"""The Django health, stats and operator views: permissions, CSRF, status codes, shapes."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import include, path
from health_check.views import HealthCheckView

import stalwart
from stalwart.contrib.django import apps as stalwart_apps
from stalwart.contrib.django.health import BreakerHealthCheck

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pytest_django.fixtures import SettingsWrapper

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

CSRF = "a" * 32  # a CSRF secret: the cookie's value, sent back in the header
READS = ["/resilience/health/", "/resilience/breakers/", "/resilience/breakers/jira/"]
ACTIONS = [
    "/resilience/breakers/jira/reset/",
    "/resilience/breakers/jira/force-open/",
    "/resilience/breakers/jira/disable/",
]
HEALTH_KEYS = {"status", "timestamp", "total", "totals", "open"}

urlpatterns = [  # for the django-health-check tests (pytest.mark.urls)
    path("resilience/", include("stalwart.contrib.django.urls")),
    path("ht/", HealthCheckView.as_view(checks=[BreakerHealthCheck])),
    path(
        "ht-strict/",
        HealthCheckView.as_view(checks=[(BreakerHealthCheck, {"degraded_is_error": True})]),
    ),
]


@pytest.fixture(autouse=True)
def _breakers(settings: SettingsWrapper) -> Iterator[None]:
    """Breakers jira and splunk from the settings; the registry as before afterwards."""
    settings.STALWART = {"BREAKERS": {"jira": {}, "splunk": {}}}
    yield
    stalwart_apps.restore_registry()


def _client(django_user_model: Any, who: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = CSRF
    if who != "anonymous":
        user = django_user_model.objects.create_user(who, is_staff=who == "staff")
        client.force_login(user)
    return client


def _post(client: Client, url: str, *, token: bool = True) -> Any:
    headers = {"X-CSRFToken": CSRF} if token else {}
    return client.post(url, headers=headers)


@pytest.mark.parametrize("who", ["anonymous", "user", "staff"])
@pytest.mark.parametrize("url", READS + ACTIONS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_permission_matrix(django_user_model: Any, who: str, url: str, method: str) -> None:
    """Reads: GET only; actions: POST only (405 otherwise); anonymous 401, user 403, staff 200."""
    client = _client(django_user_model, who)
    response = client.get(url) if method == "GET" else _post(client, url)
    is_action = url in ACTIONS
    if (method == "POST") != is_action:
        allow = "POST" if is_action else "GET, HEAD"
        assert response.status_code == 405
        assert response["Allow"] == allow
        assert response["Content-Type"] == "application/problem+json"
        assert response.json() == {
            "type": "about:blank",
            "title": "Method Not Allowed",
            "status": 405,
            "detail": f"This endpoint takes {allow}.",
        }
        return
    expected = {"anonymous": 401, "user": 403, "staff": 200}[who]
    assert response.status_code == expected
    body = response.json()
    assert response.content == json.dumps(body).encode()  # json.dumps defaults, as JsonResponse
    if expected != 200:
        assert response["Content-Type"] == "application/problem+json"
        assert body["status"] == expected
        assert body["type"] == "about:blank"
    else:
        assert response["Content-Type"] == "application/json"
    assert (response.has_header("WWW-Authenticate")) == (expected == 401)
    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert response.has_header("Expires")


def test_post_without_csrf_token_is_refused(django_user_model: Any) -> None:
    """A staff POST without the CSRF token gets 403 and the breaker is untouched."""
    stalwart.registry.get("jira").force_open()
    response = _post(_client(django_user_model, "staff"), ACTIONS[0], token=False)
    assert response.status_code == 403
    assert stalwart.registry.get("jira").state.value == "forced_open"


@pytest.mark.parametrize(
    ("opened", "status", "code"),
    [(0, "healthy", 200), (1, "degraded", 200), (2, "critical", 503)],
)
def test_health_status_codes(
    django_user_model: Any, settings: SettingsWrapper, opened: int, status: str, code: int
) -> None:
    """200 when healthy or degraded, 503 when critical; the shape is pinned."""
    settings.STALWART = {"BREAKERS": {"jira": {}, "splunk": {}, "intune": {}}}
    for name in ["jira", "splunk"][:opened]:
        stalwart.registry.get(name).force_open()
    response = _client(django_user_model, "staff").get(READS[0])
    assert response.status_code == code
    body = response.json()
    assert set(body) == HEALTH_KEYS
    assert body["status"] == status
    assert body["total"] == 3
    assert body["open"] == sorted(["jira", "splunk"][:opened])


def test_critical_status_setting(django_user_model: Any, settings: SettingsWrapper) -> None:
    """CRITICAL_STATUS sets the code of a critical health."""
    settings.STALWART = {"BREAKERS": {"jira": {}}, "CRITICAL_STATUS": 500}
    stalwart.registry.get("jira").force_open()
    assert _client(django_user_model, "staff").get(READS[0]).status_code == 500


def test_public_summary_for_anonymous_callers(settings: SettingsWrapper) -> None:
    """With PUBLIC_SUMMARY, anyone reads status and timestamp; stats stay refused."""
    settings.STALWART = {"BREAKERS": {"jira": {}}, "PUBLIC_SUMMARY": True}
    stalwart.registry.get("jira").force_open()
    client = Client()
    response = client.get(READS[0])
    assert response.status_code == 503
    assert set(response.json()) == {"status", "timestamp"}
    assert client.get(READS[1]).status_code == 401


def test_public_health_access(settings: SettingsWrapper) -> None:
    """HEALTH_ACCESS 'public' opens health and stats to anyone, not the actions."""
    settings.STALWART = {"BREAKERS": {"jira": {}}, "HEALTH_ACCESS": "public"}
    client = Client()
    assert set(client.get(READS[0]).json()) == HEALTH_KEYS
    assert client.get(READS[2]).json()["name"] == "jira"
    assert client.post(ACTIONS[0]).status_code == 401


def test_breaker_shapes(django_user_model: Any) -> None:
    """All breakers: timestamp and stats by name; one breaker: its stats, no message."""
    client = _client(django_user_model, "staff")
    every = client.get(READS[1]).json()
    assert set(every) == {"timestamp", "breakers"}
    assert list(every["breakers"]) == ["jira", "splunk"]
    one = client.get(READS[2]).json()
    assert set(one) == set(stalwart.registry.get("jira").stats().as_dict())
    assert one["state"] == "closed"


def test_unknown_names_are_404_and_make_no_breaker(django_user_model: Any) -> None:
    """An unknown breaker name is 404 for stats and actions, and no breaker appears."""
    client = _client(django_user_model, "staff")
    unknown = {
        "type": "urn:stalwart:problem:unknown-breaker",
        "title": "Unknown breaker",
        "status": 404,
        "detail": "No breaker has this name.",
        "name": "nope",
    }
    response = client.get("/resilience/breakers/nope/")
    assert response.status_code == 404
    assert response.json() == unknown
    response = _post(client, "/resilience/breakers/nope/reset/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == unknown
    assert "no-store" in response["Cache-Control"]
    assert client.post("/resilience/breakers/jira/explode/").status_code == 404  # no route
    assert stalwart.registry.names() == ["jira", "splunk"]


@pytest.mark.parametrize(
    ("url", "state"),
    [(ACTIONS[0], "closed"), (ACTIONS[1], "forced_open"), (ACTIONS[2], "disabled")],
)
def test_actions_change_the_breaker_and_log_the_user(
    django_user_model: Any, caplog: pytest.LogCaptureFixture, url: str, state: str
) -> None:
    """Each action replies the new state, changes the breaker and logs the user at WARNING."""
    client = _client(django_user_model, "staff")
    with caplog.at_level(logging.WARNING, logger="stalwart.admin"):
        response = _post(client, url)
    assert response.status_code == 200
    action = url.rstrip("/").rsplit("/", 1)[1]
    assert response.json() == {"name": "jira", "action": action, "state": state}
    assert stalwart.registry.get("jira").state.value == state
    (record,) = [r for r in caplog.records if r.name == "stalwart.admin"]
    assert record.levelno == logging.WARNING
    assert record.actor == "staff"  # type: ignore[attr-defined]


def test_admin_access_by_permission(django_user_model: Any, settings: SettingsWrapper) -> None:
    """ADMIN_ACCESS 'app_label.codename': a user holding it may act, staff without it not."""
    settings.STALWART = {"BREAKERS": {"jira": {}}, "ADMIN_ACCESS": "auth.view_user"}
    holder = _client(django_user_model, "user")
    user = django_user_model.objects.get(username="user")
    user.user_permissions.add(Permission.objects.get(codename="view_user"))
    assert _post(holder, ACTIONS[1]).status_code == 200
    assert _post(_client(django_user_model, "staff"), ACTIONS[0]).status_code == 403


def test_inactive_staff_counts_as_anonymous(django_user_model: Any) -> None:
    """A deactivated staff user is refused as anonymous (401)."""
    client = _client(django_user_model, "staff")
    django_user_model.objects.filter(username="staff").update(is_active=False)
    assert client.get(READS[0]).status_code == 401


# -- django-health-check ----------------------------------------------------------------


@pytest.mark.urls("test_contrib_django_views")
@pytest.mark.parametrize(
    ("opened", "code", "strict_code"),
    [(0, 200, 200), (1, 200, 500), (2, 500, 500)],
)
def test_health_check_view(
    settings: SettingsWrapper,
    caplog: pytest.LogCaptureFixture,
    opened: int,
    code: int,
    strict_code: int,
) -> None:
    """Through HealthCheckView: critical fails, degraded passes (logged) unless strict."""
    settings.STALWART = {"BREAKERS": {"jira": {}, "splunk": {}, "intune": {}}}
    for name in ["jira", "splunk"][:opened]:
        stalwart.registry.get(name).force_open()
    client = Client()
    with caplog.at_level(logging.WARNING, logger="stalwart.contrib.django"):
        response = client.get("/ht/", headers={"Accept": "application/json"})
    assert response.status_code == code
    (result,) = response.json().values()
    if code == 200:
        assert result == "OK"
    else:
        assert result.startswith("Unavailable: 2 of 3 circuit breakers open: jira, splunk")
    degraded_logged = any(r.name == "stalwart.contrib.django" for r in caplog.records)
    assert degraded_logged == (opened == 1)
    strict = client.get("/ht-strict/", headers={"Accept": "application/json"})
    assert strict.status_code == strict_code
    if opened == 1:
        assert next(iter(strict.json().values())).startswith("Warning: 1 of 3")


def test_stats_views_hand_out_the_csrf_cookie(django_user_model: Any) -> None:
    """A staff GET of the stats sets the csrftoken cookie the actions need."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    response = client.get(READS[1])
    token = response.cookies["csrftoken"].value
    reset = client.post(ACTIONS[0], headers={"X-CSRFToken": token})
    assert reset.status_code == 200
