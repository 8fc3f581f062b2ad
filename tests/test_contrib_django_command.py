"""``manage.py stalwart``: list the breakers, reset (force open, disable) one."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import stalwart
from stalwart.contrib.django import apps as stalwart_apps

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pytest_django.fixtures import SettingsWrapper

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _breakers(settings: SettingsWrapper) -> Iterator[None]:
    """Breakers jira (forced open) and splunk from the settings; restored afterwards."""
    settings.STALWART = {"BREAKERS": {"jira": {}, "splunk": {}}}
    stalwart.registry.get("jira").force_open()
    yield
    stalwart_apps.restore_registry()


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("stalwart", *args, stdout=out)
    return out.getvalue()


def test_breakers_table() -> None:
    """The table lists every breaker with its state, then the overall health."""
    lines = _run("breakers").splitlines()
    assert lines[0].split() == ["name", "state", "health", "failures", "rejected", "retry_after"]
    assert lines[1].split()[:2] == ["jira", "forced_open"]
    assert lines[2].split()[:2] == ["splunk", "closed"]
    assert lines[-1] == "health: degraded"


def test_breakers_json() -> None:
    """--json prints the health and every breaker's stats."""
    body = json.loads(_run("breakers", "--json"))
    assert set(body) == {"timestamp", "health", "breakers"}
    assert body["health"]["open"] == ["jira"]
    assert body["breakers"]["jira"] == body["breakers"]["jira"] | {"state": "forced_open"}
    assert set(body["breakers"]["splunk"]) == set(
        stalwart.registry.get("splunk").stats().as_dict()
    )


@pytest.mark.parametrize(
    ("action", "state"),
    [("reset", "closed"), ("force-open", "forced_open"), ("disable", "disabled")],
)
def test_actions_change_the_breaker_and_are_logged(
    caplog: pytest.LogCaptureFixture, action: str, state: str
) -> None:
    """reset / force-open / disable NAME change the breaker, print and log it."""
    with caplog.at_level(logging.WARNING, logger="stalwart.admin"):
        assert _run(action, "jira").strip() == f"jira: {state}"
    assert stalwart.registry.get("jira").state.value == state
    (record,) = [r for r in caplog.records if r.name == "stalwart.admin"]
    assert record.actor.startswith("manage.py")  # type: ignore[attr-defined]


def test_unknown_name_is_an_error_and_makes_no_breaker() -> None:
    """reset of an unknown name fails, listing the names, and creates nothing."""
    with pytest.raises(CommandError, match="no breaker named 'nope'; breakers: jira, splunk"):
        _run("reset", "nope")
    assert stalwart.registry.names() == ["jira", "splunk"]


def test_a_command_is_required() -> None:
    """Without a sub-command the command refuses to run."""
    with pytest.raises(CommandError):
        call_command("stalwart")


def test_command_in_a_real_process() -> None:
    """python -m django stalwart breakers --json works from a shell, with the test settings."""
    done = subprocess.run(
        [sys.executable, "-m", "django", "stalwart", "breakers", "--json"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "django_settings", "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["breakers"] == {}
    assert body["health"]["status"] == "healthy"
